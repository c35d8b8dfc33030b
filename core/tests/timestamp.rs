//! RFC 3161 tokens against the vector of docs/FORMAT.md §10.7: a real token that OpenSSL's
//! own TSA (`openssl ts -reply`) made for checkpoint.note, with a test PKI
//! (scripts/make-timestamp-vectors). The checks of §10.4 that a changed token can reach
//! here (the path to a pinned root, the signature, the message digest, the response's
//! framing) are each made to fail; the others are in tests/tests/timestamps.rs or need a
//! TSA that misbehaves.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use sealtrail_core::checkpoint::{SignedCheckpoint, text_hash};
use sealtrail_core::timestamp::{self, token_from_response, verify_token};
use sealtrail_core::trust::{Trust, TrustBundle, TrustedTsa};

fn read(name: &str) -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/vectors");
    std::fs::read(dir.join(name)).unwrap()
}

fn tsa(root: &str) -> TrustedTsa {
    TrustedTsa::new("test-tsa", &[read(&format!("timestamp/{root}.der"))], &[])
}

#[test]
fn the_vector_token_verifies_and_names_its_checkpoint() {
    let token = read("timestamp/token.tsr");
    let info = verify_token(&token, &tsa("root")).unwrap();
    let cp = SignedCheckpoint::parse(&read("checkpoint.note")).unwrap();
    assert_eq!(info.imprint, text_hash(cp.text()));
    assert_eq!(
        hex::encode(info.imprint),
        String::from_utf8(read("checkpoint-text-hash.txt"))
            .unwrap()
            .trim()
    );
    assert_eq!(info.accuracy_ms, 1000);
    assert_eq!(info.policy, "1.3.6.1.4.1.99999.1");
    assert_eq!(info.signer, "CN=Sealtrail test TSA");
    // genTime as token.txt (OpenSSL's own reading) prints it.
    let text = String::from_utf8(read("timestamp/token.txt")).unwrap();
    let stamp = text
        .lines()
        .find_map(|l| l.strip_prefix("Time stamp: "))
        .unwrap();
    let when = time::OffsetDateTime::from_unix_timestamp((info.gen_time_ms / 1000) as i64)
        .unwrap()
        .format(&time::macros::format_description!(
            "[month repr:short] [day padding:space] [hour]:[minute]:[second] [year] GMT"
        ))
        .unwrap();
    assert_eq!(stamp, when);
    let nonce = text
        .lines()
        .find_map(|l| l.strip_prefix("Nonce: 0x"))
        .unwrap();
    let ours = hex::encode_upper(info.nonce.unwrap());
    assert_eq!(ours.trim_start_matches('0'), nonce);
}

#[test]
fn the_response_holds_exactly_the_token() {
    assert_eq!(
        token_from_response(&read("timestamp/response.tsr")).unwrap(),
        read("timestamp/token.tsr")
    );
    let mut cut = read("timestamp/response.tsr");
    cut.truncate(cut.len() - 1);
    assert!(token_from_response(&cut).is_err());
}

#[test]
fn an_unpinned_root_is_refused() {
    let err = verify_token(&read("timestamp/token.tsr"), &tsa("other-root")).unwrap_err();
    assert!(err.to_string().contains("does not chain"), "{err}");
}

#[test]
fn a_flipped_signature_byte_is_refused() {
    let mut token = read("timestamp/token.tsr");
    // The signature is the token's last member (no unsigned attributes).
    let last = token.len() - 1;
    token[last] ^= 1;
    let err = verify_token(&token, &tsa("root")).unwrap_err();
    assert!(
        err.to_string().contains("signature does not verify"),
        "{err}"
    );
}

#[test]
fn a_changed_time_is_refused() {
    let mut token = read("timestamp/token.tsr");
    // genTime's digits: a later second, inside the signed TSTInfo.
    let at = token.windows(4).position(|w| w == b"2026").unwrap();
    token[at + 3] = b'7';
    let err = verify_token(&token, &tsa("root")).unwrap_err();
    assert!(err.to_string().contains("message-digest"), "{err}");
}

fn bundle() -> TrustBundle {
    serde_json::from_slice(&read("trust.json")).unwrap()
}

#[test]
fn the_bundle_pins_tsas_strictly() {
    let mut b = bundle();
    b.timestamp_authorities = vec![tsa("root")];
    let trust = Trust::from_bundle(b.clone()).unwrap();
    assert!(trust.tsa("test-tsa").is_some());
    let back = Trust::parse(&b.to_json()).unwrap();
    assert_eq!(back.bundle(), &b);
    for mutate in [
        |b: &mut TrustBundle| b.timestamp_authorities[0].name = "Bad Name".into(),
        |b: &mut TrustBundle| b.timestamp_authorities[0].roots.clear(),
        |b: &mut TrustBundle| {
            b.timestamp_authorities
                .push(b.timestamp_authorities[0].clone())
        },
        |b: &mut TrustBundle| b.timestamp_authorities[0].intermediates = vec!["!!".into()],
        |b: &mut TrustBundle| b.timestamp_authorities[0].roots = vec!["AAAA".into()],
    ] {
        let mut bad = b.clone();
        mutate(&mut bad);
        assert!(Trust::from_bundle(bad).is_err());
    }
    let json = String::from_utf8(b.to_json()).unwrap();
    let unknown = json.replace("\"roots\"", "\"extra\": 1, \"roots\"");
    assert!(Trust::parse(unknown.as_bytes()).is_err());
}

#[test]
fn key_of_the_vector() {
    let cp = SignedCheckpoint::parse(&read("checkpoint.note")).unwrap();
    let key = timestamp::object_key("", cp.checkpoint.size, &text_hash(cp.text()), "test-tsa");
    assert_eq!(
        key,
        String::from_utf8(read("timestamp/key.txt")).unwrap().trim()
    );
}
