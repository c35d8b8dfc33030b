//! The trust bundle: the pinned list of signer public keys a verifier accepts, each for a
//! range of tree sizes. It is the only trust root; nothing in the stored data can add a key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::checkpoint::SignedCheckpoint;
use crate::keys::{Algorithm, PublicKey};

/// The `format` value of version 1 bundles.
pub const TRUST_FORMAT: &str = "sealtrail-trust/v1";
/// Largest trust bundle file accepted.
pub const MAX_TRUST_BUNDLE_LEN: usize = 1024 * 1024;
/// Most keys in one bundle.
pub const MAX_TRUSTED_KEYS: usize = 1024;

/// One trusted signer key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    /// The signed-note key name (the log origin).
    pub name: String,
    /// The signed-note key id, 8 lowercase hex digits (checked against the key).
    pub key_id: String,
    pub algorithm: Algorithm,
    /// DER SubjectPublicKeyInfo, standard base64.
    pub spki: String,
    /// Smallest checkpoint tree size this key may sign: the tree size (= index of the
    /// next leaf) when the key took over.
    pub valid_from_size: u64,
    /// Largest checkpoint tree size this key may sign; absent while the key is current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to_size: Option<u64>,
}

/// A parsed trust bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustBundle {
    pub format: String,
    /// The log this bundle is for.
    pub origin: String,
    pub keys: Vec<TrustedKey>,
}

/// A verified key of a bundle.
#[derive(Debug, Clone)]
struct ResolvedKey {
    entry: TrustedKey,
    id: u32,
    key: PublicKey,
}

/// A trust bundle ready to verify checkpoints.
#[derive(Debug, Clone)]
pub struct Trust {
    bundle: TrustBundle,
    keys: Vec<ResolvedKey>,
}

/// The outcome of checking a checkpoint's signatures against the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureVerdict {
    /// At least one trusted key valid at this size signed it, and no known key's signature failed.
    Trusted { key_ids: Vec<u32> },
    /// A signature from a trusted (name, key id) does not verify.
    BadSignature { key_id: u32 },
    /// No signature from any trusted key; the key ids of the signatures found.
    Untrusted { key_ids: Vec<u32> },
    /// Trusted keys signed, but none of them is valid at this tree size.
    KeyOutOfRange { key_ids: Vec<u32> },
    /// The checkpoint is for another log.
    WrongOrigin { origin: String },
}

impl TrustedKey {
    /// A bundle entry for `key` under `name`, valid from tree size `from`.
    pub fn new(name: &str, key: &PublicKey, valid_from_size: u64) -> Self {
        Self {
            name: name.to_string(),
            key_id: format!("{:08x}", key.key_id(name)),
            algorithm: key.algorithm(),
            spki: B64.encode(key.spki_der()),
            valid_from_size,
            valid_to_size: None,
        }
    }
}

impl TrustBundle {
    pub fn new(origin: &str, keys: Vec<TrustedKey>) -> Self {
        Self {
            format: TRUST_FORMAT.into(),
            origin: origin.into(),
            keys,
        }
    }

    /// Pretty JSON, newline-terminated.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

impl Trust {
    /// Parses and checks a bundle: every key decodes, its algorithm and key id match.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_TRUST_BUNDLE_LEN {
            return Err(Error::Trust(format!(
                "{} bytes (max {MAX_TRUST_BUNDLE_LEN})",
                bytes.len()
            )));
        }
        let bundle: TrustBundle =
            serde_json::from_slice(bytes).map_err(|e| Error::Trust(e.to_string()))?;
        Self::from_bundle(bundle)
    }

    pub fn from_bundle(bundle: TrustBundle) -> Result<Self, Error> {
        if bundle.format != TRUST_FORMAT {
            return Err(Error::Trust(format!("unknown format {:?}", bundle.format)));
        }
        if !crate::checkpoint::is_valid_origin(&bundle.origin) {
            return Err(Error::Trust("invalid origin".into()));
        }
        if bundle.keys.is_empty() || bundle.keys.len() > MAX_TRUSTED_KEYS {
            return Err(Error::Trust(format!(
                "{} keys (1 to {MAX_TRUSTED_KEYS} allowed)",
                bundle.keys.len()
            )));
        }
        let mut keys = Vec::with_capacity(bundle.keys.len());
        for (i, entry) in bundle.keys.iter().enumerate() {
            let ctx = |why: String| Error::Trust(format!("key #{i} ({}): {why}", entry.key_id));
            let der = B64
                .decode(&entry.spki)
                .map_err(|e| ctx(format!("spki: {e}")))?;
            let key = PublicKey::from_spki_der(&der).map_err(|e| ctx(e.to_string()))?;
            if key.algorithm() != entry.algorithm {
                return Err(ctx(format!("spki holds a {} key", key.algorithm())));
            }
            let id = key.key_id(&entry.name);
            if format!("{id:08x}") != entry.key_id {
                return Err(ctx(format!("key id is {id:08x}")));
            }
            if entry
                .valid_to_size
                .is_some_and(|to| to < entry.valid_from_size)
            {
                return Err(ctx("valid_to_size below valid_from_size".into()));
            }
            keys.push(ResolvedKey {
                entry: entry.clone(),
                id,
                key,
            });
        }
        Ok(Self { bundle, keys })
    }

    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    pub fn origin(&self) -> &str {
        &self.bundle.origin
    }

    /// Checks a checkpoint's signatures. Unknown signatures are ignored (C2SP signed-note),
    /// a failing signature from a known key rejects the note.
    pub fn verify(&self, sc: &SignedCheckpoint) -> SignatureVerdict {
        if sc.checkpoint.origin != self.bundle.origin {
            return SignatureVerdict::WrongOrigin {
                origin: sc.checkpoint.origin.clone(),
            };
        }
        let size = sc.checkpoint.size;
        let mut in_range = Vec::new();
        let mut out_of_range = Vec::new();
        let mut found = Vec::new();
        for sig in &sc.signatures {
            found.push(sig.key_id);
            // A key may be listed more than once (with several validity ranges).
            let entries: Vec<&ResolvedKey> = self
                .keys
                .iter()
                .filter(|k| k.id == sig.key_id && k.entry.name == sig.name)
                .collect();
            let Some(k) = entries.first() else {
                continue;
            };
            if k.key.verify(sc.text(), &sig.signature).is_err() {
                return SignatureVerdict::BadSignature { key_id: sig.key_id };
            }
            let valid = entries.iter().any(|k| {
                size >= k.entry.valid_from_size && k.entry.valid_to_size.is_none_or(|to| size <= to)
            });
            if valid {
                in_range.push(k.id);
            } else {
                out_of_range.push(k.id);
            }
        }
        if !in_range.is_empty() {
            SignatureVerdict::Trusted { key_ids: in_range }
        } else if !out_of_range.is_empty() {
            SignatureVerdict::KeyOutOfRange {
                key_ids: out_of_range,
            }
        } else {
            SignatureVerdict::Untrusted { key_ids: found }
        }
    }
}
