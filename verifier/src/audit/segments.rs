//! The segments: pass 1 reads each header (its index range and checkpoint) and checks the
//! key; pass 2 reads the segments in the order of the indexes they declare, checks every
//! record and rebuilds the tree from the leaves.

use futures_util::StreamExt as _;
use sealtrail_core::merkle::{self, Frontier, Hash};
use sealtrail_core::segment::{self, SegmentHeader};
use sealtrail_store::ObjectInfo;
use sha2::{Digest as _, Sha256};

use super::checkpoints::{Checkpoints, Found};
use super::events::EventChecks;
use super::{Audit, CheckpointInfo};
use crate::sealing::SealSeen;
use crate::state::ObjectRecord;
use crate::trail::oversized_segment;
use crate::{Error, FindingKind};

/// Segments fetched and checked ahead of the in-order loop (each holds one object and its
/// parsed records in memory).
const PREFETCH: usize = 4;

/// A segment whose header pass 1 read.
pub(super) struct SegmentMeta {
    key: String,
    size: u64,
    fingerprint: Option<String>,
    header: SegmentHeader,
    checkpoint: Hash,
    /// Whether the key is the one its content gives (a copy or a moved object is not).
    key_ok: bool,
}

/// Pass 1: each segment's header, its checkpoint added to `found`.
pub(super) async fn read_headers(
    audit: &mut Audit<'_>,
    to_read: &[&ObjectInfo],
    found: &mut Found,
) -> Result<Vec<SegmentMeta>, Error> {
    let trail = audit.trail;
    let mut metas = Vec::with_capacity(to_read.len());
    for obj in to_read {
        let Some(key_range) = trail.segment_range(&obj.key) else {
            audit.find(
                FindingKind::UnexpectedObject,
                None,
                Some(&obj.key),
                None,
                "not a segment key",
            );
            continue;
        };
        if let Some(why) = oversized_segment(obj.size) {
            audit.find(
                FindingKind::MalformedSegment,
                Some(key_range),
                Some(&obj.key),
                None,
                why,
            );
            continue;
        }
        audit.report.segments_read += 1;
        let header = match trail.read_header(&obj.key).await? {
            Ok(h) => h,
            Err(e) => {
                audit.find(
                    FindingKind::MalformedSegment,
                    Some(key_range),
                    Some(&obj.key),
                    Some(1),
                    format!("header unreadable: {e}"),
                );
                continue;
            }
        };
        let key_ok = check_key(audit, obj, key_range, &header);
        // Copies of one checkpoint in several segments are checked one by one: a copy whose
        // signature lines were altered must not hide behind an intact one.
        let hash: Hash = Sha256::digest(header.checkpoint.to_bytes()).into();
        found.entry(hash).or_insert_with(|| CheckpointInfo {
            cp: header.checkpoint.clone(),
            first_object: obj.key.clone(),
        });
        metas.push(SegmentMeta {
            key: obj.key.clone(),
            size: obj.size,
            fingerprint: obj.fingerprint.clone(),
            header,
            checkpoint: hash,
            key_ok,
        });
    }
    Ok(metas)
}

/// The whole key is determined by the content: the index range and the (signed)
/// checkpoint time's hour partition. Whether the key is the content's.
fn check_key(
    audit: &mut Audit<'_>,
    obj: &ObjectInfo,
    key_range: (u64, u64),
    header: &SegmentHeader,
) -> bool {
    let content_range = (header.first_index, header.first_index + header.count - 1);
    let expected_key = segment::object_key(
        audit.trail.prefix,
        header.checkpoint.checkpoint.time_ms,
        header.first_index,
        header.count,
    );
    if content_range != key_range {
        audit.find(
            FindingKind::KeyMismatch,
            Some(content_range),
            Some(&obj.key),
            Some(1),
            format!(
                "the key names indexes {}..={} but the segment holds {}..={} (moved or swapped object)",
                key_range.0, key_range.1, content_range.0, content_range.1
            ),
        );
    } else if expected_key != obj.key {
        audit.find(
            FindingKind::KeyMismatch,
            Some(content_range),
            Some(&obj.key),
            Some(1),
            format!(
                "stored under the wrong time partition: its checkpoint puts it at {expected_key}"
            ),
        );
    }
    expected_key == obj.key
}

/// One record line checked off the in-order loop: its line number, the record, and whether
/// its inclusion proof leads to the root of the checkpoint pass 1 read from the header.
type CheckedLine = (
    usize,
    Result<segment::Record, sealtrail_core::Error>,
    Result<(), sealtrail_core::Error>,
);

/// The order-independent work on one segment object.
struct Checked {
    bytes: Vec<u8>,
    content_sha256: Option<Hash>,
    /// The header, and where the records start.
    header: Result<(SegmentHeader, usize), sealtrail_core::Error>,
    records: Vec<CheckedLine>,
    /// Digest of the leaves, in order, when every record parsed and proved and there are as
    /// many as the header declares (for the sealing checks; a segment with bad lines is
    /// reported for those lines, not again as a seal of other events).
    leaves: Option<Hash>,
}

fn check_records(bytes: Vec<u8>, size: u64, root: Hash, hash_object: bool) -> Checked {
    let content_sha256 = hash_object.then(|| Sha256::digest(&bytes).into());
    let mut records = Vec::new();
    let header = segment::parse_header(&bytes).map(|(header, body)| {
        // One checkpoint per segment: consecutive proofs share their upper paths.
        let mut paths = merkle::InclusionVerifier::new(size, root);
        for (line, record) in segment::records(body) {
            let proof = match &record {
                Ok(r) => paths.verify(r.index, &r.leaf_hash, &r.proof),
                Err(e) => Err(e.clone()),
            };
            records.push((line, record, proof));
        }
        (header, bytes.len() - body.len())
    });
    let whole = header
        .as_ref()
        .is_ok_and(|(h, _)| h.count == records.len() as u64)
        && records.iter().all(|(_, r, p)| r.is_ok() && p.is_ok());
    let leaves = whole.then(|| {
        crate::sealing::leaves_digest(
            records
                .iter()
                .filter_map(|(_, r, _)| r.as_ref().ok().map(|r| &r.leaf_hash)),
        )
    });
    Checked {
        bytes,
        content_sha256,
        header,
        records,
        leaves,
    }
}

/// A segment read whole and verified: what the state records of it.
pub(super) struct ReadOk {
    pub key: String,
    pub record: ObjectRecord,
}

/// What pass 2 leaves for the later stages.
pub(super) struct Pass {
    /// The tree rebuilt from the stored leaves (from the remembered frontier on).
    pub frontier: Frontier,
    /// Whether some leaf is missing or unproven (the frontier stops there).
    pub tainted: bool,
    /// The first index no segment read holds.
    pub next: u64,
    /// The last segment that held indexes.
    pub prev_key: Option<String>,
    pub read_ok: Vec<ReadOk>,
    /// The v2 segments whose every line proved, for the sealing checks.
    pub seals: Vec<SealSeen>,
    /// The (auditID, stage) digests stored up to here, for the next state (when
    /// duplicates are checked).
    pub seen: Option<std::collections::HashSet<u128>>,
}

fn missing_note(meta: &SegmentMeta) -> Error {
    Error::Internal(format!("the checkpoint of {} was not verified", meta.key))
}

/// Pass 2: the records, in the order of the indexes the segments declare.
pub(super) async fn read_records(
    audit: &mut Audit<'_>,
    mut metas: Vec<SegmentMeta>,
    cps: &Checkpoints,
    frontier: Frontier,
    base_size: u64,
    seen: std::collections::HashSet<u128>,
) -> Result<Pass, Error> {
    // At one first index, the object whose key matches its content comes first: it holds
    // the range, and a copy under another key is the one reported.
    metas.sort_by(|a, b| {
        (a.header.first_index, !a.key_ok, &a.key).cmp(&(b.header.first_index, !b.key_ok, &b.key))
    });
    let progress = progress_bar(audit.options.progress, metas.len());
    let mut pass = Pass {
        frontier,
        tainted: false,
        next: base_size,
        prev_key: None,
        read_ok: Vec::with_capacity(metas.len()),
        seals: Vec::new(),
        seen: None,
    };
    let mut events = EventChecks::new(audit.options, seen);
    // The segments the loop below reads (it skips those whose indexes are all held by an
    // earlier one), fetched PREFETCH ahead and parsed, hashed and proof-checked on the
    // blocking pool: in parallel with each other and with the in-order checks here.
    let mut fetch = Vec::new();
    let mut reach = base_size;
    for meta in &metas {
        let end = meta.header.first_index + meta.header.count;
        if end > reach {
            let cp = cps
                .of_note(&meta.checkpoint)
                .ok_or_else(|| missing_note(meta))?;
            fetch.push((meta.key.as_str(), cp.size, cp.root));
            reach = end;
        }
    }
    let hash_objects = !audit.options.no_object_hashes;
    let trail = audit.trail;
    let mut fetched =
        futures_util::stream::iter(fetch.into_iter().map(|(key, size, root)| async move {
            let bytes = trail.get(key).await?;
            tokio::task::spawn_blocking(move || check_records(bytes, size, root, hash_objects))
                .await
                .map_err(|e| Error::Internal(format!("checking {key}: {e}")))
        }))
        .buffered(PREFETCH);
    for meta in &metas {
        progress.inc(1);
        progress.set_message(format!("{} events", audit.report.events));
        let cp = cps
            .of_note(&meta.checkpoint)
            .ok_or_else(|| missing_note(meta))?;
        check_lock(audit, meta, cp.time_ms).await?;
        if !place(audit, &mut pass, meta, base_size) {
            continue;
        }
        audit.report.segments += 1;
        let checked = fetched
            .next()
            .await
            .ok_or_else(|| Error::Internal(format!("{} was not fetched", meta.key)))??;
        read_segment(audit, &mut pass, &mut events, cps, meta, checked)?;
    }
    progress.finish_and_clear();
    pass.seen = events.into_seen();
    Ok(pass)
}

fn progress_bar(show: bool, len: usize) -> indicatif::ProgressBar {
    let progress = if show {
        indicatif::ProgressBar::with_draw_target(
            Some(len as u64),
            indicatif::ProgressDrawTarget::stderr(),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {pos}/{len} segments, {msg}",
    ) {
        progress.set_style(style);
    }
    progress
}

async fn check_lock(
    audit: &mut Audit<'_>,
    meta: &SegmentMeta,
    written_ms: u64,
) -> Result<(), Error> {
    let Some(policy) = &audit.options.object_lock else {
        return Ok(());
    };
    let retention = audit.trail.store.retention(&meta.key).await;
    let r = retention.map_err(|e| Error::Lock(e.to_string()))?;
    let range = (
        meta.header.first_index,
        meta.header.first_index + meta.header.count - 1,
    );
    for (kind, detail) in crate::lock::check(policy, &r, written_ms) {
        audit.find(kind, Some(range), Some(&meta.key), None, detail);
    }
    Ok(())
}

/// Places a segment after what the earlier ones hold: a copy is reported and skipped
/// (false), a gap before it is missing, an overlap reported once.
fn place(audit: &mut Audit<'_>, pass: &mut Pass, meta: &SegmentMeta, base_size: u64) -> bool {
    let first = meta.header.first_index;
    let end = first + meta.header.count; // exclusive
    // What holds the indexes before this segment, for the findings below.
    let before = pass.prev_key.as_deref().unwrap_or(if base_size > 0 {
        "the segments verified by an earlier run"
    } else {
        "the start of the log"
    });
    if end <= pass.next {
        let detail = format!("indexes already held by {before}");
        audit.find(
            FindingKind::DuplicateSegment,
            Some((first, end - 1)),
            Some(&meta.key),
            None,
            detail,
        );
        return false;
    }
    if first > pass.next {
        let detail =
            format!("no stored segment holds these indexes (after {before}, before this object)");
        audit.find(
            FindingKind::MissingEvents,
            Some((pass.next, first - 1)),
            Some(&meta.key),
            None,
            detail,
        );
        pass.tainted = true;
        pass.next = first;
    }
    if first < pass.next {
        // Part of it repeats indexes already stored: its lines there are still checked
        // (a forged line must not hide behind the genuine one), but only once reported.
        let detail = format!(
            "overlaps indexes {first}..={} already held by {before}",
            pass.next - 1
        );
        audit.find(
            FindingKind::DuplicateSegment,
            Some((first, pass.next - 1)),
            Some(&meta.key),
            None,
            detail,
        );
    }
    true
}

/// The records of one placed segment.
fn read_segment(
    audit: &mut Audit<'_>,
    pass: &mut Pass,
    events: &mut EventChecks,
    cps: &Checkpoints,
    meta: &SegmentMeta,
    checked: Checked,
) -> Result<(), Error> {
    let first = meta.header.first_index;
    let end = first + meta.header.count; // exclusive
    let cp = cps
        .of_note(&meta.checkpoint)
        .ok_or_else(|| missing_note(meta))?;
    let body = match &checked.header {
        // The records are checked against the header read in pass 1: it must still be the
        // object's header (an object replaced between the two reads is refused).
        Ok((h, start))
            if h.first_index == meta.header.first_index
                && h.count == meta.header.count
                && h.checkpoint == meta.header.checkpoint =>
        {
            &checked.bytes[*start..]
        }
        other => {
            let (kind, detail) = match other {
                Ok(_) => (
                    FindingKind::ObjectChanged,
                    "the header changed while the verifier was reading the object".to_string(),
                ),
                Err(e) => (
                    FindingKind::MalformedSegment,
                    format!("header unreadable: {e}"),
                ),
            };
            audit.find(
                kind,
                Some((first, end - 1)),
                Some(&meta.key),
                Some(1),
                detail,
            );
            pass.tainted = true;
            pass.next = end;
            return Ok(());
        }
    };
    let mut lines = Lines {
        meta,
        end,
        expected: first,
        truncated_at: None,
        cp_size: cp.size,
    };
    let cut_line =
        (!body.ends_with(b"\n")).then(|| body.split_inclusive(|b| *b == b'\n').count() + 1);
    for (line, record, proof) in checked.records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                if cut_line == Some(line) {
                    lines.truncated_at = Some((lines.expected, line));
                } else {
                    let at = lines.expected;
                    audit.find(
                        FindingKind::MalformedLine,
                        Some((at, at)),
                        Some(&meta.key),
                        Some(line),
                        e.to_string(),
                    );
                    pass.tainted = true;
                    lines.expected = at.saturating_add(1);
                }
                continue;
            }
        };
        audit.report.events += 1;
        if lines.check(audit, pass, &record, line, proof) {
            audit.report.events_verified += 1;
            let received = meta.header.sealed.as_ref().map(|s| s.received_ms);
            events.check(audit, cps, &record, &meta.key, line, received);
            if !pass.tainted {
                push_leaf(audit, pass, cps, record.leaf_hash);
            }
        }
    }
    lines.finish(audit, pass);
    // Only a segment whose every line proved speaks for the batch it names; the lines of
    // any other are reported for themselves.
    if let (Some(sealed), Some(leaves)) = (&meta.header.sealed, checked.leaves) {
        pass.seals.push(SealSeen {
            segment: meta.key.clone(),
            first,
            last: end - 1,
            sealed: sealed.clone(),
            leaves,
            checkpoint_ms: cp.time_ms,
        });
    }
    pass.next = pass.next.max(end);
    pass.prev_key = Some(meta.key.clone());
    pass.read_ok.push(ReadOk {
        key: meta.key.clone(),
        record: ObjectRecord {
            size: meta.size,
            fingerprint: meta.fingerprint.clone(),
            sha256: checked.content_sha256.map(hex::encode),
            first_index: first,
            last_index: end - 1,
        },
    });
    Ok(())
}

/// The index sequence within one segment.
struct Lines<'m> {
    meta: &'m SegmentMeta,
    /// End of the header's range (exclusive).
    end: u64,
    /// The index the next line should hold.
    expected: u64,
    /// Where a last line cut mid-way was seen: (index, line).
    truncated_at: Option<(u64, usize)>,
    cp_size: u64,
}

impl Lines<'_> {
    /// Checks a parsed record's place and proof; whether it enters the tree.
    fn check(
        &mut self,
        audit: &mut Audit<'_>,
        pass: &mut Pass,
        record: &segment::Record,
        line: usize,
        proof: Result<(), sealtrail_core::Error>,
    ) -> bool {
        let key = Some(self.meta.key.as_str());
        let at = Some((record.index, record.index));
        if record.index >= self.end {
            let detail = format!(
                "beyond the {} events the header declares",
                self.meta.header.count
            );
            audit.find(FindingKind::ExtraEvent, at, key, Some(line), detail);
            return false;
        }
        if record.index < self.expected {
            audit.find(
                FindingKind::DuplicateEvent,
                at,
                key,
                Some(line),
                "this index was already stored (duplicated line)",
            );
            return false;
        }
        if record.index > self.expected {
            audit.find(
                FindingKind::MissingEvents,
                Some((self.expected, record.index - 1)),
                key,
                Some(line),
                "lines missing from the segment",
            );
            pass.tainted = true;
        }
        self.expected = record.index + 1;
        // Overlap with an earlier segment (reported at placing): the line must still prove
        // into its own checkpoint, but it does not enter the tree twice.
        let overlaps = record.index < pass.next;
        if let Err(e) = proof {
            let detail = format!(
                "event (auditID {}){} does not prove into the checkpoint of size {}: {e}",
                record.audit_id.as_deref().unwrap_or("?"),
                if overlaps {
                    " in an overlapping segment"
                } else {
                    ""
                },
                self.cp_size
            );
            audit.find(FindingKind::LeafMismatch, at, key, Some(line), detail);
            // Only the segment holding these indexes can explain a gap in the chain.
            if !overlaps {
                audit.unproven.push((record.index, record.index));
                pass.tainted = true;
            }
            return false;
        }
        !overlaps
    }

    /// A segment that ends before the count its header declares.
    fn finish(self, audit: &mut Audit<'_>, pass: &mut Pass) {
        if self.expected >= self.end {
            return;
        }
        let (from, line) = self.truncated_at.unwrap_or((self.expected, 0));
        let from = from.min(self.expected);
        let detail = format!(
            "the header declares {} events, the object ends after index {}",
            self.meta.header.count,
            from as i128 - 1
        );
        audit.find(
            FindingKind::SegmentTruncated,
            Some((from, self.end - 1)),
            Some(&self.meta.key),
            (line > 0).then_some(line),
            detail,
        );
        audit.missing.push((from, self.end - 1));
        pass.tainted = true;
    }
}

/// Adds a leaf to the rebuilt tree and compares the checkpoints of the new size.
fn push_leaf(audit: &mut Audit<'_>, pass: &mut Pass, cps: &Checkpoints, leaf: Hash) {
    pass.frontier.push(leaf);
    let size = pass.frontier.size();
    if !cps.by_size.contains_key(&size) {
        return;
    }
    let root = pass.frontier.root();
    for info in cps.of_size(size) {
        if info.cp.checkpoint.root == root {
            audit.report.roots_verified += 1;
        } else {
            audit.find(
                FindingKind::RootMismatch,
                Some((size - 1, size - 1)),
                Some(&info.first_object),
                Some(1),
                format!(
                    "checkpoint of size {} has a root that the stored leaves do not give",
                    info.cp.checkpoint.size
                ),
            );
        }
    }
}
