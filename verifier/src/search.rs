//! Investigations: the stored events a [`Query`] selects, each verified before it is
//! handed out (`sealtrail-verify search`, docs/investigations.md).
//!
//! Every event handed to the sink has had its canonical form and leaf hash recomputed from
//! the stored bytes and its inclusion proof checked against its segment's checkpoint, and
//! that checkpoint verifies with the trust bundle (and the rotations the store holds). What
//! does not verify in the segments read is a [`Finding`], and its events are never handed
//! out: a result with findings is incomplete, and says so.
//!
//! A time range reads only the hour partitions that may hold it: an event's segment is
//! stored under its checkpoint's hour, at most [`SearchOptions::margin`] after (or, by clock
//! skew, before) its stageTimestamp. Within the segments read the leaf indexes must run
//! without gaps or repeats (a segment deleted between two that were read shows); the edges
//! of the range, the checkpoint chain and the tree itself are what `verify` proves.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use sealtrail_core::merkle::InclusionVerifier;
use sealtrail_core::query::{Facts, Query};
use sealtrail_core::segment::{self, SegmentHeader};
use sealtrail_core::trust::Trust;
use sealtrail_store::{ObjectInfo, ObjectStore};
use serde::Serialize;

use crate::keyring::Verdicts;
use crate::trail::{Trail, hour_span, oversized_segment, partition};
use crate::{Error, Finding, FindingKind, findings};

/// Every kind of finding a search raises (docs/FORMAT.md §8.6 lists exactly these).
pub const SEARCH_KINDS: &[FindingKind] = &[
    FindingKind::UnexpectedObject,
    FindingKind::MalformedSegment,
    FindingKind::KeyMismatch,
    FindingKind::MalformedLine,
    FindingKind::SegmentTruncated,
    FindingKind::MissingEvents,
    FindingKind::DuplicateEvent,
    FindingKind::DuplicateSegment,
    FindingKind::ExtraEvent,
    FindingKind::LeafMismatch,
    FindingKind::BadSignature,
    FindingKind::UntrustedKey,
    FindingKind::KeyOutOfRange,
    FindingKind::WrongOrigin,
];

/// Default [`SearchOptions::margin`]: as `prove`'s.
pub const DEFAULT_MARGIN: Duration = crate::prove::DEFAULT_MARGIN;
/// Segments fetched and scanned ahead of the in-order loop (each is held in memory).
const PREFETCH: usize = 4;
/// Above this many segments to read, the progress bar is drawn (on a terminal).
const PROGRESS_AFTER: usize = 64;

/// How to search.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Object key prefix of the log (as the ingester's `--prefix`).
    pub prefix: String,
    /// How long after (or before) its stageTimestamp an event may have been stored and
    /// still be found by a time range.
    pub margin: Duration,
    /// Draw a progress bar on standard error (when it is a terminal).
    pub progress: bool,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            margin: DEFAULT_MARGIN,
            progress: false,
        }
    }
}

/// The members of a matching event that the table and the counts show (an owned
/// [`Facts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Row {
    pub time: Option<String>,
    pub audit_id: Option<String>,
    pub stage: Option<String>,
    pub user: Option<String>,
    pub groups: Vec<String>,
    pub verb: Option<String>,
    pub api_group: Option<String>,
    pub resource: Option<String>,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub code: Option<i64>,
    pub source_ips: Vec<String>,
    pub user_agent: Option<String>,
}

impl Row {
    pub fn of(f: &Facts<'_>) -> Self {
        let s = |v: Option<&str>| v.map(str::to_string);
        Self {
            time: s(f.stage_timestamp),
            audit_id: s(f.audit_id),
            stage: s(f.stage),
            user: s(f.user),
            groups: f.groups().map(str::to_string).collect(),
            verb: s(f.verb),
            api_group: s(f.api_group),
            resource: s(f.resource),
            subresource: s(f.subresource),
            namespace: s(f.namespace),
            name: s(f.name),
            code: f.code,
            source_ips: f.source_ips().map(str::to_string).collect(),
            user_agent: s(f.user_agent),
        }
    }
}

/// A verified event that matches.
#[derive(Debug, Clone)]
pub struct Hit {
    pub index: u64,
    /// The event's canonical JSON, as stored.
    pub canonical: Vec<u8>,
    pub row: Row,
}

/// What a search read and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SearchReport {
    pub origin: String,
    pub query: String,
    /// The hour partitions read (first, last), when the time range bounds them.
    pub partitions: Option<(String, String)>,
    /// Segment objects listed in those partitions, and read (GET).
    pub segments_listed: u64,
    pub segments_read: u64,
    pub bytes_read: u64,
    pub rotations: u64,
    /// Stored events verified and tested against the query.
    pub events_scanned: u64,
    /// Verified events that matched (handed to the sink).
    pub events_matched: u64,
    /// Events that match but are not handed out: their line, proof or checkpoint does not
    /// verify (each is under a finding).
    pub events_withheld: u64,
    pub findings: Vec<Finding>,
    /// Objects passed over that are not the log's events (rotations not accepted, ...).
    pub warnings: Vec<String>,
}

impl SearchReport {
    /// Whether the segments read verified: no finding.
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }

    /// A human summary (for standard error).
    pub fn summary(&self, margin: Duration) -> String {
        let mut s = format!(
            "searched log {} for {}: {} matching events, every one verified (leaf hash, inclusion proof, signed checkpoint)\n",
            self.origin, self.query, self.events_matched
        );
        s.push_str(&format!(
            "read {} of {} segment objects listed ({} bytes), {} events scanned, {} rotation checkpoints\n",
            self.segments_read,
            self.segments_listed,
            self.bytes_read,
            self.events_scanned,
            self.rotations
        ));
        if let Some((a, b)) = &self.partitions {
            s.push_str(&format!(
                "hour partitions {a} to {b}: an event stored more than {} s after its stageTimestamp is not searched (--margin)\n",
                margin.as_secs()
            ));
        }
        for w in &self.warnings {
            s.push_str(&format!("warning: {w}\n"));
        }
        if !self.findings.is_empty() {
            s.push_str(&format!(
                "NOT INTACT in the searched range: {} integrity findings; {} matching events withheld, the result is incomplete (run `sealtrail-verify verify`)\n",
                self.findings.len(),
                self.events_withheld
            ));
            s.push_str(&findings::summarize(&self.findings));
        }
        s
    }

    fn find(&mut self, kind: FindingKind, range: Option<(u64, u64)>, key: &str, detail: String) {
        debug_assert!(SEARCH_KINDS.contains(&kind), "{kind:?}");
        self.findings.push(
            Finding::new(kind, detail)
                .at_range(range)
                .at_object(Some(key)),
        );
    }
}

/// A listed segment object, with the index range its key names.
#[derive(Debug, Clone)]
struct Seg {
    key: String,
    size: u64,
    first: u64,
    last: u64,
}

/// One segment scanned off the in-order loop.
struct Scanned {
    header: Option<SegmentHeader>,
    hits: Vec<Hit>,
    findings: Vec<Finding>,
    scanned: u64,
    withheld: u64,
}

/// Searches the segments of `store` under `options.prefix` for the events `query` selects,
/// handing each verified match to `sink` in index order.
///
/// Errors: [`Error::Selection`] for an invalid query, [`Error::Store`] when the store
/// cannot be read, [`Error::Output`] when the sink fails (the search stops there).
pub async fn search(
    store: &dyn ObjectStore,
    trust: &Trust,
    query: &Query,
    options: &SearchOptions,
    sink: &mut dyn FnMut(Hit) -> std::io::Result<()>,
) -> Result<SearchReport, Error> {
    query
        .validate()
        .map_err(|e| Error::Selection(e.to_string()))?;
    let trail = Trail::new(store, &options.prefix);
    let mut report = SearchReport {
        origin: trust.origin().to_string(),
        query: query.describe(),
        ..SearchReport::default()
    };
    let mut verdicts = Verdicts::load(&trail, trust, &mut report.warnings).await?;
    report.rotations = verdicts.rotations().len() as u64;
    let segments = plan(&trail, query, options, &mut report).await?;
    let progress = progress_bar(
        options.progress && segments.len() > PROGRESS_AFTER,
        segments.len(),
    );
    let query = Arc::new(query.clone());
    let prefix: Arc<str> = Arc::from(options.prefix.as_str());
    let mut fetched = futures_util::stream::iter(segments.iter().cloned().map(|seg| {
        let (query, prefix) = (query.clone(), prefix.clone());
        async move {
            let bytes = trail.get(&seg.key).await?;
            let len = bytes.len() as u64;
            let key = seg.key.clone();
            tokio::task::spawn_blocking(move || (len, scan(&bytes, &seg, &query, &prefix)))
                .await
                .map_err(|e| Error::Internal(format!("scanning {key}: {e}")))
        }
    }))
    .buffered(PREFETCH);
    let mut high = None;
    for seg in &segments {
        let (len, scanned) = fetched
            .next()
            .await
            .ok_or_else(|| Error::Internal(format!("{} was not fetched", seg.key)))??;
        progress.inc(1);
        report.segments_read += 1;
        report.bytes_read += len;
        accept(&mut report, &mut verdicts, seg, scanned, &mut high, sink)?;
        progress.set_message(format!("{} matches", report.events_matched));
    }
    progress.finish_and_clear();
    Ok(report)
}

/// The segments to read, in index order: those of the partitions the time range needs,
/// less whole copies of a range already listed (reported); gaps between them reported.
async fn plan(
    trail: &Trail<'_>,
    query: &Query,
    options: &SearchOptions,
    report: &mut SearchReport,
) -> Result<Vec<Seg>, Error> {
    let (from, to) = query.time_bounds();
    let (lo, hi) = hour_span(from, to, options.margin);
    if lo.is_some() || hi.is_some() {
        let name = |h: Option<i64>| h.and_then(partition).unwrap_or_else(|| "…".into());
        report.partitions = Some((name(lo), name(hi)));
    }
    let objects: Vec<ObjectInfo> = trail.segments_within(lo, hi).await?;
    report.segments_listed = objects.len() as u64;
    let mut segments = Vec::with_capacity(objects.len());
    for o in objects {
        match trail.segment_range(&o.key) {
            Some((first, last)) if first <= last => segments.push(Seg {
                key: o.key,
                size: o.size,
                first,
                last,
            }),
            _ => report.find(
                FindingKind::UnexpectedObject,
                None,
                &o.key,
                "not a segment key".into(),
            ),
        }
    }
    segments.sort_by(|a, b| (a.first, a.last, &a.key).cmp(&(b.first, b.last, &b.key)));
    let mut kept: Vec<Seg> = Vec::with_capacity(segments.len());
    for seg in segments {
        if let Some(why) = oversized_segment(seg.size) {
            report.find(
                FindingKind::MalformedSegment,
                Some((seg.first, seg.last)),
                &seg.key,
                why,
            );
            continue;
        }
        if let Some(prev) = kept.last() {
            if seg.last <= prev.last {
                report.find(
                    FindingKind::DuplicateSegment,
                    Some((seg.first, seg.last)),
                    &seg.key,
                    format!("its indexes are those of {}", prev.key),
                );
                continue;
            }
            if seg.first > prev.last.saturating_add(1) {
                report.find(
                    FindingKind::MissingEvents,
                    Some((prev.last + 1, seg.first - 1)),
                    &seg.key,
                    format!(
                        "no segment of the searched partitions holds the indexes between {} and this one (deleted segment?)",
                        prev.key
                    ),
                );
            } else if seg.first <= prev.last {
                report.find(
                    FindingKind::DuplicateEvent,
                    Some((seg.first, prev.last)),
                    &seg.key,
                    format!("these indexes are also in {}", prev.key),
                );
            }
        }
        kept.push(seg);
    }
    Ok(kept)
}

/// The order-independent work on one segment: its header, every record's line, leaf hash
/// and inclusion proof, and the query on each verified event.
fn scan(bytes: &[u8], seg: &Seg, query: &Query, prefix: &str) -> Scanned {
    let mut out = Scanned {
        header: None,
        hits: Vec::new(),
        findings: Vec::new(),
        scanned: 0,
        withheld: 0,
    };
    let range = Some((seg.first, seg.last));
    let find = |out: &mut Scanned, kind, range, line: Option<usize>, detail: String| {
        debug_assert!(SEARCH_KINDS.contains(&kind), "{kind:?}");
        out.findings.push(
            Finding::new(kind, detail)
                .at_range(range)
                .at_object(Some(&seg.key))
                .at_line(line),
        );
    };
    let (header, body) = match segment::parse_header(bytes) {
        Ok(x) => x,
        Err(e) => {
            find(
                &mut out,
                FindingKind::MalformedSegment,
                range,
                Some(1),
                format!("header unreadable: {e}"),
            );
            return out;
        }
    };
    let content = (header.first_index, header.first_index + header.count - 1);
    let expected_key = segment::object_key(
        prefix,
        header.checkpoint.checkpoint.time_ms,
        header.first_index,
        header.count,
    );
    if expected_key != seg.key {
        find(
            &mut out,
            FindingKind::KeyMismatch,
            Some(content),
            Some(1),
            format!("the segment's content puts it at {expected_key}"),
        );
    }
    let matcher = query.matcher();
    let cp = &header.checkpoint.checkpoint;
    let mut paths = InclusionVerifier::new(cp.size, cp.root);
    let mut next = header.first_index;
    for (line, record) in segment::records_with_events(body) {
        if next >= header.first_index + header.count {
            find(
                &mut out,
                FindingKind::ExtraEvent,
                None,
                Some(line),
                format!("beyond the {} records the header declares", header.count),
            );
            break;
        }
        let (r, event) = match record {
            Ok(x) => x,
            Err(e) => {
                find(
                    &mut out,
                    FindingKind::MalformedLine,
                    Some((next, next)),
                    Some(line),
                    e.to_string(),
                );
                next += 1;
                continue;
            }
        };
        if r.index != next {
            let kind = if r.index < next {
                FindingKind::DuplicateEvent
            } else {
                FindingKind::MissingEvents
            };
            find(
                &mut out,
                kind,
                Some((next.min(r.index), next.max(r.index))),
                Some(line),
                format!("index {} where {next} belongs", r.index),
            );
        }
        let repeated = r.index < next;
        next = r.index.max(next).saturating_add(1);
        let facts = Facts::of(&event);
        let matches = matcher.matches(&facts);
        if let Err(e) = paths.verify(r.index, &r.leaf_hash, &r.proof) {
            find(
                &mut out,
                FindingKind::LeafMismatch,
                Some((r.index, r.index)),
                Some(line),
                format!(
                    "auditID {}: does not prove into its checkpoint of size {}: {e}",
                    r.audit_id.as_deref().unwrap_or("?"),
                    cp.size
                ),
            );
            out.withheld += u64::from(matches);
            continue;
        }
        out.scanned += 1;
        if matches && repeated {
            out.withheld += 1;
        } else if matches {
            out.hits.push(Hit {
                index: r.index,
                row: Row::of(&facts),
                canonical: r.canonical,
            });
        }
    }
    if next < header.first_index + header.count {
        find(
            &mut out,
            FindingKind::SegmentTruncated,
            Some((next, content.1)),
            None,
            format!(
                "{} records, the header declares {}",
                next - header.first_index,
                header.count
            ),
        );
    }
    out.header = Some(header);
    out
}

/// The in-order part: the segment's checkpoint against the keyring (none of its events is
/// handed out unless it verifies), then its verified hits to the sink, each index once
/// (`high`: the highest index handed out so far).
fn accept(
    report: &mut SearchReport,
    verdicts: &mut Verdicts,
    seg: &Seg,
    scanned: Scanned,
    high: &mut Option<u64>,
    sink: &mut dyn FnMut(Hit) -> std::io::Result<()>,
) -> Result<(), Error> {
    report.findings.extend(scanned.findings.iter().cloned());
    report.events_withheld += scanned.withheld;
    let Some(header) = scanned.header else {
        return Ok(());
    };
    if let Err((kind, why)) = verdicts.check(&header.checkpoint) {
        report.find(
            kind,
            Some((seg.first, seg.last)),
            &seg.key,
            format!(
                "its checkpoint (size {}) does not verify: {why}",
                header.checkpoint.checkpoint.size
            ),
        );
        report.events_withheld += scanned.hits.len() as u64;
        return Ok(());
    }
    report.events_scanned += scanned.scanned;
    for hit in scanned.hits {
        // An index an earlier (overlapping) segment already handed out.
        if high.is_some_and(|h| hit.index <= h) {
            continue;
        }
        *high = Some(hit.index);
        report.events_matched += 1;
        sink(hit).map_err(Error::Output)?;
    }
    Ok(())
}

fn progress_bar(show: bool, len: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let progress = indicatif::ProgressBar::with_draw_target(
        Some(len as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {pos}/{len} segments, {msg}",
    ) {
        progress.set_style(style);
    }
    progress
}
