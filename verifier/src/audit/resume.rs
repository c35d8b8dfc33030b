//! Resuming from the state of an earlier run: which objects need reading, which the state
//! vouches for, and which it lists that are gone or changed; and the state to save next.

use std::collections::{BTreeMap, HashSet};

use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_store::ObjectInfo;
use sha2::{Digest as _, Sha256};

use super::checkpoints::Checkpoints;
use super::segments::Pass;
use super::{Audit, CheckpointInfo, STATE_FILE, chain_order};
use crate::sealing::SealedRecord;
use crate::state::{ObjectRecord, Resume, State};
use crate::{Error, FindingKind};

/// Where this run starts: the remembered checkpoint, or the empty tree.
pub(super) struct Base {
    /// The remembered checkpoint, as a checkpoint seen in the "state file".
    pub info: Option<CheckpointInfo>,
}

impl Base {
    /// Tree size the earlier run verified (0 without a state).
    pub fn size(&self) -> u64 {
        self.info.as_ref().map_or(0, |i| i.cp.checkpoint.size)
    }

    pub fn new(resumed: Option<&Resume>) -> Self {
        Self {
            info: resumed.map(|r| CheckpointInfo {
                cp: r.checkpoint.clone(),
                first_object: STATE_FILE.to_string(),
            }),
        }
    }
}

/// The segment objects split by what the state says of them.
pub(super) struct Selected<'o> {
    /// Verified by an earlier run and unchanged: not read again.
    pub kept: BTreeMap<String, ObjectRecord>,
    pub to_read: Vec<&'o ObjectInfo>,
}

/// With a state: skip what it lists, report what it lists and is gone or changed.
pub(super) async fn select<'o>(
    audit: &mut Audit<'_>,
    base: &Base,
    objects: &'o [ObjectInfo],
) -> Result<Selected<'o>, Error> {
    let mut selected = Selected {
        kept: BTreeMap::new(),
        to_read: Vec::new(),
    };
    let Some(state) = &audit.options.state else {
        selected.to_read = objects.iter().collect();
        return Ok(selected);
    };
    for obj in objects {
        match state.objects.get(&obj.key) {
            Some(rec) => {
                if let Some(rec) = recheck(audit, rec, obj).await? {
                    selected.kept.insert(obj.key.clone(), rec);
                    audit.report.segments_skipped += 1;
                }
            }
            None => selected.to_read.push(obj),
        }
    }
    let listed: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let present_end = selected
        .kept
        .values()
        .map(|r| r.last_index + 1)
        .max()
        .unwrap_or(0);
    for (key, rec) in &state.objects {
        if listed.contains(key.as_str()) {
            continue;
        }
        let detail = if rec.first_index >= present_end {
            format!(
                "truncated since the last run: verified then (tree size {}), no longer in the store",
                base.size()
            )
        } else {
            "deleted since the last run: verified then, no longer in the store".to_string()
        };
        audit.find(
            FindingKind::MissingEvents,
            Some((rec.first_index, rec.last_index)),
            Some(key),
            None,
            detail,
        );
    }
    Ok(selected)
}

/// An object the state lists: its record if it is unchanged since it was verified, else
/// `None` after reporting it.
async fn recheck(
    audit: &mut Audit<'_>,
    rec: &ObjectRecord,
    obj: &ObjectInfo,
) -> Result<Option<ObjectRecord>, Error> {
    let range = Some((rec.first_index, rec.last_index));
    if rec.size == obj.size && (rec.fingerprint.is_none() || rec.fingerprint == obj.fingerprint) {
        // Same size and fingerprint (or a record from before fingerprints).
        return Ok(Some(rec.clone()));
    }
    if rec.size == obj.size && rec.sha256.is_some() {
        // The fingerprint moved at the same size (a same-length edit, or a restore or
        // copy): the content decides.
        let bytes = audit.trail.get(&obj.key).await?;
        let digest = hex::encode(Sha256::digest(&bytes));
        if rec.sha256.as_deref() == Some(digest.as_str()) {
            let mut rec = rec.clone();
            rec.fingerprint = obj.fingerprint.clone();
            return Ok(Some(rec));
        }
        audit.find(
            FindingKind::ObjectChanged,
            range,
            Some(&obj.key),
            None,
            "same size as when an earlier run verified it, other content (SHA-256 differs)",
        );
        return Ok(None);
    }
    audit.find(
        FindingKind::ObjectChanged,
        range,
        Some(&obj.key),
        None,
        format!(
            "verified by an earlier run ({} bytes, fingerprint {}), now {} bytes, fingerprint {}",
            rec.size,
            rec.fingerprint.as_deref().unwrap_or("-"),
            obj.size,
            obj.fingerprint.as_deref().unwrap_or("-")
        ),
    );
    Ok(None)
}

/// The state for the next run: only past a run with no integrity finding, at the newest
/// checkpoint, whose root the frontier reproduced.
pub(super) fn next_state(
    audit: &Audit<'_>,
    cps: &Checkpoints,
    pass: &Pass,
    kept: BTreeMap<String, ObjectRecord>,
    rotations: &[SignedCheckpoint],
    sealed: BTreeMap<String, SealedRecord>,
) -> Option<State> {
    let stored_size = audit.report.tree_size;
    let clean = audit.report.findings.iter().all(|f| !f.kind.is_integrity());
    if !clean || pass.tainted || stored_size == 0 || pass.frontier.size() != stored_size {
        return None;
    }
    let newest = cps
        .of_size(stored_size)
        .max_by_key(|c| chain_order(c))
        .filter(|c| pass.frontier.root() == c.cp.checkpoint.root)?;
    let mut objects = kept;
    for read in &pass.read_ok {
        objects.insert(read.key.clone(), read.record.clone());
    }
    let mut state = State::new(
        audit.trust.origin(),
        &newest.cp,
        &pass.frontier,
        audit.report.last_event_time,
        objects,
        rotations,
    );
    state.sealed = sealed;
    state.timestamped = audit.report.timestamps.horizon.clone();
    if let Some(seen) = &pass.seen {
        state.set_seen(seen);
    }
    Some(state)
}
