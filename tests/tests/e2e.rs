//! End to end: the 222 real audit events go emulator → ingester → signer → store, and the
//! verifier proves them intact; then every tampering of the store is caught and located;
//! bad input changes nothing; a SIGKILLed signer continues the same log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use sealtrail_core::event::parse_event_line;
use sealtrail_core::keys::Algorithm;
use sealtrail_core::segment;
use sealtrail_core::trust::{Trust, TrustBundle, TrustedKey};
use sealtrail_signer::DevKeyFile;
use sealtrail_verifier::{FindingKind, Report};

fn kinds(r: &Report) -> Vec<FindingKind> {
    r.findings.iter().map(|f| f.kind).collect()
}

/// Every finding is of `kind`, and at least one names `object` (and `index`, if given).
fn assert_only(r: &Report, kind: FindingKind, object: &str, index: Option<u64>) {
    assert!(!r.intact(), "tampering not detected");
    assert!(
        r.findings.iter().all(|f| f.kind == kind),
        "expected only {kind:?}, got {:#?}",
        r.findings
    );
    assert!(
        r.findings.iter().any(
            |f| f.object.as_deref() == Some(object) && index.is_none_or(|i| f.index == Some(i))
        ),
        "no {kind:?} finding names {object} / {index:?}: {:#?}",
        r.findings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_events_are_stored_whole_and_verify() {
    let h = Harness::start().await;
    let lines = event_lines();
    assert_eq!(lines.len(), 222);
    let report = replay(&h, &lines, 400).await;
    assert_eq!(report.events_sent, 222);
    assert_eq!(h.tree_size().await, 222);

    let verified = h.verify_dir(&h.store_dir).await;
    assert!(verified.intact(), "{}", verified.summary());
    assert_eq!(verified.events_verified, 222);
    assert_eq!(verified.events, 222);
    assert!(verified.roots_verified >= 1);

    // Nothing dropped: each input line, canonicalized as the log-file backend would have
    // written it, is stored with exactly that digest.
    let want: BTreeSet<_> = lines
        .iter()
        .map(|l| parse_event_line(l).unwrap().leaf_hash)
        .collect();
    let mut got = BTreeSet::new();
    for file in segments(&h.store_dir) {
        let bytes = std::fs::read(&file).unwrap();
        let (_, body) = segment::parse_header(&bytes).unwrap();
        for (_, rec) in segment::records(body) {
            got.insert(rec.unwrap().leaf_hash);
        }
    }
    assert_eq!(got, want);
    h.shutdown().await;
}

/// One trail, many tampered copies; each tampering is reported with its kind and place,
/// and nothing else is reported for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_caught_and_located() {
    let h = Harness::start().await;
    replay(&h, &event_lines(), 40).await;
    let root = h.store_dir.clone();
    let segs = segments(&root);
    assert!(segs.len() >= 5, "want several segments, got {}", segs.len());
    let intact = h.verify_dir(&root).await;
    assert!(intact.intact(), "{}", intact.summary());

    let case = |name: &str| {
        let dir = h.dir.path().join(format!("tampered-{name}"));
        copy_store(&root, &dir);
        dir
    };
    let seg_in = |dir: &Path, i: usize| dir.join(segs[i].strip_prefix(&root).unwrap());
    let key = |i: usize| key_of(&root, &segs[i]);
    let header_of = |i: usize| {
        let bytes = std::fs::read(&segs[i]).unwrap();
        segment::parse_header(&bytes).unwrap().0
    };
    // Batches are split by apiVersion, so some segments hold a single event: tamper with
    // ones that hold several (positions in key order).
    let big: Vec<usize> = (0..segs.len())
        .filter(|&i| header_of(i).count >= 5)
        .collect();
    assert!(big.len() >= 4, "want four segments of 5+ events");
    let [b0, b1, b2, b3] = [big[0], big[1], big[2], big[3]];

    // One changed byte in a stored event (keeps valid JSON: a letter's case).
    let dir = case("byte");
    let file = seg_in(&dir, b0);
    let mut bytes = std::fs::read(&file).unwrap();
    let lines: Vec<usize> = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
        .collect();
    // Inside the third event line (line 4): its "verb" value.
    let (start, end) = (lines[2] + 1, lines[3]);
    let at = start
        + bytes[start..end]
            .windows(8)
            .position(|w| w == b"\"verb\":\"")
            .unwrap()
        + 8;
    bytes[at] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();
    let r = h.verify_dir(&dir).await;
    assert_only(
        &r,
        FindingKind::LeafMismatch,
        &key(b0),
        Some(header_of(b0).first_index + 2),
    );

    // A deleted segment.
    let dir = case("deleted");
    std::fs::remove_file(seg_in(&dir, b1)).unwrap();
    let r = h.verify_dir(&dir).await;
    let hd = header_of(b1);
    assert_eq!(
        kinds(&r),
        vec![FindingKind::MissingEvents],
        "{}",
        r.summary()
    );
    assert_eq!(r.findings[0].index, Some(hd.first_index));
    assert_eq!(
        r.findings[0].last_index,
        Some(hd.first_index + hd.count - 1)
    );

    // Two segments swapped.
    let dir = case("swapped");
    let (a, b) = (seg_in(&dir, b0), seg_in(&dir, b1));
    let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, bb).unwrap();
    std::fs::write(&b, ba).unwrap();
    let r = h.verify_dir(&dir).await;
    assert_only(&r, FindingKind::KeyMismatch, &key(b0), None);
    assert_only(&r, FindingKind::KeyMismatch, &key(b1), None);
    assert_eq!(r.findings.len(), 2);

    // A segment cut short.
    let dir = case("cut");
    let file = seg_in(&dir, b2);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    let r = h.verify_dir(&dir).await;
    assert_only(&r, FindingKind::SegmentTruncated, &key(b2), None);

    // A duplicated line.
    let dir = case("dupline");
    let file = seg_in(&dir, b0);
    let text = std::fs::read(&file).unwrap();
    let mut out: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
    out.insert(3, out[2]);
    std::fs::write(&file, out.concat()).unwrap();
    let r = h.verify_dir(&dir).await;
    assert_only(
        &r,
        FindingKind::DuplicateEvent,
        &key(b0),
        Some(header_of(b0).first_index + 1),
    );

    // A removed line.
    let dir = case("rmline");
    let file = seg_in(&dir, b0);
    let text = std::fs::read(&file).unwrap();
    let mut out: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
    out.remove(3);
    std::fs::write(&file, out.concat()).unwrap();
    let r = h.verify_dir(&dir).await;
    assert_only(
        &r,
        FindingKind::MissingEvents,
        &key(b0),
        Some(header_of(b0).first_index + 2),
    );

    // A replaced checkpoint signature (one bit of the signature, key id kept).
    let dir = case("sig");
    let file = seg_in(&dir, b3);
    let text = String::from_utf8(std::fs::read(&file).unwrap()).unwrap();
    let tampered = tamper_signature(&text);
    std::fs::write(&file, tampered).unwrap();
    let r = h.verify_dir(&dir).await;
    assert_only(&r, FindingKind::BadSignature, &key(b3), None);

    // An extra object overlapping two segments: forged lines at indexes the previous
    // segment holds, followed by a genuine line copied from the next one.
    let dir = case("overlap");
    let hd = header_of(b1);
    let f = hd.first_index;
    let text = String::from_utf8(std::fs::read(&segs[b1]).unwrap()).unwrap();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let header = lines[0].replacen(
        &format!("\"count\":{},\"first_index\":{f},", hd.count),
        &format!("\"count\":3,\"first_index\":{},", f - 2),
        1,
    );
    let forged = [
        lines[1].replacen(
            &format!("\"index\":{f},"),
            &format!("\"index\":{},", f - 2),
            1,
        ),
        lines[2].replacen(
            &format!("\"index\":{},", f + 1),
            &format!("\"index\":{},", f - 1),
            1,
        ),
        lines[1].to_string(),
    ];
    let key = segment::object_key("", hd.checkpoint.checkpoint.time_ms, f - 2, 3);
    let path = dir.join(&key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, [header, forged.concat()].concat()).unwrap();
    let r = h.verify_dir(&dir).await;
    assert!(
        r.findings.iter().all(|f| matches!(
            f.kind,
            FindingKind::DuplicateSegment | FindingKind::LeafMismatch
        )),
        "{}",
        r.summary()
    );
    let forged_at: Vec<u64> = r
        .findings
        .iter()
        .filter(|x| {
            x.kind == FindingKind::LeafMismatch && x.object.as_deref() == Some(key.as_str())
        })
        .filter_map(|x| x.index)
        .collect();
    assert_eq!(forged_at, vec![f - 2, f - 1], "{}", r.summary());
    assert!(
        r.findings
            .iter()
            .any(|x| x.kind == FindingKind::DuplicateSegment
                && x.object.as_deref() == Some(key.as_str()))
    );

    // Verification with another signer's trust bundle.
    let other_key = h.dir.path().join("other.key");
    let other = DevKeyFile::generate(&other_key, Algorithm::Ed25519).unwrap();
    let other_trust = Trust::from_bundle(TrustBundle::new(
        ORIGIN,
        vec![TrustedKey::new(ORIGIN, &other, 0)],
    ))
    .unwrap();
    let store = sealtrail_store::LocalDirStore::open(&root).unwrap();
    let r = sealtrail_verifier::verify_store(&store, &other_trust, &Default::default())
        .await
        .unwrap();
    assert!(!r.intact());
    assert!(
        r.findings
            .iter()
            .all(|f| f.kind == FindingKind::UntrustedKey),
        "{}",
        r.summary()
    );
    assert_eq!(r.findings.len() as u64, r.checkpoints);
    h.shutdown().await;
}

/// Flips one bit of the first signature in the header's checkpoint note.
/// Connects with TLS but no client certificate and tries one request.
async fn no_client_cert_post(h: &Harness) -> std::io::Result<Vec<u8>> {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut roots = rustls::RootCertStore::empty();
    for c in sealtrail_tests::pki::load_certs(&h.pki.ca_cert).unwrap() {
        roots.add(c).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(sealtrail_tests::pki::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(h.ingester_addr()).await?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await?;
    tls.write_all(b"POST /v1/audit HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await?;
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).await?;
    if buf.is_empty() {
        return Err(std::io::Error::other("connection closed without an answer"));
    }
    Ok(buf)
}

fn tamper_signature(segment_text: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (header, rest) = segment_text.split_once('\n').unwrap();
    let mut v: serde_json::Value = serde_json::from_str(header).unwrap();
    let note = v["checkpoint"].as_str().unwrap().to_string();
    let (body, sigs) = note.split_once("\n\n").unwrap();
    let mut lines: Vec<String> = sigs.lines().map(str::to_string).collect();
    let (prefix, blob) = lines[0].rsplit_once(' ').unwrap();
    let mut raw = b64.decode(blob).unwrap();
    let last = raw.len() - 2;
    raw[last] ^= 0x01;
    lines[0] = format!("{prefix} {}", b64.encode(raw));
    v["checkpoint"] = format!("{body}\n\n{}\n", lines.join("\n")).into();
    // Keep the header canonical (members sorted, no spaces), as the writer does.
    let header = sealtrail_core::jcs::canonicalize(v.to_string().as_bytes()).unwrap();
    format!("{}\n{rest}", String::from_utf8(header).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_4xx_and_changes_nothing() {
    let h = Harness::start_with(1024 * 1024).await;
    replay(&h, &event_lines()[..10], 400).await;
    let size = h.tree_size().await;
    let objects = h.object_count().await;
    assert_eq!(size, 10);

    let list = |items: &str| {
        format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{items}]}}"#)
            .into_bytes()
    };
    let ok_item = r#"{"auditID":"a","stage":"ResponseComplete","level":"Metadata"}"#;
    let mut deep = String::new();
    for _ in 0..300 {
        deep.push('[');
    }
    for _ in 0..300 {
        deep.push(']');
    }
    let mut invalid_utf8 = list(r#"{"auditID":"a","stage":"ResponseComplete","user":"X"}"#);
    let x = invalid_utf8.iter().position(|b| *b == b'X').unwrap();
    invalid_utf8[x] = 0xff;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("not JSON", b"this is not json".to_vec(), 400),
        ("truncated JSON", list(ok_item)[..40].to_vec(), 400),
        (
            "wrong kind",
            br#"{"kind":"PodList","apiVersion":"audit.k8s.io/v1","items":[]}"#.to_vec(),
            400,
        ),
        (
            "wrong apiVersion",
            br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v2","items":[]}"#.to_vec(),
            400,
        ),
        ("item not an object", list(&format!("{ok_item},42")), 400),
        (
            "duplicate keys",
            list(r#"{"auditID":"a","stage":"ResponseComplete","verb":"get","verb":"delete"}"#),
            400,
        ),
        ("invalid UTF-8", invalid_utf8, 400),
        (
            "nesting beyond the limit",
            list(&format!(
                r#"{{"auditID":"a","stage":"ResponseComplete","x":{deep}}}"#
            )),
            400,
        ),
        (
            "oversized body",
            list(&format!(
                r#"{{"auditID":"a","stage":"ResponseComplete","pad":"{}"}}"#,
                "x".repeat(2 * 1024 * 1024)
            )),
            413,
        ),
    ];
    let client = sealtrail_tests::emulator::client(&h.emulator_config(400)).unwrap();
    for (name, body, want) in cases {
        let status = sealtrail_tests::emulator::send_body(&client, &h.webhook_url(), body)
            .await
            .unwrap();
        assert_eq!(status, want, "{name}");
        assert_eq!(h.tree_size().await, size, "{name}: a leaf was consumed");
        assert_eq!(
            h.object_count().await,
            objects,
            "{name}: an object was written"
        );
    }

    // A certificate from another CA, and no certificate at all: the TLS handshake fails.
    let mut other = h.emulator_config(400);
    other.cert = h.pki.other_client_cert.clone();
    other.key = h.pki.other_client_key.clone();
    let other = sealtrail_tests::emulator::client(&other).unwrap();
    assert!(
        sealtrail_tests::emulator::send_body(&other, &h.webhook_url(), list(ok_item))
            .await
            .is_err(),
        "a certificate of another CA was accepted"
    );
    assert!(
        no_client_cert_post(&h).await.is_err(),
        "a client without certificate was served"
    );
    assert_eq!(h.tree_size().await, size);
    assert_eq!(h.object_count().await, objects);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_signer_continues_the_same_log() {
    let mut h = Harness::start().await;
    // Swap the in-process signer for a real process on the same address.
    h.stop_signer().await;
    let mut child = spawn_signer(&h);
    wait_signer(&h).await;

    let lines = event_lines();
    replay(&h, &lines[..100], 400).await;
    let before = h.latest_checkpoint().await.unwrap();
    assert_eq!(before.checkpoint.size, 100);

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut child = spawn_signer(&h);
    wait_signer(&h).await;

    let after_restart = h.latest_checkpoint().await.unwrap();
    assert_eq!(
        after_restart, before,
        "the restarted signer serves the same checkpoint"
    );
    replay(&h, &lines[100..], 400).await;
    let last = h.latest_checkpoint().await.unwrap();
    assert_eq!(last.checkpoint.size, 222);

    child.kill().unwrap();
    child.wait().unwrap();
    let r = h.verify_dir(&h.store_dir).await;
    assert!(r.intact(), "{}", r.summary());
    assert_eq!(r.events_verified, 222);
    h.shutdown().await;
}
