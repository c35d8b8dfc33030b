//! The trust bundle: the pinned list of signer public keys a verifier accepts, each for a
//! range of tree sizes. It is the only trust root; nothing in the stored data can add a key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use rustls_pki_types::CertificateDer;

use crate::Error;
use crate::checkpoint::{NoteSignature, SignedCheckpoint};
use crate::keys::{Algorithm, PublicKey};

/// The `format` value of version 1 bundles.
pub const TRUST_FORMAT: &str = "sealtrail-trust/v1";
/// Largest trust bundle file accepted.
pub const MAX_TRUST_BUNDLE_LEN: usize = 1024 * 1024;
/// Most keys in one bundle.
pub const MAX_TRUSTED_KEYS: usize = 1024;
/// Most timestamp authorities in one bundle.
pub const MAX_TRUSTED_TSAS: usize = 16;
/// Most root (or intermediate) certificates of one timestamp authority.
pub const MAX_TSA_CERTS: usize = 8;

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

/// One pinned RFC 3161 timestamp authority (docs/FORMAT.md §5, §10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedTsa {
    /// The name its tokens are stored under ([`crate::timestamp::is_valid_tsa_name`]).
    pub name: String,
    /// Root certificates its TSA certificates chain to: DER, standard base64.
    pub roots: Vec<String>,
    /// Intermediate certificates a token may leave out: DER, standard base64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intermediates: Vec<String>,
}

/// A parsed trust bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustBundle {
    pub format: String,
    /// The log this bundle is for.
    pub origin: String,
    pub keys: Vec<TrustedKey>,
    /// The timestamp authorities whose tokens count (none: the trail is not timestamped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timestamp_authorities: Vec<TrustedTsa>,
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
            timestamp_authorities: Vec::new(),
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
            if entry.name != bundle.origin {
                return Err(ctx(format!(
                    "key name {:?} is not the origin {:?}",
                    entry.name, bundle.origin
                )));
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
        check_tsas(&bundle.timestamp_authorities)?;
        Ok(Self { bundle, keys })
    }

    /// The pinned timestamp authority named `name`.
    pub fn tsa(&self, name: &str) -> Option<&TrustedTsa> {
        self.bundle
            .timestamp_authorities
            .iter()
            .find(|t| t.name == name)
    }

    pub fn tsas(&self) -> &[TrustedTsa] {
        &self.bundle.timestamp_authorities
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
        verdict(sc, |sig| {
            // A key may be listed more than once (with several validity ranges).
            let mut entries = self
                .keys
                .iter()
                .filter(|k| k.id == sig.key_id && k.entry.name == sig.name)
                .peekable();
            let key = &entries.peek()?.key;
            Some((key, entries.any(|k| k.valid_at(size))))
        })
    }
}

/// Every TSA entry: a valid, unique name, 1 to [`MAX_TSA_CERTS`] roots that are X.509
/// certificates usable as trust anchors, at most [`MAX_TSA_CERTS`] intermediates.
fn check_tsas(tsas: &[TrustedTsa]) -> Result<(), Error> {
    if tsas.len() > MAX_TRUSTED_TSAS {
        return Err(Error::Trust(format!(
            "{} timestamp authorities (max {MAX_TRUSTED_TSAS})",
            tsas.len()
        )));
    }
    for (i, tsa) in tsas.iter().enumerate() {
        let ctx =
            |why: String| Error::Trust(format!("timestamp authority #{i} ({:?}): {why}", tsa.name));
        if !crate::timestamp::is_valid_tsa_name(&tsa.name) {
            return Err(ctx("invalid name".into()));
        }
        if tsas[..i].iter().any(|t| t.name == tsa.name) {
            return Err(ctx("named twice".into()));
        }
        if tsa.roots.is_empty() || tsa.roots.len() > MAX_TSA_CERTS {
            return Err(ctx(format!(
                "{} roots (1 to {MAX_TSA_CERTS})",
                tsa.roots.len()
            )));
        }
        if tsa.intermediates.len() > MAX_TSA_CERTS {
            return Err(ctx(format!(
                "{} intermediates (max {MAX_TSA_CERTS})",
                tsa.intermediates.len()
            )));
        }
        for root in tsa.roots_der().map_err(|e| ctx(e.to_string()))? {
            webpki::anchor_from_trusted_cert(&root)
                .map_err(|e| ctx(format!("a root is not a usable certificate: {e:?}")))?;
        }
        tsa.intermediates_der().map_err(|e| ctx(e.to_string()))?;
    }
    Ok(())
}

impl TrustedTsa {
    /// An entry for `name` pinning the DER certificates `roots`.
    pub fn new(name: &str, roots: &[Vec<u8>], intermediates: &[Vec<u8>]) -> Self {
        Self {
            name: name.into(),
            roots: roots.iter().map(|r| B64.encode(r)).collect(),
            intermediates: intermediates.iter().map(|r| B64.encode(r)).collect(),
        }
    }

    pub fn roots_der(&self) -> Result<Vec<CertificateDer<'static>>, Error> {
        decode_certs(&self.roots, "root")
    }

    pub fn intermediates_der(&self) -> Result<Vec<CertificateDer<'static>>, Error> {
        decode_certs(&self.intermediates, "intermediate")
    }
}

/// Base64 DER certificates, each parsed as X.509 so that garbage fails when the bundle is
/// read, not when a token is checked.
fn decode_certs(certs: &[String], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    use der::Decode as _;
    certs
        .iter()
        .map(|c| {
            let der = B64
                .decode(c)
                .map_err(|e| Error::Trust(format!("{what} certificate: {e}")))?;
            x509_cert::Certificate::from_der(&der)
                .map_err(|e| Error::Trust(format!("{what} certificate: {e}")))?;
            Ok(CertificateDer::from(der))
        })
        .collect()
}

impl ResolvedKey {
    fn valid_at(&self, size: u64) -> bool {
        size >= self.entry.valid_from_size && self.entry.valid_to_size.is_none_or(|to| size <= to)
    }
}

/// The verdict on a note's signature lines, given for each line the key that would check
/// it and whether that key may sign at the note's size (`None`: not a known key, ignored).
fn verdict<'a>(
    sc: &SignedCheckpoint,
    lookup: impl Fn(&NoteSignature) -> Option<(&'a PublicKey, bool)>,
) -> SignatureVerdict {
    let (mut in_range, mut out_of_range, mut found) = (Vec::new(), Vec::new(), Vec::new());
    for sig in &sc.signatures {
        found.push(sig.key_id);
        let Some((key, valid)) = lookup(sig) else {
            continue;
        };
        if key.verify(sc.text(), &sig.signature).is_err() {
            return SignatureVerdict::BadSignature { key_id: sig.key_id };
        }
        if valid {
            in_range.push(sig.key_id);
        } else {
            out_of_range.push(sig.key_id);
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

/// A key that an accepted rotation checkpoint introduced, for a range of sizes.
#[derive(Debug, Clone)]
struct LearnedKey {
    id: u32,
    key: PublicKey,
    from_size: u64,
    /// Set when a later rotation retired it.
    to_size: Option<u64>,
}

/// Why a rotation checkpoint was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationRefused {
    /// The key the rotation names did not sign it (or its signature does not verify).
    NotSignedByNewKey { new_key_id: u32 },
    /// The current key (the one the last accepted rotation named, else a bundle key valid
    /// at its size) did not sign it.
    NotSignedByOldKey { new_key_id: u32 },
    /// Its size is below that of a rotation already accepted.
    Stale { new_key_id: u32, accepted_at: u64 },
    /// It names the key that already signs.
    AlreadyCurrent { new_key_id: u32 },
    /// A signature line from a known key on it does not verify.
    BadSignature { new_key_id: u32, key_id: u32 },
    /// Within the history the trust bundle describes (below its last takeover), it is not
    /// one of the rotations the bundle lists.
    NotInBundle { new_key_id: u32 },
}

impl std::fmt::Display for RotationRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotSignedByNewKey { new_key_id } => write!(
                f,
                "rotation to key {new_key_id:08x} is not signed by that key"
            ),
            Self::NotSignedByOldKey { new_key_id } => write!(
                f,
                "rotation to key {new_key_id:08x} is not signed by the current key it replaces"
            ),
            Self::Stale {
                new_key_id,
                accepted_at,
            } => write!(
                f,
                "rotation to key {new_key_id:08x} comes before the rotation already accepted at size {accepted_at}"
            ),
            Self::AlreadyCurrent { new_key_id } => {
                write!(f, "rotation to key {new_key_id:08x}, which already signs")
            }
            Self::BadSignature { new_key_id, key_id } => write!(
                f,
                "rotation to key {new_key_id:08x} carries a signature of key {key_id:08x} that does not verify"
            ),
            Self::NotInBundle { new_key_id } => write!(
                f,
                "rotation to key {new_key_id:08x} within the history the trust bundle lists, which does not list it"
            ),
        }
    }
}

/// The keys a verifier accepts as it walks a log's checkpoints in chain order: the trust
/// bundle's, plus the keys introduced by accepted rotation checkpoints, minus what those
/// rotations retired (docs/FORMAT.md §3.4).
///
/// A rotation checkpoint of size `n` naming key `K` is accepted when `K` signed it, no
/// accepted rotation is larger, no known key's signature on it fails, and it is vouched
/// for: by the **current key** (the key the last accepted rotation named; before any, a
/// bundle key valid at `n` whose range does not end at `n`), or by the bundle itself (an
/// entry for `K`'s very public key starting at `n`). Then `K` becomes the current key, and
/// every range of every other key that started at or before `n` ends at `n`: a retired
/// key can neither sign past `n` nor vouch for a later rotation.
#[derive(Debug, Clone)]
pub struct Keyring {
    trust: Trust,
    /// Per bundle entry (same order as the bundle): the size after which a rotation
    /// retired it.
    caps: Vec<Option<u64>>,
    learned: Vec<LearnedKey>,
    /// The key named by the last accepted rotation, and that rotation's size.
    current: Option<(u32, u64)>,
    /// Refused rotations: the key they named and their size.
    refused: Vec<(PublicKey, u64)>,
    rotations: Vec<SignedCheckpoint>,
}

impl Keyring {
    pub fn new(trust: Trust) -> Self {
        Self {
            caps: vec![None; trust.keys.len()],
            trust,
            learned: Vec::new(),
            current: None,
            refused: Vec::new(),
            rotations: Vec::new(),
        }
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The accepted rotation checkpoints, oldest first.
    pub fn rotations(&self) -> &[SignedCheckpoint] {
        &self.rotations
    }

    /// If `sc` is signed (verifiably) by a key that a refused rotation of size at most
    /// `sc`'s named: that key's id and the rotation's size.
    pub fn signed_by_refused_key(&self, sc: &SignedCheckpoint) -> Option<(u32, u64)> {
        let origin = self.trust.origin();
        self.refused
            .iter()
            .find(|(key, n)| *n <= sc.checkpoint.size && sc.signed_by(origin, key))
            .map(|(key, n)| (key.key_id(origin), *n))
    }

    /// The largest size a rotation let `key_id` sign through the bundle, if a rotation
    /// retired one of its bundle entries.
    pub fn retired_after(&self, key_id: u32) -> Option<u64> {
        self.entries(key_id).filter_map(|(i, _)| self.caps[i]).max()
    }

    /// The bundle entries of `key_id` (under the origin), with their positions.
    fn entries(&self, key_id: u32) -> impl Iterator<Item = (usize, &ResolvedKey)> {
        let origin = self.trust.origin();
        self.trust
            .keys
            .iter()
            .enumerate()
            .filter(move |(_, k)| k.id == key_id && k.entry.name == origin)
    }

    /// Whether `key_id` is still current: the pinned history and the accepted rotations
    /// let it sign checkpoints of any size from now on (a retired key's range has ended).
    pub fn is_current(&self, key_id: u32) -> bool {
        self.valid(key_id, u64::MAX)
    }

    /// Whether `key_id` may sign a checkpoint of `size`.
    fn valid(&self, key_id: u32, size: u64) -> bool {
        self.entries(key_id)
            .any(|(i, k)| k.valid_at(size) && self.caps[i].is_none_or(|cap| size <= cap))
            || self.learned.iter().any(|k| {
                k.id == key_id && size >= k.from_size && k.to_size.is_none_or(|to| size <= to)
            })
    }

    /// Checks a checkpoint's signatures against the bundle and the accepted rotations, as
    /// [`Trust::verify`] does; a key retired by a rotation is out of range past it.
    pub fn verify(&self, sc: &SignedCheckpoint) -> SignatureVerdict {
        let origin = self.trust.origin();
        if sc.checkpoint.origin != origin {
            return SignatureVerdict::WrongOrigin {
                origin: sc.checkpoint.origin.clone(),
            };
        }
        let size = sc.checkpoint.size;
        verdict(sc, |sig| {
            if sig.name != origin {
                return None;
            }
            let key = self
                .entries(sig.key_id)
                .map(|(_, k)| &k.key)
                .next()
                .or_else(|| {
                    self.learned
                        .iter()
                        .find(|k| k.id == sig.key_id)
                        .map(|k| &k.key)
                })?;
            Some((key, self.valid(sig.key_id, size)))
        })
    }

    /// Takes a rotation checkpoint, in chain order (see the type's docs). A checkpoint that
    /// is not a rotation, or a rotation already accepted, changes nothing.
    pub fn rotate(&mut self, sc: &SignedCheckpoint) -> Result<(), RotationRefused> {
        let Some(new_key) = &sc.checkpoint.new_key else {
            return Ok(());
        };
        if self.rotations.iter().any(|r| r.text() == sc.text()) {
            return Ok(());
        }
        let origin = self.trust.origin().to_string();
        let new_id = new_key.key_id(&origin);
        let size = sc.checkpoint.size;
        let refuse = |this: &mut Self, why: RotationRefused| {
            this.refused.push((new_key.clone(), size));
            Err(why)
        };
        if !sc.signed_by(&origin, new_key) {
            return refuse(
                self,
                RotationRefused::NotSignedByNewKey { new_key_id: new_id },
            );
        }
        if let Some((_, at)) = self.current
            && size < at
        {
            return refuse(
                self,
                RotationRefused::Stale {
                    new_key_id: new_id,
                    accepted_at: at,
                },
            );
        }
        if self.current.is_some_and(|(current, _)| current == new_id) {
            return refuse(self, RotationRefused::AlreadyCurrent { new_key_id: new_id });
        }
        let signers = match self.verify(sc) {
            SignatureVerdict::Trusted { key_ids } => key_ids,
            SignatureVerdict::BadSignature { key_id } => {
                return refuse(
                    self,
                    RotationRefused::BadSignature {
                        new_key_id: new_id,
                        key_id,
                    },
                );
            }
            _ => Vec::new(),
        };
        // The bundle's own entry for K starting here (capped at most here, by an earlier
        // rotation at this very size).
        let scheduled = self
            .entries(new_id)
            .find(|(i, k)| {
                k.key == *new_key
                    && k.entry.valid_from_size == size
                    && self.caps[*i].is_none_or(|cap| cap >= size)
            })
            .map(|(_, k)| k.entry.valid_to_size);
        // Within the history the bundle describes, only the rotations it lists.
        let horizon = self
            .trust
            .keys
            .iter()
            .map(|k| k.entry.valid_from_size)
            .max()
            .unwrap_or(0);
        if size < horizon && scheduled.is_none() {
            return refuse(self, RotationRefused::NotInBundle { new_key_id: new_id });
        }
        // A voucher must still be valid after the rotation's size: a key whose range ends
        // here is the one being replaced, not one that may choose its successor.
        let by_current = signers.iter().any(|id| {
            *id != new_id
                && self.valid(*id, size)
                && self.valid(*id, size.saturating_add(1))
                && self.current.is_none_or(|(current, _)| current == *id)
        });
        if !(by_current || scheduled.is_some()) {
            return refuse(
                self,
                RotationRefused::NotSignedByOldKey { new_key_id: new_id },
            );
        }
        // Retire every range of another key that started at or before `size`.
        for (i, k) in self.trust.keys.iter().enumerate() {
            if k.id != new_id && k.entry.valid_from_size <= size {
                self.caps[i] = Some(self.caps[i].map_or(size, |c| c.min(size)));
            }
        }
        for k in self.learned.iter_mut().filter(|k| k.id != new_id) {
            k.to_size = Some(k.to_size.map_or(size, |to| to.min(size)).max(k.from_size));
        }
        // A scheduled key is trusted as far as the bundle schedules it; past the bundle's
        // history, until a later rotation.
        let to_size = scheduled.flatten();
        self.learned.push(LearnedKey {
            id: new_id,
            key: new_key.clone(),
            from_size: size,
            to_size,
        });
        self.current = Some((new_id, size));
        self.refused.retain(|(k, _)| k.key_id(&origin) != new_id);
        self.rotations.push(sc.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Checkpoint, NoteSignature};
    use ed25519_dalek::Signer as _;

    const ORIGIN: &str = "sealtrail.example/rotation";

    struct Key(ed25519_dalek::SigningKey);

    impl Key {
        fn new(seed: u8) -> Self {
            Self(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
        }
        fn public(&self) -> PublicKey {
            PublicKey::from_ed25519_bytes(self.0.verifying_key().as_bytes()).unwrap()
        }
        fn id(&self) -> u32 {
            self.public().key_id(ORIGIN)
        }
        fn sign(&self, cp: &Checkpoint) -> NoteSignature {
            NoteSignature {
                name: ORIGIN.into(),
                key_id: self.id(),
                signature: self.0.sign(&cp.to_text()).to_bytes().to_vec(),
            }
        }
    }

    fn cp(size: u64, time_ms: u64, new_key: Option<PublicKey>) -> Checkpoint {
        Checkpoint {
            origin: ORIGIN.into(),
            size,
            root: [size as u8; 32],
            time_ms,
            prev: Some([0; 32]),
            new_key,
        }
    }

    fn signed(cp: Checkpoint, by: &[&Key]) -> SignedCheckpoint {
        let sigs = by.iter().map(|k| k.sign(&cp)).collect();
        SignedCheckpoint::new(cp, sigs).unwrap()
    }

    /// A keyring pinning `keys`.
    fn pinned(keys: Vec<TrustedKey>) -> Keyring {
        Keyring::new(Trust::from_bundle(TrustBundle::new(ORIGIN, keys)).unwrap())
    }

    #[test]
    fn cross_signed_rotation_moves_trust() {
        let (a, b) = (Key::new(1), Key::new(2));
        let mut ring = pinned(vec![TrustedKey::new(ORIGIN, &a.public(), 0)]);
        let before = signed(cp(5, 1, None), &[&a]);
        assert!(matches!(
            ring.verify(&before),
            SignatureVerdict::Trusted { .. }
        ));
        let rotation = signed(cp(5, 2, Some(b.public())), &[&a, &b]);
        assert!(matches!(
            ring.verify(&rotation),
            SignatureVerdict::Trusted { .. }
        ));
        ring.rotate(&rotation).unwrap();
        assert_eq!(ring.rotations().len(), 1);
        let after = signed(cp(8, 3, None), &[&b]);
        assert_eq!(
            ring.verify(&after),
            SignatureVerdict::Trusted {
                key_ids: vec![b.id()]
            }
        );
        // The retired key may not sign past the rotation.
        let stale = signed(cp(9, 4, None), &[&a]);
        assert_eq!(
            ring.verify(&stale),
            SignatureVerdict::KeyOutOfRange {
                key_ids: vec![a.id()]
            }
        );
        assert_eq!(ring.retired_after(a.id()), Some(5));
    }

    #[test]
    fn rotation_signed_by_one_key_is_refused() {
        let (a, b) = (Key::new(1), Key::new(2));
        for (by, want) in [
            (
                vec![&a],
                RotationRefused::NotSignedByNewKey { new_key_id: b.id() },
            ),
            (
                vec![&b],
                RotationRefused::NotSignedByOldKey { new_key_id: b.id() },
            ),
        ] {
            let mut ring = pinned(vec![TrustedKey::new(ORIGIN, &a.public(), 0)]);
            let rotation = signed(cp(5, 2, Some(b.public())), &by);
            assert_eq!(ring.rotate(&rotation), Err(want));
            let after = signed(cp(8, 3, None), &[&b]);
            assert_eq!(ring.signed_by_refused_key(&after), Some((b.id(), 5)));
            assert!(matches!(
                ring.verify(&after),
                SignatureVerdict::Untrusted { .. }
            ));
            // The old key goes on being trusted: nothing changed.
            assert!(trusted(&ring, 8, &a));
        }
    }

    #[test]
    fn a_bundle_listing_the_new_key_needs_no_rotation() {
        let (a, b) = (Key::new(1), Key::new(2));
        let mut old = TrustedKey::new(ORIGIN, &a.public(), 0);
        old.valid_to_size = Some(5);
        let ring = pinned(vec![old, TrustedKey::new(ORIGIN, &b.public(), 5)]);
        assert!(trusted(&ring, 8, &b));
        assert!(matches!(
            verdict_of(&ring, 8, &a),
            SignatureVerdict::KeyOutOfRange { .. }
        ));
    }

    #[test]
    fn rotation_text_roundtrips() {
        let (a, b) = (Key::new(1), Key::new(2));
        let rotation = signed(cp(5, 2, Some(b.public())), &[&a, &b]);
        let text = String::from_utf8(rotation.text().to_vec()).unwrap();
        assert!(text.ends_with(&format!("key {}\n", B64.encode(b.public().spki_der()))));
        let back = SignedCheckpoint::parse(&rotation.to_bytes()).unwrap();
        assert_eq!(back, rotation);
        assert!(back.is_rotation());
        // A key line needs a prev line, and must hold a key.
        let mut first = cp(5, 2, Some(b.public()));
        first.prev = None;
        assert!(Checkpoint::from_text(&first.to_text()).is_err());
        let garbled = text.replace("key MC", "key MD");
        assert!(Checkpoint::from_text(garbled.as_bytes()).is_err());
    }
    #[test]
    fn a_retired_key_cannot_rotate_again() {
        let (a, b, c) = (Key::new(1), Key::new(2), Key::new(3));
        let mut ring = pinned(vec![TrustedKey::new(ORIGIN, &a.public(), 0)]);
        ring.rotate(&signed(cp(10, 2, Some(b.public())), &[&a, &b]))
            .unwrap();
        // The retired key, still valid at size 10, tries a second rotation at that size.
        let forged = signed(cp(10, 3, Some(c.public())), &[&a, &c]);
        assert_eq!(
            ring.rotate(&forged),
            Err(RotationRefused::NotSignedByOldKey { new_key_id: c.id() })
        );
        assert!(matches!(
            verdict_of(&ring, 12, &c),
            SignatureVerdict::Untrusted { .. }
        ));
        assert!(trusted(&ring, 12, &b));
        // Nor may a rotation go back below an accepted one, even from the current key.
        assert_eq!(
            ring.rotate(&signed(cp(5, 5, Some(c.public())), &[&b, &c])),
            Err(RotationRefused::Stale {
                new_key_id: c.id(),
                accepted_at: 10
            })
        );
    }

    #[test]
    fn the_bundle_bounds_what_rotations_learn() {
        let (a, b, c) = (Key::new(1), Key::new(2), Key::new(3));
        let mut ka = TrustedKey::new(ORIGIN, &a.public(), 0);
        ka.valid_to_size = Some(10);
        let mut kb = TrustedKey::new(ORIGIN, &b.public(), 10);
        kb.valid_to_size = Some(20);
        let kc = TrustedKey::new(ORIGIN, &c.public(), 20);
        let mut ring = pinned(vec![ka, kb, kc]);
        ring.rotate(&signed(cp(10, 2, Some(b.public())), &[&a, &b]))
            .unwrap();
        // The bundle ends B at 20: a rotation that named B does not extend it.
        assert!(matches!(
            verdict_of(&ring, 500, &b),
            SignatureVerdict::KeyOutOfRange { .. }
        ));
        assert!(trusted(&ring, 500, &c));
    }

    #[test]
    fn rotating_back_does_not_reopen_the_gap() {
        let (a, b) = (Key::new(1), Key::new(2));
        let mut ring = pinned(vec![TrustedKey::new(ORIGIN, &a.public(), 0)]);
        ring.rotate(&signed(cp(10, 2, Some(b.public())), &[&a, &b]))
            .unwrap();
        ring.rotate(&signed(cp(20, 3, Some(a.public())), &[&b, &a]))
            .unwrap();
        for (size, by, trusted) in [
            (15, &a, false),
            (25, &a, true),
            (15, &b, true),
            (25, &b, false),
        ] {
            let v = ring.verify(&signed(cp(size, 4, None), &[by]));
            assert_eq!(
                matches!(v, SignatureVerdict::Trusted { .. }),
                trusted,
                "size {size}: {v:?}"
            );
        }
    }

    #[test]
    fn a_rotation_to_a_key_the_bundle_trusts_is_accepted() {
        // The bundle kept only the new key: the old signature cannot be checked, and need not.
        let (a, b) = (Key::new(1), Key::new(2));
        let mut ring = pinned(vec![TrustedKey::new(ORIGIN, &b.public(), 10)]);
        ring.rotate(&signed(cp(10, 2, Some(b.public())), &[&a, &b]))
            .unwrap();
        assert!(trusted(&ring, 12, &b));
    }

    #[test]
    fn bundle_keys_must_carry_the_origin_as_name() {
        let a = Key::new(1);
        let bundle = TrustBundle::new(
            ORIGIN,
            vec![TrustedKey::new("other.example/log", &a.public(), 0)],
        );
        assert!(Trust::from_bundle(bundle).is_err());
    }
    fn ranged(key: &Key, from: u64, to: Option<u64>) -> TrustedKey {
        let mut k = TrustedKey::new(ORIGIN, &key.public(), from);
        k.valid_to_size = to;
        k
    }

    fn verdict_of(ring: &Keyring, size: u64, by: &Key) -> SignatureVerdict {
        ring.verify(&signed(cp(size, 99, None), &[by]))
    }

    fn trusted(ring: &Keyring, size: u64, by: &Key) -> bool {
        matches!(verdict_of(ring, size, by), SignatureVerdict::Trusted { .. })
    }

    #[test]
    fn a_retired_key_cannot_name_itself_again() {
        // Pinned: the original bundle, A open-ended.
        let (a, b, x) = (Key::new(1), Key::new(2), Key::new(3));
        let mut ring = pinned(vec![TrustedKey::new(ORIGIN, &a.public(), 0)]);
        ring.rotate(&signed(cp(10, 2, Some(b.public())), &[&a, &b]))
            .unwrap();
        let back = signed(cp(20, 3, Some(a.public())), &[&a]);
        assert!(ring.rotate(&back).is_err());
        assert!(!trusted(&ring, 25, &a));
        // Pinned: the exported history; the holder of A tries A, then a key of theirs.
        let mut ring = pinned(vec![ranged(&a, 0, Some(10)), ranged(&b, 10, None)]);
        ring.rotate(&signed(cp(10, 2, Some(b.public())), &[&a, &b]))
            .unwrap();
        assert!(
            ring.rotate(&signed(cp(10, 3, Some(a.public())), &[&a]))
                .is_err()
        );
        assert!(
            ring.rotate(&signed(cp(10, 4, Some(x.public())), &[&a, &x]))
                .is_err()
        );
        assert!(trusted(&ring, 12, &b) && !trusted(&ring, 12, &x));
    }

    #[test]
    fn a_key_whose_range_ends_cannot_vouch_for_another_successor() {
        // Before any rotation: A ends at 10 in the bundle, which schedules B there.
        let (a, b, x) = (Key::new(1), Key::new(2), Key::new(3));
        let mut ring = pinned(vec![ranged(&a, 0, Some(10)), ranged(&b, 10, None)]);
        assert!(
            ring.rotate(&signed(cp(10, 2, Some(x.public())), &[&a, &x]))
                .is_err()
        );
        assert!(!trusted(&ring, 12, &x));
        ring.rotate(&signed(cp(10, 3, Some(b.public())), &[&a, &b]))
            .unwrap();
        assert!(trusted(&ring, 12, &b));
    }

    #[test]
    fn retirement_ends_every_earlier_range() {
        let (a, b, c) = (Key::new(1), Key::new(2), Key::new(3));
        // Two rotations at one size, the bundle exported between them.
        let mut ring = pinned(vec![ranged(&a, 0, Some(10)), ranged(&b, 10, None)]);
        ring.rotate(&signed(cp(10, 2, Some(b.public())), &[&a, &b]))
            .unwrap();
        ring.rotate(&signed(cp(10, 3, Some(c.public())), &[&b, &c]))
            .unwrap();
        assert!(!trusted(&ring, 15, &b) && trusted(&ring, 15, &c));
        // An exported history with a rotation back and forth: no gap reopens.
        let mut ring = pinned(vec![
            ranged(&a, 0, Some(10)),
            ranged(&b, 10, Some(20)),
            ranged(&a, 20, Some(30)),
            ranged(&b, 30, None),
        ]);
        for (size, from, to) in [(10, &a, &b), (20, &b, &a), (30, &a, &b)] {
            ring.rotate(&signed(cp(size, size, Some(to.public())), &[from, to]))
                .unwrap();
        }
        for (size, key, want) in [
            (25, &b, false),
            (25, &a, true),
            (35, &b, true),
            (35, &a, false),
        ] {
            assert_eq!(trusted(&ring, size, key), want, "size {size}");
        }
    }

    #[test]
    fn rotations_past_the_bundle_history_are_not_bounded_by_it() {
        // Pinned: the history exported after A→B; the log later rotates back to A.
        let (a, b) = (Key::new(1), Key::new(2));
        let mut ring = pinned(vec![ranged(&a, 0, Some(10)), ranged(&b, 10, None)]);
        ring.rotate(&signed(cp(10, 2, Some(b.public())), &[&a, &b]))
            .unwrap();
        ring.rotate(&signed(cp(20, 3, Some(a.public())), &[&b, &a]))
            .unwrap();
        assert!(trusted(&ring, 25, &a) && !trusted(&ring, 25, &b));
        assert!(!trusted(&ring, 15, &a));
    }

    #[test]
    fn inside_the_pinned_history_only_listed_rotations_count() {
        let (a, b, c, x) = (Key::new(1), Key::new(2), Key::new(3), Key::new(4));
        // A retired key mints a key of its own inside the history: refused.
        let mut ring = pinned(vec![ranged(&a, 0, Some(10)), ranged(&b, 10, None)]);
        assert_eq!(
            ring.rotate(&signed(cp(6, 2, Some(x.public())), &[&a, &x])),
            Err(RotationRefused::NotInBundle { new_key_id: x.id() })
        );
        assert!(!trusted(&ring, 1_000_000, &x));
        // A key at the end of its range re-names itself, then tries to mint: refused.
        let mut ring = pinned(vec![
            ranged(&a, 0, Some(10)),
            ranged(&b, 10, Some(20)),
            ranged(&c, 20, None),
        ]);
        ring.rotate(&signed(cp(10, 2, Some(b.public())), &[&a, &b]))
            .unwrap();
        assert_eq!(
            ring.rotate(&signed(cp(10, 3, Some(b.public())), &[&b])),
            Err(RotationRefused::AlreadyCurrent { new_key_id: b.id() })
        );
        assert!(
            ring.rotate(&signed(cp(20, 4, Some(x.public())), &[&b, &x]))
                .is_err()
        );
        assert!(!trusted(&ring, 25, &x));
        ring.rotate(&signed(cp(20, 5, Some(c.public())), &[&b, &c]))
            .unwrap();
        assert!(trusted(&ring, 25, &c) && !trusted(&ring, 25, &b));
    }

    #[test]
    fn rotating_back_at_the_same_size_with_an_exported_history() {
        let (a, b) = (Key::new(1), Key::new(2));
        for bundle in [
            vec![ranged(&a, 0, Some(10)), ranged(&b, 10, None)],
            vec![
                ranged(&a, 0, Some(10)),
                ranged(&b, 10, Some(10)),
                ranged(&a, 10, None),
            ],
        ] {
            let mut ring = pinned(bundle);
            ring.rotate(&signed(cp(10, 2, Some(b.public())), &[&a, &b]))
                .unwrap();
            ring.rotate(&signed(cp(10, 3, Some(a.public())), &[&b, &a]))
                .unwrap();
            assert!(trusted(&ring, 12, &a) && !trusted(&ring, 12, &b));
        }
    }

    #[test]
    fn a_rotation_with_a_failing_known_signature_is_refused() {
        let (a, b) = (Key::new(1), Key::new(2));
        let mut ring = pinned(vec![TrustedKey::new(ORIGIN, &a.public(), 0)]);
        let mut rotation = signed(cp(10, 2, Some(b.public())), &[&a, &b]);
        let mut sigs = rotation.signatures.clone();
        sigs[0].signature[0] ^= 1;
        rotation = SignedCheckpoint::new(rotation.checkpoint.clone(), sigs).unwrap();
        assert!(matches!(
            ring.rotate(&rotation),
            Err(RotationRefused::BadSignature { .. })
        ));
    }
}
