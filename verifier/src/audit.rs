//! The full audit of a store.
//!
//! Pass 1 reads every segment's header (its first line) only: index range, checkpoint.
//! Checkpoints are verified once each. Segments are then ordered by the index range their
//! content declares, not by key, so that renamed or swapped objects are reported as such
//! and do not hide the rest. Pass 2 reads segments one at a time in index order, checks
//! each record, and feeds the leaves into a frontier that recomputes every checkpoint's
//! root. Memory holds one segment plus O(number of segments + checkpoints).

use std::collections::{BTreeMap, HashMap};

use sealtrail_core::checkpoint::{MAX_NOTE_LEN, SignedCheckpoint};
use sealtrail_core::merkle::{self, Frontier, Hash};
use sealtrail_core::segment::{self, SegmentHeader};
use sealtrail_core::trust::{SignatureVerdict, Trust};
use sealtrail_store::ObjectStore;
use sha2::{Digest as _, Sha256};

use crate::{Error, Finding, FindingKind, Report};

/// Bytes read to find a segment's header line: the note limit, JSON-escaped, plus the rest.
const HEADER_READ_LEN: usize = 2 * MAX_NOTE_LEN + 1024;

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Object key prefix of the log (as the ingester's `--prefix`).
    pub prefix: String,
}

struct SegmentMeta {
    key: String,
    header: SegmentHeader,
    checkpoint: Hash,
}

struct CheckpointInfo {
    cp: SignedCheckpoint,
    first_object: String,
}

struct Audit {
    report: Report,
    missing: Vec<(u64, u64)>,
}

impl Audit {
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
        self.report.findings.push(Finding {
            kind,
            index: range.map(|r| r.0),
            last_index: range.map(|r| r.1),
            object: object.map(str::to_string),
            line,
            detail: detail.into(),
        });
    }
}

/// Verifies everything under `options.prefix` in `store` against `trust`.
pub async fn verify_store(
    store: &dyn ObjectStore,
    trust: &Trust,
    options: &Options,
) -> Result<Report, Error> {
    let mut audit = Audit {
        report: Report {
            origin: trust.origin().to_string(),
            ..Report::default()
        },
        missing: Vec::new(),
    };
    let seg_prefix = format!("{}segments/", options.prefix);
    let objects = store.list(&seg_prefix).await?;

    // Pass 1: headers and checkpoints.
    let mut metas = Vec::with_capacity(objects.len());
    let mut checkpoints: HashMap<Hash, CheckpointInfo> = HashMap::new();
    for obj in &objects {
        let Some(key_range) = segment::parse_object_key(&options.prefix, &obj.key) else {
            audit.find(
                FindingKind::UnexpectedObject,
                None,
                Some(&obj.key),
                None,
                "not a segment key",
            );
            continue;
        };
        let head = store.get_prefix(&obj.key, HEADER_READ_LEN).await?;
        let header = match segment::parse_header(&head) {
            Ok((h, _)) => h,
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
        let content_range = (header.first_index, header.first_index + header.count - 1);
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
        }
        // Copies of one checkpoint in several segments are checked one by one: a copy whose
        // signature lines were altered must not hide behind an intact one.
        let hash: Hash = Sha256::digest(header.checkpoint.to_bytes()).into();
        checkpoints.entry(hash).or_insert_with(|| CheckpointInfo {
            cp: header.checkpoint.clone(),
            first_object: obj.key.clone(),
        });
        metas.push(SegmentMeta {
            key: obj.key.clone(),
            header,
            checkpoint: hash,
        });
    }

    // Each distinct checkpoint: signatures, and one per size.
    // Tree size → distinct checkpoint texts of that size (more than one is a fork), and
    // text → where it was first seen.
    let mut by_size: BTreeMap<u64, Vec<Hash>> = BTreeMap::new();
    let mut texts: HashMap<Hash, &CheckpointInfo> = HashMap::new();
    let mut ordered: Vec<&CheckpointInfo> = checkpoints.values().collect();
    ordered.sort_by_key(|c| {
        (
            c.cp.checkpoint.size,
            c.cp.checkpoint.time_ms,
            c.first_object.clone(),
        )
    });
    for info in &ordered {
        let cp = &info.cp.checkpoint;
        let at = Some(info.first_object.as_str());
        let size_range = Some((cp.size.saturating_sub(1), cp.size.saturating_sub(1)));
        let ids = |ids: &[u32]| {
            ids.iter()
                .map(|k| format!("{k:08x}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let problem = match trust.verify(&info.cp) {
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
                    "signed by trusted keys outside their validity ({})",
                    ids(&key_ids)
                ),
            )),
            SignatureVerdict::WrongOrigin { origin } => Some((
                FindingKind::WrongOrigin,
                format!("of log {origin:?}, expected {:?}", trust.origin()),
            )),
        };
        if let Some((kind, why)) = problem {
            audit.find(
                kind,
                size_range,
                at,
                Some(1),
                format!("checkpoint of size {}: {why}", cp.size),
            );
        }
        let text = info.cp.hash();
        if let std::collections::hash_map::Entry::Vacant(e) = texts.entry(text) {
            e.insert(info);
            by_size.entry(cp.size).or_default().push(text);
        }
    }
    for (size, hashes) in &by_size {
        if hashes.len() > 1 {
            let objects: Vec<&str> = hashes
                .iter()
                .filter_map(|h| texts.get(h).map(|c| c.first_object.as_str()))
                .collect();
            audit.find(
                FindingKind::Fork,
                Some((size.saturating_sub(1), size.saturating_sub(1))),
                objects.first().copied(),
                Some(1),
                format!(
                    "{} different checkpoints of tree size {size} (in {})",
                    hashes.len(),
                    objects.join(", ")
                ),
            );
        }
    }
    audit.report.checkpoints = texts.len() as u64;
    audit.report.tree_size = by_size.keys().next_back().copied().unwrap_or(0);

    // Pass 2: the records, in the order of the indexes the segments declare.
    metas.sort_by(|a, b| (a.header.first_index, &a.key).cmp(&(b.header.first_index, &b.key)));
    let mut frontier = Frontier::new();
    let mut tainted = false;
    let mut next = 0u64;
    let mut prev_key: Option<String> = None;
    for meta in &metas {
        let first = meta.header.first_index;
        let end = first + meta.header.count; // exclusive
        if end <= next {
            audit.find(
                FindingKind::DuplicateSegment,
                Some((first, end - 1)),
                Some(&meta.key),
                None,
                format!(
                    "indexes already held by {}",
                    prev_key.as_deref().unwrap_or("an earlier segment")
                ),
            );
            continue;
        }
        if first > next {
            audit.find(
                FindingKind::MissingEvents,
                Some((next, first - 1)),
                Some(&meta.key),
                None,
                format!(
                    "no stored segment holds these indexes (after {}, before this object)",
                    prev_key.as_deref().unwrap_or("the start of the log")
                ),
            );
            tainted = true;
            next = first;
        }
        audit.report.segments += 1;
        let bytes = store.get(&meta.key).await?;
        let cp = &checkpoints[&meta.checkpoint].cp.checkpoint;
        let body = match segment::parse_header(&bytes) {
            Ok((_, body)) => body,
            Err(e) => {
                audit.find(
                    FindingKind::MalformedSegment,
                    Some((first, end - 1)),
                    Some(&meta.key),
                    Some(1),
                    format!("header unreadable: {e}"),
                );
                tainted = true;
                next = end;
                continue;
            }
        };
        let mut expected = first;
        let mut truncated_at: Option<(u64, usize)> = None;
        for (line, record) in segment::records(body) {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    let cut = !body.ends_with(b"\n")
                        && line == body.split_inclusive(|b| *b == b'\n').count() + 1;
                    if cut {
                        truncated_at = Some((expected, line));
                    } else {
                        audit.find(
                            FindingKind::MalformedLine,
                            Some((expected, expected)),
                            Some(&meta.key),
                            Some(line),
                            e.to_string(),
                        );
                        tainted = true;
                        expected += 1;
                    }
                    continue;
                }
            };
            audit.report.events += 1;
            if record.index >= end {
                audit.find(
                    FindingKind::ExtraEvent,
                    Some((record.index, record.index)),
                    Some(&meta.key),
                    Some(line),
                    format!(
                        "beyond the {} events the header declares",
                        meta.header.count
                    ),
                );
                continue;
            }
            if record.index < expected {
                audit.find(
                    FindingKind::DuplicateEvent,
                    Some((record.index, record.index)),
                    Some(&meta.key),
                    Some(line),
                    "this index was already stored (duplicated line)",
                );
                continue;
            }
            if record.index > expected {
                audit.find(
                    FindingKind::MissingEvents,
                    Some((expected, record.index - 1)),
                    Some(&meta.key),
                    Some(line),
                    "lines missing from the segment",
                );
                tainted = true;
            }
            expected = record.index + 1;
            if record.index < next {
                // Overlap with an earlier segment: reported by the overlap, not twice.
                continue;
            }
            if let Err(e) = merkle::verify_inclusion(
                record.index,
                cp.size,
                &record.leaf_hash,
                &record.proof,
                &cp.root,
            ) {
                audit.find(
                    FindingKind::LeafMismatch,
                    Some((record.index, record.index)),
                    Some(&meta.key),
                    Some(line),
                    format!(
                        "event (auditID {}) does not prove into the checkpoint of size {}: {e}",
                        record.audit_id.as_deref().unwrap_or("?"),
                        cp.size
                    ),
                );
                tainted = true;
                continue;
            }
            audit.report.events_verified += 1;
            if !tainted {
                frontier.push(record.leaf_hash);
                if let Some(hashes) = by_size.get(&frontier.size()) {
                    let root = frontier.root();
                    for h in hashes {
                        let info = texts[h];
                        if info.cp.checkpoint.root == root {
                            audit.report.roots_verified += 1;
                        } else {
                            audit.find(
                                FindingKind::RootMismatch,
                                Some((frontier.size() - 1, frontier.size() - 1)),
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
            }
        }
        if expected < end {
            let (from, line) = truncated_at.unwrap_or((expected, 0));
            audit.find(
                FindingKind::SegmentTruncated,
                Some((from.min(expected), end - 1)),
                Some(&meta.key),
                (line > 0).then_some(line),
                format!(
                    "the header declares {} events, the object ends after index {}",
                    meta.header.count,
                    from.min(expected) as i128 - 1
                ),
            );
            audit.missing.push((from.min(expected), end - 1));
            tainted = true;
        }
        next = next.max(end);
        prev_key = Some(meta.key.clone());
    }
    let tree_size = audit.report.tree_size;
    if next < tree_size {
        audit.find(
            FindingKind::MissingEvents,
            Some((next, tree_size - 1)),
            prev_key.as_deref(),
            None,
            format!(
                "a stored checkpoint covers {tree_size} leaves but the store holds only {next} (tail lost or deleted)"
            ),
        );
    }

    // The chain, oldest first.
    let mut chain: Vec<&CheckpointInfo> = texts.values().copied().collect();
    chain.sort_by_key(|c| {
        (
            c.cp.checkpoint.size,
            c.cp.checkpoint.time_ms,
            c.first_object.clone(),
        )
    });
    let mut prev: Option<&CheckpointInfo> = None;
    for info in chain {
        let cp = &info.cp.checkpoint;
        let (from, expect) = match prev {
            None => (0, None),
            Some(p) => (p.cp.checkpoint.size, Some(p.cp.hash())),
        };
        if cp.prev != expect {
            let explained = audit.missing.iter().any(|&(a, b)| a < cp.size && b >= from);
            if !explained {
                audit.find(
                    FindingKind::ChainBreak,
                    Some((cp.size.saturating_sub(1), cp.size.saturating_sub(1))),
                    Some(&info.first_object),
                    Some(1),
                    match prev {
                        None => format!(
                            "the oldest stored checkpoint (size {}) refers to an earlier one that is not stored",
                            cp.size
                        ),
                        Some(p) => format!(
                            "checkpoint of size {} does not link to the previous one (size {})",
                            cp.size, p.cp.checkpoint.size
                        ),
                    },
                );
            }
        }
        if let Some(p) = prev
            && cp.time_ms < p.cp.checkpoint.time_ms
        {
            audit.find(
                FindingKind::TimeRegression,
                Some((cp.size.saturating_sub(1), cp.size.saturating_sub(1))),
                Some(&info.first_object),
                Some(1),
                format!(
                    "checkpoint of size {} is dated {} ms before its predecessor",
                    cp.size,
                    p.cp.checkpoint.time_ms - cp.time_ms
                ),
            );
        }
        prev = Some(info);
    }
    audit.report.findings.sort_by_key(|f| (f.index, f.kind));
    Ok(audit.report)
}
