//! The worked examples of docs/FORMAT.md §7, recomputed from their inputs and compared
//! byte for byte with the files in core/testdata/vectors/ (§7.5 and §7.6: the pending batch
//! of those events and the v2 segment that seals it). `SEALTRAIL_WRITE_VECTORS=1`
//! rewrites the expected files (only when a format change is intended).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ed25519_dalek::Signer as _;
use sealtrail_core::checkpoint::{self, Checkpoint, NoteSignature, SignedCheckpoint, text_hash};
use sealtrail_core::event::parse_event_list;
use sealtrail_core::event::{CanonicalEvent, parse_timestamp_micros};
use sealtrail_core::keys::PublicKey;
use sealtrail_core::merkle::{self, MemoryLog};
use sealtrail_core::pending;
use sealtrail_core::segment::{self, SealedFrom};
use sealtrail_core::trust::{Keyring, SignatureVerdict, Trust, TrustBundle, TrustedKey};

const ORIGIN: &str = "sealtrail.example/vectors";
/// The checkpoint time of the examples: 2025-11-27T05:35:36.123Z.
const TIME_MS: u64 = 1_764_221_736_123;
/// When the ingester received the example batch: 2025-11-27T05:35:36.050Z, 73 ms before the
/// checkpoint that seals it.
const RECEIVED_MS: u64 = 1_764_221_736_050;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/vectors")
}

fn check(name: &str, got: &[u8]) {
    let path = dir().join(name);
    if std::env::var_os("SEALTRAIL_WRITE_VECTORS").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        String::from_utf8_lossy(got),
        String::from_utf8_lossy(&want),
        "{name} differs from its vector file"
    );
}

/// An example signing key from its seed file (public seeds: never use them for anything).
fn example_key(seed_file: &str) -> (ed25519_dalek::SigningKey, PublicKey) {
    let seed: [u8; 32] = hex::decode(
        std::fs::read_to_string(dir().join(seed_file))
            .unwrap()
            .trim(),
    )
    .unwrap()
    .try_into()
    .unwrap();
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    let public = PublicKey::from_ed25519_bytes(sk.verifying_key().as_bytes()).unwrap();
    (sk, public)
}

#[test]
fn worked_examples() {
    let input = std::fs::read(dir().join("eventlist.json")).unwrap();
    let batch = parse_event_list(&input).unwrap();

    let mut canonical = Vec::new();
    let mut leaves = String::new();
    let mut log = MemoryLog::new();
    for e in &batch.events {
        canonical.extend_from_slice(&e.canonical);
        canonical.push(b'\n');
        leaves.push_str(&hex::encode(e.leaf_hash));
        leaves.push('\n');
        log.append(e.leaf_hash);
    }
    check("canonical.jsonl", &canonical);
    check("leaves.txt", leaves.as_bytes());

    let size = log.size();
    let root = log.root();
    let mut tree = format!("size {size}\nroot {}\n", hex::encode(root));
    let mut proofs = Vec::new();
    for i in 0..size {
        let proof = log.inclusion_proof(i, size).unwrap();
        merkle::verify_inclusion(i, size, &batch.events[i as usize].leaf_hash, &proof, &root)
            .unwrap();
        tree.push_str(&format!(
            "inclusion {i} {}\n",
            proof.iter().map(hex::encode).collect::<Vec<_>>().join(" ")
        ));
        proofs.push(proof);
    }
    check("tree.txt", tree.as_bytes());

    // The example key: an Ed25519 key whose seed is public (never use it for anything).
    let (sk, public) = example_key("ed25519-seed.hex");
    let key_id = public.key_id(ORIGIN);

    let first = Checkpoint {
        origin: ORIGIN.into(),
        size,
        root,
        time_ms: TIME_MS,
        prev: None,
        new_key: None,
    };
    let text = first.to_text();
    let sig = sk.sign(&text).to_bytes().to_vec();
    let signed = SignedCheckpoint::new(
        first,
        vec![NoteSignature {
            name: ORIGIN.into(),
            key_id,
            signature: sig,
        }],
    )
    .unwrap();
    check("checkpoint.note", &signed.to_bytes());
    check(
        "checkpoint-text-hash.txt",
        format!("{}\n", hex::encode(text_hash(&text))).as_bytes(),
    );

    let bundle = TrustBundle::new(ORIGIN, vec![TrustedKey::new(ORIGIN, &public, 0)]);
    check("trust.json", &bundle.to_json());
    let trust = Trust::parse(&bundle.to_json()).unwrap();
    assert!(matches!(
        trust.verify(&signed),
        SignatureVerdict::Trusted { .. }
    ));

    let seg = segment::encode(0, &signed, &batch.events, &proofs).unwrap();
    check("segment.jsonl", &seg);
    check(
        "segment-key.txt",
        format!("{}\n", segment::object_key("", TIME_MS, 0, size)).as_bytes(),
    );

    // A rotation to the second example key: same tree, signed by both keys.
    let (sk2, public2) = example_key("ed25519-seed-2.hex");
    let rotation = Checkpoint {
        origin: ORIGIN.into(),
        size,
        root,
        time_ms: TIME_MS + 1000,
        prev: Some(signed.hash()),
        new_key: Some(public2.clone()),
    };
    let rtext = rotation.to_text();
    let rotation = SignedCheckpoint::new(
        rotation,
        vec![
            NoteSignature {
                name: ORIGIN.into(),
                key_id,
                signature: sk.sign(&rtext).to_bytes().to_vec(),
            },
            NoteSignature {
                name: ORIGIN.into(),
                key_id: public2.key_id(ORIGIN),
                signature: sk2.sign(&rtext).to_bytes().to_vec(),
            },
        ],
    )
    .unwrap();
    check("rotation.note", &rotation.to_bytes());
    check(
        "rotation-key.txt",
        format!("{}\n", checkpoint::object_key("", &rotation)).as_bytes(),
    );
    let mut ring = Keyring::new(trust.clone());
    assert!(matches!(
        ring.verify(&signed),
        SignatureVerdict::Trusted { .. }
    ));
    assert!(matches!(
        ring.verify(&rotation),
        SignatureVerdict::Trusted { .. }
    ));
    ring.rotate(&rotation).unwrap();
    let mut old = TrustedKey::new(ORIGIN, &public, 0);
    old.valid_to_size = Some(size);
    let rotated = TrustBundle::new(ORIGIN, vec![old, TrustedKey::new(ORIGIN, &public2, size)]);
    check("trust-rotated.json", &rotated.to_json());

    // Reading the segment back gives the same leaves, each proving into the checkpoint.
    let (header, body) = segment::parse_header(&seg).unwrap();
    assert_eq!(header.checkpoint, signed);
    for (j, (_, rec)) in segment::records(body).enumerate() {
        let rec = rec.unwrap();
        assert_eq!(rec.leaf_hash, batch.events[j].leaf_hash);
        merkle::verify_inclusion(rec.index, size, &rec.leaf_hash, &rec.proof, &root).unwrap();
    }
}

/// The three events of §7.1 as one webhook batch: its pending batch (§4.4), and the v2
/// segment (§4.5) that seals it into the tree and under the checkpoint of §7.2 and §7.3.
#[test]
fn sealing_examples() {
    let input = std::fs::read(dir().join("eventlist.json")).unwrap();
    let events = parse_event_list(&input).unwrap().events;

    // The pending batch: its bytes, their SHA-256, its key.
    let (bytes, sha) = pending::encode(RECEIVED_MS, &events).unwrap();
    check("pending.jsonl", &bytes);
    check(
        "pending-sha256.txt",
        format!("{}\n", hex::encode(sha)).as_bytes(),
    );
    let leaves: Vec<_> = events.iter().map(|e| e.leaf_hash).collect();
    let digest = pending::events_digest(&leaves);
    // The events digest is SHA-256 over the 32-byte leaf hashes of leaves.txt, concatenated.
    let leaves_txt = std::fs::read_to_string(dir().join("leaves.txt")).unwrap();
    let concatenated: Vec<u8> = leaves_txt
        .lines()
        .flat_map(|l| hex::decode(l).unwrap())
        .collect();
    assert_eq!(concatenated.len(), 32 * events.len());
    assert_eq!(
        <[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(&concatenated)),
        digest
    );
    check(
        "pending-events-digest.txt",
        format!("{}\n", hex::encode(digest)).as_bytes(),
    );
    let key = pending::object_key("", &events, RECEIVED_MS);
    check("pending-key.txt", format!("{key}\n").as_bytes());
    // The first event's stageTimestamp (2025-11-27T05:35:35.915678Z) gives the hour.
    assert_eq!(
        pending::partition_ms(&events, RECEIVED_MS),
        1_764_221_735_915
    );
    assert!(key.starts_with("pending/2025/11/27/05/"), "{key}");
    // An apiserver retry, received an hour later: other bytes, the same key.
    let (retry, retry_sha) = pending::encode(RECEIVED_MS + 3_600_000, &events).unwrap();
    assert_ne!((&retry, retry_sha), (&bytes, sha));
    assert_eq!(
        pending::object_key("", &events, RECEIVED_MS + 3_600_000),
        key
    );
    assert_eq!(
        pending::object_key("c1/", &events, RECEIVED_MS),
        format!("c1/{key}")
    );

    // Reading it back gives the same events, receipt time and SHA-256, and names the key.
    let read = pending::parse(&bytes).unwrap();
    assert_eq!(read.events, events);
    assert_eq!((read.received_ms, read.sha256), (RECEIVED_MS, sha));
    assert_eq!(
        pending::parse_object_key("", &key),
        Some(("2025/11/27/05", digest))
    );
    assert_eq!(pending::object_key("", &read.events, read.received_ms), key);

    // The v2 segment: the segment of §7.4 with the seal's three header members.
    let note = std::fs::read(dir().join("checkpoint.note")).unwrap();
    let signed = SignedCheckpoint::parse(&note).unwrap();
    let mut log = MemoryLog::new();
    for l in &leaves {
        log.append(*l);
    }
    let size = log.size();
    let proofs: Vec<_> = (0..size)
        .map(|i| log.inclusion_proof(i, size).unwrap())
        .collect();
    let sealed = SealedFrom {
        batch: key.clone(),
        batch_sha256: sha,
        received_ms: RECEIVED_MS,
    };
    let seg = segment::encode_with(0, &signed, Some(&sealed), &events, &proofs).unwrap();
    check("segment-v2.jsonl", &seg);
    let seg_key = segment::object_key("", signed.checkpoint.time_ms, 0, size);
    check("segment-v2-key.txt", format!("{seg_key}\n").as_bytes());

    // Its event lines are those of the v1 segment; only the header differs.
    let v1 = std::fs::read(dir().join("segment.jsonl")).unwrap();
    let body_of = |b: &[u8]| b[b.iter().position(|c| *c == b'\n').unwrap() + 1..].to_vec();
    assert_eq!(body_of(&seg), body_of(&v1));

    let (header, body) = segment::parse_header(&seg).unwrap();
    assert_eq!(header.sealed.as_ref(), Some(&sealed));
    assert_eq!((header.first_index, header.count), (0, size));
    assert_eq!(header.checkpoint, signed);
    let read_leaves: Vec<_> = segment::records(body)
        .map(|(_, r)| r.unwrap().leaf_hash)
        .collect();
    // What the verifier compares (§4.7): the segment's leaves against the batch's events,
    // its batch_sha256 against the batch's bytes, its received_ms against the batch's.
    assert_eq!(pending::events_digest(&read_leaves), digest);
    assert_eq!(header.sealed.as_ref().unwrap().batch_sha256, read.sha256);
    assert!(RECEIVED_MS <= signed.checkpoint.time_ms + 300_000);
    // v1 has no seal.
    assert_eq!(segment::parse_header(&v1).unwrap().0.sealed, None);
}

/// §4.4's partition rule, case by case: the stageTimestamps that parse (and where they put
/// the batch) and those that fall back to received_ms.
#[test]
fn pending_partition_rule() {
    let event = |ts: Option<&str>| -> CanonicalEvent {
        let line = match ts {
            Some(t) => format!(
                r#"{{"apiVersion":"audit.k8s.io/v1","auditID":"a","kind":"Event","stage":"ResponseComplete","stageTimestamp":{}}}"#,
                serde_json::to_string(t).unwrap()
            ),
            None => r#"{"apiVersion":"audit.k8s.io/v1","auditID":"a","kind":"Event","stage":"ResponseComplete"}"#.to_string(),
        };
        sealtrail_core::event::parse_event_line(line.as_bytes()).unwrap()
    };
    let fallback = 1_764_221_736_050; // 2025-11-27T05:35:36.050Z
    let cases: &[(Option<&str>, u64)] = &[
        (Some("2025-11-27T05:35:35.915678Z"), 1_764_221_735_915),
        // Any offset ±HH:MM is converted to UTC.
        (Some("2025-11-27T07:35:35+02:00"), 1_764_221_735_000),
        (Some("2025-11-26T23:35:35-06:00"), 1_764_221_735_000),
        // Lower-case `t` and `z`, any one-byte separator, any number of fraction digits
        // (beyond nine ignored), a leap second at the end of a UTC month.
        (Some("2025-11-27t05:35:35.9z"), 1_764_221_735_900),
        (Some("2025-11-27 05:35:35Z"), 1_764_221_735_000),
        (Some("2025-11-27_05:35:35Z"), 1_764_221_735_000),
        (
            Some("2025-11-27T05:35:35.9156789999999Z"),
            1_764_221_735_915,
        ),
        (Some("2016-12-31T23:59:60Z"), 1_483_228_799_999),
        // Not RFC 3339 as parsed, or before 1970: received_ms.
        (Some("2025-11-27T05:35:35"), fallback),
        (Some("2025-11-27T05:35:35.Z"), fallback),
        (Some("2025-11-27T05:35Z"), fallback),
        (Some("2025-11-27T05:35:35+0200"), fallback),
        (Some("2025-11-27T05:35:35+24:00"), fallback),
        (Some("2025-11-27T05:35:60Z"), fallback),
        (Some("2025-02-29T05:35:35Z"), fallback),
        (Some("2025-11-27T05:35:35Z "), fallback),
        (Some("2025-11-27\u{e9}05:35:35Z"), fallback),
        (Some("+2025-11-27T05:35:35Z"), fallback),
        (Some("1969-12-31T23:59:59Z"), fallback),
        (Some(""), fallback),
        (None, fallback),
        // Within a millisecond before 1970: truncated toward zero, to 0.
        (Some("1969-12-31T23:59:59.9995Z"), 0),
    ];
    for (ts, want) in cases {
        let evs = [event(*ts)];
        assert_eq!(pending::partition_ms(&evs, fallback), *want, "{ts:?}");
        // A fallback is a stageTimestamp that does not parse, except before 1970.
        let parses = ts.and_then(parse_timestamp_micros).is_some();
        let before_1970 = ts.is_some_and(|t| t.starts_with("1969"));
        assert_eq!(parses, *want != fallback || before_1970, "{ts:?}");
    }
    // Only the first event counts.
    let two = [event(None), event(Some("2025-11-27T05:35:35Z"))];
    assert_eq!(pending::partition_ms(&two, fallback), fallback);
    assert_eq!(
        pending::object_key("", &[event(Some("2025-11-27T07:35:35+02:00"))], 0)
            .split('/')
            .take(5)
            .collect::<Vec<_>>()
            .join("/"),
        "pending/2025/11/27/05"
    );
}
