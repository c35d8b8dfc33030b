//! The 222 real events through the whole path into S3 Object Lock (moto server): stored
//! as locked segments, undeletable and not overwritable, and verified from the bucket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use sealtrail_store::{ObjectStore, RetentionMode};
use sealtrail_tests::moto::{MotoServer, s3_client};

const RETENTION: Duration = Duration::from_secs(3 * 86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_events_into_object_lock_and_verified_from_the_bucket() {
    let moto = MotoServer::start().unwrap();
    let client = s3_client(&moto.endpoint).await;
    let store = lock_bucket_store(&client, &moto.endpoint, "audit-trail", RETENTION).await;
    store.check_object_lock().await.unwrap();

    let h = Harness::start_full(
        sealtrail_ingester::DEFAULT_MAX_BODY_BYTES,
        None,
        Some((store.clone(), "cluster-1/".into())),
    )
    .await;
    replay(&h, &event_lines(), 400).await;
    assert_eq!(h.tree_size().await, 222);

    let objects = store.list("cluster-1/").await.unwrap();
    assert!(!objects.is_empty());
    let now = SystemTime::now();
    for o in &objects {
        let r = store.retention(&o.key).await.unwrap();
        assert_eq!(r.mode, RetentionMode::Compliance, "{}", o.key);
        let until = r.retain_until.unwrap();
        assert!(
            until > now + RETENTION - Duration::from_secs(600),
            "{}",
            o.key
        );
    }

    // Deleting a locked version is refused; an overwrite through the store is refused.
    let first = &objects[0].key;
    let version = store.retention(first).await.unwrap().version_id.unwrap();
    let del = client
        .delete_object()
        .bucket("audit-trail")
        .key(first)
        .version_id(&version)
        .send()
        .await;
    assert!(del.is_err(), "a locked version was deleted");
    assert!(matches!(
        store.put_new(first, b"forged").await,
        Err(sealtrail_store::StoreError::Conflict(_))
    ));

    // The verifier, reading only the bucket and the trust bundle, finds it intact.
    let report = sealtrail_verifier::verify_store(
        store.as_ref(),
        &h.trust,
        &sealtrail_verifier::Options {
            prefix: "cluster-1/".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(report.intact(), "{}", report.summary());
    assert_eq!(report.events_verified, 222);

    // And the sealtrail-verify binary, as an auditor runs it against the bucket.
    let trust = h.dir.path().join("trust.json");
    std::fs::write(&trust, h.trust.bundle().to_json()).unwrap();
    let out = std::process::Command::new(binary("sealtrail-verify"))
        .args([
            "verify",
            "--store",
            "s3://audit-trail/cluster-1/",
            "--s3-path-style",
        ])
        .args(["--s3-endpoint", &moto.endpoint, "--s3-region", "us-east-1"])
        .args(["--late-after", "off", "--no-duplicate-check", "--json"])
        .arg("--trust")
        .arg(&trust)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["events_verified"], 222);
    h.shutdown().await;
}
