//! The verifier's checks beyond integrity: (auditID, stage) stored twice, backdated
//! events, the S3 Object Lock of each segment; the metrics file, the state file and the
//! exit codes of the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use common::*;
use sealtrail_core::segment;
use sealtrail_store::{
    BoxFuture, LocalDirStore, ObjectInfo, ObjectRetention, ObjectStore, PutOutcome, RetentionMode,
    StoreError,
};
use sealtrail_verifier::{FindingKind, ObjectLockPolicy, Options, metrics, verify_store};
use time::format_description::well_known::Rfc3339;

fn event(id: &str, stage: &str, at: time::OffsetDateTime) -> Vec<u8> {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"{stage}","requestURI":"/api/v1/pods","verb":"list","user":{{"username":"alice"}},"sourceIPs":["10.0.0.1"],"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}"}}"#,
        t = at.format(&Rfc3339).unwrap()
    )
    .into_bytes()
}

/// Index and key of the stored event with this auditID and stage (the n-th such).
fn find(dir: &std::path::Path, id: &str, nth: usize) -> (u64, String) {
    let mut found = Vec::new();
    for file in segments(dir) {
        let bytes = std::fs::read(&file).unwrap();
        let (_, body) = segment::parse_header(&bytes).unwrap();
        for (_, rec) in segment::records(body) {
            let rec = rec.unwrap();
            if rec.audit_id.as_deref() == Some(id) {
                found.push((rec.index, key_of(dir, &file)));
            }
        }
    }
    found.sort();
    found[nth].clone()
}

/// Fresh events, one of them sent twice (a retried batch that reached the log twice) and
/// one backdated by two hours: exactly one `duplicate_audit_event` (the second copy) and
/// one `late_event`, located.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_backdated_events_are_reported() {
    let h = Harness::start().await;
    let now = time::OffsetDateTime::now_utc();
    let mut lines: Vec<Vec<u8>> = (0..20)
        .map(|i| event(&format!("fresh-{i:02}"), "ResponseComplete", now))
        .collect();
    lines.push(event("fresh-07", "ResponseComplete", now));
    // Same auditID, another stage: not a duplicate.
    lines.push(event("fresh-08", "RequestReceived", now));
    lines.push(event(
        "backdated",
        "ResponseComplete",
        now - time::Duration::hours(2),
    ));
    replay(&h, &lines[..12], 5).await;
    replay(&h, &lines[12..], 5).await;

    let options = Options {
        check_duplicates: true,
        late_after: Some(Duration::from_secs(3600)),
        ..Options::default()
    };
    let r = verify_store(&h.store(), &h.trust, &options).await.unwrap();
    assert_eq!(r.findings.len(), 2, "{}", r.summary());
    let (dup_index, dup_key) = find(&h.store_dir, "fresh-07", 1);
    let (late_index, late_key) = find(&h.store_dir, "backdated", 0);
    let dup = r
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::DuplicateAuditEvent)
        .unwrap();
    assert_eq!(dup.index, Some(dup_index));
    assert_eq!(dup.object.as_deref(), Some(dup_key.as_str()));
    let late = r
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::LateEvent)
        .unwrap();
    assert_eq!(late.index, Some(late_index));
    assert_eq!(late.object.as_deref(), Some(late_key.as_str()));
    // Advisory findings do not stop the state from advancing.
    assert!(r.state.is_some());
    let newest = r.last_event_time.unwrap();
    assert!(
        (newest - now.unix_timestamp() as f64).abs() < 2.0,
        "{newest}"
    );

    // A 3 h threshold accepts the 2 h old event.
    let r = verify_store(
        &h.store(),
        &h.trust,
        &Options {
            late_after: Some(Duration::from_secs(3 * 3600)),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    assert!(r.intact(), "{}", r.summary());
    h.shutdown().await;
}

/// A directory store that reports lock states as HeadObject would, by key (the S3 call
/// itself is `S3Store::retention`, exercised against moto by the S3 tests).
struct Locks {
    inner: LocalDirStore,
    locks: HashMap<String, ObjectRetention>,
}

impl ObjectStore for Locks {
    fn put_new<'a>(
        &'a self,
        key: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        self.inner.put_new(key, bytes)
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
    fn retention<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ObjectRetention, StoreError>> {
        let r = self
            .locks
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.to_string()));
        Box::pin(async move { r })
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// An object without a lock, one locked too briefly, one in GOVERNANCE mode: each is
/// reported with its kind and key, nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_lock_findings() {
    let h = Harness::start().await;
    replay(&h, &event_lines()[..60], 10).await;
    let segs = segments(&h.store_dir);
    assert!(segs.len() >= 4);
    let day = Duration::from_secs(86_400);
    let lock = |mode: Option<RetentionMode>, days: u64| ObjectRetention {
        mode: mode.unwrap_or(RetentionMode::None),
        retain_until: mode.map(|_| SystemTime::now() + day * days as u32),
        version_id: Some("v1".into()),
    };
    let mut locks: HashMap<String, ObjectRetention> = segs
        .iter()
        .map(|p| {
            (
                key_of(&h.store_dir, p),
                lock(Some(RetentionMode::Compliance), 400),
            )
        })
        .collect();
    let keys: Vec<String> = segs.iter().map(|p| key_of(&h.store_dir, p)).collect();
    locks.insert(keys[0].clone(), lock(None, 0));
    locks.insert(keys[1].clone(), lock(Some(RetentionMode::Compliance), 30));
    locks.insert(keys[2].clone(), lock(Some(RetentionMode::Governance), 400));
    let store = Locks {
        inner: h.store(),
        locks,
    };
    let policy = |require_compliance| ObjectLockPolicy {
        min_retention: day * 365,
        require_compliance,
    };
    let r = verify_store(
        &store,
        &h.trust,
        &Options {
            object_lock: Some(policy(true)),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let mut got: Vec<(FindingKind, String)> = r
        .findings
        .iter()
        .map(|f| (f.kind, f.object.clone().unwrap()))
        .collect();
    got.sort();
    let mut want = vec![
        (FindingKind::NotLocked, keys[0].clone()),
        (FindingKind::RetentionTooShort, keys[1].clone()),
        (FindingKind::GovernanceMode, keys[2].clone()),
    ];
    want.sort();
    assert_eq!(got, want, "{}", r.summary());

    // GOVERNANCE accepted when COMPLIANCE is not required.
    let r = verify_store(
        &store,
        &h.trust,
        &Options {
            object_lock: Some(policy(false)),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(r.findings.len(), 2, "{}", r.summary());
    assert!(
        r.findings
            .iter()
            .all(|f| f.kind != FindingKind::GovernanceMode)
    );
    h.shutdown().await;
}

/// The CLI end to end: `--signer`, `--state`, `--metrics-file`, exit codes 0, 1 and 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_with_signer_state_and_metrics() {
    let h = Harness::start().await;
    let now = time::OffsetDateTime::now_utc();
    let lines: Vec<Vec<u8>> = (0..30)
        .map(|i| event(&format!("cli-{i:02}"), "ResponseComplete", now))
        .collect();
    replay(&h, &lines, 10).await;
    let trust = h.dir.path().join("trust.json");
    std::fs::write(&trust, h.trust.bundle().to_json()).unwrap();
    let state = h.dir.path().join("state.json");
    let metrics_file = h.dir.path().join("audit.prom");
    let run = |store: &std::path::Path| {
        let out = std::process::Command::new(binary("sealtrail-verify"))
            .arg("verify")
            .arg("--store")
            .arg(store)
            .arg("--trust")
            .arg(&trust)
            .arg("--signer")
            .arg(format!("https://{}", h.signer_addr()))
            .arg("--signer-ca")
            .arg(&h.pki.ca_cert)
            .arg("--signer-cert")
            .arg(&h.pki.verifier_client_cert)
            .arg("--signer-key")
            .arg(&h.pki.verifier_client_key)
            .args(["--signer-server-name", "localhost"])
            .arg("--state")
            .arg(&state)
            .arg("--metrics-file")
            .arg(&metrics_file)
            .arg("--json")
            .output()
            .unwrap();
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (
            out.status.code(),
            report,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, report, err) = run(&h.store_dir);
    assert_eq!(code, Some(0), "{report} {err}");
    assert!(state.exists());
    let prom = std::fs::read_to_string(&metrics_file).unwrap();
    assert!(prom.contains(&format!(
        "audit_chain_verification_status{{origin=\"{ORIGIN}\"}} 1\n"
    )));
    assert!(prom.contains(&format!(
        "audit_last_verified_size{{origin=\"{ORIGIN}\"}} 30\n"
    )));
    assert!(prom.contains(&format!(
        "audit_verification_findings{{origin=\"{ORIGIN}\",kind=\"missing_events\"}} 0\n"
    )));
    assert!(prom.contains(&format!(
        "audit_last_event_timestamp{{origin=\"{ORIGIN}\"}} {}",
        now.unix_timestamp()
    )));

    // The newest segment deleted from a copy: exit 1, the state stays where it was.
    let before = std::fs::read(&state).unwrap();
    let dir = h.dir.path().join("cut");
    copy_store(&h.store_dir, &dir);
    let last = segments(&dir).pop().unwrap();
    std::fs::remove_file(&last).unwrap();
    let (code, report, err) = run(&dir);
    assert_eq!(code, Some(1), "{report} {err}");
    let kinds: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["missing_events"], "{report}");
    assert_eq!(std::fs::read(&state).unwrap(), before);
    let prom = std::fs::read_to_string(&metrics_file).unwrap();
    assert!(prom.contains(&format!(
        "audit_chain_verification_status{{origin=\"{ORIGIN}\"}} 0\n"
    )));
    assert!(prom.contains(&format!(
        "audit_verification_findings{{origin=\"{ORIGIN}\",kind=\"missing_events\"}} 1\n"
    )));

    // A store that is not there: exit 2.
    let (code, _, _) = run(&h.dir.path().join("nowhere"));
    assert_eq!(code, Some(2));

    // --help documents the exit codes.
    let help = std::process::Command::new(binary("sealtrail-verify"))
        .args(["verify", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("Exit codes:") && help.contains("could not be completed"),
        "{help}"
    );
    h.shutdown().await;
}

#[test]
fn metrics_text_lists_every_kind() {
    let r = sealtrail_verifier::Report {
        origin: ORIGIN.into(),
        tree_size: 7,
        ..Default::default()
    };
    let text = metrics::render(&r);
    for k in metrics::ALL_KINDS {
        assert!(
            text.contains(&format!("kind=\"{}\"}} 0\n", k.as_str())),
            "{k:?}"
        );
    }
    assert!(!text.contains("audit_last_event_timestamp{"));
}
