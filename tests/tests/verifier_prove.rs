//! `prove` / `check-bundle`: offline proof bundles of the real events, checked through the
//! binary, and refused when one byte of an event, a proof hash or a checkpoint signature
//! changed, or against another key. Also regenerates the worked example of docs/FORMAT.md
//! §8 (`verifier/testdata/proof-bundle/`) from the public example keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine as _;
use common::*;
use sealtrail_core::checkpoint::{self, Checkpoint, NoteSignature, SignedCheckpoint};
use sealtrail_core::event::{CanonicalEvent, parse_event_line};
use sealtrail_core::keys::Algorithm;
use sealtrail_core::merkle::MemoryLog;
use sealtrail_core::segment;
use sealtrail_core::trust::{Trust, TrustBundle, TrustedKey};
use sealtrail_signer::{DevKeyFile, KeyBackend};
use sealtrail_store::{LocalDirStore, ObjectStore};
use sealtrail_verifier::prove::{self, Bundle, ProveOptions, Selection};

fn verify_bin(args: &[&str], paths: &[&Path]) -> Output {
    let mut cmd = std::process::Command::new(binary("sealtrail-verify"));
    cmd.args(args);
    for p in paths {
        cmd.arg(p);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check(bundle: &Path, trust: &Path) -> Output {
    verify_bin(&["check-bundle"], &[bundle, Path::new("--trust"), trust])
}

/// `check-bundle` of a bundle that does not verify (exit 1): its output.
fn check_refused(bundle: &Path, trust: &Path) -> String {
    let out = check(bundle, trust);
    let why = text(&out);
    assert_eq!(out.status.code(), Some(1), "{why}");
    why
}

/// `prove` through the binary into `out`.
fn prove_cli(h: &Harness, trust: &Path, out: &Path, selection: &[&str]) -> Output {
    let mut args = vec!["prove"];
    args.extend_from_slice(selection);
    verify_bin(
        &args,
        &[
            Path::new("--store"),
            &h.store_dir,
            Path::new("--trust"),
            trust,
            Path::new("--out"),
            out,
        ],
    )
}

/// Writes `from` to `to` with the byte at `at` changed: to `a`, or to `b` where it is `a`.
fn altered(from: &Path, to: &Path, at: usize, a: u8, b: u8) {
    let mut bytes = std::fs::read(from).unwrap();
    bytes[at] = if bytes[at] == a { b } else { a };
    std::fs::write(to, bytes).unwrap();
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> usize {
    from + hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_of_real_events_verify_offline_and_tampering_is_named() {
    let h = Harness::start().await;
    let lines = event_lines();
    // Small batches, in two phases: every checkpoint of the first 100 events is signed
    // before the rest arrive, so a bundle spanning both has real consistency proofs.
    replay(&h, &lines[..100], 20).await;
    replay(&h, &lines[100..], 20).await;
    let dir = h.dir.path();
    let trust = dir.join("trust.json");
    std::fs::write(&trust, h.trust.bundle().to_json()).unwrap();
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();

    // By auditID: every stored event of the request (the sample holds this one twice).
    let audit_id = "841d3e6d-90d2-43df-8da4-684738bee3d5";
    let by_id = dir.join("by-id.json");
    let out = prove_cli(&h, &trust, &by_id, &["--audit-id", audit_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bundle = Bundle::parse(&std::fs::read(&by_id).unwrap()).unwrap();
    let want = events.iter().filter(|e| e["auditID"] == audit_id).count();
    assert_eq!(bundle.events.len(), want);
    assert!(bundle.events.iter().all(|e| e.fields.audit_id == audit_id));
    let c = bundle
        .consistency
        .as_ref()
        .expect("consistency proofs by default");
    assert_eq!(
        bundle.checkpoint(&c.head).unwrap().checkpoint.size,
        lines.len() as u64,
        "the head is the newest stored checkpoint"
    );
    // The sample holds this request at indexes 0 and 112: in the two phases.
    assert!(bundle.checkpoints.len() >= 2);
    assert!(c.proofs.iter().any(|p| !p.proof.is_empty()));
    let out = check(&by_id, &trust);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("VERIFIED"), "{}", text(&out));

    // By time range, user and verb.
    let (from, to) = ("2023-06-12T13:30:25.76Z", "2023-06-12T13:30:27Z");
    let (user, verb) = (
        "system:serviceaccount:openshift-cluster-version:default",
        "get",
    );
    let in_range = |e: &serde_json::Value| {
        let t = e["stageTimestamp"].as_str().unwrap_or_default();
        // Same format (microseconds, Z) throughout the sample: compares as text.
        ("2023-06-12T13:30:25.760000Z".."2023-06-12T13:30:27.000000Z").contains(&t)
    };
    let mut want: Vec<String> = events
        .iter()
        .filter(|e| in_range(e) && e["user"]["username"] == user && e["verb"] == verb)
        .map(|e| format!("{} {}", e["auditID"], e["stageTimestamp"]))
        .collect();
    want.sort();
    assert!(want.len() >= 5, "{want:?}");
    let by_time = dir.join("by-time.json");
    let out = prove_cli(
        &h,
        &trust,
        &by_time,
        &["--from", from, "--to", to, "--user", user, "--verb", verb],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bundle = Bundle::parse(&std::fs::read(&by_time).unwrap()).unwrap();
    let mut got: Vec<String> = bundle
        .events
        .iter()
        .map(|e| {
            format!(
                "\"{}\" \"{}\"",
                e.fields.audit_id,
                e.fields.stage_timestamp.as_deref().unwrap()
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, want);
    let out = verify_bin(
        &["check-bundle", "--json"],
        &[&by_time, Path::new("--trust"), &trust],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified"], true);
    assert_eq!(report["events"].as_array().unwrap().len(), want.len());
    assert!(
        report["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["verified"] == true && e["user"] == user && e["verb"] == verb)
    );

    // Without consistency proofs: the auditID still reads every segment; the historical
    // sample's time range is not in the partitions of when it was stored, which is said.
    let no_cons = dir.join("no-consistency.json");
    let out = prove_cli(
        &h,
        &trust,
        &no_cons,
        &["--no-consistency", "--audit-id", audit_id],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        Bundle::parse(&std::fs::read(&no_cons).unwrap())
            .unwrap()
            .consistency
            .is_none()
    );
    assert_eq!(check(&no_cons, &trust).status.code(), Some(0));
    let out = prove_cli(
        &h,
        &trust,
        &dir.join("none.json"),
        &["--no-consistency", "--from", from, "--to", to],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("partitions 2023/06/12/12 to 2023/06/12/14"),
        "{}",
        text(&out)
    );
    assert!(!dir.join("none.json").exists());

    // One byte of an event (a digit of its source IP: the JSON stays canonical).
    let bytes = std::fs::read(&by_id).unwrap();
    let events_at = find(&bytes, b"\"events\":[", 0);
    let first = &bundle_event(&by_id, 0);
    let ip = find(&bytes, b"\"sourceIPs\":[\"", events_at) + 14;
    assert!(
        ip < find(
            &bytes,
            format!("\"index\":{},", first.index).as_bytes(),
            events_at
        ),
        "in the first event"
    );
    let tampered = dir.join("tampered-event.json");
    altered(&by_id, &tampered, ip, b'1', b'2');
    let why = check_refused(&tampered, &trust);
    assert!(
        why.contains(&format!("leaf_mismatch event index {}", first.index))
            && why.contains(audit_id),
        "{why}"
    );

    // One hash of an event's inclusion proof (one that has hashes: a checkpoint of size 1
    // has none).
    let proven = Bundle::parse(&bytes).unwrap();
    let with_proof = proven.events.iter().find(|e| !e.proof.is_empty()).unwrap();
    let mark = format!("\"index\":{},\"proof\":[\"", with_proof.index);
    let p = find(&bytes, mark.as_bytes(), events_at) + mark.len();
    let tampered = dir.join("tampered-proof.json");
    altered(&by_id, &tampered, p, b'0', b'1');
    let why = check_refused(&tampered, &trust);
    assert!(
        why.contains(&format!("leaf_mismatch event index {}", with_proof.index)),
        "{why}"
    );

    // One character of a checkpoint's signature (in the middle of the base64 blob).
    let mark = format!("— {ORIGIN} ");
    let s = find(&bytes, mark.as_bytes(), 0) + mark.len() + 20;
    let tampered = dir.join("tampered-signature.json");
    altered(&by_id, &tampered, s, b'A', b'B');
    let why = check_refused(&tampered, &trust);
    let cp = Bundle::parse(&bytes).unwrap().checkpoints[0].hash();
    assert!(
        why.contains(&format!("bad_signature checkpoint {}", hex(&cp))),
        "{why}"
    );

    // Another key's trust bundle.
    let other_key = dir.join("other.key");
    let other = DevKeyFile::generate(&other_key, Algorithm::EcdsaP256Sha256).unwrap();
    let other_trust = dir.join("other-trust.json");
    std::fs::write(
        &other_trust,
        TrustBundle::new(ORIGIN, vec![TrustedKey::new(ORIGIN, &other, 0)]).to_json(),
    )
    .unwrap();
    let why = check_refused(&by_id, &other_trust);
    assert!(why.contains("untrusted_key checkpoint"), "{why}");

    // Cut short: not a bundle at all (exit 2).
    let cut = dir.join("cut.json");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = check(&cut, &trust);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // A stored event altered: `prove` refuses to export it, and names it.
    let copy = dir.join("store-copy");
    copy_store(&h.store_dir, &copy);
    let index = first.index;
    let seg = segments(&copy)
        .into_iter()
        .find(|p| {
            let (a, b) = segment::parse_object_key("", &key_of(&copy, p)).unwrap();
            (a..=b).contains(&index)
        })
        .unwrap();
    let content = std::fs::read(&seg).unwrap();
    let line_start = find(&content, format!("\"index\":{index},").as_bytes(), 0);
    let line_start = content[..line_start]
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap();
    let ip = find(&content, b"\"sourceIPs\":[\"", line_start) + 14;
    altered(&seg, &seg, ip, b'1', b'2');
    let refused = dir.join("refused.json");
    let out = verify_bin(
        &["prove", "--audit-id", audit_id, "--store"],
        &[
            &copy,
            Path::new("--trust"),
            &trust,
            Path::new("--out"),
            &refused,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("index {index} (auditID {audit_id}"))
            && text(&out).contains("does not prove into its checkpoint"),
        "{}",
        text(&out)
    );
    assert!(!refused.exists(), "nothing is exported");
    h.shutdown().await;
}

fn bundle_event(path: &Path, i: usize) -> prove::BundleEvent {
    Bundle::parse(&std::fs::read(path).unwrap()).unwrap().events[i].clone()
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// The worked example of docs/FORMAT.md §8.
// ---------------------------------------------------------------------------------------

const VECTOR_ORIGIN: &str = "sealtrail.example/vectors";
const VECTOR_TIME_MS: u64 = 1_764_221_736_123;

/// The two events appended after the three of FORMAT.md §7 (canonical already).
const MORE_EVENTS: [&str; 2] = [
    r#"{"apiVersion":"audit.k8s.io/v1","auditID":"5d3e2a1c-8b7f-4e6d-9c5b-4a3f2e1d0c33","kind":"Event","level":"Metadata","objectRef":{"apiVersion":"v1","name":"big","namespace":"café","resource":"configmaps"},"requestReceivedTimestamp":"2025-11-27T05:35:36.500000Z","requestURI":"/api/v1/namespaces/café/configmaps/big","responseStatus":{"code":200,"metadata":{}},"sourceIPs":["192.0.2.7"],"stage":"ResponseComplete","stageTimestamp":"2025-11-27T05:35:36.503000Z","user":{"groups":["system:authenticated"],"username":"alice@example.com"},"userAgent":"kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc","verb":"get"}"#,
    r#"{"apiVersion":"audit.k8s.io/v1","auditID":"6e4f3b2d-9c8a-4f7e-8d6c-5b4a3f2e1d44","kind":"Event","level":"Metadata","objectRef":{"apiVersion":"v1","namespace":"default","resource":"secrets"},"requestReceivedTimestamp":"2025-11-27T05:35:36.900000Z","requestURI":"/api/v1/namespaces/default/secrets","responseStatus":{"code":403,"metadata":{},"reason":"Forbidden","status":"Failure"},"sourceIPs":["198.51.100.3"],"stage":"ResponseComplete","stageTimestamp":"2025-11-27T05:35:36.901000Z","user":{"groups":["system:authenticated"],"username":"bob"},"verb":"list"}"#,
];

/// RFC 8032 test 1's and test 2's secret keys: public, never use them for anything.
const SEED_1: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const SEED_2: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";

fn example_key(seed_hex: &str) -> DevKeyFile {
    // PKCS#8 v1 of an Ed25519 seed: a fixed 16-byte prefix, then the 32 bytes.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend(
        (0..seed_hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&seed_hex[i..i + 2], 16).unwrap()),
    );
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    );
    DevKeyFile::from_pem(&pem).unwrap()
}

async fn sign(cp: Checkpoint, keys: &[&DevKeyFile]) -> SignedCheckpoint {
    let mut sigs = Vec::new();
    for k in keys {
        sigs.push(NoteSignature {
            name: VECTOR_ORIGIN.into(),
            key_id: k.public_key().key_id(VECTOR_ORIGIN),
            signature: k.sign(&cp.to_text()).await.unwrap(),
        });
    }
    SignedCheckpoint::new(cp, sigs).unwrap()
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../verifier/testdata/proof-bundle")
}

/// The example log: the three events of FORMAT.md §7 in its segment and checkpoint (key 1),
/// a rotation to key 2 at size 3, then two more events in a checkpoint of size 5 (key 2).
/// Returns the stored objects (key, bytes).
async fn example_store() -> Vec<(String, Vec<u8>)> {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/testdata/vectors");
    let mut events: Vec<CanonicalEvent> = std::fs::read_to_string(core.join("canonical.jsonl"))
        .unwrap()
        .lines()
        .map(|l| parse_event_line(l.as_bytes()).unwrap())
        .collect();
    for e in MORE_EVENTS {
        let ev = parse_event_line(e.as_bytes()).unwrap();
        assert_eq!(ev.canonical, e.as_bytes(), "written canonical");
        events.push(ev);
    }
    let mut log = MemoryLog::new();
    for e in &events {
        log.append(e.leaf_hash);
    }
    let (k1, k2) = (example_key(SEED_1), example_key(SEED_2));
    let checkpoint_at = |size: u64| Checkpoint {
        origin: VECTOR_ORIGIN.into(),
        size,
        root: log.root_at(size).unwrap(),
        time_ms: VECTOR_TIME_MS,
        prev: None,
        new_key: None,
    };
    let first = sign(checkpoint_at(3), &[&k1]).await;
    assert_eq!(
        first.to_bytes(),
        std::fs::read(core.join("checkpoint.note")).unwrap(),
        "the checkpoint of FORMAT.md §7.3"
    );
    let rotation = sign(
        Checkpoint {
            time_ms: VECTOR_TIME_MS + 1000,
            prev: Some(first.hash()),
            new_key: Some(k2.public_key().clone()),
            ..checkpoint_at(3)
        },
        &[&k1, &k2],
    )
    .await;
    // The rotation of FORMAT.md §7.3, when that example is there.
    if let Ok(note) = std::fs::read(core.join("rotation.note")) {
        assert_eq!(rotation.to_bytes(), note, "the rotation of FORMAT.md §7.3");
    }
    let second = sign(
        Checkpoint {
            time_ms: VECTOR_TIME_MS + 2000,
            prev: Some(rotation.hash()),
            ..checkpoint_at(5)
        },
        &[&k2],
    )
    .await;
    let proofs = |range: std::ops::Range<u64>, size: u64| -> Vec<_> {
        range
            .map(|i| log.inclusion_proof(i, size).unwrap())
            .collect()
    };
    let seg1 = segment::encode(0, &first, &events[..3], &proofs(0..3, 3)).unwrap();
    assert_eq!(
        seg1,
        std::fs::read(core.join("segment.jsonl")).unwrap(),
        "the segment of FORMAT.md §7.4"
    );
    let seg2 = segment::encode(3, &second, &events[3..], &proofs(3..5, 5)).unwrap();
    vec![
        (
            segment::object_key("", first.checkpoint.time_ms, 0, 3),
            seg1,
        ),
        (
            segment::object_key("", second.checkpoint.time_ms, 3, 2),
            seg2,
        ),
        (checkpoint::object_key("", &rotation), rotation.to_bytes()),
    ]
}

/// The example's selection: alice's events from 05:35:36.
fn example_selection() -> Selection {
    Selection::TimeRange {
        from: "2025-11-27T05:35:36Z".into(),
        to: "2025-11-27T05:36:00Z".into(),
        user: Some("alice@example.com".into()),
        verb: None,
    }
}

/// Regenerates `verifier/testdata/proof-bundle/` and checks it is what is committed
/// (`SEALTRAIL_UPDATE_VECTORS=1` rewrites it). `verifier/tests/proof_bundle.rs` then checks
/// the committed files through the binary.
#[tokio::test]
async fn proof_bundle_example_is_reproducible() {
    let update = std::env::var_os("SEALTRAIL_UPDATE_VECTORS").is_some();
    let objects = example_store().await;
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalDirStore::open(tmp.path()).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (key, bytes) in &objects {
        store.put_new(key, bytes).await.unwrap();
        files.push((format!("store/{key}"), bytes.clone()));
    }
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/testdata/vectors");
    let trust_json = std::fs::read(core.join("trust.json")).unwrap();
    let trust = Trust::parse(&trust_json).unwrap();
    let proved = prove::prove(
        &store,
        &trust,
        &example_selection(),
        &ProveOptions::default(),
    )
    .await
    .unwrap();
    let bundle = Bundle::parse(&proved.bytes).unwrap();
    assert_eq!(
        bundle.events.iter().map(|e| e.index).collect::<Vec<_>>(),
        [1, 3]
    );
    assert_eq!(bundle.rotations.len(), 1);
    assert_eq!(
        bundle.consistency.as_ref().unwrap().proofs[0].proof.len(),
        4,
        "a real consistency proof, size 3 to 5"
    );
    let report = prove::check_bundle(&bundle, &trust);
    assert!(report.verified, "{}", report.summary());
    files.push(("trust.json".into(), trust_json));
    files.push(("bundle.json".into(), proved.bytes.clone()));
    files.push((
        "check.json".into(),
        format!("{}\n", serde_json::to_string_pretty(&report).unwrap()).into_bytes(),
    ));
    files.push(("check.txt".into(), report.summary().into_bytes()));
    let dir = testdata();
    for (name, bytes) in &files {
        let path = dir.join(name);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
        } else {
            let have = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (SEALTRAIL_UPDATE_VECTORS=1 writes it)",
                    path.display()
                )
            });
            assert!(
                have == *bytes,
                "{} differs from what the example gives (SEALTRAIL_UPDATE_VECTORS=1 rewrites it)",
                path.display()
            );
        }
    }
}
