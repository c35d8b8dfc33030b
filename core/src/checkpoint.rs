//! Checkpoints: c2sp.org/tlog-checkpoint bodies, signed as c2sp.org/signed-note notes, and
//! chained by hash.
//!
//! The note text is exactly:
//!
//! ```text
//! <origin>\n
//! <tree size, decimal>\n
//! <root hash, standard base64>\n
//! time <signer's clock, Unix milliseconds, decimal>\n
//! prev <SHA-256 of the previous checkpoint's note text, standard base64>\n   (absent on the first)
//! key <DER SubjectPublicKeyInfo of the next signing key, standard base64>\n   (rotations only)
//! ```
//!
//! # Key rotation
//!
//! A *rotation checkpoint* carries the `key` line. It has the size and root of the
//! checkpoint before it (it adds no leaf), names it as `prev`, and is signed by both the
//! key it retires and the key it names: the old key vouches for the new one, the new one
//! proves it is held. From it on only the named key signs. Rotation checkpoints are also
//! stored as objects of their own ([`object_key`]), since no segment carries them.
//!
//! The chain hash covers the previous note *text* (not its signature lines), so that adding
//! a co-signature (key rotation) does not change a checkpoint's identity, and so that the
//! non-deterministic ECDSA signatures do not either.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::keys::PublicKey;
use crate::merkle::Hash;

/// Largest signed note accepted (text plus signature lines).
pub const MAX_NOTE_LEN: usize = 16 * 1024;
/// Longest origin (log name) accepted.
pub const MAX_ORIGIN_LEN: usize = 256;
/// Most signature lines accepted on one checkpoint.
pub const MAX_SIGNATURES: usize = 16;

/// A checkpoint body: what the signer commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name, one per cluster; also the signing key's note name.
    pub origin: String,
    /// Number of leaves in the tree.
    pub size: u64,
    /// RFC 6962 root hash of those leaves.
    pub root: Hash,
    /// The signer's clock when it signed, Unix milliseconds. Never decreases along the chain.
    pub time_ms: u64,
    /// [`text_hash`] of the previous checkpoint; `None` only for the first one.
    pub prev: Option<Hash>,
    /// Only on a rotation checkpoint: the key that signs from here on (see the module docs).
    pub new_key: Option<PublicKey>,
}

/// Where rotation checkpoints are stored, under the store's prefix.
pub const CHECKPOINTS_PREFIX: &str = "checkpoints/";

/// The object key of a stored checkpoint: `checkpoints/<size, 20 digits>-<text hash, hex>.note`.
pub fn object_key(prefix: &str, sc: &SignedCheckpoint) -> String {
    format!(
        "{prefix}{CHECKPOINTS_PREFIX}{:020}-{}.note",
        sc.checkpoint.size,
        hex::encode(sc.hash())
    )
}

/// SHA-256 of a note text: the identity of a checkpoint, and what `prev` holds.
pub fn text_hash(text: &[u8]) -> Hash {
    Sha256::digest(text).into()
}

/// Whether `origin` is usable as a log origin and a signed-note key name.
pub fn is_valid_origin(origin: &str) -> bool {
    !origin.is_empty()
        && origin.len() <= MAX_ORIGIN_LEN
        && signed_note::is_key_name_valid(origin)
        && !origin.chars().any(char::is_control)
}

impl Checkpoint {
    /// The note text.
    pub fn to_text(&self) -> Vec<u8> {
        let mut t = format!(
            "{}\n{}\n{}\ntime {}\n",
            self.origin,
            self.size,
            B64.encode(self.root),
            self.time_ms
        );
        if let Some(prev) = &self.prev {
            t.push_str("prev ");
            t.push_str(&B64.encode(prev));
            t.push('\n');
        }
        if let Some(key) = &self.new_key {
            t.push_str("key ");
            t.push_str(&B64.encode(key.spki_der()));
            t.push('\n');
        }
        t.into_bytes()
    }

    /// Parses a note text, strictly: every line as [`Checkpoint::to_text`] writes it.
    pub fn from_text(text: &[u8]) -> Result<Self, Error> {
        let bad = |why: &str| Error::Checkpoint(why.to_string());
        if text.len() > MAX_NOTE_LEN {
            return Err(bad("too long"));
        }
        let text = std::str::from_utf8(text).map_err(|_| bad("not UTF-8"))?;
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("text does not end in a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if !is_valid_origin(origin) {
            return Err(bad("invalid origin line"));
        }
        let size = parse_decimal(lines.next().ok_or_else(|| bad("no size line"))?)
            .ok_or_else(|| bad("invalid size line"))?;
        let root = parse_hash(lines.next().ok_or_else(|| bad("no root hash line"))?)
            .ok_or_else(|| bad("invalid root hash line"))?;
        let time_ms = lines
            .next()
            .and_then(|l| l.strip_prefix("time "))
            .and_then(parse_decimal)
            .ok_or_else(|| bad("missing or invalid time line"))?;
        let mut line = lines.next();
        let mut prev = None;
        if let Some(l) = line.and_then(|l| l.strip_prefix("prev ")) {
            prev = Some(parse_hash(l).ok_or_else(|| bad("invalid prev line"))?);
            line = lines.next();
        }
        let mut new_key = None;
        if let Some(l) = line.and_then(|l| l.strip_prefix("key ")) {
            if prev.is_none() {
                return Err(bad("a key line without a prev line"));
            }
            let der = B64.decode(l).map_err(|_| bad("invalid key line"))?;
            new_key = Some(
                PublicKey::from_spki_der(&der)
                    .map_err(|e| bad(&format!("invalid key line: {e}")))?,
            );
            line = lines.next();
        }
        if line.is_some() {
            return Err(bad("unexpected extension line"));
        }
        let cp = Self {
            origin: origin.to_string(),
            size,
            root,
            time_ms,
            prev,
            new_key,
        };
        // Refuse every alternative spelling (leading zeros, base64 variants): one checkpoint,
        // one text, one hash.
        if cp.to_text() != text.as_bytes() {
            return Err(bad("not in canonical form"));
        }
        Ok(cp)
    }
}

fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

fn parse_hash(s: &str) -> Option<Hash> {
    B64.decode(s).ok()?.try_into().ok()
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name (for Sealtrail, the origin).
    pub name: String,
    /// Signed-note key id.
    pub key_id: u32,
    /// Signature bytes (Ed25519: 64 raw bytes; ECDSA: DER).
    pub signature: Vec<u8>,
}

/// A checkpoint with its signature lines, as stored and as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    text: Vec<u8>,
    pub signatures: Vec<NoteSignature>,
}

impl SignedCheckpoint {
    /// Assembles a signed note from a body and its signatures.
    pub fn new(checkpoint: Checkpoint, signatures: Vec<NoteSignature>) -> Result<Self, Error> {
        if signatures.is_empty() || signatures.len() > MAX_SIGNATURES {
            return Err(Error::Note(format!(
                "{} signatures (1 to {MAX_SIGNATURES} allowed)",
                signatures.len()
            )));
        }
        let text = checkpoint.to_text();
        Ok(Self {
            checkpoint,
            text,
            signatures,
        })
    }

    /// Parses a signed note holding a checkpoint. Signatures are parsed, not verified.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_NOTE_LEN {
            return Err(Error::Note(format!(
                "{} bytes (max {MAX_NOTE_LEN})",
                bytes.len()
            )));
        }
        let note = signed_note::Note::from_bytes(bytes).map_err(|e| Error::Note(e.to_string()))?;
        let text = note.text().to_vec();
        let checkpoint = Checkpoint::from_text(&text)?;
        // The crate keeps its signature list private; the lines are simple to read back.
        let sig_block = &bytes[text.len() + 1..];
        let mut signatures = Vec::new();
        for line in sig_block.split_inclusive(|b| *b == b'\n') {
            let sig = signed_note::Signature::from_bytes(line.strip_suffix(b"\n").unwrap_or(line))
                .map_err(|e| Error::Note(e.to_string()))?;
            signatures.push(NoteSignature {
                name: sig.name().to_string(),
                key_id: sig.id(),
                signature: sig.signature().to_vec(),
            });
        }
        let sc = Self::new(checkpoint, signatures)?;
        if sc.to_bytes() != bytes {
            return Err(Error::Note("not in canonical form".into()));
        }
        Ok(sc)
    }

    /// The note text (what is signed and what [`text_hash`] covers).
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// [`text_hash`] of this checkpoint.
    pub fn hash(&self) -> Hash {
        text_hash(&self.text)
    }

    /// Whether this is a rotation checkpoint (it names a new key).
    pub fn is_rotation(&self) -> bool {
        self.checkpoint.new_key.is_some()
    }

    /// Whether `key` (under the note name `name`) signed this note: a signature line with
    /// its name and key id that verifies.
    pub fn signed_by(&self, name: &str, key: &PublicKey) -> bool {
        let id = key.key_id(name);
        self.signatures.iter().any(|s| {
            s.name == name && s.key_id == id && key.verify(&self.text, &s.signature).is_ok()
        })
    }

    /// The signed note: text, a blank line, one `— name base64(keyid ‖ sig)` line each.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.text.clone();
        out.push(b'\n');
        for s in &self.signatures {
            let mut blob = s.key_id.to_be_bytes().to_vec();
            blob.extend_from_slice(&s.signature);
            out.extend_from_slice("— ".as_bytes());
            out.extend_from_slice(s.name.as_bytes());
            out.push(b' ');
            out.extend_from_slice(B64.encode(blob).as_bytes());
            out.push(b'\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(prev: Option<Hash>) -> Checkpoint {
        Checkpoint {
            origin: "sealtrail.example/test".into(),
            size: 42,
            root: [3u8; 32],
            time_ms: 1_764_221_736_123,
            prev,
            new_key: None,
        }
    }

    #[test]
    fn text_roundtrip() {
        for cp in [sample(None), sample(Some([9u8; 32]))] {
            let text = cp.to_text();
            assert_eq!(Checkpoint::from_text(&text).unwrap(), cp);
        }
    }

    #[test]
    fn refuses_variants() {
        let good = String::from_utf8(sample(Some([9u8; 32])).to_text()).unwrap();
        for bad in [
            good.replace("\n42\n", "\n042\n"),
            good.replace("time ", "time  "),
            good.replace("prev ", "prev"),
            format!("{good}extra\n"),
            good.trim_end().to_string(),
            good.replacen("sealtrail.example/test", "bad name", 1),
            good.replace("\n42\n", "\n18446744073709551616\n"),
        ] {
            assert!(Checkpoint::from_text(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signed_roundtrip() {
        let sc = SignedCheckpoint::new(
            sample(None),
            vec![NoteSignature {
                name: "sealtrail.example/test".into(),
                key_id: 0xdeadbeef,
                signature: vec![1, 2, 3, 4, 5],
            }],
        )
        .unwrap();
        let bytes = sc.to_bytes();
        let back = SignedCheckpoint::parse(&bytes).unwrap();
        assert_eq!(back, sc);
        assert!(SignedCheckpoint::parse(&bytes[..bytes.len() - 1]).is_err());
    }
}
