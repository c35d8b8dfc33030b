//! The worked examples of docs/FORMAT.md §7, recomputed from their inputs and compared
//! byte for byte with the files in core/testdata/vectors/. `SEALTRAIL_WRITE_VECTORS=1`
//! rewrites the expected files (only when a format change is intended).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ed25519_dalek::Signer as _;
use sealtrail_core::checkpoint::{self, Checkpoint, NoteSignature, SignedCheckpoint, text_hash};
use sealtrail_core::event::parse_event_list;
use sealtrail_core::keys::PublicKey;
use sealtrail_core::merkle::{self, MemoryLog};
use sealtrail_core::segment;
use sealtrail_core::trust::{Keyring, SignatureVerdict, Trust, TrustBundle, TrustedKey};

const ORIGIN: &str = "sealtrail.example/vectors";
/// The checkpoint time of the examples: 2025-11-27T05:35:36.123Z.
const TIME_MS: u64 = 1_764_221_736_123;

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
