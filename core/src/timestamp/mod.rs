//! Trusted time for checkpoints (RFC 3161): the request the anchor sends a timestamp
//! authority (TSA) for a checkpoint, the checks on its answer, where the token is stored,
//! and the verification of a stored token against the TSA roots the trust bundle pins.
//!
//! A token proves that the checkpoint whose note text it hashes, and so every leaf under
//! it, existed no later than the TSA's `genTime`. The byte layout and every check are in
//! docs/FORMAT.md §10.

mod token;

use der::asn1::{Int, OctetString};
use der::{Decode as _, Encode as _};
use x509_cert::spki::AlgorithmIdentifier;
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion};

use crate::Error;
use crate::merkle::Hash;

pub use token::{TokenInfo, verify_token};

/// Where timestamp tokens are stored, under the store's prefix.
pub const TIMESTAMPS_PREFIX: &str = "timestamps/";
/// The file name suffix of a stored token.
pub const TOKEN_SUFFIX: &str = ".tsr";
/// Largest token (or TSA response) accepted.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;
/// Most certificates a token may carry.
pub const MAX_TOKEN_CERTS: usize = 8;
/// Longest TSA name (a trust bundle entry, and the last part of a token's key).
pub const MAX_TSA_NAME_LEN: usize = 64;
/// Largest stated accuracy of a token's time accepted: beyond, the time says too little.
pub const MAX_ACCURACY_MS: u64 = 3_600_000;
/// Default tolerance between a checkpoint's time and a TSA time covering it: the verifier's
/// `time_inconsistent` threshold, and what the anchor refuses to store.
pub const DEFAULT_TIME_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(60);

/// `id-sha256`: the only message imprint algorithm Sealtrail requests and accepts.
pub(crate) const ID_SHA256: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");

/// Whether `name` can name a TSA: 1 to [`MAX_TSA_NAME_LEN`] of `[a-z0-9-]`, not starting
/// with `-`.
pub fn is_valid_tsa_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TSA_NAME_LEN
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The object key of the token TSA `tsa` gave for the checkpoint of tree size `size` whose
/// note text hashes to `text_hash`:
/// `timestamps/<size, 20 digits>-<text hash, hex>/<tsa>.tsr`.
pub fn object_key(prefix: &str, size: u64, text_hash: &Hash, tsa: &str) -> String {
    format!(
        "{prefix}{TIMESTAMPS_PREFIX}{size:020}-{}/{tsa}{TOKEN_SUFFIX}",
        hex::encode(text_hash)
    )
}

/// What a token key names: (tree size, checkpoint text hash, TSA name). `None` when `key`
/// (with `prefix` removed) is not exactly a key [`object_key`] makes.
pub fn parse_object_key(prefix: &str, key: &str) -> Option<(u64, Hash, String)> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(TIMESTAMPS_PREFIX)?;
    let (dir, file) = rest.split_once('/')?;
    let tsa = file.strip_suffix(TOKEN_SUFFIX)?;
    if !is_valid_tsa_name(tsa) {
        return None;
    }
    let (size, hash) = dir.split_once('-')?;
    if size.len() != 20 || !size.bytes().all(|b| b.is_ascii_digit()) || hash.len() != 64 {
        return None;
    }
    if hash.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let size = size.parse().ok()?;
    let hash: Hash = hex::decode(hash).ok()?.try_into().ok()?;
    Some((size, hash, tsa.to_string()))
}

/// A DER `TimeStampReq` for `imprint` (the SHA-256 of a checkpoint's note text) with
/// `nonce`, asking for the TSA's certificate (`certReq` true) and no policy.
pub fn request(imprint: &Hash, nonce: u64) -> Result<Vec<u8>, Error> {
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: MessageImprint {
            hash_algorithm: AlgorithmIdentifier {
                oid: ID_SHA256,
                parameters: None,
            },
            hashed_message: OctetString::new(imprint.as_slice()).map_err(der_err)?,
        },
        req_policy: None,
        nonce: Some(nonce_int(nonce)?),
        cert_req: true,
        extensions: None,
    };
    req.to_der().map_err(der_err)
}

/// A nonce as a minimal positive DER INTEGER: the top bit cleared and the next one set, so
/// that it always takes exactly 8 bytes.
fn nonce_int(nonce: u64) -> Result<Int, Error> {
    Int::new(&nonce_bytes(nonce)).map_err(der_err)
}

/// The nonce [`request`] puts in a request for `nonce`, as the token's TSTInfo carries it.
pub fn nonce_bytes(nonce: u64) -> [u8; 8] {
    ((nonce & !(1 << 63)) | (1 << 62)).to_be_bytes()
}

/// Takes a TSA's DER `TimeStampResp` apart: the status must be granted (0, or 1 with
/// modifications) and a token present. Returns the token's bytes exactly as the response
/// holds them (what is stored); the token itself is checked by [`verify_token`].
pub fn token_from_response(resp: &[u8]) -> Result<Vec<u8>, Error> {
    if resp.len() > MAX_TOKEN_LEN {
        return Err(Error::Timestamp(format!(
            "response of {} bytes (max {MAX_TOKEN_LEN})",
            resp.len()
        )));
    }
    let parsed = TimeStampResp::from_der(resp).map_err(der_err)?;
    use cmpv2::status::PkiStatus;
    match parsed.status.status {
        PkiStatus::Accepted | PkiStatus::GrantedWithMods => {}
        other => {
            let text = parsed
                .status
                .status_string
                .as_ref()
                .and_then(|s| s.iter().next().map(|t| t.to_string()))
                .unwrap_or_default();
            return Err(Error::Timestamp(format!(
                "the TSA refused the request: status {other:?} {text}"
            )));
        }
    }
    let token = parsed
        .time_stamp_token
        .ok_or_else(|| Error::Timestamp("a granted response without a token".into()))?
        .to_der()
        .map_err(der_err)?;
    // The token is the response's last member; DER has one encoding, so re-encoding it
    // gives back the received bytes unless the TSA used another encoding.
    if !resp.ends_with(&token) {
        return Err(Error::Timestamp(
            "the token in the response is not DER-encoded".into(),
        ));
    }
    Ok(token)
}

pub(crate) fn der_err(e: der::Error) -> Error {
    Error::Timestamp(format!("ASN.1: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let h = [0xab; 32];
        let key = object_key("p/", 42, &h, "freetsa");
        assert_eq!(
            key,
            format!(
                "p/timestamps/00000000000000000042-{}/freetsa.tsr",
                "ab".repeat(32)
            )
        );
        assert_eq!(
            parse_object_key("p/", &key),
            Some((42, h, "freetsa".to_string()))
        );
        for bad in [
            key.replace("freetsa", "Free"),
            key.replace(".tsr", ".der"),
            key.replace("00000000000000000042", "42"),
            key.replace(&"ab".repeat(32), &"AB".repeat(32)),
            key.replace("/freetsa", "/x/freetsa"),
            format!("p/timestamps/00000000000000000042-{}.tsr", "ab".repeat(32)),
        ] {
            assert_eq!(parse_object_key("p/", &bad), None, "{bad}");
        }
    }

    #[test]
    fn tsa_names() {
        assert!(is_valid_tsa_name("digicert-1"));
        for bad in ["", "-a", "A", "a.b", "a/b", &"a".repeat(65)] {
            assert!(!is_valid_tsa_name(bad), "{bad}");
        }
    }

    #[test]
    fn request_is_der_with_the_nonce_and_cert_req() {
        let req = request(&[7; 32], u64::MAX).expect("request");
        let back = TimeStampReq::from_der(&req).expect("decodes");
        assert!(back.cert_req);
        assert_eq!(back.message_imprint.hashed_message.as_bytes(), &[7; 32]);
        let nonce = back.nonce.expect("nonce");
        assert_eq!(nonce.as_bytes(), &nonce_bytes(u64::MAX));
        assert_eq!(nonce_bytes(0)[0], 0x40);
    }
}
