//! The keys a reader of the store trusts: the pinned trust bundle and the rotations the
//! store holds under `checkpoints/` that it accepts, with the verdict per checkpoint
//! cached (many events share one). Shared by `prove` and `search`, which trust a segment's
//! checkpoint without rebuilding the whole tree as `verify` does.

use std::collections::HashMap;

use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::merkle::Hash;
use sealtrail_core::trust::{Keyring, SignatureVerdict, Trust};
use sha2::{Digest as _, Sha256};

use crate::trail::{CheckpointObject, Trail};
use crate::{Error, FindingKind};

/// Why a checkpoint is not trusted: the finding kind and a detail.
pub type Distrust = (FindingKind, String);

/// The keyring (trust bundle and accepted rotations), with its verdict per note cached.
pub(crate) struct Verdicts {
    ring: Keyring,
    /// SHA-256 of a note's bytes (text and signatures) → trusted, or why not.
    cache: HashMap<Hash, Result<(), Distrust>>,
}

impl Verdicts {
    pub(crate) fn new(trust: &Trust) -> Self {
        Self {
            ring: Keyring::new(trust.clone()),
            cache: HashMap::new(),
        }
    }

    /// The keyring of `trust` and the rotations stored under the trail's `checkpoints/`,
    /// oldest first; what is passed over (unreadable objects, other logs' rotations,
    /// rotations not accepted) is added to `warnings`.
    pub(crate) async fn load(
        trail: &Trail<'_>,
        trust: &Trust,
        warnings: &mut Vec<String>,
    ) -> Result<Self, Error> {
        let mut verdicts = Self::new(trust);
        let mut rotations = Vec::new();
        for obj in trail.checkpoint_objects().await? {
            match trail.read_checkpoint(&obj).await? {
                CheckpointObject::Checkpoint(sc)
                    if sc.is_rotation() && sc.checkpoint.origin == trust.origin() =>
                {
                    rotations.push((obj.key, *sc));
                }
                CheckpointObject::Checkpoint(sc) if sc.is_rotation() => warnings.push(format!(
                    "{}: a rotation of log {:?}, passed over",
                    obj.key, sc.checkpoint.origin
                )),
                CheckpointObject::Checkpoint(_) => {}
                CheckpointObject::Unreadable(why) => warnings.push(format!("{}: {why}", obj.key)),
            }
        }
        rotations.sort_by_key(|(_, r)| (r.checkpoint.size, r.checkpoint.time_ms));
        for (key, r) in rotations {
            if let Err(e) = verdicts.ring.rotate(&r) {
                warnings.push(format!("{key}: rotation not accepted, passed over: {e}"));
            }
        }
        Ok(verdicts)
    }

    /// The rotations accepted, in order.
    pub(crate) fn rotations(&self) -> &[SignedCheckpoint] {
        self.ring.rotations()
    }

    /// Whether the keyring trusts a checkpoint.
    pub(crate) fn trusted(&mut self, cp: &SignedCheckpoint) -> Result<(), String> {
        self.check(cp).map_err(|(_, why)| why)
    }

    /// Whether the keyring trusts a checkpoint, or which finding it is not.
    pub(crate) fn check(&mut self, cp: &SignedCheckpoint) -> Result<(), Distrust> {
        let key: Hash = Sha256::digest(cp.to_bytes()).into();
        if let Some(v) = self.cache.get(&key) {
            return v.clone();
        }
        let verdict = self.ring.verify(cp);
        let v = match &verdict {
            SignatureVerdict::Trusted { .. } => Ok(()),
            SignatureVerdict::BadSignature { .. } => Err(FindingKind::BadSignature),
            SignatureVerdict::Untrusted { .. } => Err(FindingKind::UntrustedKey),
            SignatureVerdict::KeyOutOfRange { .. } => Err(FindingKind::KeyOutOfRange),
            SignatureVerdict::WrongOrigin { .. } => Err(FindingKind::WrongOrigin),
        }
        .map_err(|kind| (kind, format!("{verdict:?}")));
        self.cache.insert(key, v.clone());
        v
    }
}
