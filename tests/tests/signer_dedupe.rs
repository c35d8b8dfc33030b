//! The apiserver re-sends a batch whose answer was lost: the signer's dedupe window gives
//! the ingester the original indexes and checkpoint, so it re-creates the very same segment
//! object (no new key, no new leaves) and the trail stays intact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Harness, event_lines, replay, walk};
use sealtrail_tests::emulator;

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    walk(dir)
        .into_iter()
        .filter(|p| !p.starts_with(dir.join(".tmp")))
        .map(|p| (common::key_of(dir, &p), std::fs::read(&p).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_batch_changes_nothing_and_the_trail_verifies() {
    let mut h = Harness::start().await;
    let lines = event_lines();
    replay(&h, &lines, 50).await;
    assert_eq!(h.tree_size().await, 222);
    let before = snapshot(&h.store_dir);
    assert!(!before.is_empty());

    let bodies = emulator::build_batches(&lines, 50).unwrap();
    assert!(bodies.len() >= 3);
    let client = emulator::client(&h.emulator_config(50)).unwrap();
    // An early batch (its checkpoint is not the newest) and the last one.
    for body in [&bodies[1], bodies.last().unwrap()] {
        let status = emulator::send_body(&client, &h.webhook_url(), body.clone())
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!(h.tree_size().await, 222, "no new leaves");
    assert_eq!(snapshot(&h.store_dir), before, "exactly the same objects");

    // Also after a signer restart (the window is rebuilt from the state).
    h.stop_signer().await;
    h.start_signer().await;
    let status = emulator::send_body(&client, &h.webhook_url(), bodies[0].clone())
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(h.tree_size().await, 222);
    assert_eq!(snapshot(&h.store_dir), before);

    let r = h.verify_dir(&h.store_dir).await;
    assert!(r.intact(), "{}", r.summary());
    assert_eq!(r.events_verified, 222);
    h.shutdown().await;
}
