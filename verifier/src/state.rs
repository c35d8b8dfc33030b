//! The verifier's state between runs (`--state`): the last verified checkpoint, the Merkle
//! frontier at its size, and the objects already verified.
//!
//! With it, the next run proves that the store still holds a tree consistent with that
//! checkpoint (an outside reference against a cut tail, like the signer's latest
//! checkpoint) and reads only the objects that are new: the stored leaves after the
//! remembered size are pushed onto the remembered frontier, so every new checkpoint's root
//! recomputed that way is consistent with the remembered one by construction.
//!
//! The file is JSON, written atomically (temporary file, fsync, rename, fsync of the
//! directory). It is trusted as much as the machine the verifier runs on: its checkpoint's
//! signature and its frontier are re-checked when loaded, its object list is not.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::merkle::{Frontier, Hash};
use sealtrail_core::trust::{Keyring, SignatureVerdict, Trust};
use serde::{Deserialize, Serialize};

/// `format` of the state file.
pub const STATE_FORMAT: &str = "sealtrail-verifier-state/v1";

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
        }
    }

    /// Reads a state file; `Ok(None)` if it does not exist (a first run).
    pub fn load(path: &Path) -> Result<Option<Self>, String> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let state: Self =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if state.format != STATE_FORMAT {
            return Err(format!(
                "{}: format {:?}, expected {STATE_FORMAT:?}",
                path.display(),
                state.format
            ));
        }
        Ok(Some(state))
    }

    /// Writes the state atomically: a temporary file next to `path`, fsync, rename, fsync
    /// of the directory.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        write_atomic(path, &bytes)
    }

    /// Checks the state against `trust`: the origin, the checkpoint's signature, and that
    /// the frontier gives the checkpoint's root.
    pub(crate) fn resume(&self, trust: &Trust) -> Result<Resume, String> {
        if self.origin != trust.origin() {
            return Err(format!(
                "the state is for log {:?}, the trust bundle for {:?}",
                self.origin,
                trust.origin()
            ));
        }
        let cp = SignedCheckpoint::parse(self.checkpoint.as_bytes())
            .map_err(|e| format!("state checkpoint: {e}"))?;
        let mut keyring = Keyring::new(trust.clone());
        for note in &self.rotations {
            let rotation = SignedCheckpoint::parse(note.as_bytes())
                .map_err(|e| format!("state rotation: {e}"))?;
            if !matches!(keyring.verify(&rotation), SignatureVerdict::Trusted { .. }) {
                return Err(format!(
                    "the state's rotation at size {} is not signed by a trusted key",
                    rotation.checkpoint.size
                ));
            }
            keyring
                .rotate(&rotation)
                .map_err(|e| format!("the state's rotation: {e}"))?;
        }
        if !matches!(keyring.verify(&cp), SignatureVerdict::Trusted { .. }) {
            return Err("the state's checkpoint is not signed by a trusted key".into());
        }
        if cp.checkpoint.size != self.size || hex::encode(cp.checkpoint.root) != self.root {
            return Err("the state's size or root differs from its checkpoint".into());
        }
        let hashes = self
            .frontier
            .iter()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|b| Hash::try_from(b.as_slice()).ok())
                    .ok_or_else(|| format!("state frontier hash {h:?} is not 64 hex digits"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let frontier = Frontier::from_parts(self.size, hashes).map_err(|e| e.to_string())?;
        if frontier.root() != cp.checkpoint.root {
            return Err("the state's frontier does not give its checkpoint's root".into());
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
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?
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
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: {e}", path.display()));
    }
    Ok(())
}
