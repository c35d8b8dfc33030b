//! One writer across machines: two signers with their own state directories share one
//! fence (a directory store here, with S3's create-new semantics).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::keys::Algorithm;
use sealtrail_core::merkle::{self, Hash};
use sealtrail_signer::state::State;
use sealtrail_signer::{CommitConfig, DevKeyFile, Error, Fence, KeyBackend, Log};
use sealtrail_store::{BoxFuture, LocalDirStore, ObjectInfo, ObjectStore, PutOutcome, StoreError};

const ORIGIN: &str = "sealtrail.test/fence";

fn key(dir: &Path) -> Arc<dyn KeyBackend> {
    let path = dir.join("dev.key");
    if !path.exists() {
        DevKeyFile::generate(&path, Algorithm::EcdsaP256Sha256).unwrap();
    }
    Arc::new(DevKeyFile::load(&path, true).unwrap())
}

fn fence_dir(dir: &Path) -> Fence {
    Fence::new(
        Arc::new(LocalDirStore::open(dir.join("fence")).unwrap()),
        "prod/",
    )
}

async fn start_with(
    state_dir: &Path,
    key: Arc<dyn KeyBackend>,
    fence: Fence,
) -> (Log, Result<(), Error>) {
    let state = State::open_uncut(state_dir).unwrap();
    let config = CommitConfig {
        min_interval: Duration::ZERO,
        max_signatures_per_second: 0.0,
        fence: Some(fence),
        ..CommitConfig::default()
    };
    let log = Log::start(state, ORIGIN, key, config).unwrap();
    let started = log.wait_started().await;
    (log, started)
}

fn leaves(tag: &str, n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| merkle::leaf_hash(format!("{tag}-{i}").as_bytes()))
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Every pair of checkpoints is consistent (proofs from the log that holds the larger).
fn assert_no_fork(log: &Log, cps: &[SignedCheckpoint]) {
    for a in cps {
        for b in cps {
            let (a, b) = (&a.checkpoint, &b.checkpoint);
            if a.size > b.size {
                continue;
            }
            if a.size == b.size {
                assert_eq!(a.root, b.root, "two checkpoints of size {}", a.size);
                continue;
            }
            let proof = log.consistency_proof(a.size, b.size).unwrap();
            merkle::verify_consistency(a.size, b.size, &a.root, &b.root, &proof).unwrap();
        }
    }
}

#[tokio::test]
async fn a_second_signer_on_another_state_cannot_extend_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    let fence = fence_dir(dir.path());
    let (a, ok) = start_with(&dir.path().join("a"), key.clone(), fence.clone()).await;
    ok.unwrap();
    // B starts on an empty state at the same time: nothing is fenced yet, so it starts.
    let (b, ok) = start_with(&dir.path().join("b"), key.clone(), fence.clone()).await;
    ok.unwrap();

    let mut seen = Vec::new();
    seen.push(a.append(leaves("a1", 3)).await.unwrap().checkpoint);
    // B's first commit finds slot 0 taken: it refuses, and never answers a checkpoint.
    let err = b.append(leaves("b1", 2)).await.unwrap_err();
    assert!(matches!(err, Error::Poisoned(_)), "{err}");
    assert!(b.latest().unwrap().is_none());
    assert!(matches!(
        b.append(leaves("b2", 1)).await.unwrap_err(),
        Error::Poisoned(_)
    ));
    seen.push(a.append(leaves("a2", 2)).await.unwrap().checkpoint);
    let copy_at = dir.path().join("copy-at-2");
    copy_dir(&dir.path().join("a"), &copy_at);
    seen.push(a.append(leaves("a3", 4)).await.unwrap().checkpoint);
    b.close().await;

    // A copy of an older state, or an empty one: refused at start, and its Appends fail.
    for stale in [copy_at, dir.path().join("empty"), dir.path().join("b")] {
        let (c, ok) = start_with(&stale, key.clone(), fence.clone()).await;
        let err = ok.unwrap_err();
        assert!(
            err.to_string()
                .contains("another signer has extended this log beyond our state"),
            "{err}"
        );
        assert!(c.append(leaves("c", 1)).await.is_err());
        seen.extend(c.latest().unwrap().map(Arc::new));
        c.close().await;
    }
    seen.push(a.append(leaves("a4", 1)).await.unwrap().checkpoint);
    let all: Vec<SignedCheckpoint> = seen.iter().map(|c| (**c).clone()).collect();
    assert_no_fork(&a, &all);
    // The fence holds A's chain, one slot per checkpoint.
    let store = LocalDirStore::open(dir.path().join("fence")).unwrap();
    let slots = store.list("prod/fence/0").await.unwrap();
    assert_eq!(slots.len(), 4);
    for (slot, cp) in slots.iter().zip(&all[..3]) {
        assert_eq!(store.get(&slot.key).await.unwrap(), cp.to_bytes());
    }
    a.close().await;

    // The same state directory twice is refused by its lock.
    let (a, ok) = start_with(&dir.path().join("a"), key.clone(), fence.clone()).await;
    ok.unwrap();
    assert!(matches!(
        State::open(&dir.path().join("a")),
        Err(Error::Locked(_))
    ));
    a.close().await;
}

#[tokio::test]
async fn a_state_behind_where_fencing_began_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    // A log without fence first.
    let state = State::open(&dir.path().join("a")).unwrap();
    let log = Log::start(state, ORIGIN, key.clone(), CommitConfig::default()).unwrap();
    log.append(leaves("x", 2)).await.unwrap();
    log.close().await;
    copy_dir(&dir.path().join("a"), &dir.path().join("old"));
    let state = State::open(&dir.path().join("a")).unwrap();
    let log = Log::start(state, ORIGIN, key.clone(), CommitConfig::default()).unwrap();
    log.append(leaves("y", 2)).await.unwrap();
    log.close().await;

    // Fencing begins at A's 2 checkpoints.
    let fence = fence_dir(dir.path());
    let (a, ok) = start_with(&dir.path().join("a"), key.clone(), fence.clone()).await;
    ok.unwrap();
    a.append(leaves("z", 1)).await.unwrap();
    // The old copy (1 checkpoint) would find slot 1 free: the genesis refuses it.
    let (old, ok) = start_with(&dir.path().join("old"), key.clone(), fence.clone()).await;
    assert!(ok.is_err());
    assert!(old.append(leaves("w", 1)).await.is_err());
    old.close().await;
    a.close().await;
}

#[tokio::test]
async fn a_checkpoint_fenced_before_a_crash_is_adopted_and_its_retry_answered() {
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    let fence = fence_dir(dir.path());
    let (a, ok) = start_with(&dir.path().join("a"), key.clone(), fence.clone()).await;
    ok.unwrap();
    a.append(leaves("first", 2)).await.unwrap();
    a.close().await;
    // "crashed": the state as it was before the next commit became durable...
    copy_dir(&dir.path().join("a"), &dir.path().join("crashed"));
    let batch = leaves("lost", 3);
    let (a, ok) = start_with(&dir.path().join("a"), key.clone(), fence.clone()).await;
    ok.unwrap();
    let answered = a.append(batch.clone()).await.unwrap();
    a.close().await;
    // ... with the stored hashes of that commit written (they are fsynced before signing).
    {
        let mut state = State::open(&dir.path().join("crashed")).unwrap();
        let pending = state.stage(&batch).unwrap();
        state.write_hashes(&pending).unwrap();
    }
    let (c, ok) = start_with(&dir.path().join("crashed"), key.clone(), fence.clone()).await;
    ok.unwrap();
    assert_eq!(
        c.latest().unwrap().unwrap().to_bytes(),
        answered.checkpoint.to_bytes()
    );
    // The apiserver's retry of the batch gets the fenced checkpoint.
    let again = c.append(batch).await.unwrap();
    assert_eq!(again.first_index, answered.first_index);
    assert_eq!(again.checkpoint.to_bytes(), answered.checkpoint.to_bytes());
    assert_eq!(again.proofs, answered.proofs);
    assert_eq!(c.append(leaves("next", 1)).await.unwrap().first_index, 5);
    c.close().await;

    // Without the stored hashes, the fenced checkpoint cannot be ours: refused.
    let (d, ok) = start_with(&dir.path().join("a"), key.clone(), fence.clone()).await;
    assert!(ok.is_err());
    d.close().await;
}

/// A store whose next put lands but answers an error (an answer lost on the way).
struct LostAnswer {
    inner: LocalDirStore,
    fail_next: AtomicBool,
}

impl ObjectStore for LostAnswer {
    fn put_new<'a>(
        &'a self,
        key: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        Box::pin(async move {
            let r = self.inner.put_new(key, bytes).await;
            if self.fail_next.swap(false, Ordering::SeqCst) {
                return Err(StoreError::Unavailable("timed out".into()));
            }
            r
        })
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        self.inner.get(key)
    }
    fn get_prefix<'a>(
        &'a self,
        key: &'a str,
        max_len: usize,
    ) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        self.inner.get_prefix(key, max_len)
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, StoreError>> {
        self.inner.list(prefix)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[tokio::test]
async fn a_fence_write_with_an_unknown_outcome_is_settled_before_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    let store = Arc::new(LostAnswer {
        inner: LocalDirStore::open(dir.path().join("fence")).unwrap(),
        fail_next: AtomicBool::new(false),
    });
    let fence = Fence::new(store.clone(), "");
    let (a, ok) = start_with(&dir.path().join("a"), key.clone(), fence).await;
    ok.unwrap();
    a.append(leaves("one", 1)).await.unwrap();
    store.fail_next.store(true, Ordering::SeqCst);
    let batch = leaves("two", 2);
    let err = a.append(batch.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    assert_eq!(a.latest().unwrap().unwrap().checkpoint.size, 1);
    // The retry: the pending checkpoint is settled (it did land), then found by dedupe.
    let again = a.append(batch.clone()).await.unwrap();
    assert_eq!(again.first_index, 1);
    assert_eq!(again.checkpoint.checkpoint.size, 3);
    assert_eq!(
        store.get("fence/00000000000000000001").await.unwrap(),
        again.checkpoint.to_bytes()
    );
    assert_eq!(a.append(leaves("three", 1)).await.unwrap().first_index, 3);
    a.close().await;
}

/// The same race as above with the fence in a real S3 Object Lock bucket (moto server):
/// two signers with their own state directories, one bucket. The second cannot extend the
/// log, a stale copy of the first cannot start, and the slots hold one chain. A key
/// rotation claims its slot like any checkpoint, so a stale copy cannot rotate either.
#[tokio::test]
async fn two_signers_one_s3_bucket_and_a_fenced_rotation() {
    use sealtrail_signer::rotation;
    use sealtrail_store::s3::{LockMode, S3Config, S3Store};
    use sealtrail_tests::moto::{self, MotoServer};

    let moto = MotoServer::start().expect("moto server (run scripts/test)");
    let client = moto::s3_client(&moto.endpoint).await;
    moto::create_lock_bucket(&client, "sealtrail-fence", None)
        .await
        .unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(S3Store::with_client(
        client,
        S3Config {
            bucket: "sealtrail-fence".into(),
            endpoint: Some(moto.endpoint.clone()),
            force_path_style: true,
            region: Some(moto::TEST_REGION.into()),
            lock_mode: LockMode::Compliance,
            retention: Duration::from_secs(86_400),
        },
    ));
    let fence = Fence::new(store.clone(), "prod/");
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());

    let (a, ok) = start_with(&dir.path().join("a"), key.clone(), fence.clone()).await;
    ok.unwrap();
    let (b, ok) = start_with(&dir.path().join("b"), key.clone(), fence.clone()).await;
    ok.unwrap();
    let mut seen = vec![a.append(leaves("a1", 3)).await.unwrap().checkpoint];
    let err = b.append(leaves("b1", 2)).await.unwrap_err();
    assert!(matches!(err, Error::Poisoned(_)), "{err}");
    assert!(b.latest().unwrap().is_none());
    b.close().await;
    let stale = dir.path().join("stale");
    copy_dir(&dir.path().join("a"), &stale);
    seen.push(a.append(leaves("a2", 2)).await.unwrap().checkpoint);
    a.close().await;

    let (c, ok) = start_with(&stale, key.clone(), fence.clone()).await;
    assert!(
        ok.unwrap_err()
            .to_string()
            .contains("another signer has extended this log beyond our state")
    );
    c.close().await;

    // Rotate A through the fence: slot 2 holds the rotation checkpoint.
    let new_path = dir.path().join("new.key");
    DevKeyFile::generate(&new_path, Algorithm::Ed25519).unwrap();
    let new: Arc<dyn KeyBackend> = Arc::new(DevKeyFile::load(&new_path, true).unwrap());
    // (A copy from before the rotation stands for a crash between fence write and commit.)
    let crashed = dir.path().join("crashed-mid-rotation");
    copy_dir(&dir.path().join("a"), &crashed);
    let state = State::open_uncut(&dir.path().join("a")).unwrap();
    let r = rotation::rotate(state, ORIGIN, key.as_ref(), new.as_ref(), Some(&fence))
        .await
        .unwrap();
    assert_eq!(r.checkpoint.size, 5);
    assert_eq!(store.get(&fence.slot_key(2)).await.unwrap(), r.to_bytes());
    // Running rotate again on the crashed copy adopts the fenced rotation: same checkpoint,
    // and the key history follows.
    let state = State::open_uncut(&crashed).unwrap();
    let again = rotation::rotate(state, ORIGIN, key.as_ref(), new.as_ref(), Some(&fence))
        .await
        .unwrap();
    assert_eq!(again, r);
    let history = rotation::read_key_history(&crashed).unwrap().unwrap();
    assert_eq!(history.keys.len(), 2);
    assert_eq!(history.keys[1].valid_from_size, 5);
    // The stale copy cannot rotate (to any key): the fence refuses it first.
    let state = State::open_uncut(&stale).unwrap();
    let err = rotation::rotate(state, ORIGIN, key.as_ref(), new.as_ref(), Some(&fence))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Poisoned(_)), "{err}");

    // Without the fence, neither the signer nor rotate may touch A's state any more.
    let unfenced = Log::start(
        State::open_uncut(&dir.path().join("a")).unwrap(),
        ORIGIN,
        new.clone(),
        CommitConfig::default(),
    );
    assert!(
        matches!(&unfenced, Err(Error::Config(m)) if m.contains("this log is fenced")),
        "{:?}",
        unfenced.err()
    );
    let state = State::open_uncut(&dir.path().join("a")).unwrap();
    let err = rotation::rotate(state, ORIGIN, new.as_ref(), key.as_ref(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("this log is fenced"), "{err}");

    // Nor with another fence: the protection would be split across two.
    let elsewhere = CommitConfig {
        fence: Some(Fence::new(store.clone(), "elsewhere/")),
        ..CommitConfig::default()
    };
    let other = Log::start(
        State::open_uncut(&dir.path().join("a")).unwrap(),
        ORIGIN,
        new.clone(),
        elsewhere,
    );
    assert!(
        matches!(&other, Err(Error::Config(m)) if m.contains("this log is fenced at")),
        "a second fence location was accepted"
    );

    // A restarts with the new key and goes on; with the old key it is refused.
    let (old_a, ok) = start_with(&dir.path().join("a"), key.clone(), fence.clone()).await;
    assert!(
        ok.unwrap_err()
            .to_string()
            .contains("only the new key may sign")
    );
    old_a.close().await;
    let (a, ok) = start_with(&dir.path().join("a"), new.clone(), fence.clone()).await;
    ok.unwrap();
    let after = a.append(leaves("a3", 1)).await.unwrap().checkpoint;
    assert_eq!(after.checkpoint.prev, Some(r.hash()));
    assert_eq!(
        store.get(&fence.slot_key(3)).await.unwrap(),
        after.to_bytes()
    );
    seen.push(after);
    let all: Vec<SignedCheckpoint> = seen.iter().map(|c| (**c).clone()).collect();
    assert_no_fork(&a, &all);
    a.close().await;
}
