//! Group commit: concurrent Appends share checkpoint signatures, and the signature rate
//! stays within its bound (a token bucket) whatever the append rate; a light load is
//! signed batch by batch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealtrail_core::keys::Algorithm;
use sealtrail_core::merkle;
use sealtrail_signer::state::State;
use sealtrail_signer::{CommitConfig, DevKeyFile, KeyBackend, Log};

const ORIGIN: &str = "sealtrail.test/group-commit";

async fn start(dir: &std::path::Path, rate: f64, burst: u32) -> Log {
    let path = dir.join("dev.key");
    DevKeyFile::generate(&path, Algorithm::Ed25519).unwrap();
    let key: Arc<dyn KeyBackend> = Arc::new(DevKeyFile::load(&path, true).unwrap());
    let config = CommitConfig {
        min_interval: Duration::ZERO,
        max_signatures_per_second: rate,
        signature_burst: burst,
        ..CommitConfig::default()
    };
    let log = Log::start(
        State::open(&dir.join("state")).unwrap(),
        ORIGIN,
        key,
        config,
    )
    .unwrap();
    log.wait_started().await.unwrap();
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signature_rate_is_bounded_whatever_the_append_rate() {
    let dir = tempfile::tempdir().unwrap();
    let (rate, burst) = (20.0, 5);
    let log = start(dir.path(), rate, burst).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut sizes = Vec::new();
            let mut n = 0u64;
            while started.elapsed() < Duration::from_millis(1500) {
                let leaves = (0..10)
                    .map(|i| merkle::leaf_hash(format!("{t}-{n}-{i}").as_bytes()))
                    .collect();
                sizes.push(log.append(leaves).await.unwrap().checkpoint.checkpoint.size);
                n += 1;
            }
            (sizes, n * 10)
        }));
    }
    let mut signed = BTreeSet::new();
    let mut leaves = 0;
    for t in tasks {
        let (sizes, n) = t.await.unwrap();
        signed.extend(sizes);
        leaves += n;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let signatures = signed.len() as f64;
    // Never more than the bucket allows over the time it ran (measured, so a slow machine
    // only loosens it)...
    assert!(
        signatures <= f64::from(burst) + rate * elapsed + 1.0,
        "{signatures} signatures in {elapsed:.2} s"
    );
    // ...and the appends were grouped to stay within it.
    assert!(
        leaves as f64 / signatures >= 20.0,
        "{leaves} leaves, {signatures} signatures"
    );
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_light_load_is_signed_batch_by_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = start(dir.path(), 10.0, 20).await;
    let mut sizes = BTreeSet::new();
    for n in 0..5 {
        let leaves = vec![merkle::leaf_hash(format!("light-{n}").as_bytes())];
        sizes.insert(log.append(leaves).await.unwrap().checkpoint.checkpoint.size);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sizes.len(), 5, "{sizes:?}");
    log.close().await;
}

#[tokio::test]
async fn unusable_budgets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.key");
    DevKeyFile::generate(&path, Algorithm::Ed25519).unwrap();
    let key: Arc<dyn KeyBackend> = Arc::new(DevKeyFile::load(&path, true).unwrap());
    for (rate, burst, ok) in [
        (1e-20, 20, false),
        (f64::NAN, 20, false),
        (-1.0, 20, false),
        (f64::INFINITY, 20, false),
        (10.0, 0, false),
        (0.0, 20, true),
        (0.5, 1, true),
    ] {
        let config = CommitConfig {
            max_signatures_per_second: rate,
            signature_burst: burst,
            ..CommitConfig::default()
        };
        let state = State::open(&dir.path().join(format!("state-{rate}-{burst}"))).unwrap();
        let log = Log::start(state, ORIGIN, key.clone(), config);
        assert_eq!(log.is_ok(), ok, "rate {rate}, burst {burst}");
        if let Ok(log) = log {
            log.close().await;
        }
    }
}
