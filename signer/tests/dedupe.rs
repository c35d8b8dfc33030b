//! The dedupe window: a re-sent Append gets its original indexes, checkpoint and proofs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sealtrail_core::keys::Algorithm;
use sealtrail_core::merkle::{self, Hash};
use sealtrail_signer::log::Appended;
use sealtrail_signer::state::State;
use sealtrail_signer::{CommitConfig, DevKeyFile, KeyBackend, Log};

const ORIGIN: &str = "sealtrail.test/dedupe";

fn key(dir: &Path) -> Arc<dyn KeyBackend> {
    let path = dir.join("dev.key");
    if !path.exists() {
        DevKeyFile::generate(&path, Algorithm::Ed25519).unwrap();
    }
    Arc::new(DevKeyFile::load(&path, true).unwrap())
}

fn config(window: u64) -> CommitConfig {
    CommitConfig {
        min_interval: Duration::ZERO,
        max_signatures_per_second: 0.0,
        dedupe_window: window,
        ..CommitConfig::default()
    }
}

async fn start(dir: &Path, window: u64) -> Log {
    let state = State::open(&dir.join("state")).unwrap();
    let log = Log::start(state, ORIGIN, key(dir), config(window)).unwrap();
    log.wait_started().await.unwrap();
    log
}

fn leaves(tag: &str, n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| merkle::leaf_hash(format!("{tag}-{i}").as_bytes()))
        .collect()
}

fn size(log: &Log) -> u64 {
    log.latest().unwrap().map_or(0, |c| c.checkpoint.size)
}

fn assert_same(a: &Appended, b: &Appended) {
    assert_eq!(a.first_index, b.first_index);
    assert_eq!(a.checkpoint.to_bytes(), b.checkpoint.to_bytes());
    assert_eq!(a.proofs, b.proofs);
}

fn assert_valid(a: &Appended, leaves: &[Hash]) {
    let cp = &a.checkpoint.checkpoint;
    for (i, (leaf, proof)) in leaves.iter().zip(&a.proofs).enumerate() {
        merkle::verify_inclusion(a.first_index + i as u64, cp.size, leaf, proof, &cp.root).unwrap();
    }
}

#[tokio::test]
async fn a_resent_append_gets_its_original_answer_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = start(dir.path(), 1_000).await;
    let (a, b, c) = (leaves("a", 3), leaves("b", 2), leaves("c", 5));
    let first_a = log.append(a.clone()).await.unwrap();
    let first_b = log.append(b.clone()).await.unwrap();
    let first_c = log.append(c.clone()).await.unwrap();
    assert_eq!(size(&log), 10);

    for (req, first) in [(&a, &first_a), (&b, &first_b), (&c, &first_c)] {
        let again = log.append(req.clone()).await.unwrap();
        assert_same(first, &again);
        assert_valid(&again, req);
    }
    // The original checkpoint, not the newest one: a's was of size 3.
    assert_eq!(first_a.checkpoint.checkpoint.size, 3);
    assert_eq!(size(&log), 10, "no new leaves");

    log.close().await;
    let log = start(dir.path(), 1_000).await;
    for (req, first) in [(&a, &first_a), (&b, &first_b), (&c, &first_c)] {
        assert_same(first, &log.append(req.clone()).await.unwrap());
    }
    assert_eq!(size(&log), 10);
    // A new append still goes on at 10.
    assert_eq!(log.append(leaves("d", 1)).await.unwrap().first_index, 10);
    log.close().await;
}

#[tokio::test]
async fn part_of_a_batch_or_another_order_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let log = start(dir.path(), 1_000).await;
    let a = leaves("a", 4);
    log.append(a.clone()).await.unwrap();
    // A sub-range is consecutive and in order: the same leaves, answered as such.
    let sub = log.append(a[1..3].to_vec()).await.unwrap();
    assert_eq!(sub.first_index, 1);
    assert_eq!(sub.checkpoint.checkpoint.size, 4);
    // Half known.
    let mut half = a[2..].to_vec();
    half.extend(leaves("new", 2));
    let r = log.append(half.clone()).await.unwrap();
    assert_eq!(r.first_index, 4);
    assert_valid(&r, &half);
    // Reordered: appended.
    let rev: Vec<Hash> = a.iter().rev().copied().collect();
    assert_eq!(log.append(rev).await.unwrap().first_index, 8);
    // Repeated leaves inside one request still deduplicate exactly.
    let rep = vec![a[0], a[0], a[1]];
    let first = log.append(rep.clone()).await.unwrap();
    assert_eq!(first.first_index, 12);
    assert_same(&first, &log.append(rep).await.unwrap());
    assert_eq!(size(&log), 15);
    log.close().await;
}

#[tokio::test]
async fn window_zero_disables_and_old_leaves_leave_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let log = start(dir.path(), 0).await;
    let a = leaves("a", 2);
    assert_eq!(log.append(a.clone()).await.unwrap().first_index, 0);
    assert_eq!(log.append(a.clone()).await.unwrap().first_index, 2);
    log.close().await;

    let dir = tempfile::tempdir().unwrap();
    let log = start(dir.path(), 3).await;
    for i in 0..5 {
        log.append(leaves(&format!("x{i}"), 1)).await.unwrap();
    }
    // Leaves 2, 3, 4 are in the window; 0 and 1 are not.
    assert_eq!(log.append(leaves("x4", 1)).await.unwrap().first_index, 4);
    assert_eq!(log.append(leaves("x2", 1)).await.unwrap().first_index, 2);
    assert_eq!(log.append(leaves("x0", 1)).await.unwrap().first_index, 5);
    log.close().await;
    // After a restart the window is the last 3 leaves again (3, 4, 5 = x0).
    let log = start(dir.path(), 3).await;
    assert_eq!(log.append(leaves("x0", 1)).await.unwrap().first_index, 5);
    assert_eq!(log.append(leaves("x2", 1)).await.unwrap().first_index, 6);
    log.close().await;
}
