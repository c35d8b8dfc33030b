//! Signer public keys, their C2SP signed-note key ids, and signature verification.
//!
//! Two signature types of c2sp.org/signed-note are supported:
//! - `0x01` Ed25519 over the note text; key id = SHA-256(name ‖ 0x0A ‖ 0x01 ‖ 32-byte key)[:4].
//! - `0x02` ECDSA P-256 (as github.com/transparency-dev/witness does it): ASN.1 DER
//!   signature over SHA-256(note text); key id = SHA-256(DER SubjectPublicKeyInfo)[:4].
//!
//! Private keys are never handled here: signing lives in the signer's key backends.

use ed25519_dalek::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// Largest DER SubjectPublicKeyInfo accepted (P-256 is 91 bytes, Ed25519 44).
pub const MAX_SPKI_LEN: usize = 256;
/// Largest signature accepted (a DER P-256 signature is at most 72 bytes).
pub const MAX_SIGNATURE_LEN: usize = 128;

/// Signature algorithm of a signer key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "ed25519")]
    Ed25519,
    #[serde(rename = "ecdsa-p256-sha256")]
    EcdsaP256Sha256,
}

impl Algorithm {
    /// The signed-note signature type byte.
    pub fn note_type(self) -> u8 {
        match self {
            Self::Ed25519 => 0x01,
            Self::EcdsaP256Sha256 => 0x02,
        }
    }

    /// The name used in trust bundles and on command lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::EcdsaP256Sha256 => "ecdsa-p256-sha256",
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone)]
enum Inner {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

/// A signer's public key, as carried in a trust bundle (DER SubjectPublicKeyInfo).
#[derive(Clone)]
pub struct PublicKey {
    spki: Vec<u8>,
    inner: Inner,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm())
            .field("spki", &hex::encode(&self.spki))
            .finish()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki == other.spki
    }
}
impl Eq for PublicKey {}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo holding an Ed25519 or a P-256 key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        if der.len() > MAX_SPKI_LEN {
            return Err(Error::Key(format!(
                "SubjectPublicKeyInfo of {} bytes (max {MAX_SPKI_LEN})",
                der.len()
            )));
        }
        let inner = if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            Inner::Ed25519(k)
        } else if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
            Inner::P256(p256::ecdsa::VerifyingKey::from(k))
        } else {
            return Err(Error::Key(
                "not an Ed25519 or P-256 SubjectPublicKeyInfo".into(),
            ));
        };
        // Re-encode so that equal keys have equal bytes whatever the input's DER choices.
        let spki = match &inner {
            Inner::Ed25519(k) => k.to_public_key_der(),
            Inner::P256(k) => p256::PublicKey::from(k).to_public_key_der(),
        }
        .map_err(|e| Error::Key(e.to_string()))?
        .into_vec();
        if spki != der {
            return Err(Error::Key(
                "SubjectPublicKeyInfo is not in its canonical DER form".into(),
            ));
        }
        Ok(Self { spki, inner })
    }

    /// Parses a PEM `PUBLIC KEY` block.
    pub fn from_spki_pem(pem: &str) -> Result<Self, Error> {
        let der = p256::pkcs8::Document::from_public_key_pem(pem)
            .map_err(|e| Error::Key(format!("PEM public key: {e}")))?;
        Self::from_spki_der(der.as_bytes())
    }

    /// From a raw 32-byte Ed25519 public key.
    pub fn from_ed25519_bytes(raw: &[u8; 32]) -> Result<Self, Error> {
        let k = ed25519_dalek::VerifyingKey::from_bytes(raw)
            .map_err(|e| Error::Key(format!("Ed25519 key: {e}")))?;
        let der = k
            .to_public_key_der()
            .map_err(|e| Error::Key(e.to_string()))?;
        Self::from_spki_der(der.as_bytes())
    }

    /// From a SEC1 encoded (compressed or uncompressed) P-256 point.
    pub fn from_p256_sec1(point: &[u8]) -> Result<Self, Error> {
        let k = p256::PublicKey::from_sec1_bytes(point)
            .map_err(|e| Error::Key(format!("P-256 point: {e}")))?;
        let der = k
            .to_public_key_der()
            .map_err(|e| Error::Key(e.to_string()))?;
        Self::from_spki_der(der.as_bytes())
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            Inner::Ed25519(_) => Algorithm::Ed25519,
            Inner::P256(_) => Algorithm::EcdsaP256Sha256,
        }
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// PEM `PUBLIC KEY` (for openssl and humans).
    pub fn to_pem(&self) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.spki);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// The signed-note key id of this key under `name`.
    pub fn key_id(&self, name: &str) -> u32 {
        let digest = match &self.inner {
            Inner::Ed25519(k) => {
                let mut h = Sha256::new();
                h.update(name.as_bytes());
                h.update([b'\n', Algorithm::Ed25519.note_type()]);
                h.update(k.as_bytes());
                h.finalize()
            }
            // transparency-dev/witness: the hash of the DER SPKI alone.
            Inner::P256(_) => Sha256::digest(&self.spki),
        };
        u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
    }

    /// Verifies `sig` over `msg` (the whole note text). ECDSA signatures are DER; both
    /// low-S and high-S forms verify (signers emit low-S, see docs/FORMAT.md).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), Error> {
        if sig.len() > MAX_SIGNATURE_LEN {
            return Err(Error::BadSignature);
        }
        match &self.inner {
            Inner::Ed25519(k) => {
                let sig =
                    ed25519_dalek::Signature::from_slice(sig).map_err(|_| Error::BadSignature)?;
                k.verify_strict(msg, &sig).map_err(|_| Error::BadSignature)
            }
            Inner::P256(k) => {
                let sig = p256::ecdsa::Signature::from_der(sig).map_err(|_| Error::BadSignature)?;
                let digest = Sha256::digest(msg);
                // Accept both S forms whatever the library's default: HSMs emit either.
                let sig = sig.normalize_s().unwrap_or(sig);
                k.verify_prehash(&digest, &sig)
                    .map_err(|_| Error::BadSignature)
            }
        }
    }
}

/// Converts a raw `r ‖ s` P-256 signature (PKCS#11, KMS P1363) into the low-S DER form
/// that notes carry.
pub fn p256_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, Error> {
    let sig = p256::ecdsa::Signature::from_slice(raw).map_err(|_| Error::BadSignature)?;
    let sig = sig.normalize_s().unwrap_or(sig);
    Ok(sig.to_der().as_bytes().to_vec())
}

/// Normalizes a DER P-256 signature to low-S (KMS returns DER with either S).
pub fn p256_der_low_s(der: &[u8]) -> Result<Vec<u8>, Error> {
    let sig = p256::ecdsa::Signature::from_der(der).map_err(|_| Error::BadSignature)?;
    let sig = sig.normalize_s().unwrap_or(sig);
    Ok(sig.to_der().as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;

    #[test]
    fn ed25519_roundtrip_and_key_id() {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let pk = PublicKey::from_ed25519_bytes(sk.verifying_key().as_bytes()).unwrap();
        assert_eq!(pk.algorithm(), Algorithm::Ed25519);
        let sig = sk.sign(b"hello\n");
        pk.verify(b"hello\n", &sig.to_bytes()).unwrap();
        assert!(pk.verify(b"hellO\n", &sig.to_bytes()).is_err());
        // The signed_note crate computes the same recommended key id.
        let mut key = vec![0x01];
        key.extend_from_slice(sk.verifying_key().as_bytes());
        assert_eq!(
            pk.key_id("example.com/log"),
            signed_note::key_id("example.com/log", &key)
        );
        let back = PublicKey::from_spki_der(pk.spki_der()).unwrap();
        assert_eq!(back, pk);
        assert_eq!(PublicKey::from_spki_pem(&pk.to_pem()).unwrap(), pk);
    }

    #[test]
    fn p256_roundtrip_high_and_low_s() {
        let sk = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
        let pk = PublicKey::from_p256_sec1(sk.verifying_key().to_encoded_point(false).as_bytes())
            .unwrap();
        assert_eq!(pk.algorithm(), Algorithm::EcdsaP256Sha256);
        let msg = b"origin\n1\nAAAA\n";
        let digest = Sha256::digest(msg);
        let sig: p256::ecdsa::Signature = sk.sign_prehash(&digest).unwrap();
        let raw = sig.to_bytes();
        let der = p256_raw_to_der(&raw).unwrap();
        pk.verify(msg, &der).unwrap();
        // A high-S twin of the same signature also verifies.
        let (r, s) = sig.split_scalars();
        let high = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        pk.verify(msg, high.to_der().as_bytes()).unwrap();
        assert!(pk.verify(b"other", &der).is_err());
        assert_eq!(
            pk.key_id("any"),
            u32::from_be_bytes(Sha256::digest(pk.spki_der())[..4].try_into().unwrap())
        );
    }

    #[test]
    fn rejects_garbage_keys() {
        assert!(PublicKey::from_spki_der(b"not a key").is_err());
        assert!(PublicKey::from_spki_der(&[0u8; 1000]).is_err());
    }
}
