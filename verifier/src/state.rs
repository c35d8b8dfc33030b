//! The verifier's state between runs (`--state`): the last verified checkpoint, the Merkle
//! frontier at its size, the objects already verified, and the (auditID, stage) pairs
//! stored so far.
//!
//! With it, the next run proves that the store still holds a tree consistent with that
//! checkpoint (an outside reference against a cut tail, like the signer's latest
//! checkpoint) and reads only the objects that are new: the stored leaves after the
//! remembered size are pushed onto the remembered frontier, so every new checkpoint's root
//! recomputed that way is consistent with the remembered one by construction.
//!
//! The file is JSON (docs/FORMAT.md §6.3), written atomically (temporary file, fsync,
//! rename, fsync of the directory). Its checkpoint's signature and its frontier are
//! re-checked when loaded; its object list and pair digests cannot be, so with a
//! [`StateKey`] the whole state is authenticated (HMAC-SHA256) and a state that does not
//! verify is refused. Without one, the state is trusted as much as whoever can write it.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac as _};

use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::merkle::{Frontier, Hash};
use sealtrail_core::trust::{Keyring, SignatureVerdict, Trust};
use serde::{Deserialize, Serialize};

/// `format` of the state file.
pub const STATE_FORMAT: &str = "sealtrail-verifier-state/v2";

/// Fewest bytes a `--state-key` may have (a 256-bit HMAC key).
pub const MIN_STATE_KEY_LEN: usize = 32;

/// Why a state file cannot be used. Every one stops the run (exit 2): a state that is not
/// what the verifier wrote must not steer what it skips.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a state file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{path}: format {found:?}, expected {STATE_FORMAT:?} (a state of an earlier version: remove it, the next run is a full one)"
    )]
    Format { path: PathBuf, found: String },
    #[error(
        "{path}: the state has no MAC but --state-key is given: it was written without the key, or its MAC was removed"
    )]
    Unauthenticated { path: PathBuf },
    #[error(
        "{path}: the state's MAC does not verify with --state-key: it was altered, or written with another key"
    )]
    BadMac { path: PathBuf },
    #[error("{path}: the state is authenticated: pass the --state-key it was written with")]
    KeyNeeded { path: PathBuf },
    #[error("state key {path}: {why}")]
    Key { path: PathBuf, why: String },
    /// The state does not agree with the trust bundle or with itself.
    #[error("state: {0}")]
    Invalid(String),
}

/// The auditor's key that authenticates the state file (HMAC-SHA256).
#[derive(Clone)]
pub struct StateKey(Vec<u8>);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(..)")
    }
}

impl StateKey {
    /// The key held in a file: its bytes, surrounding whitespace removed (so that
    /// `openssl rand -hex 32 > key` works), at least [`MIN_STATE_KEY_LEN`] of them.
    pub fn from_file(path: &Path) -> Result<Self, StateError> {
        let bytes = std::fs::read(path).map_err(|e| StateError::Key {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        Self::new(bytes.trim_ascii().to_vec()).map_err(|why| StateError::Key {
            path: path.to_path_buf(),
            why,
        })
    }

    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < MIN_STATE_KEY_LEN {
            return Err(format!(
                "{} bytes: a state key has at least {MIN_STATE_KEY_LEN}",
                bytes.len()
            ));
        }
        Ok(Self(bytes))
    }

    /// HMAC-SHA256 over the format line and the bytes of the `state` member.
    fn mac(&self, state: &[u8]) -> Hmac<sha2::Sha256> {
        let mut mac = <Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        mac.update(STATE_FORMAT.as_bytes());
        mac.update(b"\n");
        mac.update(state);
        mac
    }
}

/// The file as stored: the state, and its MAC over the state's exact bytes.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    state: Box<serde_json::value::RawValue>,
}

/// An object verified by an earlier run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRecord {
    pub size: u64,
    /// The store's fingerprint of the object when it was verified (S3 ETag; a local file's
    /// inode and ctime); absent in states written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// SHA-256 of the object's bytes when verified (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub first_index: u64,
    pub last_index: u64,
}

/// The state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub format: String,
    pub origin: String,
    /// The last verified checkpoint (signed note).
    pub checkpoint: String,
    /// Its tree size and root (hex), repeated for readers.
    pub size: u64,
    pub root: String,
    /// The frontier at `size` (hex, largest subtree first: `Frontier::hashes`).
    pub frontier: Vec<String>,
    /// Newest stageTimestamp seen, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_time: Option<f64>,
    /// Object key → what it held when verified.
    pub objects: BTreeMap<String, ObjectRecord>,
    /// The rotation checkpoints accepted so far, oldest first (signed notes): the keys they
    /// introduced stay trusted for the next run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rotations: Vec<String>,
    /// Pending batch key → the seal an earlier run verified for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sealed: BTreeMap<String, crate::sealing::SealedRecord>,
    /// The timestamped horizon an earlier run found (docs/FORMAT.md §10.5): tokens below it
    /// are not read again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamped: Option<crate::TimestampHorizon>,
    /// The digests of every (auditID, stage) pair stored up to `size` (16 bytes each,
    /// little-endian, sorted, base64), when the run that wrote it checked duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<String>,
}

/// A state checked against the trust bundle, ready to resume from.
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    pub checkpoint: SignedCheckpoint,
    pub frontier: Frontier,
    /// The trust bundle plus the remembered rotations.
    pub keyring: Keyring,
}

impl State {
    pub(crate) fn new(
        origin: &str,
        checkpoint: &SignedCheckpoint,
        frontier: &Frontier,
        last_event_time: Option<f64>,
        objects: BTreeMap<String, ObjectRecord>,
        rotations: &[SignedCheckpoint],
    ) -> Self {
        Self {
            format: STATE_FORMAT.into(),
            origin: origin.into(),
            checkpoint: String::from_utf8_lossy(&checkpoint.to_bytes()).into_owned(),
            size: checkpoint.checkpoint.size,
            root: hex::encode(checkpoint.checkpoint.root),
            frontier: frontier.hashes().iter().map(hex::encode).collect(),
            last_event_time,
            objects,
            rotations: rotations
                .iter()
                .map(|r| String::from_utf8_lossy(&r.to_bytes()).into_owned())
                .collect(),
            sealed: BTreeMap::new(),
            seen: None,
            timestamped: None,
        }
    }

    /// Records the pair digests (sorted, so that equal sets give equal files).
    pub(crate) fn set_seen(&mut self, seen: &HashSet<u128>) {
        let mut sorted: Vec<u128> = seen.iter().copied().collect();
        sorted.sort_unstable();
        let mut bytes = Vec::with_capacity(sorted.len() * 16);
        for d in sorted {
            bytes.extend_from_slice(&d.to_le_bytes());
        }
        self.seen = Some(BASE64.encode(bytes));
    }

    /// The pair digests the state holds; `None` if the run that wrote it did not check
    /// duplicates.
    pub(crate) fn seen(&self) -> Result<Option<HashSet<u128>>, StateError> {
        let Some(b64) = &self.seen else {
            return Ok(None);
        };
        let bytes = BASE64
            .decode(b64)
            .map_err(|e| StateError::Invalid(format!("the state's pair digests: {e}")))?;
        if bytes.len() % 16 != 0 {
            return Err(StateError::Invalid(
                "the state's pair digests are not a whole number of 16-byte digests".into(),
            ));
        }
        Ok(Some(
            bytes
                .chunks_exact(16)
                .map(|c| {
                    let mut d = [0u8; 16];
                    d.copy_from_slice(c);
                    u128::from_le_bytes(d)
                })
                .collect(),
        ))
    }

    /// Reads a state file; `Ok(None)` if it does not exist (a first run). With `key`, the
    /// state must carry a MAC that verifies; without, it must carry none.
    pub fn load(path: &Path, key: Option<&StateKey>) -> Result<Option<Self>, StateError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: path.into(),
                    source,
                });
            }
        };
        let parse = |source| StateError::Parse {
            path: path.into(),
            source,
        };
        // The format first, so that a state of another version is named as such.
        #[derive(Deserialize)]
        struct Format {
            format: String,
        }
        let format: Format = serde_json::from_slice(&bytes).map_err(parse)?;
        if format.format != STATE_FORMAT {
            return Err(StateError::Format {
                path: path.into(),
                found: format.format,
            });
        }
        let envelope: Envelope = serde_json::from_slice(&bytes).map_err(parse)?;
        let raw = envelope.state.get().as_bytes();
        match (key, &envelope.mac) {
            (Some(key), Some(mac)) => {
                let tag = hex::decode(mac).map_err(|_| StateError::BadMac { path: path.into() })?;
                key.mac(raw)
                    .verify_slice(&tag)
                    .map_err(|_| StateError::BadMac { path: path.into() })?;
            }
            (Some(_), None) => return Err(StateError::Unauthenticated { path: path.into() }),
            (None, Some(_)) => return Err(StateError::KeyNeeded { path: path.into() }),
            (None, None) => {}
        }
        let state: Self = serde_json::from_slice(raw).map_err(parse)?;
        if state.format != STATE_FORMAT {
            return Err(StateError::Format {
                path: path.into(),
                found: state.format,
            });
        }
        Ok(Some(state))
    }

    /// Writes the state atomically (temporary file next to `path`, fsync, rename, fsync of
    /// the directory), authenticated with `key` if given.
    pub fn save(&self, path: &Path, key: Option<&StateKey>) -> Result<(), StateError> {
        let inner = serde_json::to_string_pretty(self).map_err(|source| StateError::Parse {
            path: path.into(),
            source,
        })?;
        let mac = key.map(|k| hex::encode(k.mac(inner.as_bytes()).finalize().into_bytes()));
        let state = serde_json::value::RawValue::from_string(inner).map_err(|source| {
            StateError::Parse {
                path: path.into(),
                source,
            }
        })?;
        let envelope = Envelope {
            format: STATE_FORMAT.into(),
            mac,
            state,
        };
        let mut bytes = serde_json::to_vec(&envelope).map_err(|source| StateError::Parse {
            path: path.into(),
            source,
        })?;
        bytes.push(b'\n');
        write_atomic(path, &bytes).map_err(|source| StateError::Io {
            path: path.into(),
            source,
        })
    }

    /// Checks the state against `trust`: the origin, the checkpoint's signature, and that
    /// the frontier gives the checkpoint's root.
    pub(crate) fn resume(&self, trust: &Trust) -> Result<Resume, StateError> {
        if self.origin != trust.origin() {
            return Err(StateError::Invalid(format!(
                "the state is for log {:?}, the trust bundle for {:?}",
                self.origin,
                trust.origin()
            )));
        }
        let cp = SignedCheckpoint::parse(self.checkpoint.as_bytes())
            .map_err(|e| StateError::Invalid(format!("state checkpoint: {e}")))?;
        if let Some(h) = &self.timestamped
            && (h.size > cp.checkpoint.size || h.text_hash().is_err())
        {
            return Err(StateError::Invalid(
                "the state's timestamped horizon is beyond its checkpoint, or not a checkpoint hash".into(),
            ));
        }
        let mut keyring = Keyring::new(trust.clone());
        for note in &self.rotations {
            let rotation = SignedCheckpoint::parse(note.as_bytes())
                .map_err(|e| StateError::Invalid(format!("state rotation: {e}")))?;
            if !matches!(keyring.verify(&rotation), SignatureVerdict::Trusted { .. }) {
                return Err(StateError::Invalid(format!(
                    "the state's rotation at size {} is not signed by a trusted key",
                    rotation.checkpoint.size
                )));
            }
            keyring
                .rotate(&rotation)
                .map_err(|e| StateError::Invalid(format!("the state's rotation: {e}")))?;
        }
        if !matches!(keyring.verify(&cp), SignatureVerdict::Trusted { .. }) {
            return Err(StateError::Invalid(
                "the state's checkpoint is not signed by a trusted key".into(),
            ));
        }
        if cp.checkpoint.size != self.size || hex::encode(cp.checkpoint.root) != self.root {
            return Err(StateError::Invalid(
                "the state's size or root differs from its checkpoint".into(),
            ));
        }
        let hashes = self
            .frontier
            .iter()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|b| Hash::try_from(b.as_slice()).ok())
                    .ok_or_else(|| {
                        StateError::Invalid(format!(
                            "state frontier hash {h:?} is not 64 hex digits"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let frontier = Frontier::from_parts(self.size, hashes)
            .map_err(|e| StateError::Invalid(e.to_string()))?;
        if frontier.root() != cp.checkpoint.root {
            return Err(StateError::Invalid(
                "the state's frontier does not give its checkpoint's root".into(),
            ));
        }
        Ok(Resume {
            checkpoint: cp,
            frontier,
            keyring,
        })
    }
}

/// Writes `bytes` to `path` atomically (temporary file in the same directory, fsync,
/// rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
