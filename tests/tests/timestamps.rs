//! Trusted time (docs/FORMAT.md §10) against a real TSA: OpenSSL's own (`openssl ts
//! -reply`) behind an HTTP endpoint, with a test PKI. The anchor gets tokens for a real
//! trail (emulator → ingester → signer → store); the verifier reports the timestamped
//! horizon; `openssl ts -verify` accepts every token stored. Each failure the verifier must
//! name is made once: an unpinned TSA, a token on another checkpoint, a flipped signature
//! byte, checkpoint times later than the TSA time covering them, deleted tokens. A TSA
//! outage does not hold ingest up, and anchoring resumes. On moto S3 the tokens are
//! stored under COMPLIANCE Object Lock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use sealtrail_core::checkpoint::{Checkpoint, NoteSignature, SignedCheckpoint};
use sealtrail_core::event::parse_event_line;
use sealtrail_core::keys::Algorithm;
use sealtrail_core::merkle::MemoryLog;
use sealtrail_core::segment;
use sealtrail_core::timestamp;
use sealtrail_core::trust::{Trust, TrustBundle, TrustedKey};
use sealtrail_signer::anchor::{self, AnchorConfig, AnchorMetrics, Tsa};
use sealtrail_signer::{DevKeyFile, KeyBackend as _};
use sealtrail_store::{LocalDirStore, ObjectStore, RetentionMode};
use sealtrail_tests::moto::{MotoServer, s3_client};
use sealtrail_tests::proxy::Proxy;
use sealtrail_tests::tsa::TestTsa;
use sealtrail_verifier::prove::{Bundle, ProveOptions, Selection, check_bundle, prove};
use sealtrail_verifier::{FindingKind, Options, Report, verify_store};

const TSA: &str = "test-tsa";

fn with_tsa(trust: &Trust, tsa: &TestTsa) -> Trust {
    let mut b = trust.bundle().clone();
    b.timestamp_authorities = vec![tsa.pinned(TSA)];
    Trust::from_bundle(b).unwrap()
}

/// The anchor, in process, until the returned sender is dropped or sent to.
fn start_anchor(
    store: Arc<dyn ObjectStore>,
    trust: &Trust,
    url: &str,
    alert_after: Duration,
) -> (Arc<AnchorMetrics>, tokio::sync::oneshot::Sender<()>) {
    let config = AnchorConfig {
        prefix: String::new(),
        tsas: vec![Tsa::parse(&format!("{TSA}={url}"), trust).unwrap()],
        trust: trust.clone(),
        interval: Duration::from_millis(200),
        alert_after,
        timeout: Duration::from_secs(5),
    };
    let metrics = Arc::new(AnchorMetrics::default());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let m = metrics.clone();
    tokio::spawn(async move {
        anchor::run(config, store, m, async {
            let _ = rx.await;
        })
        .await;
    });
    (metrics, tx)
}

fn tsa_metric(m: &AnchorMetrics, name: &str) -> f64 {
    metric(
        &m.encode(),
        &format!("sealtrail_anchor_{name}{{tsa=\"{TSA}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Waits until the anchor's newest token covers tree size `size`.
async fn wait_anchored(m: &AnchorMetrics, size: u64) {
    for _ in 0..200 {
        if tsa_metric(m, "anchored_size") >= size as f64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no token for size {size}: {}", m.encode());
}

/// The stored tokens: (key, size, checkpoint text hash, bytes), by size.
async fn tokens(store: &dyn ObjectStore) -> Vec<(String, u64, [u8; 32], Vec<u8>)> {
    let mut out = Vec::new();
    for o in store.list("timestamps/").await.unwrap() {
        let (size, hash, _) = timestamp::parse_object_key("", &o.key).unwrap();
        out.push((o.key.clone(), size, hash, store.get(&o.key).await.unwrap()));
    }
    out.sort_by_key(|t| t.1);
    out
}

async fn verify(dir: &Path, trust: &Trust, options: &Options) -> Report {
    verify_store(&LocalDirStore::open(dir).unwrap(), trust, options)
        .await
        .unwrap()
}

fn kinds(r: &Report) -> Vec<FindingKind> {
    r.findings.iter().map(|f| f.kind).collect()
}

fn put(dir: &Path, key: &str, bytes: &[u8]) {
    let p = dir.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&p);
    std::fs::write(p, bytes).unwrap();
}

/// A token straight from `openssl ts -reply` for `cp`, stored by hand under its key in the
/// store directory `dir`; returns the key.
fn stamp(dir: &Path, tsa: &TestTsa, cp: &SignedCheckpoint) -> String {
    let key = timestamp::object_key("", cp.checkpoint.size, &cp.hash(), TSA);
    put(dir, &key, &tsa.token_for(&cp.hash()).unwrap());
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchored_tokens_verify_and_each_failure_is_named() {
    let h = Harness::start().await;
    let tsa = TestTsa::start("Sealtrail test TSA").await.unwrap();
    let trust = with_tsa(&h.trust, &tsa);
    let store: Arc<dyn ObjectStore> = Arc::new(h.store());
    let (metrics, stop) = start_anchor(store.clone(), &trust, &tsa.url(), Duration::from_secs(60));

    let lines = event_lines();
    let (a, b) = lines.split_at(lines.len() / 2);
    replay(&h, a, 40).await;
    wait_anchored(&metrics, h.tree_size().await).await;
    replay(&h, b, 40).await;
    let size = h.tree_size().await;
    wait_anchored(&metrics, size).await;
    drop(stop);

    let stored = tokens(store.as_ref()).await;
    assert!(
        stored.len() >= 2,
        "one token per anchored checkpoint: {}",
        stored.len()
    );
    for (key, _, hash, bytes) in &stored {
        assert!(
            tsa.openssl_verifies(bytes, hash),
            "openssl ts -verify refuses {key}"
        );
    }
    let report = verify(&h.store_dir, &trust, &Options::default()).await;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    let ts = &report.timestamps;
    assert_eq!(ts.tokens, stored.len() as u64);
    assert_eq!(ts.valid, stored.len() as u64);
    let horizon = ts.horizon.clone().unwrap();
    assert_eq!(horizon.size, size);
    assert_eq!(horizon.tsa, TSA);
    assert_eq!(ts.untimestamped_leaves, 0);
    assert!(
        report.summary().contains("timestamped up to checkpoint"),
        "{}",
        report.summary()
    );

    // A proof bundle carries the tokens on its checkpoints; check-bundle dates each event.
    let first: serde_json::Value = serde_json::from_slice(&lines[0]).unwrap();
    let selection = Selection::AuditId {
        audit_id: first["auditID"].as_str().unwrap().to_string(),
    };
    let proved = prove(store.as_ref(), &trust, &selection, &ProveOptions::default())
        .await
        .unwrap();
    assert!(proved.report.timestamps >= 1, "{:?}", proved.report);
    let bundle = Bundle::parse(&proved.bytes).unwrap();
    let checked = check_bundle(&bundle, &trust);
    assert!(checked.verified, "{:?}", checked.problems);
    assert!(checked.timestamps.iter().all(|t| t.valid));
    assert!(
        checked.events.iter().all(|e| e.existed_by.is_some()),
        "{}",
        checked.summary()
    );
    let bundle_file = h.dir.path().join("bundle.json");
    std::fs::write(&bundle_file, &proved.bytes).unwrap();
    let trust_file = h.dir.path().join("trust-tsa.json");
    std::fs::write(&trust_file, trust.bundle().to_json()).unwrap();
    let out = std::process::Command::new(binary("sealtrail-verify"))
        .arg("check-bundle")
        .arg(&bundle_file)
        .arg("--trust")
        .arg(&trust_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("timestamped by "), "{text}");
    let mut tampered = bundle.clone();
    for t in &mut tampered.timestamps {
        *t.token.last_mut().unwrap() ^= 1;
    }
    let checked = check_bundle(&Bundle::parse(&tampered.encode()).unwrap(), &trust);
    assert!(!checked.verified);
    assert_eq!(
        checked.problems.iter().map(|p| p.kind).collect::<Vec<_>>(),
        vec![FindingKind::BadTimestamp; bundle.timestamps.len()],
        "{:?}",
        checked.problems
    );
    assert!(checked.events.iter().all(|e| e.existed_by.is_none()));
    // Without the TSA pinned, the bundle's token is one of an unpinned TSA.
    let checked = check_bundle(&bundle, &h.trust);
    assert_eq!(
        checked.problems.iter().map(|p| p.kind).collect::<Vec<_>>(),
        vec![FindingKind::BadTimestamp; bundle.timestamps.len()],
        "{:?}",
        checked.problems
    );

    // The same store without the TSA pinned: its tokens are tokens of an unpinned TSA.
    let unpinned = verify(&h.store_dir, &h.trust, &Options::default()).await;
    assert_eq!(
        kinds(&unpinned),
        vec![FindingKind::BadTimestamp; stored.len()],
        "{:?}",
        unpinned.findings
    );

    let (newest_key, _, newest_hash, newest) = stored.last().unwrap().clone();
    let (_, older_size, _, older) = stored[stored.len() - 2].clone();
    let case = |name: &str| {
        let dir = h.dir.path().join(name);
        copy_store(&h.store_dir, &dir);
        dir
    };
    let bad_newest = |r: &Report, why: &str| {
        assert_eq!(
            kinds(r),
            vec![FindingKind::BadTimestamp],
            "{:?}",
            r.findings
        );
        assert_eq!(r.findings[0].object.as_deref(), Some(newest_key.as_str()));
        assert!(
            r.findings[0].detail.contains(why),
            "{}",
            r.findings[0].detail
        );
        // The horizon falls back to the newest token that still verifies.
        assert_eq!(r.timestamps.horizon.as_ref().unwrap().size, older_size);
        assert_eq!(r.timestamps.untimestamped_leaves, size - older_size);
    };

    // A flipped byte of the token's signature (its last member).
    let dir = case("flipped");
    let mut flipped = newest.clone();
    *flipped.last_mut().unwrap() ^= 1;
    put(&dir, &newest_key, &flipped);
    bad_newest(
        &verify(&dir, &trust, &Options::default()).await,
        "signature does not verify",
    );

    // A token of another checkpoint, stored under the newest checkpoint's key.
    let dir = case("moved");
    put(&dir, &newest_key, &older);
    bad_newest(
        &verify(&dir, &trust, &Options::default()).await,
        "names another checkpoint",
    );

    // A real token for the newest checkpoint, from a TSA whose root is not pinned.
    let other = TestTsa::start("Other TSA").await.unwrap();
    let foreign = other.token_for(&newest_hash).unwrap();
    assert!(other.openssl_verifies(&foreign, &newest_hash));
    let dir = case("foreign");
    put(&dir, &newest_key, &foreign);
    bad_newest(
        &verify(&dir, &trust, &Options::default()).await,
        "does not chain to a pinned root",
    );
    // The same token under a name the bundle does not pin.
    let dir = case("unnamed");
    std::fs::remove_file(dir.join(&newest_key)).unwrap();
    let other_key = newest_key.replace(&format!("/{TSA}.tsr"), "/other-tsa.tsr");
    put(&dir, &other_key, &foreign);
    let r = verify(&dir, &trust, &Options::default()).await;
    assert_eq!(
        kinds(&r),
        vec![FindingKind::BadTimestamp],
        "{:?}",
        r.findings
    );
    assert!(
        r.findings[0].detail.contains("does not pin"),
        "{}",
        r.findings[0].detail
    );

    // Tokens deleted: the horizon shrinks, and past the threshold the tail is named.
    let dir = case("deleted");
    for (key, ..) in &stored[1..] {
        std::fs::remove_file(dir.join(key)).unwrap();
    }
    let first = stored[0].1;
    let r = verify(&dir, &trust, &Options::default()).await;
    assert!(
        r.findings.is_empty(),
        "within the default hour: {:?}",
        r.findings
    );
    assert_eq!(r.timestamps.horizon.as_ref().unwrap().size, first);
    let strict = Options {
        untimestamped_after: Some(Duration::ZERO),
        ..Options::default()
    };
    let r = verify(&dir, &trust, &strict).await;
    assert_eq!(
        kinds(&r),
        vec![FindingKind::UntimestampedTail],
        "{:?}",
        r.findings
    );
    assert_eq!(r.findings[0].index, Some(first));
    assert_eq!(r.findings[0].last_index, Some(size - 1));
    std::fs::remove_file(dir.join(&stored[0].0)).unwrap();
    let r = verify(&dir, &trust, &strict).await;
    assert_eq!(
        kinds(&r),
        vec![FindingKind::UntimestampedTail],
        "{:?}",
        r.findings
    );
    assert!(r.timestamps.horizon.is_none());
    assert_eq!(r.timestamps.untimestamped_leaves, size);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tsa_outage_does_not_hold_up_ingest_and_anchoring_resumes() {
    let h = Harness::start().await;
    let tsa = TestTsa::start("Sealtrail test TSA").await.unwrap();
    let proxy = Proxy::start(tsa.addr).await.unwrap();
    let trust = with_tsa(&h.trust, &tsa);
    let store: Arc<dyn ObjectStore> = Arc::new(h.store());
    let url = TestTsa::url_at(proxy.addr);
    let (metrics, stop) = start_anchor(store.clone(), &trust, &url, Duration::from_secs(1));
    let lines = event_lines();
    let (a, b) = lines.split_at(lines.len() / 2);
    replay(&h, a, 40).await;
    let first = h.tree_size().await;
    wait_anchored(&metrics, first).await;
    let stored = tokens(store.as_ref()).await.len();

    proxy.off();
    // Every batch is acknowledged and sealed while the TSA is unreachable.
    replay(&h, b, 40).await;
    let size = h.tree_size().await;
    assert_eq!(size, lines.len() as u64);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let text = metrics.encode();
    let failed = metric(
        &text,
        &format!("sealtrail_anchor_failures_total{{tsa=\"{TSA}\",reason=\"unreachable\"}}"),
    )
    .unwrap_or(0.0);
    assert!(failed >= 1.0, "{text}");
    assert_eq!(tsa_metric(&metrics, "overdue"), 1.0, "{text}");
    assert!(tsa_metric(&metrics, "lag_seconds") >= 1.0, "{text}");
    assert_eq!(tsa_metric(&metrics, "anchored_size"), first as f64);
    assert_eq!(tokens(store.as_ref()).await.len(), stored);

    proxy.on();
    wait_anchored(&metrics, size).await;
    assert_eq!(tsa_metric(&metrics, "overdue"), 0.0);
    assert_eq!(tsa_metric(&metrics, "lag_seconds"), 0.0);
    drop(stop);
    let report = verify(&h.store_dir, &trust, &Options::default()).await;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.timestamps.horizon.as_ref().unwrap().size, size);
    h.shutdown().await;
}

/// A trail written by the test: one segment of 3 sample events per entry of `times`
/// (each the checkpoint's time, Unix ms), every checkpoint chained and signed.
async fn trail_at(dir: &Path, origin: &str, times: &[u64]) -> (Trust, Vec<SignedCheckpoint>) {
    let store = LocalDirStore::open(dir.join("store")).unwrap();
    trail_into(&store, dir, origin, times).await
}

/// [`trail_at`] into `store`, the signing key kept in `dir`.
async fn trail_into(
    store: &dyn ObjectStore,
    dir: &Path,
    origin: &str,
    times: &[u64],
) -> (Trust, Vec<SignedCheckpoint>) {
    let key_path = dir.join("k.pem");
    DevKeyFile::generate(&key_path, Algorithm::Ed25519).unwrap();
    let key = DevKeyFile::load(&key_path, true).unwrap();
    let lines = event_lines();
    let mut log = MemoryLog::new();
    let (mut prev, mut cps) = (None, Vec::new());
    for (n, &time_ms) in times.iter().enumerate() {
        let events: Vec<_> = (0..3)
            .map(|i| parse_event_line(&lines[n * 3 + i]).unwrap())
            .collect();
        let (signed, _) = store_segment(
            store, "", origin, &key, &mut log, &mut prev, &events, time_ms,
        )
        .await;
        cps.push(signed);
    }
    let trust = Trust::from_bundle(TrustBundle::new(
        origin,
        vec![TrustedKey::new(origin, key.public_key(), 0)],
    ))
    .unwrap();
    (trust, cps)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_times_later_than_the_tsa_time_are_named() {
    let tsa = TestTsa::start("Sealtrail test TSA").await.unwrap();
    const DAY: u64 = 86_400_000;

    // A signer whose clock ran a day ahead: two checkpoints dated tomorrow, the token (on
    // the second) made today. The first is covered by the second's token.
    let tmp = tempfile::tempdir().unwrap();
    let now = now_ms();
    let (trust, cps) = trail_at(
        tmp.path(),
        "sealtrail.test/ahead",
        &[now + DAY, now + DAY + 1000],
    )
    .await;
    let trust = with_tsa(&trust, &tsa);
    let last = &cps[1];
    stamp(&tmp.path().join("store"), &tsa, last);
    let r = verify(&tmp.path().join("store"), &trust, &Options::default()).await;
    assert_eq!(
        kinds(&r),
        vec![FindingKind::TimeInconsistent, FindingKind::TimeInconsistent],
        "{:?}",
        r.findings
    );
    assert!(
        r.findings[0].detail.contains("checkpoint of size 3 "),
        "{}",
        r.findings[0].detail
    );
    assert!(
        r.findings[1].detail.contains("checkpoint of size 6 "),
        "{}",
        r.findings[1].detail
    );
    assert!(!r.intact());

    // A TSA time earlier than the checkpoint's own time (by 10 minutes): beyond the
    // default tolerance, within a tolerance of an hour.
    let tmp = tempfile::tempdir().unwrap();
    let (trust, cps) = trail_at(tmp.path(), "sealtrail.test/early", &[now + 600_000]).await;
    let trust = with_tsa(&trust, &tsa);
    let cp = &cps[0];
    stamp(&tmp.path().join("store"), &tsa, cp);
    let r = verify(&tmp.path().join("store"), &trust, &Options::default()).await;
    assert_eq!(
        kinds(&r),
        vec![FindingKind::TimeInconsistent],
        "{:?}",
        r.findings
    );
    assert_eq!(
        r.findings[0].object.as_deref(),
        Some(segment::object_key("", cp.checkpoint.time_ms, 0, 3).as_str())
    );
    let lenient = Options {
        time_tolerance: Some(Duration::from_secs(3600)),
        ..Options::default()
    };
    let r = verify(&tmp.path().join("store"), &trust, &lenient).await;
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!(r.timestamps.horizon.as_ref().unwrap().size, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anchor_binary_stores_tokens_the_verify_binary_accepts() {
    let h = Harness::start().await;
    let tsa = TestTsa::start("Sealtrail test TSA").await.unwrap();
    let trust = with_tsa(&h.trust, &tsa);
    let trust_file = h.dir.path().join("trust.json");
    std::fs::write(&trust_file, trust.bundle().to_json()).unwrap();
    replay(&h, &event_lines(), 50).await;
    let size = h.tree_size().await;
    let mut child = signer_command()
        .arg("anchor")
        .arg("--store")
        .arg(&h.store_dir)
        .arg("--trust")
        .arg(&trust_file)
        .arg("--tsa")
        .arg(format!("{TSA}={}", tsa.url()))
        .args(["--tsa-interval", "1"])
        .spawn()
        .unwrap();
    let store = h.store();
    let mut found = Vec::new();
    for _ in 0..100 {
        found = tokens(&store).await;
        if found.iter().any(|t| t.1 == size) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        found.iter().any(|t| t.1 == size),
        "no token for size {size}"
    );
    let out = std::process::Command::new(binary("sealtrail-verify"))
        .arg("verify")
        .arg("--store")
        .arg(&h.store_dir)
        .arg("--trust")
        .arg(&trust_file)
        .args([
            "--untimestamped-after",
            "0s",
            "--late-after",
            "off",
            "--no-duplicate-check",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("timestamped up to checkpoint {size}")),
        "{text}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_judge_new_tokens_and_carry_the_horizon() {
    let h = Harness::start().await;
    let tsa = TestTsa::start("Sealtrail test TSA").await.unwrap();
    let trust = with_tsa(&h.trust, &tsa);
    let store: Arc<dyn ObjectStore> = Arc::new(h.store());
    let lines = event_lines();
    let (a, rest) = lines.split_at(lines.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);

    // A first run before any token: its state has no horizon.
    replay(&h, a, 40).await;
    let first = h.tree_size().await;
    let r = verify(&h.store_dir, &trust, &Options::default()).await;
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    let state = r.state.unwrap();
    assert!(state.timestamped.is_none());

    // A token on an older checkpoint, which a resumed run does not hold (its segment is
    // not re-read): not judged, no finding.
    let oldest = std::fs::read(&segments(&h.store_dir)[0]).unwrap();
    let cp0 = segment::parse_header(&oldest).unwrap().0.checkpoint;
    assert!(
        cp0.checkpoint.size < first,
        "the first replay made several checkpoints"
    );
    let key0 = stamp(&h.store_dir, &tsa, &cp0);
    let resumed = Options {
        state: Some(state.clone()),
        ..Options::default()
    };
    let r = verify(&h.store_dir, &trust, &resumed).await;
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!((r.timestamps.tokens, r.timestamps.valid), (1, 0));
    std::fs::remove_file(h.store_dir.join(&key0)).unwrap();

    // The anchor stamps the checkpoint that run verified, then a later one.
    let (metrics, stop) = start_anchor(store.clone(), &trust, &tsa.url(), Duration::from_secs(60));
    wait_anchored(&metrics, first).await;
    replay(&h, b, 40).await;
    let second = h.tree_size().await;
    wait_anchored(&metrics, second).await;
    let resumed = Options {
        state: Some(state),
        ..Options::default()
    };
    let r = verify(&h.store_dir, &trust, &resumed).await;
    // The token on the first run's checkpoint is judged against the checkpoint the state
    // remembers (its segment is not re-read); the later one sets the horizon.
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!((r.timestamps.tokens, r.timestamps.valid), (2, 2));
    let horizon = r.timestamps.horizon.clone().unwrap();
    assert_eq!(horizon.size, second);
    let state = r.state.unwrap();
    assert_eq!(state.timestamped.as_ref(), Some(&horizon));

    // The next run reads only the tokens from the horizon on, and carries it while the
    // anchor is stopped.
    drop(stop);
    replay(&h, c, 40).await;
    let third = h.tree_size().await;
    let resumed = Options {
        state: Some(state),
        ..Options::default()
    };
    let r = verify(&h.store_dir, &trust, &resumed).await;
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!(r.timestamps.skipped, 1);
    assert_eq!(r.timestamps.horizon.as_ref(), Some(&horizon));
    assert_eq!(r.timestamps.untimestamped_leaves, third - second);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_the_anchor_stores_tokens_under_compliance_lock() {
    let moto = MotoServer::start().expect("starting moto (run scripts/test)");
    let client = s3_client(&moto.endpoint).await;
    let s3 = lock_bucket_store(
        &client,
        &moto.endpoint,
        "anchor-lock",
        Duration::from_secs(86_400),
    )
    .await;
    let store: Arc<dyn ObjectStore> = s3.clone();
    let tsa = TestTsa::start("Sealtrail test TSA").await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let now = now_ms();
    let (trust, cps) = trail_into(
        store.as_ref(),
        tmp.path(),
        "sealtrail.test/s3",
        &[now - 2000, now - 1000],
    )
    .await;
    let trust = with_tsa(&trust, &tsa);
    let (metrics, stop) = start_anchor(store.clone(), &trust, &tsa.url(), Duration::from_secs(60));
    wait_anchored(&metrics, 6).await;
    drop(stop);
    let key = timestamp::object_key("", 6, &cps[1].hash(), TSA);
    let lock = store.retention(&key).await.unwrap();
    assert_eq!(lock.mode, RetentionMode::Compliance);
    let until = lock.retain_until.unwrap();
    assert!(
        until > SystemTime::now() + Duration::from_secs(23 * 3600),
        "{until:?}"
    );
    let token = store.get(&key).await.unwrap();
    assert!(tsa.openssl_verifies(&token, &cps[1].hash()));
    let r = verify_store(store.as_ref(), &trust, &Options::default())
        .await
        .unwrap();
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!(r.timestamps.horizon.as_ref().unwrap().size, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anchor_stores_no_token_dated_before_its_checkpoint() {
    // A signer clock 10 minutes ahead: the TSA's time is before the checkpoint's by more
    // than the verifier's tolerance, so the anchor refuses the token instead of storing
    // what verify would call time_inconsistent.
    let tsa = TestTsa::start("Sealtrail test TSA").await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (trust, _) = trail_at(
        tmp.path(),
        "sealtrail.test/ahead-anchor",
        &[now_ms() + 600_000],
    )
    .await;
    let trust = with_tsa(&trust, &tsa);
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalDirStore::open(tmp.path().join("store")).unwrap());
    let (metrics, stop) = start_anchor(store.clone(), &trust, &tsa.url(), Duration::from_secs(60));
    let refused = format!("sealtrail_anchor_failures_total{{tsa=\"{TSA}\",reason=\"refused\"}}");
    for _ in 0..100 {
        if metric(&metrics.encode(), &refused).unwrap_or(0.0) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stop);
    assert!(
        metric(&metrics.encode(), &refused).unwrap_or(0.0) >= 1.0,
        "{}",
        metrics.encode()
    );
    assert!(tokens(store.as_ref()).await.is_empty());
    assert_eq!(tsa_metric(&metrics, "anchored_size"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_is_not_dated_by_the_token_on_the_tree_it_repeats() {
    // The token stamps checkpoint 6; a rotation of size 6, signed two minutes after the
    // TSA's time, repeats that tree. It is not covered by that token (it dates the other
    // note), so it is no time_inconsistent; a later checkpoint's token would bound it.
    let tsa = TestTsa::start("Sealtrail test TSA").await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let origin = "sealtrail.test/rotation";
    let now = now_ms();
    let (trust, cps) = trail_at(tmp.path(), origin, &[now - 2000, now - 1000]).await;
    let trust = with_tsa(&trust, &tsa);
    let store_dir = tmp.path().join("store");
    let last = &cps[1];
    stamp(&store_dir, &tsa, last);

    let old = DevKeyFile::load(&tmp.path().join("k.pem"), true).unwrap();
    let new_path = tmp.path().join("k2.pem");
    let new_public = DevKeyFile::generate(&new_path, Algorithm::Ed25519).unwrap();
    let new = DevKeyFile::load(&new_path, true).unwrap();
    let rotation = Checkpoint {
        time_ms: now + 120_000,
        prev: Some(last.hash()),
        new_key: Some(new_public),
        ..last.checkpoint.clone()
    };
    let text = rotation.to_text();
    let mut signatures = Vec::new();
    for k in [&old, &new] {
        signatures.push(NoteSignature {
            name: origin.into(),
            key_id: k.public_key().key_id(origin),
            signature: k.sign(&text).await.unwrap(),
        });
    }
    let rotation = SignedCheckpoint::new(rotation, signatures).unwrap();
    put(
        &store_dir,
        &sealtrail_core::checkpoint::object_key("", &rotation),
        &rotation.to_bytes(),
    );
    let r = verify(&store_dir, &trust, &Options::default()).await;
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!(r.timestamps.horizon.as_ref().unwrap().size, 6);
}
