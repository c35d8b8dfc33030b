//! Every distinct checkpoint, verified once: its signatures against the keyring (which
//! learns keys from rotation checkpoints, oldest first), and one tree per size (forks).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

use sealtrail_core::checkpoint::{self, CHECKPOINTS_PREFIX, Checkpoint};
use sealtrail_core::merkle::{Frontier, Hash};
use sealtrail_core::trust::{Keyring, SignatureVerdict};
use sealtrail_store::ObjectInfo;
use sha2::{Digest as _, Sha256};

use super::resume::Base;
use super::{Audit, CheckpointInfo, STATE_FILE, chain_order};
use crate::trail::CheckpointObject;
use crate::{Error, FindingKind, VerifiedCheckpoint};

/// The checkpoints seen so far, by the SHA-256 of their signed text.
pub(super) type Found = HashMap<Hash, CheckpointInfo>;

/// The verified set of checkpoints.
pub(super) struct Checkpoints {
    /// Text hash → the checkpoint and where it was first seen (the state's first).
    pub all: HashMap<Hash, CheckpointInfo>,
    /// Tree size → distinct checkpoint texts of that size (more than one may be a fork).
    pub by_size: BTreeMap<u64, Vec<Hash>>,
    /// Texts signed by a key trusted at their size.
    pub trusted: HashSet<Hash>,
    /// SHA-256 of a whole signed note (as [`Found`] keys it) → the hash of its text.
    notes: HashMap<Hash, Hash>,
}

impl Checkpoints {
    /// The checkpoint of a note found in pass 1 (by the SHA-256 of the whole note).
    pub fn of_note(&self, note: &Hash) -> Option<&Checkpoint> {
        let text = self.notes.get(note)?;
        self.all.get(text).map(|c| &c.cp.checkpoint)
    }

    pub fn of_size(&self, size: u64) -> impl Iterator<Item = &CheckpointInfo> {
        self.by_size
            .get(&size)
            .into_iter()
            .flatten()
            .filter_map(|h| self.all.get(h))
    }

    /// The newest trusted checkpoint whose leaves the frontier holds.
    pub fn newest_verified(&self, frontier: &Frontier) -> Option<VerifiedCheckpoint> {
        self.by_size
            .range(..=frontier.size())
            .rev()
            .flat_map(|(_, hs)| hs.iter())
            .filter(|h| self.trusted.contains(*h))
            .filter_map(|h| self.all.get(h))
            .filter(|c| c.cp.checkpoint.size > 0)
            .max_by_key(|c| chain_order(c))
            .map(|c| VerifiedCheckpoint {
                size: c.cp.checkpoint.size,
                time_ms: c.cp.checkpoint.time_ms,
            })
    }
}

/// The rotation checkpoints stored under `checkpoints/` (every run reads them all: there is
/// one per rotation). Anything else there is reported.
pub(super) async fn rotations(
    audit: &mut Audit<'_>,
    listed: &[ObjectInfo],
) -> Result<Found, Error> {
    let mut found = Found::new();
    let trail = audit.trail;
    for obj in listed {
        let sc = match trail.read_checkpoint(obj).await? {
            CheckpointObject::Checkpoint(sc) => *sc,
            CheckpointObject::Unreadable(why) => {
                audit.find(
                    FindingKind::UnexpectedObject,
                    None,
                    Some(&obj.key),
                    None,
                    why,
                );
                continue;
            }
        };
        if !sc.is_rotation() {
            // Only rotations are stored apart; any other checkpoint here is not the log's.
            audit.find(
                FindingKind::UnexpectedObject,
                None,
                Some(&obj.key),
                None,
                format!(
                    "a checkpoint of size {} that is not a rotation (only rotation checkpoints are stored under {CHECKPOINTS_PREFIX})",
                    sc.checkpoint.size
                ),
            );
            continue;
        }
        let expected_key = checkpoint::object_key(trail.prefix, &sc);
        if expected_key != obj.key {
            let at = sc.checkpoint.size.saturating_sub(1);
            audit.find(
                FindingKind::KeyMismatch,
                Some((at, at)),
                Some(&obj.key),
                None,
                format!("a checkpoint stored under another key than its own ({expected_key})"),
            );
        }
        let hash: Hash = Sha256::digest(sc.to_bytes()).into();
        found.entry(hash).or_insert_with(|| CheckpointInfo {
            cp: sc,
            first_object: obj.key.clone(),
        });
    }
    Ok(found)
}

/// Verifies each distinct checkpoint once, oldest first, then looks for forks.
pub(super) fn verify(
    audit: &mut Audit<'_>,
    found: Found,
    base: &Base,
    keyring: &mut Keyring,
) -> Checkpoints {
    let mut cps = Checkpoints {
        all: HashMap::new(),
        by_size: BTreeMap::new(),
        trusted: HashSet::new(),
        notes: HashMap::new(),
    };
    if let Some(info) = &base.info {
        // Verified when the state was loaded.
        let hash = info.cp.hash();
        cps.trusted.insert(hash);
        cps.by_size
            .entry(info.cp.checkpoint.size)
            .or_default()
            .push(hash);
        cps.all.insert(
            hash,
            CheckpointInfo {
                cp: info.cp.clone(),
                first_object: info.first_object.clone(),
            },
        );
    }
    let mut ordered: Vec<(Hash, CheckpointInfo)> = found.into_iter().collect();
    ordered.sort_by_key(|(_, c)| chain_order(c));
    let mut signing = Signing {
        keyring,
        base_size: base.size(),
        refused: HashMap::new(),
    };
    for (note, info) in ordered {
        cps.notes.insert(note, info.cp.hash());
        if signing.verify_one(audit, &info) {
            cps.trusted.insert(info.cp.hash());
        }
        let text = info.cp.hash();
        if let Entry::Vacant(e) = cps.all.entry(text) {
            cps.by_size
                .entry(info.cp.checkpoint.size)
                .or_default()
                .push(text);
            e.insert(info);
        }
    }
    forks(audit, &cps);
    audit.report.checkpoints = cps.all.len() as u64;
    audit.report.tree_size = cps.by_size.keys().next_back().copied().unwrap_or(0);
    cps
}

/// The keyring as the checkpoints are verified in order.
struct Signing<'k> {
    keyring: &'k mut Keyring,
    base_size: u64,
    /// Refused rotations, by the key they named: the index of their finding, so that what
    /// that key signed is reported there (its range extended) rather than once per
    /// checkpoint.
    refused: HashMap<u32, usize>,
}

impl Signing<'_> {
    /// Verifies one checkpoint (learning the key a valid rotation names); whether it is
    /// signed by a key trusted at its size.
    fn verify_one(&mut self, audit: &mut Audit<'_>, info: &CheckpointInfo) -> bool {
        let cp = &info.cp.checkpoint;
        let verdict = self.keyring.verify(&info.cp);
        // A rotation below the size an earlier run verified, that the run did not know:
        // added afterwards (only the state's own rotations may sit there).
        let late = info.cp.is_rotation()
            && cp.size < self.base_size
            && !self
                .keyring
                .rotations()
                .iter()
                .any(|r| r.text() == info.cp.text());
        let rotation = match verdict {
            _ if late => Err(format!(
                "a rotation below the tree size {} an earlier run verified, which that run did not hold (added since)",
                self.base_size
            )),
            SignatureVerdict::WrongOrigin { .. } => Ok(()),
            _ => self.keyring.rotate(&info.cp).map_err(|e| e.to_string()),
        };
        let refused_by = match (&verdict, &rotation) {
            (SignatureVerdict::Untrusted { .. }, Ok(())) => {
                self.keyring.signed_by_refused_key(&info.cp)
            }
            _ => None,
        };
        if let Some((key_id, _)) = refused_by
            && let Some(&f) = self.refused.get(&key_id)
        {
            // Reported at the refused rotation: widen its range to cover this checkpoint.
            let finding = &mut audit.report.findings[f];
            finding.last_index = Some(
                finding
                    .last_index
                    .unwrap_or(0)
                    .max(cp.size.saturating_sub(1)),
            );
            finding
                .detail
                .push_str(&format!("; also signed the checkpoint of size {}", cp.size));
            return false;
        }
        let trusted = matches!(
            (&verdict, &rotation),
            (SignatureVerdict::Trusted { .. }, Ok(()))
        );
        let problem = match rotation {
            Err(refused) => {
                if let Some(key) = &cp.new_key {
                    self.refused.insert(
                        key.key_id(audit.trust.origin()),
                        audit.report.findings.len(),
                    );
                }
                Some((
                    FindingKind::BadRotation,
                    format!("{refused}; checkpoints signed by that key are not trusted"),
                ))
            }
            Ok(()) => self.verdict_problem(audit, verdict),
        };
        if let Some((kind, why)) = problem {
            let at = cp.size.saturating_sub(1);
            audit.find(
                kind,
                Some((at, at)),
                Some(&info.first_object),
                Some(1),
                format!("checkpoint of size {}: {why}", cp.size),
            );
        }
        trusted
    }

    fn verdict_problem(
        &self,
        audit: &Audit<'_>,
        verdict: SignatureVerdict,
    ) -> Option<(FindingKind, String)> {
        let ids = |ids: &[u32]| {
            ids.iter()
                .map(|k| format!("{k:08x}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match verdict {
            SignatureVerdict::Trusted { .. } => None,
            SignatureVerdict::BadSignature { key_id } => Some((
                FindingKind::BadSignature,
                format!("signature of trusted key {key_id:08x} does not verify"),
            )),
            SignatureVerdict::Untrusted { key_ids } => Some((
                FindingKind::UntrustedKey,
                format!(
                    "signed only by keys not in the trust bundle ({})",
                    ids(&key_ids)
                ),
            )),
            SignatureVerdict::KeyOutOfRange { key_ids } => Some((
                FindingKind::KeyOutOfRange,
                format!(
                    "signed by trusted keys outside their validity ({}){}",
                    ids(&key_ids),
                    key_ids
                        .iter()
                        .find_map(|id| self.keyring.retired_after(*id))
                        .map(|n| format!(", retired by the rotation at size {n}"))
                        .unwrap_or_default()
                ),
            )),
            SignatureVerdict::WrongOrigin { origin } => Some((
                FindingKind::WrongOrigin,
                format!("of log {origin:?}, expected {:?}", audit.trust.origin()),
            )),
        }
    }
}

/// Two checkpoints claiming one tree size: other roots, or one tree but not one chain.
fn forks(audit: &mut Audit<'_>, cps: &Checkpoints) {
    for (size, hashes) in &cps.by_size {
        // Same-size checkpoints with one root (a rotation repeats its predecessor's tree)
        // are one tree; their order is the chain check's business.
        let mut run: Vec<&CheckpointInfo> = cps.of_size(*size).collect();
        let roots: HashSet<Hash> = run.iter().map(|c| c.cp.checkpoint.root).collect();
        // One tree, but not one run (each after the first a rotation naming the one before
        // as prev): two checkpoints claiming the same place in the chain.
        run.sort_by_key(|c| chain_order(c));
        let one_run = run
            .windows(2)
            .all(|w| w[1].cp.is_rotation() && w[1].cp.checkpoint.prev == Some(w[0].cp.hash()));
        if roots.len() > 1 || !one_run {
            let objects: Vec<&str> = hashes
                .iter()
                .filter_map(|h| cps.all.get(h).map(|c| c.first_object.as_str()))
                .collect();
            audit.find(
                FindingKind::Fork,
                Some((size.saturating_sub(1), size.saturating_sub(1))),
                objects.iter().copied().find(|o| *o != STATE_FILE),
                Some(1),
                format!(
                    "{} different checkpoints of tree size {size}{} (in {})",
                    hashes.len(),
                    if roots.len() > 1 {
                        ""
                    } else {
                        " with one tree but not one chain"
                    },
                    objects.join(", ")
                ),
            );
        }
    }
}
