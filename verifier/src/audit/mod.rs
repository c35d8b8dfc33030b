//! The full audit of a store, in stages:
//!
//! 1. [`resume`]: with a state from an earlier run, skip the objects it verified (they are
//!    re-checked by size, fingerprint or content) and report those gone or changed.
//! 2. [`checkpoints`]: every distinct checkpoint — rotations from `checkpoints/`, the one in
//!    each segment header — verified once against a [`Keyring`], oldest first; forks.
//! 3. [`segments`]: pass 1 reads every segment's header only (index range, checkpoint);
//!    segments are then ordered by the index range their content declares, not by key, so
//!    that renamed or swapped objects are reported as such and do not hide the rest. Pass
//!    2 reads them one at a time in index order, checks each record, and feeds the leaves
//!    into a frontier that recomputes every checkpoint's root.
//! 4. [`events`]: per-event checks beyond integrity (late events, duplicates).
//! 5. [`reference`]: the outside reference against a cut tail (the signer's latest
//!    checkpoint), the tail no segment holds, and the checkpoint chain.
//! 6. The sealing checks ([`crate::sealing`]), then the state for the next run.
//!
//! Memory holds one segment plus O(number of segments + checkpoints), plus, when
//! duplicates are checked, 16 bytes (and the hash set's overhead, about 2x) per event.

mod checkpoints;
mod events;
mod reference;
mod resume;
mod segments;
mod timestamps;

pub use timestamps::{DEFAULT_TIME_TOLERANCE, DEFAULT_UNTIMESTAMPED_AFTER};

use std::sync::Arc;
use std::time::Duration;

use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::trust::{Keyring, Trust};
use sealtrail_store::ObjectStore;

use crate::lock::ObjectLockPolicy;
use crate::signer::SignerSource;
use crate::state::State;
use crate::trail::{Layout, Trail};
use crate::{Error, Finding, FindingKind, Report, TailReference};

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Object key prefix of the log (as the ingester's `--prefix`).
    pub prefix: String,
    /// The signer, as the outside reference against a cut tail, a rollback or a fork.
    pub signer: Option<Arc<dyn SignerSource>>,
    /// The state of an earlier run: resume from it (incremental) and check the store
    /// against it. The state to save next is in [`Report::state`].
    pub state: Option<State>,
    /// Report (auditID, stage) pairs stored at two indexes.
    pub check_duplicates: bool,
    /// Report events whose stageTimestamp is older than the checkpoint that first covers
    /// them by more than this.
    pub late_after: Option<Duration>,
    /// Report events whose stageTimestamp or requestReceivedTimestamp is later than the
    /// time they were received or sealed (§9.4) by more than this (`future_event`).
    pub future_after: Option<Duration>,
    /// Accept a prefix under which nothing of a log is stored (a brand-new log) instead of
    /// reporting `no_trail`.
    pub allow_empty: bool,
    /// Check every segment object's S3 Object Lock.
    pub object_lock: Option<ObjectLockPolicy>,
    /// Draw a progress bar on standard error.
    pub progress: bool,
    /// Do not hash whole objects for [`Report::state`] (when no state will be saved): a
    /// state without them treats any moved fingerprint as a changed object.
    pub no_object_hashes: bool,
    /// Age after which a pending batch without a seal is `unsealed_batch` (`None`:
    /// [`crate::sealing::DEFAULT_SEAL_GRACE`]).
    pub seal_grace: Option<Duration>,
    /// How much later than a covering TSA time a checkpoint may be dated before it is
    /// `time_inconsistent` (`None`: [`DEFAULT_TIME_TOLERANCE`]).
    pub time_tolerance: Option<Duration>,
    /// Age after which checkpoints no token covers are `untimestamped_tail` (`None`:
    /// [`DEFAULT_UNTIMESTAMPED_AFTER`]).
    pub untimestamped_after: Option<Duration>,
}

/// Where a checkpoint was first seen, in findings: the state of an earlier run.
const STATE_FILE: &str = "(state file)";

/// A distinct checkpoint and the object it was first seen in.
struct CheckpointInfo {
    cp: SignedCheckpoint,
    first_object: String,
}

/// The order of a valid chain: sizes grow, times never go back, and a rotation comes
/// after the checkpoint whose tree it repeats.
fn chain_order(c: &CheckpointInfo) -> (u64, u64, bool, String) {
    (
        c.cp.checkpoint.size,
        c.cp.checkpoint.time_ms,
        c.cp.is_rotation(),
        c.first_object.clone(),
    )
}

/// One audit in progress: what it reads, and what it found so far.
struct Audit<'a> {
    trail: Trail<'a>,
    trust: &'a Trust,
    options: &'a Options,
    report: Report,
    /// Index ranges reported missing (they excuse a chain link to an unstored checkpoint).
    missing: Vec<(u64, u64)>,
    /// Index ranges of events that do not prove into their segment's checkpoint.
    unproven: Vec<(u64, u64)>,
}

impl Audit<'_> {
    fn find(
        &mut self,
        kind: FindingKind,
        range: Option<(u64, u64)>,
        object: Option<&str>,
        line: Option<usize>,
        detail: impl Into<String>,
    ) {
        if kind == FindingKind::MissingEvents
            && let Some(r) = range
        {
            self.missing.push(r);
        }
        self.report.findings.push(
            Finding::new(kind, detail)
                .at_range(range)
                .at_object(object)
                .at_line(line),
        );
    }
}

/// Verifies everything under `options.prefix` in `store` against `trust`.
pub async fn verify_store(
    store: &dyn ObjectStore,
    trust: &Trust,
    options: &Options,
) -> Result<Report, Error> {
    let mut audit = Audit {
        trail: Trail::new(store, &options.prefix),
        trust,
        options,
        report: Report {
            origin: trust.origin().to_string(),
            ..Report::default()
        },
        missing: Vec::new(),
        unproven: Vec::new(),
    };
    let resumed = match &options.state {
        Some(st) => Some(st.resume(trust)?),
        None => None,
    };
    // Only a run that checks duplicates needs the pairs an earlier run stored.
    let seen = match options.state.as_ref().filter(|_| options.check_duplicates) {
        Some(st) => match st.seen()? {
            Some(seen) => seen,
            // The pairs before the state's size are unknown: duplicates of them would pass.
            None => {
                return Err(crate::StateError::Invalid(
                    "the state was written without the duplicate check: pass --no-duplicate-check, or start a new state".into(),
                )
                .into());
            }
        },
        None => Default::default(),
    };
    let base = resume::Base::new(resumed.as_ref());
    audit.report.last_event_time = options.state.as_ref().and_then(|s| s.last_event_time);

    // Asked before listing: every leaf it covers had been signed before the listing began.
    let signer_cp = reference::signer_latest(options).await?;
    audit.report.signer_tree_size = signer_cp.as_ref().map(|c| c.checkpoint.size);
    let mut keyring = resumed
        .as_ref()
        .map_or_else(|| Keyring::new(trust.clone()), |r| r.keyring.clone());

    let layout = audit.trail.layout().await?;
    report_layout(&mut audit, &layout, &base);
    let selected = resume::select(&mut audit, &base, &layout.segments).await?;

    let mut found = checkpoints::rotations(&mut audit, &layout.checkpoints).await?;
    let metas = segments::read_headers(&mut audit, &selected.to_read, &mut found).await?;
    let cps = checkpoints::verify(&mut audit, found, &base, &mut keyring);

    let frontier = resumed
        .as_ref()
        .map(|r| r.frontier.clone())
        .unwrap_or_default();
    let pass = segments::read_records(&mut audit, metas, &cps, frontier, base.size(), seen).await?;

    let signer_consistent =
        reference::check_signer(&mut audit, signer_cp.as_ref(), &keyring, &cps).await?;
    let signed_size = signer_cp
        .as_ref()
        .filter(|_| signer_consistent)
        .map_or(0, |c| c.checkpoint.size);
    reference::missing_tail(&mut audit, pass.next, signed_size, pass.prev_key.as_deref());
    reference::check_chain(&mut audit, &cps, &base);
    let earlier = options.state.as_ref().and_then(|s| s.timestamped.as_ref());
    audit.report.timestamps = timestamps::check(
        &mut audit,
        &layout.timestamps,
        &cps,
        base.size(),
        earlier,
        now_ms(),
    )
    .await?;

    let (found, stats, sealed) = crate::sealing::check(
        audit.trail,
        &layout.pending,
        &pass.seals,
        options.state.as_ref().map(|s| &s.sealed),
        options
            .seal_grace
            .unwrap_or(crate::sealing::DEFAULT_SEAL_GRACE),
        now_ms(),
    )
    .await?;
    audit.report.findings.extend(found);
    audit.report.sealing = stats;
    audit.report.findings.sort_by_key(|f| (f.index, f.kind));

    audit.report.verified = cps.newest_verified(&pass.frontier);
    audit.report.tail_reference = tail_reference(signer_cp.as_ref(), signer_consistent, &base);
    audit.report.state = resume::next_state(
        &audit,
        &cps,
        &pass,
        selected.kept,
        keyring.rotations(),
        sealed,
    );
    Ok(audit.report)
}

/// What the listing alone shows: entries no reader can take for objects, and a prefix
/// with no log under it (a wrong `--prefix`, a moved or deleted log), which must not pass
/// as an intact trail of 0 events.
fn report_layout(audit: &mut Audit<'_>, layout: &Layout, base: &resume::Base) {
    for obj in &layout.irregular {
        let why = obj.irregular.as_deref().unwrap_or_default();
        audit.find(
            FindingKind::UnexpectedObject,
            None,
            Some(&obj.key),
            None,
            format!("{why}: not read, but other readers of the store may read it"),
        );
    }
    if layout.is_empty() && base.info.is_none() && !audit.options.allow_empty {
        let prefix = match audit.trail.prefix {
            "" => "the store's root".to_string(),
            p => format!("prefix {p:?}"),
        };
        audit.find(
            FindingKind::NoTrail,
            None,
            None,
            None,
            format!(
                "no segment, rotation checkpoint or pending batch under {prefix} of {}: a wrong --prefix or --store, or a moved or deleted log (pass --allow-empty for a log that has stored nothing yet)",
                audit.trail.store.describe()
            ),
        );
    }
}

/// What vouches for the tail after the newest stored checkpoint: only an outside
/// reference can show that segments were cut together with their checkpoints.
fn tail_reference(
    signer: Option<&SignedCheckpoint>,
    signer_consistent: bool,
    base: &resume::Base,
) -> TailReference {
    match (signer, &base.info) {
        (Some(cp), _) if signer_consistent => TailReference::Signer {
            size: cp.checkpoint.size,
            time_ms: cp.checkpoint.time_ms,
        },
        (_, Some(info)) => TailReference::State {
            size: info.cp.checkpoint.size,
            time_ms: info.cp.checkpoint.time_ms,
        },
        _ => TailReference::Nothing,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
