//! Choosing the stored events a bundle holds: which records of a segment its selection
//! selects, each checked (its checkpoint trusted, its inclusion proof) before it is kept,
//! within the bundle's limits.

use std::collections::{BTreeMap, HashMap};

use sealtrail_core::bundle::{
    BundleEvent, EventFields, MAX_BUNDLE_EVENTS, MAX_BUNDLE_LEN, Matcher, Selection,
};
use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::jcs;
use sealtrail_core::merkle::{self, Hash};
use sealtrail_core::query::Facts;
use sealtrail_core::segment::Record;

use crate::Error;
use crate::keyring::Verdicts;

use super::reason;

/// Whether the event of a stored record may match, from what the segment reader already
/// extracted (the full check needs the parsed event, for user and verb).
fn may_match(matcher: &Matcher<'_>, r: &Record) -> bool {
    match matcher.selection() {
        Selection::AuditId { audit_id } => r.audit_id.as_deref() == Some(audit_id.as_str()),
        Selection::TimeRange { .. } => matcher.time_matches(r.stage_timestamp.as_deref()),
        Selection::Search { search } => {
            matcher.time_matches(r.stage_timestamp.as_deref())
                && (search.audit_id.is_empty()
                    || search.audit_id.iter().any(|p| {
                        sealtrail_core::query::glob(p, r.audit_id.as_deref().unwrap_or_default())
                    }))
        }
    }
}

/// The events kept so far, with their checkpoints, and what failed (no bundle is written
/// when anything selected fails).
#[derive(Default)]
pub(super) struct Picked {
    pub(super) events: BTreeMap<u64, BundleEvent>,
    /// The checkpoints of the kept events, by text hash.
    pub(super) notes: HashMap<Hash, SignedCheckpoint>,
    pub(super) failures: Vec<String>,
    /// About the bundle's length so far, to stop before building one over the limit.
    approx_len: usize,
}

impl Picked {
    /// Checks and keeps the selected events of one segment (object `key`, checkpoint `cp`);
    /// whether any was kept.
    ///
    /// Errors: [`Error::Limit`] past [`MAX_BUNDLE_EVENTS`] or [`MAX_BUNDLE_LEN`].
    pub(super) fn select(
        &mut self,
        matcher: &Matcher<'_>,
        verdicts: &mut Verdicts,
        key: &str,
        cp: &SignedCheckpoint,
        records: &[(usize, Record)],
    ) -> Result<bool, Error> {
        let mut kept = false;
        for (line, r) in records {
            if !may_match(matcher, r) {
                continue;
            }
            let Some((value, fields)) = self.fields(key, *line, r) else {
                continue;
            };
            if !matcher.matches(&Facts::of(&value)) {
                continue;
            }
            let at = format!(
                "index {} (auditID {}, stage {}) in {key} line {line}",
                r.index, fields.audit_id, fields.stage
            );
            if self.proves(&at, verdicts, cp, r) && self.keep(&at, cp, r, fields)? {
                kept = true;
            }
        }
        Ok(kept)
    }

    /// A stored event, parsed, and its fields; or a failure.
    fn fields(&mut self, key: &str, line: usize, r: &Record) -> Option<(jcs::Value, EventFields)> {
        let value = match jcs::parse(&r.canonical) {
            Ok(v) => v,
            Err(e) => {
                self.failures
                    .push(format!("{key} line {line}: event unreadable: {e}"));
                return None;
            }
        };
        match EventFields::of(&value) {
            Ok(f) => Some((value, f)),
            Err(e) => {
                self.failures
                    .push(format!("{key} line {line}: {}", reason(e)));
                None
            }
        }
    }

    /// Whether the record's checkpoint is trusted and its leaf proves into it; else a
    /// failure.
    fn proves(
        &mut self,
        at: &str,
        verdicts: &mut Verdicts,
        cp: &SignedCheckpoint,
        r: &Record,
    ) -> bool {
        let c = &cp.checkpoint;
        if let Err(why) = verdicts.trusted(cp) {
            self.failures.push(format!(
                "{at}: its checkpoint (size {}) does not verify: {why}",
                c.size
            ));
            return false;
        }
        if let Err(e) = merkle::verify_inclusion(r.index, c.size, &r.leaf_hash, &r.proof, &c.root) {
            self.failures.push(format!(
                "{at}: does not prove into its checkpoint of size {}: {e}",
                c.size
            ));
            return false;
        }
        true
    }

    /// Keeps a checked event unless its index is already kept; whether it was kept.
    fn keep(
        &mut self,
        at: &str,
        cp: &SignedCheckpoint,
        r: &Record,
        fields: EventFields,
    ) -> Result<bool, Error> {
        match self.events.get(&r.index) {
            // The same leaf from a copy of a segment.
            Some(e) if e.leaf_hash() == r.leaf_hash => return Ok(false),
            Some(_) => {
                self.failures
                    .push(format!("{at}: another event is stored at this index"));
                return Ok(false);
            }
            None => {}
        }
        if self.events.len() >= MAX_BUNDLE_EVENTS {
            return Err(Error::Limit(format!(
                "more than {MAX_BUNDLE_EVENTS} events match: narrow the selection"
            )));
        }
        self.approx_len += r.canonical.len() + 200 + 67 * r.proof.len();
        if self.approx_len > MAX_BUNDLE_LEN {
            return Err(Error::Limit(format!(
                "the matching events make a bundle of more than {MAX_BUNDLE_LEN} bytes: narrow the selection"
            )));
        }
        let h = cp.hash();
        self.notes.entry(h).or_insert_with(|| cp.clone());
        self.events.insert(
            r.index,
            BundleEvent {
                index: r.index,
                checkpoint: h,
                canonical: r.canonical.clone(),
                proof: r.proof.clone(),
                fields,
            },
        );
        Ok(true)
    }
}
