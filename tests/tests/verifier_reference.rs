//! The verifier's outside references against a cut tail: the signer's latest checkpoint
//! (`--signer`) and the state of an earlier run (`--state`); incremental runs read only the
//! new objects; a signer whose log is not the stored one is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use sealtrail_core::segment;
use sealtrail_store::{BoxFuture, LocalDirStore, ObjectInfo, ObjectStore, PutOutcome, StoreError};
use sealtrail_verifier::{FindingKind, Options, Report, verify_store};

async fn verify(h: &Harness, store: &dyn ObjectStore, options: &Options) -> Report {
    verify_store(store, &h.trust, options).await.unwrap()
}

fn range_of(file: &Path) -> (u64, u64) {
    let bytes = std::fs::read(file).unwrap();
    let hd = segment::parse_header(&bytes).unwrap().0;
    (hd.first_index, hd.first_index + hd.count - 1)
}

/// Counts the objects read (whole or their first bytes), by key.
struct Counting {
    inner: LocalDirStore,
    reads: AtomicU64,
    keys: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Counting {
    fn new(dir: &Path) -> Self {
        Self {
            inner: LocalDirStore::open(dir).unwrap(),
            reads: AtomicU64::new(0),
            keys: Default::default(),
        }
    }
    fn objects_read(&self) -> usize {
        self.keys.lock().unwrap().len()
    }
    fn reset(&self) {
        self.keys.lock().unwrap().clear();
        self.reads.store(0, Ordering::SeqCst);
    }
    fn note(&self, key: &str) {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.keys.lock().unwrap().insert(key.to_string());
    }
}

impl ObjectStore for Counting {
    fn put_new<'a>(
        &'a self,
        key: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        self.inner.put_new(key, bytes)
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        self.note(key);
        self.inner.get(key)
    }
    fn get_prefix<'a>(
        &'a self,
        key: &'a str,
        max_len: usize,
    ) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        self.note(key);
        self.inner.get_prefix(key, max_len)
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, StoreError>> {
        self.inner.list(prefix)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// The newest segments deleted (with their checkpoints): the store alone looks intact;
/// the signer's latest checkpoint and a state from an earlier run both catch it, with the
/// exact missing range, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_tail_is_caught_with_the_signer_and_with_the_state() {
    let h = Harness::start().await;
    // Two rounds, so that the last appends get a checkpoint of their own.
    let lines = event_lines();
    replay(&h, &lines[..180], 40).await;
    replay(&h, &lines[180..], 40).await;
    let root = h.store_dir.clone();
    let size = h.tree_size().await;

    // An earlier run with a state.
    let first = verify(
        &h,
        &h.store(),
        &Options {
            signer: Some(signer_of(&h)),
            ..Options::default()
        },
    )
    .await;
    assert!(first.intact(), "{}", first.summary());
    assert_eq!(first.signer_tree_size, Some(size));
    let state = first.state.clone().expect("a state after an intact run");
    assert_eq!(state.size, size);

    // Cut the tail: every segment of the newest checkpoint (appends committed together
    // share one), so that no stored checkpoint covers the lost leaves.
    let dir = h.dir.path().join("cut-tail");
    copy_store(&root, &dir);
    let mut segs: Vec<_> = segments(&dir)
        .into_iter()
        .map(|p| (range_of(&p), p))
        .collect();
    segs.sort();
    let cp_size = |p: &Path| {
        let bytes = std::fs::read(p).unwrap();
        segment::parse_header(&bytes)
            .unwrap()
            .0
            .checkpoint
            .checkpoint
            .size
    };
    let newest: Vec<bool> = segs.iter().map(|(_, p)| cp_size(p) == size).collect();
    let keep = newest.iter().position(|n| *n).unwrap();
    assert!(keep > 0 && newest[keep..].iter().all(|n| *n));
    let cut: Vec<_> = segs[keep..].to_vec();
    for (_, p) in &cut {
        std::fs::remove_file(p).unwrap();
    }
    let cut_from = cut[0].0.0;
    assert_eq!(cut.last().unwrap().0.1, size - 1);
    let store = LocalDirStore::open(&dir).unwrap();

    // The store alone cannot tell.
    let alone = verify(&h, &store, &Options::default()).await;
    assert!(alone.intact(), "{}", alone.summary());

    // With the signer: one finding, the whole cut range, located after the last stored
    // segment.
    let r = verify(
        &h,
        &store,
        &Options {
            signer: Some(signer_of(&h)),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(r.findings.len(), 1, "{}", r.summary());
    let f = &r.findings[0];
    assert_eq!(f.kind, FindingKind::MissingEvents);
    assert_eq!((f.index, f.last_index), (Some(cut_from), Some(size - 1)));
    assert_eq!(
        f.object.as_deref(),
        Some(key_of(&dir, &segs[keep - 1].1).as_str())
    );
    assert!(
        f.detail
            .contains(&format!("signed by the signer (checkpoint of size {size})")),
        "{}",
        f.detail
    );
    assert!(
        r.state.is_none(),
        "the state must not advance past a finding"
    );

    // With the state of the earlier run: each deleted object, by key and range.
    let r = verify(
        &h,
        &store,
        &Options {
            state: Some(state.clone()),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(r.findings.len(), cut.len(), "{}", r.summary());
    for (f, (range, path)) in r.findings.iter().zip(&cut) {
        assert_eq!(f.kind, FindingKind::MissingEvents);
        assert_eq!((f.index, f.last_index), (Some(range.0), Some(range.1)));
        assert_eq!(f.object.as_deref(), Some(key_of(&dir, path).as_str()));
        assert!(
            f.detail.contains("truncated since the last run"),
            "{}",
            f.detail
        );
    }
    assert_eq!(r.segments_read, 0, "nothing new to read");
    assert!(r.state.is_none());

    // Both references together: the same findings, no more.
    let r = verify(
        &h,
        &store,
        &Options {
            state: Some(state),
            signer: Some(signer_of(&h)),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(r.findings.len(), cut.len(), "{}", r.summary());
    assert!(
        r.findings
            .iter()
            .all(|f| f.kind == FindingKind::MissingEvents)
    );
    h.shutdown().await;
}

/// After a run with a state, 1% more data is verified by reading only the new objects;
/// the result is the same as a full run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_run_reads_only_new_objects() {
    let h = Harness::start().await;
    let lines = event_lines();
    replay(&h, &lines[..200], 2).await;
    let store = Counting::new(&h.store_dir);
    let before = segments(&h.store_dir).len();
    assert!(before >= 100, "{before}");

    let full = verify(&h, &store, &Options::default()).await;
    assert!(full.intact(), "{}", full.summary());
    // Every segment and the pending batch each one seals.
    assert_eq!(store.objects_read(), 2 * before);
    let state = full.state.clone().unwrap();
    assert_eq!(state.objects.len(), before);
    assert_eq!(state.sealed.len(), before);

    // A state round-trips through its file.
    let path = h.dir.path().join("verifier-state.json");
    state.save(&path, None).unwrap();
    let state = sealtrail_verifier::State::load(&path, None)
        .unwrap()
        .unwrap();

    // Nothing new: nothing read.
    store.reset();
    let r = verify(
        &h,
        &store,
        &Options {
            state: Some(state.clone()),
            signer: Some(signer_of(&h)),
            ..Options::default()
        },
    )
    .await;
    assert!(r.intact(), "{}", r.summary());
    assert_eq!(store.objects_read(), 0);
    assert_eq!(r.state.as_ref(), Some(&state));

    // 1% more (one new segment of two events).
    replay(&h, &lines[200..202], 2).await;
    let after = segments(&h.store_dir).len();
    assert_eq!(after, before + 1);
    store.reset();
    let r = verify(
        &h,
        &store,
        &Options {
            state: Some(state.clone()),
            signer: Some(signer_of(&h)),
            ..Options::default()
        },
    )
    .await;
    assert!(r.intact(), "{}", r.summary());
    assert_eq!(
        store.objects_read(),
        2 * (after - before),
        "only the new segment and its pending batch are read"
    );
    assert_eq!(r.segments_read, 1);
    assert_eq!(r.segments_skipped as usize, before);
    assert_eq!(r.events_verified, 2);
    assert!(
        r.roots_verified >= 1,
        "the new checkpoint's root is recomputed"
    );
    let next = r.state.clone().unwrap();
    assert_eq!(next.size, h.tree_size().await);
    assert_eq!(next.objects.len(), after);

    // The incremental state is the state a full run gives.
    let full = verify(&h, &store, &Options::default()).await;
    assert_eq!(full.state.unwrap().frontier, next.frontier);
    h.shutdown().await;
}

/// A signer whose log is not the stored one (a fork, or a rolled-back signer) is reported
/// as `inconsistent_with_signer`, and its size is not used to claim missing events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_with_another_log_is_inconsistent() {
    let h = Harness::start().await;
    let lines = event_lines();
    replay(&h, &lines[..60], 30).await;
    // A second log signed by the same key: longer and different (a fork), and shorter
    // (a signer restored from an old backup).
    let longer = Harness::start_custom(1 << 20, Some(h.key.clone())).await;
    let mut reversed = lines.clone();
    reversed.reverse();
    replay(&longer, &reversed[..100], 50).await;
    let shorter = Harness::start_custom(1 << 20, Some(h.key.clone())).await;
    replay(&shorter, &lines[..30], 30).await;

    for (other, what) in [(&longer, "does not extend"), (&shorter, "rolled back")] {
        let r = verify(
            &h,
            &h.store(),
            &Options {
                signer: Some(signer_of(other)),
                ..Options::default()
            },
        )
        .await;
        assert_eq!(r.findings.len(), 1, "{}", r.summary());
        let f = &r.findings[0];
        assert_eq!(
            f.kind,
            FindingKind::InconsistentWithSigner,
            "{}",
            r.summary()
        );
        assert_eq!(f.index, Some(59));
        assert!(f.object.is_some());
        assert!(f.detail.contains(what), "{}", f.detail);
    }
    longer.shutdown().await;
    shorter.shutdown().await;
    h.shutdown().await;
}
