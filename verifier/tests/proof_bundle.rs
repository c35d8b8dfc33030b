//! The worked example of docs/FORMAT.md §8 (`testdata/proof-bundle/`, regenerated from the
//! example keys by `tests/tests/verifier_prove.rs`): `prove` on its store gives exactly
//! `bundle.json`, `check-bundle` verifies it and prints `check.txt` / `check.json`, and
//! every deviation from the format is refused (exit 2) while every altered proof,
//! signature or selection is named (exit 1).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sealtrail_verifier::prove::{Bundle, check_bundle};

const BIN: &str = env!("CARGO_BIN_EXE_sealtrail-verify");

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/proof-bundle")
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn trust() -> String {
    dir().join("trust.json").to_str().unwrap().to_string()
}

/// `check-bundle` on these bytes.
fn check(bytes: &[u8]) -> Output {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bundle.json");
    std::fs::write(&path, bytes).unwrap();
    run(&["check-bundle", path.to_str().unwrap(), "--trust", &trust()])
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

#[test]
fn prove_reproduces_the_example_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    // A copy: opening a directory store creates its temporary directory.
    copy_dir(&dir().join("store"), tmp.path());
    let out_path = tmp.path().join("out.json");
    let out = run(&[
        "prove",
        "--store",
        tmp.path().to_str().unwrap(),
        "--trust",
        &trust(),
        "--from",
        "2025-11-27T05:35:36Z",
        "--to",
        "2025-11-27T05:36:00Z",
        "--user",
        "alice@example.com",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read(&out_path).unwrap(),
        std::fs::read(dir().join("bundle.json")).unwrap()
    );
}

#[test]
fn check_bundle_verifies_the_example() {
    let bundle = dir().join("bundle.json");
    let out = run(&[
        "check-bundle",
        bundle.to_str().unwrap(),
        "--trust",
        &trust(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(dir().join("check.txt")).unwrap()
    );
    let out = run(&[
        "check-bundle",
        "--json",
        bundle.to_str().unwrap(),
        "--trust",
        &trust(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(dir().join("check.json")).unwrap()
    );
    // The file is RFC 8785 canonical JSON plus one newline.
    let bytes = std::fs::read(&bundle).unwrap();
    let json = bytes.strip_suffix(b"\n").unwrap();
    assert_eq!(sealtrail_core::jcs::canonicalize(json).unwrap(), json);
}

/// The example with `from` replaced by `to` (once, checked).
fn edited(from: &str, to: &str) -> Vec<u8> {
    let s = std::fs::read_to_string(dir().join("bundle.json")).unwrap();
    assert_eq!(s.matches(from).count(), 1, "{from}");
    s.replacen(from, to, 1).into_bytes()
}

#[test]
fn deviations_from_the_format_are_refused() {
    let good = std::fs::read_to_string(dir().join("bundle.json")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("space", edited("\"index\":1,", "\"index\": 1,")),
        (
            "unknown member",
            edited("\"format\":", "\"extra\":1,\"format\":"),
        ),
        (
            "duplicate member",
            edited(
                "\"format\":\"sealtrail-proof/v1\"",
                "\"format\":\"sealtrail-proof/v1\",\"format\":\"sealtrail-proof/v1\"",
            ),
        ),
        (
            "other format",
            edited("sealtrail-proof/v1", "sealtrail-proof/v2"),
        ),
        ("no final newline", good.trim_end().as_bytes().to_vec()),
        ("two newlines", format!("{good}\n").into_bytes()),
        (
            "uppercase hex",
            edited("\"proof\":[\"f26f35007f", "\"proof\":[\"F26F35007F"),
        ),
        (
            "events out of order",
            edited("\"index\":1,", "\"index\":4,"),
        ),
        (
            "a checkpoint no event names",
            edited(
                "\"checkpoint\":\"2731d9ba5cfa905307a4b02328d488602fff1f3a1c412299c73ab0c60bf12052\"",
                "\"checkpoint\":\"824e6fd8f4f9d6239ed749a447157ce04804654113a7fc67162c08282c36b3ca\"",
            ),
        ),
        ("not JSON", b"{\"checkpoints\":[\n".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in cases {
        let out = check(&bytes);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
        assert!(Bundle::parse(&bytes).is_err(), "{what}");
    }
}

#[test]
fn altered_content_is_named() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "an event's member",
            edited("\"verb\":\"get\"", "\"verb\":\"got\""),
            "leaf_mismatch event index 3",
        ),
        (
            "an index",
            edited("\"index\":3,", "\"index\":2,"),
            "leaf_mismatch event index 2",
        ),
        (
            "a proof hash",
            edited("\"proof\":[\"f26f35007f", "\"proof\":[\"f26f35007e"),
            "leaf_mismatch event index 1",
        ),
        (
            "a consistency proof hash",
            edited("\"dd9f4d4393313d04", "\"dd9f4d4393313d05"),
            "inconsistent checkpoint 2731d9ba5cfa905307a4b02328d488602fff1f3a1c412299c73ab0c60bf12052",
        ),
        (
            "the head's signature",
            edited("ag3C7RiIoacZHwoIsMbn", "ag3C7RiIoacZHwoIsMbm"),
            "bad_signature checkpoint 824e6fd8f4f9d6239ed749a447157ce04804654113a7fc67162c08282c36b3ca",
        ),
        (
            "the selection",
            edited("\"user\":\"alice@example.com\"", "\"user\":\"bob\""),
            "selection_mismatch event index 1",
        ),
    ];
    for (what, bytes, want) in cases {
        let out = check(&bytes);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        assert!(text(&out).contains(want), "{what}: {}", text(&out));
    }
    // A rotation whose new key's signature fails teaches nothing: the checkpoint that key
    // signed is then untrusted.
    let s = std::fs::read_to_string(dir().join("bundle.json")).unwrap();
    let rotation_sig = s.rfind("— sealtrail.example/vectors ").unwrap() + 40;
    let mut b = s.into_bytes();
    b[rotation_sig] = if b[rotation_sig] == b'A' { b'B' } else { b'A' };
    let out = check(&b);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("bad_rotation") && t.contains("untrusted_key"),
        "{t}"
    );
    // The library says the same.
    let bundle = Bundle::parse(&b).unwrap();
    let trust =
        sealtrail_core::trust::Trust::parse(&std::fs::read(dir().join("trust.json")).unwrap())
            .unwrap();
    assert!(!check_bundle(&bundle, &trust).verified);
}

/// What `fuzz/fuzz_targets/proof_bundle.rs` checks, on truncations and single-byte changes
/// spread over the whole example (strides keep a debug build fast): no panic, and what
/// parses re-encodes to the same bytes.
#[test]
fn mutations_never_panic_and_roundtrip() {
    let good = std::fs::read(dir().join("bundle.json")).unwrap();
    let trust =
        sealtrail_core::trust::Trust::parse(&std::fs::read(dir().join("trust.json")).unwrap())
            .unwrap();
    let mut accepted = 0;
    let mut try_one = |b: &[u8]| {
        if let Ok(bundle) = Bundle::parse(b) {
            assert_eq!(bundle.encode(), b);
            let _ = check_bundle(&bundle, &trust).summary();
            accepted += 1;
        }
    };
    for len in (0..good.len()).step_by(11) {
        try_one(&good[..len]);
    }
    for at in (0..good.len()).step_by(7) {
        for with in [b'0', b'"', 0xff] {
            let mut b = good.clone();
            b[at] = with;
            try_one(&b);
        }
    }
    // Some changes keep a valid bundle (hex digits in hashes, letters in strings): checked.
    assert!(accepted > 0);
}

/// The optional `timestamps` member (FORMAT.md §8.1, §10.6): one spelling, every rule of
/// order and reference refused when broken, and a token that does not verify named by
/// `check-bundle` (the example's trust bundle pins no TSA).
#[test]
fn the_timestamps_member_is_strict() {
    use sealtrail_verifier::prove::BundleTimestamp;
    let bytes = std::fs::read(dir().join("bundle.json")).unwrap();
    let bundle = Bundle::parse(&bytes).unwrap();
    assert!(bundle.timestamps.is_empty());
    let head = bundle.checkpoints.last().unwrap().hash();
    let first = bundle.checkpoints[0].hash();
    let token = |checkpoint, tsa: &str| BundleTimestamp {
        checkpoint,
        tsa: tsa.into(),
        token: vec![0x30, 0x03, 0x02, 0x01, 0x00],
    };
    let mut with = bundle.clone();
    with.timestamps = vec![token(first, "a"), token(first, "b"), token(head, "a")];
    let encoded = with.encode();
    assert_eq!(Bundle::parse(&encoded).unwrap(), with, "round trip");
    let json = String::from_utf8(encoded.clone()).unwrap();
    assert!(json.contains(r#","timestamps":[{"checkpoint":""#), "{json}");

    let refused = |b: &Bundle| Bundle::parse(&b.encode()).is_err();
    let mut b = with.clone();
    b.timestamps.swap(0, 1);
    assert!(refused(&b), "out of order");
    let mut b = with.clone();
    b.timestamps[1].tsa = "a".into();
    assert!(refused(&b), "the same (checkpoint, tsa) twice");
    let mut b = with.clone();
    b.timestamps[0].checkpoint = [7; 32];
    assert!(refused(&b), "on no checkpoint of the bundle");
    let mut b = with.clone();
    b.timestamps[0].token.clear();
    assert!(refused(&b), "an empty token");
    let mut b = with.clone();
    b.timestamps[0].tsa = "Not A Name".into();
    assert!(refused(&b), "an invalid TSA name");
    // Spellings encode never writes.
    let empty = String::from_utf8(bytes.clone())
        .unwrap()
        .replace("}\n", ",\"timestamps\":[]}\n");
    assert!(Bundle::parse(empty.as_bytes()).is_err(), "an empty list");
    let unpadded = json.replace("MAMCAQA=", "MAMCAQA");
    assert_ne!(unpadded, json);
    assert!(
        Bundle::parse(unpadded.as_bytes()).is_err(),
        "base64 without padding"
    );

    // The example's trust bundle pins no TSA: each token is a bad_timestamp, and no event
    // gets a time.
    let trust = sealtrail_core::trust::Trust::parse(&std::fs::read(trust()).unwrap()).unwrap();
    let report = check_bundle(&with, &trust);
    assert!(!report.verified);
    let kinds: Vec<_> = report.problems.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["bad_timestamp"; 3]);
    assert!(report.events.iter().all(|e| e.existed_by.is_none()));
    let out = check(&encoded);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}
