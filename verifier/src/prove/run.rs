//! `prove`: produces a bundle from a store. Reads the rotations and the segments (all of
//! them with consistency proofs; otherwise, for a time range, only the hour partitions
//! around it), keeps the selected events once checked, streams the leaves to the head, and
//! checks the finished file as `check-bundle` would before handing it out.
//!
//! Every read of the store is in the "Reading the store" block below, through the trail
//! reader ([`crate::trail`], which knows the layout and the read limits).

use std::time::Duration;

use sealtrail_core::bundle::{Bundle, Consistency, ConsistencyProof, MAX_BUNDLE_LEN, Selection};
use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::merkle::Hash;
use sealtrail_core::segment::{self, Record};
use sealtrail_core::trust::Trust;
use sealtrail_store::{ObjectInfo, ObjectStore};
use serde::Serialize;

use crate::Error;
use crate::keyring::Verdicts;
use crate::trail::{Trail, hour_span, oversized_segment, partition};

use super::check::{Problem, check_bundle};
use super::select::Picked;
use super::tree::HeadTree;
use super::{internal, needs_whole_log, reason};

/// Default [`ProveOptions::margin`]: the verifier's default late-event threshold.
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(3600);
/// Segments tried, newest first, to find the head (the newest may share its checkpoint
/// with a segment that is still being written).
const HEAD_CANDIDATES: usize = 16;
/// Failures named in a `NotProvable` error; the rest are counted.
const MAX_LISTED_FAILURES: usize = 20;

/// How to produce a bundle.
#[derive(Debug, Clone)]
pub struct ProveOptions {
    /// Object key prefix of the log (as the ingester's `--prefix`).
    pub prefix: String,
    /// Include consistency proofs to the newest stored checkpoint (reads every segment).
    pub consistency: bool,
    /// Without consistency proofs, a time range reads the hour partitions from
    /// `from − margin` to `to + margin`: an event stored (checkpointed) more than this
    /// after its stageTimestamp, or before it by clock skew, is not found.
    pub margin: Duration,
}

impl Default for ProveOptions {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            consistency: true,
            margin: DEFAULT_MARGIN,
        }
    }
}

/// What [`prove`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProveReport {
    pub events: u64,
    pub checkpoints: u64,
    pub rotations: u64,
    /// Timestamp tokens included (those on the bundle's checkpoints that verify).
    pub timestamps: u64,
    /// Tree size of the head, with consistency proofs.
    pub head_size: Option<u64>,
    pub segments_listed: u64,
    pub segments_read: u64,
    /// The hour partitions read (first, last), when a time range read only those.
    pub partitions: Option<(String, String)>,
    /// Objects passed over (unreadable, not segments, rotations not accepted).
    pub warnings: Vec<String>,
}

impl ProveReport {
    pub fn summary(&self, selection: &Selection, margin: Duration) -> String {
        let mut s = format!(
            "proved {} events ({}) into {} checkpoints, with {} rotation checkpoints; ",
            self.events,
            selection.describe(),
            self.checkpoints,
            self.rotations
        );
        match self.head_size {
            Some(n) => s.push_str(&format!(
                "consistency proofs to the head of size {n}, computed from the stored leaves\n"
            )),
            None => s.push_str("no consistency proofs\n"),
        }
        if self.timestamps > 0 {
            s.push_str(&format!(
                "{} timestamp tokens on the bundle's checkpoints\n",
                self.timestamps
            ));
        }
        match &self.partitions {
            Some((a, b)) => s.push_str(&format!(
                "read {} of {} segments in the partitions {a} to {b}: events stored more than {} s after (or before, by clock skew) their stageTimestamp were not searched; without --no-consistency every segment is read\n",
                self.segments_read,
                self.segments_listed,
                margin.as_secs()
            )),
            None => s.push_str(&format!(
                "read {} of {} segments\n",
                self.segments_read, self.segments_listed
            )),
        }
        for w in &self.warnings {
            s.push_str(&format!("warning: {w}\n"));
        }
        s
    }
}

/// A bundle and how it was made.
#[derive(Debug, Clone)]
pub struct Proved {
    /// The file ([`Bundle::encode`]), checked by [`Bundle::parse`] and [`check_bundle`].
    pub bytes: Vec<u8>,
    pub report: ProveReport,
}

/// A segment's checkpoint and its records with their line numbers.
type ReadSegment = (SignedCheckpoint, Vec<(usize, Record)>);

/// A listed segment object, with the index range its key names.
#[derive(Debug, Clone)]
pub(super) struct Seg {
    pub(super) key: String,
    size: u64,
    pub(super) first: u64,
    pub(super) last: u64,
}

struct Run<'a> {
    trail: Trail<'a>,
    trust: &'a Trust,
    selection: &'a Selection,
    options: &'a ProveOptions,
    verdicts: Verdicts,
    report: ProveReport,
    picked: Picked,
}

/// Produces a bundle of the events `selection` selects among the segments of `store`
/// under `options.prefix`. Every event is checked before it is exported (its checkpoint
/// against the trust bundle and the rotations stored under `checkpoints/`, its inclusion
/// proof), and so is the finished file ([`Bundle::parse`], [`check_bundle`]).
///
/// Errors: [`Error::NotProvable`] when nothing matches or something selected does not
/// verify (each named); [`Error::Limit`] past [`sealtrail_core::bundle::MAX_BUNDLE_EVENTS`]
/// or [`MAX_BUNDLE_LEN`]; [`Error::Store`] when the store cannot be read.
pub async fn prove(
    store: &dyn ObjectStore,
    trust: &Trust,
    selection: &Selection,
    options: &ProveOptions,
) -> Result<Proved, Error> {
    selection
        .validate()
        .map_err(|e| Error::Selection(reason(e)))?;
    let mut run = Run {
        trail: Trail::new(store, &options.prefix),
        trust,
        selection,
        options,
        verdicts: Verdicts::new(trust),
        report: ProveReport::default(),
        picked: Picked::default(),
    };
    run.verdicts = Verdicts::load(&run.trail, trust, &mut run.report.warnings).await?;
    run.report.rotations = run.verdicts.rotations().len() as u64;
    let segments = run.plan().await?;
    let head = if options.consistency {
        Some(run.head(&segments).await?)
    } else {
        None
    };
    let mut tree = head.as_ref().map(HeadTree::new);
    run.walk(&segments, tree.as_mut()).await?;
    run.finish(head, tree.as_ref()).await
}

// ---------------------------------------------------------------------------------------
// Reading the store
// ---------------------------------------------------------------------------------------

impl Run<'_> {
    /// The segments to read, in index order.
    async fn plan(&mut self) -> Result<Vec<Seg>, Error> {
        let bounds = self
            .selection
            .time_bounds()
            .filter(|_| !self.options.consistency);
        let objects = match bounds {
            None => self.trail.segments().await?,
            Some((from, to)) => self.list_partitions(from, to).await?,
        };
        self.report.segments_listed = objects.len() as u64;
        let mut segments = Vec::with_capacity(objects.len());
        for o in objects {
            match self.trail.segment_range(&o.key) {
                Some((first, last)) if first <= last => segments.push(Seg {
                    key: o.key,
                    size: o.size,
                    first,
                    last,
                }),
                _ => self
                    .report
                    .warnings
                    .push(format!("{}: not a segment key, passed over", o.key)),
            }
        }
        segments.sort_by(|a, b| (a.first, a.last, &a.key).cmp(&(b.first, b.last, &b.key)));
        Ok(segments)
    }

    /// The segment objects in the hour partitions from `from − margin` to `to + margin`
    /// (Unix microseconds, `to` excluded).
    async fn list_partitions(&mut self, from: i64, to: i64) -> Result<Vec<ObjectInfo>, Error> {
        let (lo, hi) = hour_span(Some(from), Some(to), self.options.margin);
        let name = |h: Option<i64>| {
            h.and_then(partition)
                .ok_or_else(|| Error::Selection("time out of range".into()))
        };
        self.report.partitions = Some((name(lo)?, name(hi)?));
        self.trail.segments_within(lo, hi).await
    }

    /// The head: the checkpoint of the newest segment, unless it covers leaves that no
    /// listed segment holds (a segment sharing it not yet written): then of the one before.
    async fn head(&mut self, segments: &[Seg]) -> Result<SignedCheckpoint, Error> {
        let stored = segments.iter().map(|s| s.last + 1).max().unwrap_or(0);
        for seg in segments.iter().rev().take(HEAD_CANDIDATES) {
            let Ok(h) = self.trail.read_header(&seg.key).await? else {
                continue;
            };
            if h.checkpoint.checkpoint.size > stored {
                continue;
            }
            if let Err(why) = self.verdicts.trusted(&h.checkpoint) {
                return Err(needs_whole_log(format!(
                    "the head, the checkpoint of {} (size {}), does not verify: {why}",
                    seg.key, h.checkpoint.checkpoint.size
                )));
            }
            return Ok(h.checkpoint);
        }
        Err(needs_whole_log(if segments.is_empty() {
            "the store holds no segment".to_string()
        } else {
            format!(
                "none of the {HEAD_CANDIDATES} newest segments holds a readable checkpoint covering only stored leaves"
            )
        }))
    }

    /// Reads the segments in index order: keeps the selected events of each and, with a
    /// head, streams every leaf up to it (then the segments must run without gaps).
    async fn walk(
        &mut self,
        segments: &[Seg],
        mut tree: Option<&mut HeadTree>,
    ) -> Result<(), Error> {
        let matcher = self.selection.matcher();
        for seg in segments {
            if let Some(t) = tree.as_deref()
                && !t.admit(seg, &mut self.report.warnings)?
            {
                continue;
            }
            let Some((cp, records)) = self.read_segment(seg, tree.is_some()).await? else {
                continue;
            };
            let selected =
                self.picked
                    .select(&matcher, &mut self.verdicts, &seg.key, &cp, &records)?;
            if let Some(t) = tree.as_deref_mut() {
                if selected {
                    t.register(&seg.key, &cp)?;
                }
                t.push(&records, &mut self.picked.failures);
            }
        }
        Ok(())
    }

    /// Reads one segment: its checkpoint and records. When every leaf is needed (`whole`)
    /// any problem is an error; otherwise it is a warning, and only what is unreadable is
    /// passed over (the other events may still verify and be exported).
    async fn read_segment(&mut self, seg: &Seg, whole: bool) -> Result<Option<ReadSegment>, Error> {
        let problem = |run: &mut Self, why: String| -> Result<(), Error> {
            if whole {
                return Err(needs_whole_log(format!(
                    "{}: {why} (run `sealtrail-verify verify`)",
                    seg.key
                )));
            }
            run.report.warnings.push(format!("{}: {why}", seg.key));
            Ok(())
        };
        if let Some(why) = oversized_segment(seg.size) {
            problem(self, why)?;
            return Ok(None);
        }
        let bytes = self.trail.get(&seg.key).await?;
        self.report.segments_read += 1;
        let (header, body) = match segment::parse_header(&bytes) {
            Ok(x) => x,
            Err(e) => {
                problem(self, format!("header unreadable: {e}"))?;
                return Ok(None);
            }
        };
        if (header.first_index, header.first_index + header.count - 1) != (seg.first, seg.last) {
            problem(
                self,
                "the key names another index range than the header".into(),
            )?;
        }
        let mut records = Vec::with_capacity(usize::try_from(header.count).unwrap_or(0));
        for (line, r) in segment::records(body) {
            match r {
                Ok(r) if !whole || r.index == seg.first + records.len() as u64 => {
                    records.push((line, r));
                }
                Ok(_) => problem(self, format!("line {line}: an index out of sequence"))?,
                Err(e) => problem(self, format!("line {line} passed over: {e}"))?,
            }
        }
        if records.len() as u64 != header.count {
            problem(
                self,
                format!(
                    "{} records, the header declares {}",
                    records.len(),
                    header.count
                ),
            )?;
        }
        Ok(Some((header.checkpoint, records)))
    }
}

// ---------------------------------------------------------------------------------------
// Assembling the bundle
// ---------------------------------------------------------------------------------------

impl Run<'_> {
    /// The bundle of what was kept, once nothing failed, checked as `check-bundle` would.
    async fn finish(
        mut self,
        head: Option<SignedCheckpoint>,
        tree: Option<&HeadTree>,
    ) -> Result<Proved, Error> {
        self.nothing_failed()?;
        let head_hash = match (&head, tree) {
            (Some(h), Some(t)) => {
                if t.size() != h.checkpoint.size {
                    return Err(needs_whole_log(format!(
                        "the head covers {} leaves, the store holds {}",
                        h.checkpoint.size,
                        t.size()
                    )));
                }
                self.picked
                    .notes
                    .entry(h.hash())
                    .or_insert_with(|| h.clone());
                Some(h.hash())
            }
            _ => None,
        };
        let mut checkpoints: Vec<SignedCheckpoint> = std::mem::take(&mut self.picked.notes)
            .into_values()
            .collect();
        checkpoints.sort_by_cached_key(|c| (c.checkpoint.size, c.hash()));
        let consistency = match (head_hash, tree) {
            (Some(head), Some(t)) => Some(consistency_proofs(&checkpoints, head, t)?),
            _ => None,
        };
        self.report.events = self.picked.events.len() as u64;
        self.report.checkpoints = checkpoints.len() as u64;
        self.report.head_size = head.as_ref().map(|h| h.checkpoint.size);
        let timestamps = super::timestamps::stored_for(
            &self.trail,
            self.trust,
            &checkpoints,
            &mut self.report.warnings,
        )
        .await?;
        self.report.timestamps = timestamps.len() as u64;
        let bundle = Bundle {
            origin: self.trust.origin().to_string(),
            selection: self.selection.clone(),
            checkpoints,
            rotations: self.verdicts.rotations().to_vec(),
            consistency,
            events: std::mem::take(&mut self.picked.events)
                .into_values()
                .collect(),
            timestamps,
        };
        let (bytes, unsettled) = export(&bundle, self.trust)?;
        self.report.warnings.extend(unsettled);
        Ok(Proved {
            bytes,
            report: self.report,
        })
    }

    /// No bundle when anything selected failed, or nothing matched.
    fn nothing_failed(&self) -> Result<(), Error> {
        let failures = &self.picked.failures;
        if !failures.is_empty() {
            let n = failures.len();
            let mut s = format!("{n} problems, no bundle written:");
            for f in failures.iter().take(MAX_LISTED_FAILURES) {
                s.push_str("\n  ");
                s.push_str(f);
            }
            if n > MAX_LISTED_FAILURES {
                s.push_str(&format!("\n  … and {} more", n - MAX_LISTED_FAILURES));
            }
            return Err(Error::NotProvable(s));
        }
        if self.picked.events.is_empty() {
            let mut s = format!("no stored event matches ({})", self.selection.describe());
            if let Some((a, b)) = &self.report.partitions {
                s.push_str(&format!(
                    " in the partitions {a} to {b} ({} segments): an event stored more than {} s after its stageTimestamp is not searched without consistency proofs",
                    self.report.segments_read,
                    self.options.margin.as_secs()
                ));
            }
            return Err(Error::NotProvable(s));
        }
        Ok(())
    }
}

/// One proof from each checkpoint but the head to the head, in the checkpoints' order.
fn consistency_proofs(
    checkpoints: &[SignedCheckpoint],
    head: Hash,
    tree: &HeadTree,
) -> Result<Consistency, Error> {
    let mut proofs = Vec::new();
    for cp in checkpoints.iter().filter(|c| c.hash() != head) {
        proofs.push(ConsistencyProof {
            from: cp.hash(),
            proof: tree.proof(cp.checkpoint.size)?,
        });
    }
    Ok(Consistency { head, proofs })
}

/// The file of a bundle, within the size limit, and one that the checker accepts: never
/// export what `check-bundle` would refuse. A bundle that rests on a retired key (old
/// events exported without consistency proofs after a rotation, or a head the rotated-out
/// key signed last) is honest but not settled: exported, with why (`retired_key_head`).
fn export(bundle: &Bundle, trust: &Trust) -> Result<(Vec<u8>, Vec<String>), Error> {
    bundle.check_structure().map_err(|e| internal(reason(e)))?;
    let bytes = bundle.encode();
    if bytes.len() > MAX_BUNDLE_LEN {
        return Err(Error::Limit(format!(
            "a bundle of {} bytes (max {MAX_BUNDLE_LEN}): narrow the selection",
            bytes.len()
        )));
    }
    let parsed = Bundle::parse(&bytes).map_err(|e| internal(e.to_string()))?;
    let check = check_bundle(&parsed, trust);
    if check.only_unsettled() {
        let why = check.problems.iter().map(Problem::describe).collect();
        return Ok((bytes, why));
    }
    if !check.verified {
        let why: Vec<String> = check.problems.iter().map(Problem::describe).collect();
        return Err(Error::NotProvable(format!(
            "the bundle does not verify: {}",
            why.join("; ")
        )));
    }
    Ok((bytes, Vec::new()))
}
