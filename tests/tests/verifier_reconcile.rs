//! `reconcile`: the events the apiserver's log-file backend wrote but the webhook path
//! dropped are listed, and nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::*;
use sealtrail_core::event::parse_event_line;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_events_are_listed() {
    let h = Harness::start().await;
    let lines = event_lines();
    // The webhook path "drops" five events: the trail gets the rest.
    let dropped = [3usize, 50, 100, 150, 200];
    let kept: Vec<Vec<u8>> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| !dropped.contains(i))
        .map(|(_, l)| l.clone())
        .collect();
    replay(&h, &kept, 400).await;

    // What should be reported: dropped events whose digest and (auditID, stage) the kept
    // ones do not share (the sample holds a few events captured twice).
    let kept_events: Vec<_> = kept.iter().map(|l| parse_event_line(l).unwrap()).collect();
    let digests: HashSet<_> = kept_events.iter().map(|e| e.leaf_hash).collect();
    let ids: HashSet<_> = kept_events
        .iter()
        .map(|e| (e.audit_id.clone(), e.stage.clone()))
        .collect();
    let want: Vec<usize> = dropped
        .iter()
        .filter(|&&i| {
            let e = parse_event_line(&lines[i]).unwrap();
            !digests.contains(&e.leaf_hash) && !ids.contains(&(e.audit_id, e.stage))
        })
        .map(|i| i + 1)
        .collect();
    assert!(want.len() >= 3, "the sample should make most drops visible");

    let log: Vec<u8> = lines
        .iter()
        .flat_map(|l| [l.as_slice(), b"\n"].concat())
        .collect();
    let report = sealtrail_verifier::reconcile::reconcile(&h.store(), "", &log)
        .await
        .unwrap();
    let got: Vec<usize> = report.missing.iter().map(|m| m.line).collect();
    assert_eq!(got, want, "{}", report.summary());
    assert_eq!(report.log_events, 222);
    assert_eq!(report.stored_events, 217);
    assert!(report.unreadable.is_empty());

    // The CLI says the same and exits 1.
    let log_path = h.dir.path().join("audit.log");
    std::fs::write(&log_path, &log).unwrap();
    let out = std::process::Command::new(binary("sealtrail-verify"))
        .args(["reconcile", "--json", "--apiserver-log"])
        .arg(&log_path)
        .arg("--store")
        .arg(&h.store_dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["missing"].as_array().unwrap().len(), want.len());
    h.shutdown().await;
}
