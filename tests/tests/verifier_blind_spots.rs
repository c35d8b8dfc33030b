//! What an adversarial review got accepted as INTACT or VERIFIED, each now named: entries
//! the listing used to skip, events whose times escaped the checks, replays between
//! incremental runs, bundles resting on a retired key, an empty trail, and an edited state
//! file (docs/FORMAT.md §9).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::time::Duration;

use common::*;
use sealtrail_core::keys::Algorithm;
use sealtrail_core::trust::{Trust, TrustedKey};
use sealtrail_signer::DevKeyFile;
use sealtrail_store::LocalDirStore;
use sealtrail_verifier::prove::{self, Bundle};
use sealtrail_verifier::{FindingKind, Options, Report, State, StateError, StateKey, verify_store};
use time::format_description::well_known::Rfc3339;

/// An event with the given timestamps as raw JSON members (`None`: member absent).
fn event_with(id: &str, stage: &str, stage_ts: Option<&str>, request_ts: Option<&str>) -> Vec<u8> {
    let member = |name: &str, v: Option<&str>| match v {
        Some(v) => format!(r#","{name}":{}"#, serde_json::Value::String(v.into())),
        None => String::new(),
    };
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"{stage}","requestURI":"/api/v1/pods","verb":"list","user":{{"username":"alice"}},"sourceIPs":["10.0.0.1"]{}{}}}"#,
        member("requestReceivedTimestamp", request_ts),
        member("stageTimestamp", stage_ts),
    )
    .into_bytes()
}

fn now_text(offset: time::Duration) -> String {
    (time::OffsetDateTime::now_utc() + offset)
        .format(&Rfc3339)
        .unwrap()
}

fn fresh(id: &str) -> Vec<u8> {
    let t = now_text(time::Duration::ZERO);
    event_with(id, "ResponseComplete", Some(&t), Some(&t))
}

fn kinds(r: &Report) -> Vec<FindingKind> {
    r.findings.iter().map(|f| f.kind).collect()
}

fn of_kind(r: &Report, kind: FindingKind) -> Vec<&sealtrail_verifier::Finding> {
    r.findings.iter().filter(|f| f.kind == kind).collect()
}

async fn verify(h: &Harness, options: &Options) -> Report {
    verify_store(&h.store(), &h.trust, options).await.unwrap()
}

/// Symbolic links (to a forged segment, to a folder of them), a socket, names that are not
/// UTF-8 and a name no store writes, under `segments/` and elsewhere under the prefix: each
/// is `unexpected_object` at its path, and the run is not INTACT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_the_listing_skipped_are_reported() {
    let h = Harness::start().await;
    replay(&h, &event_lines()[..30], 10).await;
    let before = verify(&h, &Options::default()).await;
    assert!(before.intact(), "{}", before.summary());

    let seg = segments(&h.store_dir)[0].clone();
    let hour = seg.parent().unwrap().to_path_buf();
    let forged_dir = h.dir.path().join("forged");
    std::fs::create_dir_all(forged_dir.join("sub")).unwrap();
    std::fs::copy(&seg, forged_dir.join("f.jsonl")).unwrap();
    std::fs::copy(&seg, forged_dir.join("sub/g.jsonl")).unwrap();
    let link = hour.join("00000000000000000900-00000000000000000901.jsonl");
    std::os::unix::fs::symlink(forged_dir.join("f.jsonl"), &link).unwrap();
    std::os::unix::fs::symlink(forged_dir.join("sub"), hour.join("linked")).unwrap();
    let bad = hour.join(OsStr::from_bytes(b"\xffbad.jsonl"));
    std::fs::copy(&seg, &bad).unwrap();
    std::fs::copy(&seg, hour.join("a b.jsonl")).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(h.store_dir.join("s.sock")).unwrap();
    std::fs::write(h.store_dir.join("checkpoints-elsewhere"), b"x").unwrap();

    let r = verify(&h, &Options::default()).await;
    assert!(!r.intact(), "{}", r.summary());
    let hour_key = key_of(&h.store_dir, &hour);
    let mut reported: Vec<String> = of_kind(&r, FindingKind::UnexpectedObject)
        .iter()
        .map(|f| f.object.clone().unwrap())
        .collect();
    reported.sort();
    let mut want = vec![
        format!("{hour_key}/00000000000000000900-00000000000000000901.jsonl"),
        format!("{hour_key}/linked"),
        format!("{hour_key}/\\xffbad.jsonl"),
        format!("{hour_key}/a b.jsonl"),
        "s.sock".to_string(),
    ];
    want.sort();
    assert_eq!(reported, want, "{}", r.summary());
    // A regular, validly named object outside the layout is not the log's: not reported.
    assert_eq!(r.findings.len(), want.len(), "{}", r.summary());
    // The CLI exits 1 (it stopped with exit 2 on the badly named file before).
    let out = std::process::Command::new(binary("sealtrail-verify"))
        .arg("verify")
        .arg("--store")
        .arg(&h.store_dir)
        .arg("--trust")
        .arg(write_trust(&h, &h.trust))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    h.shutdown().await;
}

fn write_trust(h: &Harness, trust: &Trust) -> std::path::PathBuf {
    let path = h
        .dir
        .path()
        .join(format!("trust-{}.json", trust.bundle().keys.len()));
    std::fs::write(&path, trust.bundle().to_json()).unwrap();
    path
}

/// Timestamps the apiserver never writes are `bad_event_time`; either timestamp dated
/// years back is `late_event`; dated years ahead, `future_event`, and it does not become
/// the newest event time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_times_that_escaped_the_checks() {
    let h = Harness::start().await;
    let now = now_text(time::Duration::ZERO);
    let years_back = now_text(-time::Duration::days(3 * 365));
    let years_ahead = now_text(time::Duration::days(3 * 365));
    let bad_forms = [
        "2025-11-27T05:35:35",         // no offset
        "2025-11-27T05:35:35,915678Z", // comma fraction
        "2025-11-27T05:35Z",           // no seconds
        "20251127T053535Z",            // basic format
        "",                            // empty
    ];
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for (i, bad) in bad_forms.iter().enumerate() {
        lines.push(event_with(
            &format!("bad-stage-{i}"),
            "ResponseComplete",
            Some(bad),
            Some(&now),
        ));
        lines.push(event_with(
            &format!("bad-request-{i}"),
            "ResponseComplete",
            Some(&now),
            Some(bad),
        ));
    }
    lines.push(event_with(
        "no-stage-time",
        "ResponseComplete",
        None,
        Some(&now),
    ));
    lines.push(event_with(
        "no-request-time",
        "ResponseComplete",
        Some(&now),
        None,
    ));
    lines.push(event_with(
        "request-backdated",
        "ResponseComplete",
        Some(&now),
        Some(&years_back),
    ));
    lines.push(event_with(
        "stage-backdated",
        "ResponseComplete",
        Some(&years_back),
        Some(&years_back),
    ));
    lines.push(event_with(
        "ahead",
        "ResponseComplete",
        Some(&years_ahead),
        Some(&years_ahead),
    ));
    lines.push(fresh("fine"));
    // An apiserver before audit.k8s.io/v1beta1 wrote one `timestamp`: checked as both.
    let legacy = String::from_utf8(event_with(
        "legacy-backdated",
        "ResponseComplete",
        None,
        None,
    ))
    .unwrap()
    .replacen('{', &format!(r#"{{"timestamp":"{years_back}","#), 1);
    lines.push(legacy.into_bytes());
    replay(&h, &lines, 8).await;

    let r = verify(
        &h,
        &Options {
            late_after: Some(Duration::from_secs(3600)),
            future_after: Some(Duration::from_secs(300)),
            ..Options::default()
        },
    )
    .await;
    let ids_of = |kind| -> Vec<String> {
        let mut ids: Vec<String> = of_kind(&r, kind)
            .iter()
            .map(|f| stored_id(&h.store_dir, f.index.unwrap()))
            .collect();
        ids.sort();
        ids
    };
    let mut want_bad: Vec<String> = (0..bad_forms.len())
        .flat_map(|i| [format!("bad-request-{i}"), format!("bad-stage-{i}")])
        .chain(["no-request-time".into(), "no-stage-time".into()])
        .collect();
    want_bad.sort();
    assert_eq!(
        ids_of(FindingKind::BadEventTime),
        want_bad,
        "{}",
        r.summary()
    );
    assert_eq!(
        ids_of(FindingKind::LateEvent),
        vec![
            "legacy-backdated".to_string(),
            "request-backdated".to_string(),
            "stage-backdated".to_string()
        ],
        "{}",
        r.summary()
    );
    assert_eq!(ids_of(FindingKind::FutureEvent), vec!["ahead".to_string()]);
    // Advisory: the trail itself is intact, and the newest event time is not the future's.
    assert!(r.findings.iter().all(|f| !f.kind.is_integrity()));
    let newest = r.last_event_time.unwrap();
    let now_secs = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    assert!(newest <= now_secs + 60.0, "{newest}");
    h.shutdown().await;
}

/// The auditID of the event stored at `index`.
fn stored_id(dir: &Path, index: u64) -> String {
    for file in segments(dir) {
        let bytes = std::fs::read(&file).unwrap();
        let (_, body) = sealtrail_core::segment::parse_header(&bytes).unwrap();
        for (_, rec) in sealtrail_core::segment::records(body) {
            let rec = rec.unwrap();
            if rec.index == index {
                return rec.audit_id.unwrap();
            }
        }
    }
    panic!("no event at {index}")
}

/// An exact re-send of an event an earlier run verified, and an upper-cased twin of a
/// stored auditID, stored after a `--state` run: the incremental run reports both, as a
/// full run does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_between_incremental_runs() {
    let h = Harness::start().await;
    let id = "3f0c8a52-5b4e-4d1e-9a2b-7c6d5e4f3a21";
    let first = fresh(id);
    let mut lines: Vec<Vec<u8>> = (0..10).map(|i| fresh(&format!("req-{i}"))).collect();
    lines.push(first.clone());
    replay(&h, &lines, 5).await;
    let options = Options {
        check_duplicates: true,
        ..Options::default()
    };
    let r1 = verify(&h, &options).await;
    assert!(r1.intact() && r1.findings.is_empty(), "{}", r1.summary());
    let state = r1.state.unwrap();

    // Later: the same bytes again, and the same request with its auditID upper-cased.
    let twin = String::from_utf8(first.clone())
        .unwrap()
        .replace(id, &id.to_uppercase())
        .into_bytes();
    replay(&h, &[fresh("req-new"), first.clone()], 5).await;
    replay(&h, &[twin], 5).await;

    let incremental = verify(
        &h,
        &Options {
            state: Some(state),
            ..options.clone()
        },
    )
    .await;
    assert!(incremental.segments_skipped > 0);
    let full = verify(&h, &options).await;
    let at = |r: &Report| -> Vec<u64> {
        of_kind(r, FindingKind::DuplicateAuditEvent)
            .iter()
            .map(|f| f.index.unwrap())
            .collect()
    };
    assert_eq!(at(&full).len(), 2, "{}", full.summary());
    assert_eq!(at(&incremental), at(&full), "{}", incremental.summary());
    h.shutdown().await;
}

/// A bundle whose head only a retired key signed is not VERIFIED: exit 3, `retired_key_head`,
/// with or without consistency proofs; the same bundle with the history before the
/// retirement verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_resting_on_a_retired_key() {
    let h = Harness::start().await;
    replay(&h, &event_lines()[..40], 10).await;
    let size = h.tree_size().await;
    let dir = h.dir.path();
    let trust = write_trust(&h, &h.trust);
    let id = "841d3e6d-90d2-43df-8da4-684738bee3d5";
    let mut bundles = Vec::new();
    for (name, extra) in [
        ("with.json", None),
        ("without.json", Some("--no-consistency")),
    ] {
        let out_path = dir.join(name);
        let mut cmd = std::process::Command::new(binary("sealtrail-verify"));
        cmd.args(["prove", "--audit-id", id])
            .arg("--store")
            .arg(&h.store_dir)
            .arg("--trust")
            .arg(&trust)
            .arg("--out")
            .arg(&out_path);
        if let Some(e) = extra {
            cmd.arg(e);
        }
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        bundles.push(out_path);
    }

    // The newest pinned history: the key was retired at `size + 5`, another took over.
    let other = DevKeyFile::generate(&dir.join("next.key"), Algorithm::EcdsaP256Sha256).unwrap();
    let mut history = h.trust.bundle().clone();
    history.keys[0].valid_to_size = Some(size + 5);
    history.keys.push(TrustedKey::new(ORIGIN, &other, size + 5));
    let newest = Trust::from_bundle(history).unwrap();
    let newest_path = write_trust(&h, &newest);

    for path in &bundles {
        let bundle = Bundle::parse(&std::fs::read(path).unwrap()).unwrap();
        assert!(prove::check_bundle(&bundle, &h.trust).verified);
        let report = prove::check_bundle(&bundle, &newest);
        assert!(!report.verified && !report.settled);
        assert!(
            report
                .problems
                .iter()
                .all(|p| p.kind == FindingKind::RetiredKeyHead),
            "{}",
            report.summary()
        );
        assert!(!report.problems.is_empty());
        let out = std::process::Command::new(binary("sealtrail-verify"))
            .arg("check-bundle")
            .arg(path)
            .arg("--trust")
            .arg(&newest_path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{text}");
        assert!(text.contains("NOT SETTLED"), "{text}");
        assert!(text.contains("retired_key_head"), "{text}");
    }
    h.shutdown().await;
}

/// No trail under the prefix — an empty store, a log moved under another prefix — is
/// `no_trail` (exit 1), unless a brand-new log is expected (`--allow-empty`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_moved_trail_does_not_pass() {
    let h = Harness::start().await;
    let empty = tempfile::tempdir().unwrap();
    let store = LocalDirStore::open(empty.path()).unwrap();
    let r = verify_store(&store, &h.trust, &Options::default())
        .await
        .unwrap();
    assert_eq!(kinds(&r), vec![FindingKind::NoTrail], "{}", r.summary());
    assert!(!r.intact());
    let r = verify_store(
        &store,
        &h.trust,
        &Options {
            allow_empty: true,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    assert!(r.intact() && r.findings.is_empty(), "{}", r.summary());

    // A real log, verified under a prefix it is not under.
    replay(&h, &event_lines()[..10], 10).await;
    let r = verify(
        &h,
        &Options {
            prefix: "cluster-2/".into(),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(kinds(&r), vec![FindingKind::NoTrail], "{}", r.summary());

    let trust = write_trust(&h, &h.trust);
    let run = |extra: &[&str]| {
        std::process::Command::new(binary("sealtrail-verify"))
            .arg("verify")
            .arg("--store")
            .arg(empty.path())
            .arg("--trust")
            .arg(&trust)
            .args(extra)
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(run(&[]), Some(1));
    assert_eq!(run(&["--allow-empty"]), Some(0));
    h.shutdown().await;
}

/// With `--state-key`, a state edited to skip a changed object is refused (as is one
/// without a MAC, and an authenticated one read without the key); without a key, the
/// documented limit: the edit steers the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_state_is_refused_with_a_key() {
    let h = Harness::start().await;
    replay(&h, &event_lines()[..30], 10).await;
    let r = verify(&h, &Options::default()).await;
    let state = r.state.unwrap();
    let dir = h.dir.path();
    let key_path = dir.join("state.key");
    std::fs::write(&key_path, "9f".repeat(32) + "\n").unwrap();
    let key = StateKey::from_file(&key_path).unwrap();
    let path = dir.join("state.json");
    state.save(&path, Some(&key)).unwrap();
    assert_eq!(State::load(&path, Some(&key)).unwrap().unwrap(), state);

    // Tamper with a segment (same size), then edit its record so the run would skip it.
    let seg = segments(&h.store_dir)[1].clone();
    let seg_key = key_of(&h.store_dir, &seg);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 1;
    let mut perms = std::fs::metadata(&seg).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&seg, perms).unwrap();
    std::fs::write(&seg, &bytes).unwrap();
    let listed = h.store();
    let info = sealtrail_store::ObjectStore::list(&listed, &seg_key)
        .await
        .unwrap()
        .remove(0);
    let text = std::fs::read_to_string(&path).unwrap();
    let old = state.objects[&seg_key].fingerprint.clone().unwrap();
    let edited = text.replace(&old, info.fingerprint.as_deref().unwrap());
    assert_ne!(edited, text);
    std::fs::write(&path, &edited).unwrap();

    assert!(matches!(
        State::load(&path, Some(&key)),
        Err(StateError::BadMac { .. })
    ));
    assert!(matches!(
        State::load(&path, None),
        Err(StateError::KeyNeeded { .. })
    ));
    let unauthenticated = dir.join("plain.json");
    state.save(&unauthenticated, None).unwrap();
    assert!(matches!(
        State::load(&unauthenticated, Some(&key)),
        Err(StateError::Unauthenticated { .. })
    ));
    assert!(StateKey::from_file(&dir.join("missing.key")).is_err());
    std::fs::write(dir.join("short.key"), "abc").unwrap();
    assert!(StateKey::from_file(&dir.join("short.key")).is_err());

    // The CLI refuses the edited state (exit 2) with the key.
    let trust = write_trust(&h, &h.trust);
    let out = std::process::Command::new(binary("sealtrail-verify"))
        .arg("verify")
        .arg("--store")
        .arg(&h.store_dir)
        .arg("--trust")
        .arg(&trust)
        .arg("--state")
        .arg(&path)
        .arg("--state-key")
        .arg(&key_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MAC does not verify"));

    // Without a key, the same edit on an unauthenticated state makes the run skip the
    // tampered object: the limit FORMAT.md §6.3 states.
    let plain = std::fs::read_to_string(&unauthenticated)
        .unwrap()
        .replace(&old, info.fingerprint.as_deref().unwrap());
    std::fs::write(&unauthenticated, plain).unwrap();
    let edited_state = State::load(&unauthenticated, None).unwrap().unwrap();
    let r = verify(
        &h,
        &Options {
            state: Some(edited_state),
            ..Options::default()
        },
    )
    .await;
    assert!(r.intact(), "{}", r.summary());
    // A full run names the tampering.
    let r = verify(&h, &Options::default()).await;
    assert!(!r.intact(), "{}", r.summary());
    h.shutdown().await;
}
