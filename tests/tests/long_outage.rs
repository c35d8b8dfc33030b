//! 150 s outages with the apiserver's real retry policy, unscaled (10 s, ×1.5, 5 attempts:
//! it gives a batch up after ~80 s): the signer stopped, the object store unreachable (a
//! TCP proxy in front of moto switched off), and both at once. One batch a second of up to
//! 50 real events stamped as live traffic. Every batch is acknowledged (none dropped by the
//! emulator), every event is in the log exactly once after the outage, the trail verifies,
//! and the events delayed by the outage are not reported as late.
//!
//! The three run concurrently in one test, so the suite pays about 3.5 minutes for them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use sealtrail_tests::emulator::{self, RetryPolicy};
use sealtrail_verifier::{Options, verify_store};

/// Seconds of traffic before the outage, of the outage, and after it.
const BEFORE: u64 = 15;
const OUTAGE: u64 = 150;
const AFTER: u64 = 20;
const EVENTS_PER_BATCH: usize = 50;

async fn outage(signer: bool, store: bool) -> String {
    let ProxiedS3 {
        moto: _moto,
        proxy,
        mut h,
        reader,
    } = ProxiedS3::start().await;
    let batches = (BEFORE + OUTAGE + AFTER) as usize;
    // One apiVersion, so that every batch is full (the apiserver batches by version).
    let v1 = v1_lines();
    let lines = emulator::repeat_events(&v1, batches * EVENTS_PER_BATCH / v1.len() + 1)
        .unwrap()
        .into_iter()
        .take(batches * EVENTS_PER_BATCH)
        .collect::<Vec<_>>();
    let mut cfg = h.emulator_config(EVENTS_PER_BATCH);
    cfg.retry = RetryPolicy::default();
    cfg.timeout = Duration::from_secs(30);
    cfg.qps = Some(1.0);
    cfg.burst = 1;
    cfg.restamp = true;
    let replay = tokio::spawn(async move { emulator::run(&cfg, &lines).await.unwrap() });

    tokio::time::sleep(Duration::from_secs(BEFORE)).await;
    if signer {
        h.stop_signer().await;
    }
    if store {
        proxy.off();
    }
    tokio::time::sleep(Duration::from_secs(OUTAGE)).await;
    let (_, mid) = http_get(h.ingester_metrics_addr.unwrap(), "/metrics").await;
    if signer {
        h.start_signer().await;
    }
    if store {
        proxy.on();
    }
    let report = replay.await.unwrap();
    let what = format!("signer down: {signer}, store down: {store}");
    assert_eq!(report.batches_dropped, 0, "{what}: {}", report.summary());
    assert_eq!(
        report.status_counts.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "{what}: every attempt acknowledged: {}",
        report.summary()
    );
    let pending = metric(&mid, "sealtrail_ingester_pending_batches").unwrap();
    assert!(
        pending >= (OUTAGE - 10) as f64,
        "{what}: the batches of the outage waited for sealing ({pending})"
    );
    let drained = std::time::Instant::now();
    h.wait_sealed().await;
    let drain = drained.elapsed();
    let sent = report.events_sent;
    assert_eq!(h.tree_size().await, sent, "{what}: every event once");
    let r = verify_store(
        &reader,
        &h.trust,
        &Options {
            prefix: PROXIED_PREFIX.into(),
            signer: Some(signer_of(&h)),
            // The sample holds a few events captured twice; exactly-once is the tree size.
            // Shorter than the outage: an outage is not backdating.
            late_after: Some(Duration::from_secs(60)),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    assert!(r.intact(), "{what}: {}", r.summary());
    assert_eq!(r.events_verified, sent);
    let delay = r.sealing.seal_delay_max_s.unwrap();
    if signer {
        assert!(
            delay > (OUTAGE - 20) as f64,
            "{what}: the sealing delay shows the outage ({delay} s)"
        );
    }
    h.shutdown().await;
    format!(
        "{what}: {sent} events in {} batches acknowledged, 0 dropped; sealed {:.1} s after the \
         outage ended; sealing delay max {delay:.0} s",
        report.batches_ok,
        drain.as_secs_f64()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_of_150_s_lose_nothing() {
    let (a, b, c) = tokio::join!(outage(true, false), outage(false, true), outage(true, true));
    println!("{a}\n{b}\n{c}");
}
