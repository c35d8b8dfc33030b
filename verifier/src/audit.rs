//! The full audit of a store.
//!
//! Pass 1 reads every segment's header (its first line) only: index range, checkpoint.
//! Checkpoints are verified once each. Segments are then ordered by the index range their
//! content declares, not by key, so that renamed or swapped objects are reported as such
//! and do not hide the rest. Pass 2 reads segments one at a time in index order, checks
//! each record, and feeds the leaves into a frontier that recomputes every checkpoint's
//! root. Memory holds one segment plus O(number of segments + checkpoints), plus, when
//! duplicates are checked, 16 bytes (and the hash set's overhead, about 2x) per event.
//!
//! With a state from an earlier run, only the objects the state does not list are read:
//! their leaves are pushed onto the remembered frontier, so the new checkpoints' roots
//! prove the stored tree consistent with the remembered checkpoint. Objects the state lists
//! that are gone are reported as missing. With the signer, its latest checkpoint must be
//! consistent with the newest stored (or remembered) checkpoint, and every leaf it signed
//! must be stored.
//!
//! Checkpoints are checked oldest first (by size, then time, a rotation after the
//! checkpoint it repeats) against a [`Keyring`]: the trust bundle plus the keys that
//! cross-signed rotation checkpoints introduced. Rotation checkpoints are read from the
//! store's `checkpoints/` objects (every run reads them all: there is one per rotation).

use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::StreamExt as _;
use std::sync::Arc;
use std::time::Duration;

use sealtrail_core::checkpoint::{self, CHECKPOINTS_PREFIX, MAX_NOTE_LEN, SignedCheckpoint};
use sealtrail_core::merkle::{self, Hash};
use sealtrail_core::segment::{self, SegmentHeader};
use sealtrail_core::trust::{Keyring, SignatureVerdict, Trust};
use sealtrail_store::{ObjectInfo, ObjectStore};
use sha2::{Digest as _, Sha256};

use crate::lock::ObjectLockPolicy;
use crate::signer::SignerSource;
use crate::state::{ObjectRecord, State};
use crate::{Error, Finding, FindingKind, Report};

/// Bytes read to find a segment's header line: the note limit, JSON-escaped, plus the rest.
const HEADER_READ_LEN: usize = 2 * MAX_NOTE_LEN + 1024;

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
}

const STATE_FILE: &str = "(state file)";

struct SegmentMeta {
    key: String,
    size: u64,
    fingerprint: Option<String>,
    header: SegmentHeader,
    checkpoint: Hash,
    /// Whether the key is the one its content gives (a copy or a moved object is not).
    key_ok: bool,
}

/// Segments fetched and checked ahead of the in-order loop (each holds one object and its
/// parsed records in memory).
const PREFETCH: usize = 4;

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

struct Audit {
    report: Report,
    missing: Vec<(u64, u64)>,
    /// Index ranges of events that do not prove into their segment's checkpoint.
    unproven: Vec<(u64, u64)>,
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
        unproven: Vec::new(),
    };
    let resume = match &options.state {
        Some(st) => Some(st.resume(trust).map_err(Error::State)?),
        None => None,
    };
    let base_size = resume.as_ref().map_or(0, |r| r.checkpoint.checkpoint.size);
    let state_info = resume.as_ref().map(|r| CheckpointInfo {
        cp: r.checkpoint.clone(),
        first_object: STATE_FILE.to_string(),
    });
    audit.report.last_event_time = options.state.as_ref().and_then(|s| s.last_event_time);

    // The signer's latest checkpoint, asked before listing: every leaf it covers had been
    // signed before the listing began.
    let signer_cp = match &options.signer {
        None => None,
        Some(s) => match s.latest_checkpoint().await.map_err(Error::Signer)? {
            None => None,
            // Its signature is checked once the stored rotations are known (pass 1).
            Some(note) => Some(SignedCheckpoint::parse(&note).map_err(|e| {
                Error::Signer(format!("latest checkpoint of {}: {e}", s.describe()))
            })?),
        },
    };
    audit.report.signer_tree_size = signer_cp.as_ref().map(|c| c.checkpoint.size);
    let mut keyring = resume
        .as_ref()
        .map_or_else(|| Keyring::new(trust.clone()), |r| r.keyring.clone());

    let seg_prefix = format!("{}segments/", options.prefix);
    let objects = store.list(&seg_prefix).await?;

    // With a state: skip what it lists, report what it lists and is gone or changed.
    let mut kept: BTreeMap<String, ObjectRecord> = BTreeMap::new();
    let mut to_read: Vec<&ObjectInfo> = Vec::new();
    match &options.state {
        None => to_read = objects.iter().collect(),
        Some(state) => {
            let listed: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
            for obj in &objects {
                match state.objects.get(&obj.key) {
                    // Same size and fingerprint (or a record from before fingerprints):
                    // unchanged since it was verified.
                    Some(rec)
                        if rec.size == obj.size
                            && (rec.fingerprint.is_none() || rec.fingerprint == obj.fingerprint) =>
                    {
                        kept.insert(obj.key.clone(), rec.clone());
                        audit.report.segments_skipped += 1;
                    }
                    // The fingerprint moved at the same size (a same-length edit, or a
                    // restore or copy): the content decides.
                    Some(rec) if rec.size == obj.size && rec.sha256.is_some() => {
                        let bytes = store.get(&obj.key).await?;
                        let digest = hex::encode(Sha256::digest(&bytes));
                        if rec.sha256.as_deref() == Some(digest.as_str()) {
                            let mut rec = rec.clone();
                            rec.fingerprint = obj.fingerprint.clone();
                            kept.insert(obj.key.clone(), rec);
                            audit.report.segments_skipped += 1;
                        } else {
                            audit.find(
                                FindingKind::ObjectChanged,
                                Some((rec.first_index, rec.last_index)),
                                Some(&obj.key),
                                None,
                                "same size as when an earlier run verified it, other content \
                                 (SHA-256 differs)",
                            );
                        }
                    }
                    Some(rec) => audit.find(
                        FindingKind::ObjectChanged,
                        Some((rec.first_index, rec.last_index)),
                        Some(&obj.key),
                        None,
                        format!(
                            "verified by an earlier run ({} bytes, fingerprint {}), now {} bytes, fingerprint {}",
                            rec.size,
                            rec.fingerprint.as_deref().unwrap_or("-"),
                            obj.size,
                            obj.fingerprint.as_deref().unwrap_or("-")
                        ),
                    ),
                    None => to_read.push(obj),
                }
            }
            let present_end = kept.values().map(|r| r.last_index + 1).max().unwrap_or(0);
            for (key, rec) in &state.objects {
                if listed.contains(key.as_str()) {
                    continue;
                }
                let detail = if rec.first_index >= present_end {
                    format!(
                        "truncated since the last run: verified then (tree size {base_size}), no longer in the store"
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
        }
    }

    // Pass 1: headers and checkpoints.
    let mut metas = Vec::with_capacity(to_read.len());
    let mut checkpoints: HashMap<Hash, CheckpointInfo> = HashMap::new();
    let cp_prefix = format!("{}{CHECKPOINTS_PREFIX}", options.prefix);
    for obj in store.list(&cp_prefix).await? {
        if obj.size > MAX_NOTE_LEN as u64 {
            audit.find(
                FindingKind::UnexpectedObject,
                None,
                Some(&obj.key),
                None,
                format!("{} bytes: larger than a checkpoint may be", obj.size),
            );
            continue;
        }
        let bytes = store.get(&obj.key).await?;
        let sc = match SignedCheckpoint::parse(&bytes) {
            Ok(sc) => sc,
            Err(e) => {
                audit.find(
                    FindingKind::UnexpectedObject,
                    None,
                    Some(&obj.key),
                    None,
                    format!("not a signed checkpoint: {e}"),
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
        let expected_key = checkpoint::object_key(&options.prefix, &sc);
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
        checkpoints.entry(hash).or_insert_with(|| CheckpointInfo {
            cp: sc,
            first_object: obj.key.clone(),
        });
    }
    for obj in to_read {
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
        if obj.size > segment::MAX_SEGMENT_LEN as u64 {
            // Refused before reading: one huge object must not exhaust the verifier.
            audit.find(
                FindingKind::MalformedSegment,
                Some(key_range),
                Some(&obj.key),
                None,
                format!(
                    "{} bytes, more than a segment may hold ({})",
                    obj.size,
                    segment::MAX_SEGMENT_LEN
                ),
            );
            continue;
        }
        audit.report.segments_read += 1;
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
        // The whole key is determined by the content: the index range and the (signed)
        // checkpoint time's hour partition.
        let expected_key = segment::object_key(
            &options.prefix,
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
                format!("stored under the wrong time partition: its checkpoint puts it at {expected_key}"),
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
            size: obj.size,
            fingerprint: obj.fingerprint.clone(),
            header,
            checkpoint: hash,
            key_ok: expected_key == obj.key,
        });
    }

    // Each distinct checkpoint: signatures, and one per size.
    // Tree size → distinct checkpoint texts of that size (more than one is a fork), and
    // text → where it was first seen.
    let mut by_size: BTreeMap<u64, Vec<Hash>> = BTreeMap::new();
    let mut texts: HashMap<Hash, &CheckpointInfo> = HashMap::new();
    let mut trusted: HashSet<Hash> = HashSet::new();
    let mut ordered: Vec<&CheckpointInfo> = checkpoints.values().collect();
    ordered.sort_by_key(|c| chain_order(c));
    if let Some(info) = &state_info {
        // Verified when the state was loaded.
        trusted.insert(info.cp.hash());
        texts.insert(info.cp.hash(), info);
        by_size
            .entry(info.cp.checkpoint.size)
            .or_default()
            .push(info.cp.hash());
    }
    // Refused rotations, by the key they named: the index of their finding, so that what
    // that key signed is reported there (its range extended) rather than once per checkpoint.
    let mut refused_findings: HashMap<u32, usize> = HashMap::new();
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
        let verdict = keyring.verify(&info.cp);
        // A rotation below the size an earlier run verified, that the run did not know:
        // added afterwards (only the state's own rotations may sit there).
        let late = info.cp.is_rotation()
            && cp.size < base_size
            && !keyring
                .rotations()
                .iter()
                .any(|r| r.text() == info.cp.text());
        let rotation = match verdict {
            _ if late => Err(format!(
                "a rotation below the tree size {base_size} an earlier run verified, which that run did not hold (added since)"
            )),
            SignatureVerdict::WrongOrigin { .. } => Ok(()),
            _ => keyring.rotate(&info.cp).map_err(|e| e.to_string()),
        };
        let refused_by = match (&verdict, &rotation) {
            (SignatureVerdict::Untrusted { .. }, Ok(())) => keyring.signed_by_refused_key(&info.cp),
            _ => None,
        };
        if let Some((key_id, _)) = refused_by
            && let Some(&f) = refused_findings.get(&key_id)
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
        } else {
            let problem = match (verdict, rotation) {
                (_, Err(refused)) => {
                    if let Some(key) = &cp.new_key {
                        refused_findings
                            .insert(key.key_id(trust.origin()), audit.report.findings.len());
                    }
                    Some((
                        FindingKind::BadRotation,
                        format!("{refused}; checkpoints signed by that key are not trusted"),
                    ))
                }
                (SignatureVerdict::Trusted { .. }, Ok(())) => {
                    trusted.insert(info.cp.hash());
                    None
                }
                (verdict, Ok(())) => match verdict {
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
                                .find_map(|id| keyring.retired_after(*id))
                                .map(|n| format!(", retired by the rotation at size {n}"))
                                .unwrap_or_default()
                        ),
                    )),
                    SignatureVerdict::WrongOrigin { origin } => Some((
                        FindingKind::WrongOrigin,
                        format!("of log {origin:?}, expected {:?}", trust.origin()),
                    )),
                },
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
        }
        let text = info.cp.hash();
        if let std::collections::hash_map::Entry::Vacant(e) = texts.entry(text) {
            e.insert(info);
            by_size.entry(cp.size).or_default().push(text);
        }
    }
    for (size, hashes) in &by_size {
        // Same-size checkpoints with one root (a rotation repeats its predecessor's tree)
        // are one tree; their order is the chain check's business.
        let roots: HashSet<Hash> = hashes
            .iter()
            .filter_map(|h| texts.get(h).map(|c| c.cp.checkpoint.root))
            .collect();
        // One tree, but not one run (each after the first a rotation naming the one before
        // as prev): two checkpoints claiming the same place in the chain.
        let mut run: Vec<&CheckpointInfo> = hashes
            .iter()
            .filter_map(|h| texts.get(h).copied())
            .collect();
        run.sort_by_key(|c| chain_order(c));
        let one_run = run
            .windows(2)
            .all(|w| w[1].cp.is_rotation() && w[1].cp.checkpoint.prev == Some(w[0].cp.hash()));
        if roots.len() > 1 || !one_run {
            let objects: Vec<&str> = hashes
                .iter()
                .filter_map(|h| texts.get(h).map(|c| c.first_object.as_str()))
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
    audit.report.checkpoints = texts.len() as u64;
    audit.report.tree_size = by_size.keys().next_back().copied().unwrap_or(0);

    // Pass 2: the records, in the order of the indexes the segments declare.
    // At one first index, the object whose key matches its content comes first: it holds
    // the range, and a copy under another key is the one reported.
    metas.sort_by(|a, b| {
        (a.header.first_index, !a.key_ok, &a.key).cmp(&(b.header.first_index, !b.key_ok, &b.key))
    });
    let progress = if options.progress {
        indicatif::ProgressBar::with_draw_target(
            Some(metas.len() as u64),
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
    let mut frontier = resume
        .as_ref()
        .map(|r| r.frontier.clone())
        .unwrap_or_default();
    let mut tainted = false;
    let mut next = base_size;
    let mut prev_key: Option<String> = None;
    let mut seen: HashSet<u128> = HashSet::new();
    let mut read_ok: Vec<(&SegmentMeta, Option<Hash>)> = Vec::with_capacity(metas.len());
    let mut seals = Vec::new();
    // The segments the loop below reads (it skips those whose indexes are all held by an
    // earlier one), fetched PREFETCH ahead and parsed, hashed and proof-checked on the
    // blocking pool: in parallel with each other and with the in-order checks here.
    let mut fetch = Vec::new();
    let mut reach = base_size;
    for meta in &metas {
        let end = meta.header.first_index + meta.header.count;
        if end > reach {
            let cp = &checkpoints[&meta.checkpoint].cp.checkpoint;
            fetch.push((meta.key.as_str(), cp.size, cp.root));
            reach = end;
        }
    }
    let hash_objects = !options.no_object_hashes;
    let mut fetched =
        futures_util::stream::iter(fetch.into_iter().map(|(key, size, root)| async move {
            let bytes = store.get(key).await?;
            tokio::task::spawn_blocking(move || check_records(bytes, size, root, hash_objects))
                .await
                .map_err(|e| Error::Internal(format!("checking {key}: {e}")))
        }))
        .buffered(PREFETCH);
    for meta in &metas {
        progress.inc(1);
        progress.set_message(format!("{} events", audit.report.events));
        let first = meta.header.first_index;
        let end = first + meta.header.count; // exclusive
        let cp = &checkpoints[&meta.checkpoint].cp.checkpoint;
        if let Some(policy) = &options.object_lock {
            let r = policy
                .source
                .retention(&meta.key)
                .await
                .map_err(Error::Lock)?;
            for (kind, detail) in crate::lock::check(policy, &r, cp.time_ms) {
                audit.find(kind, Some((first, end - 1)), Some(&meta.key), None, detail);
            }
        }
        // What holds the indexes before this segment, for the findings below.
        let before = prev_key.as_deref().unwrap_or(if base_size > 0 {
            "the segments verified by an earlier run"
        } else {
            "the start of the log"
        });
        if end <= next {
            audit.find(
                FindingKind::DuplicateSegment,
                Some((first, end - 1)),
                Some(&meta.key),
                None,
                format!("indexes already held by {before}"),
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
                    "no stored segment holds these indexes (after {before}, before this object)"
                ),
            );
            tainted = true;
            next = first;
        }
        if first < next {
            // Part of it repeats indexes already stored: its lines there are still checked
            // (a forged line must not hide behind the genuine one), but only once reported.
            audit.find(
                FindingKind::DuplicateSegment,
                Some((first, next - 1)),
                Some(&meta.key),
                None,
                format!(
                    "overlaps indexes {first}..={} already held by {before}",
                    next - 1
                ),
            );
        }
        audit.report.segments += 1;
        let checked = fetched
            .next()
            .await
            .ok_or_else(|| Error::Internal(format!("{} was not fetched", meta.key)))??;
        let content_sha256 = checked.content_sha256;
        let body = match &checked.header {
            // The records are checked against the header read in pass 1: it must still be
            // the object's header (an object replaced between the two reads is refused).
            Ok((h, start))
                if h.first_index == meta.header.first_index
                    && h.count == meta.header.count
                    && h.checkpoint == meta.header.checkpoint =>
            {
                &checked.bytes[*start..]
            }
            Ok(_) => {
                audit.find(
                    FindingKind::ObjectChanged,
                    Some((first, end - 1)),
                    Some(&meta.key),
                    Some(1),
                    "the header changed while the verifier was reading the object",
                );
                tainted = true;
                next = end;
                continue;
            }
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
        for (line, record, proof) in checked.records {
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
                        expected = expected.saturating_add(1);
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
            // Overlap with an earlier segment (reported above): the line must still prove
            // into its own checkpoint, but it does not enter the tree twice.
            let overlaps = record.index < next;
            if let Err(e) = proof {
                audit.find(
                    FindingKind::LeafMismatch,
                    Some((record.index, record.index)),
                    Some(&meta.key),
                    Some(line),
                    format!(
                        "event (auditID {}){} does not prove into the checkpoint of size {}: {e}",
                        record.audit_id.as_deref().unwrap_or("?"),
                        if overlaps {
                            " in an overlapping segment"
                        } else {
                            ""
                        },
                        cp.size
                    ),
                );
                // Only the segment holding these indexes can explain a gap in the chain.
                if !overlaps {
                    audit.unproven.push((record.index, record.index));
                    tainted = true;
                }
                continue;
            }
            if overlaps {
                continue;
            }
            audit.report.events_verified += 1;
            let received = meta.header.sealed.as_ref().map(|s| s.received_ms);
            check_event(
                &mut audit, options, &by_size, &texts, &mut seen, &record, &meta.key, line,
                received,
            );
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
        // Only a segment whose every line proved speaks for the batch it names; the lines of
        // any other are reported for themselves.
        if let (Some(sealed), Some(leaves)) = (&meta.header.sealed, checked.leaves) {
            seals.push(crate::sealing::SealSeen {
                segment: meta.key.clone(),
                first,
                last: end - 1,
                sealed: sealed.clone(),
                leaves,
                checkpoint_ms: cp.time_ms,
            });
        }
        next = next.max(end);
        prev_key = Some(meta.key.clone());
        read_ok.push((meta, content_sha256));
    }
    progress.finish_and_clear();

    // The signer's latest checkpoint, against the keys the stored rotations left trusted.
    if let (Some(cp), Some(source)) = (&signer_cp, &options.signer) {
        let verdict = keyring.verify(cp);
        if !matches!(verdict, SignatureVerdict::Trusted { .. }) {
            return Err(Error::Signer(format!(
                "the latest checkpoint of {} (size {}) does not verify against the trust bundle \
                 and the stored rotations: {verdict:?} (after a key rotation, the rotation \
                 checkpoint must be published or the trust bundle updated)",
                source.describe(),
                cp.checkpoint.size
            )));
        }
    }

    // The signer: its latest checkpoint must extend the newest stored (or remembered)
    // checkpoint signed by a trusted key.
    let stored_size = audit.report.tree_size;
    let mut signer_consistent = true;
    if let (Some(latest), Some(source)) = (&signer_cp, &options.signer) {
        let l = &latest.checkpoint;
        let newest = by_size
            .values()
            .rev()
            .flat_map(|hs| hs.iter())
            .filter(|h| trusted.contains(*h))
            .map(|h| texts[h])
            .next();
        if let Some(info) = newest {
            let s = &info.cp.checkpoint;
            let at = Some(info.first_object.as_str()).filter(|o| *o != STATE_FILE);
            let range = Some((s.size.saturating_sub(1), s.size.saturating_sub(1)));
            if s.size > l.size {
                signer_consistent = false;
                audit.find(
                    FindingKind::InconsistentWithSigner,
                    range,
                    at,
                    None,
                    format!(
                        "{} holds a checkpoint of size {} but the signer's latest ({}) is of size {}: the signer was rolled back or its log forked",
                        if info.first_object == STATE_FILE { "the state of an earlier run" } else { "the store" },
                        s.size,
                        source.describe(),
                        l.size
                    ),
                );
            } else if s.size > 0 {
                let proof = if s.size < l.size {
                    source
                        .consistency_proof(s.size, l.size)
                        .await
                        .map_err(Error::Signer)?
                } else {
                    Vec::new()
                };
                if let Err(e) = merkle::verify_consistency(s.size, l.size, &s.root, &l.root, &proof)
                {
                    signer_consistent = false;
                    audit.find(
                        FindingKind::InconsistentWithSigner,
                        range,
                        at,
                        None,
                        format!(
                            "the signer's latest checkpoint (size {}) does not extend the {} checkpoint of size {} (a fork or a rollback): {e}",
                            l.size,
                            if info.first_object == STATE_FILE { "remembered" } else { "stored" },
                            s.size
                        ),
                    );
                }
            }
        }
    }

    // Leaves covered by a checkpoint (stored or the signer's) that no segment holds.
    let signed_size = signer_cp
        .as_ref()
        .filter(|_| signer_consistent)
        .map_or(0, |c| c.checkpoint.size);
    let want = stored_size.max(signed_size);
    if next < want {
        audit.find(
            FindingKind::MissingEvents,
            Some((next, want - 1)),
            prev_key.as_deref(),
            None,
            if signed_size > stored_size {
                format!(
                    "signed by the signer (checkpoint of size {signed_size}) but not in the store"
                )
            } else {
                format!(
                    "a stored checkpoint covers {stored_size} leaves but the store holds only {next} (tail lost or deleted)"
                )
            },
        );
    }

    // The chain, oldest first (with a state: from the remembered checkpoint on).
    let mut chain: Vec<&CheckpointInfo> = texts.values().copied().collect();
    chain.sort_by_key(|c| chain_order(c));
    if let Some(remembered) = &state_info {
        // What comes after the remembered checkpoint (a rotation may share its size).
        let hash = remembered.cp.hash();
        let at = chain.iter().position(|c| c.cp.hash() == hash);
        chain = match at {
            Some(i) => chain.split_off(i + 1),
            None => chain
                .into_iter()
                .filter(|c| c.cp.checkpoint.size > base_size)
                .collect(),
        };
    }
    let mut prev: Option<&CheckpointInfo> = state_info.as_ref();
    for info in chain {
        let cp = &info.cp.checkpoint;
        let (from, expect) = match prev {
            None => (0, None),
            Some(p) => (p.cp.checkpoint.size, Some(p.cp.hash())),
        };
        if cp.prev != expect {
            // A checkpoint that no longer is in the store, because the leaves it covered are
            // gone or their segment's checkpoint was replaced, is reported there already.
            // Only a predecessor that is not stored can be explained that way: a `prev` that
            // names a stored checkpoint other than the one before is never excused.
            let explained = cp.prev.is_some_and(|h| !texts.contains_key(&h))
                && audit
                    .missing
                    .iter()
                    .chain(&audit.unproven)
                    .any(|&(a, b)| a < cp.size && b >= from);
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
    let (found, stats, sealed) = crate::sealing::check(
        store,
        &options.prefix,
        &seals,
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

    // The state for the next run: only past a run with no integrity finding, at the
    // newest checkpoint, whose root the frontier reproduced.
    let clean = audit.report.findings.iter().all(|f| !f.kind.is_integrity());
    if clean
        && !tainted
        && stored_size > 0
        && frontier.size() == stored_size
        && let Some(newest) = by_size
            .get(&stored_size)
            .and_then(|hs| hs.iter().map(|h| texts[h]).max_by_key(|c| chain_order(c)))
        && frontier.root() == newest.cp.checkpoint.root
    {
        let mut objects = kept;
        for (meta, content_sha256) in read_ok {
            objects.insert(
                meta.key.clone(),
                ObjectRecord {
                    size: meta.size,
                    fingerprint: meta.fingerprint.clone(),
                    sha256: content_sha256.map(hex::encode),
                    first_index: meta.header.first_index,
                    last_index: meta.header.first_index + meta.header.count - 1,
                },
            );
        }
        let mut state = State::new(
            trust.origin(),
            &newest.cp,
            &frontier,
            audit.report.last_event_time,
            objects,
            keyring.rotations(),
        );
        state.sealed = sealed;
        audit.report.state = Some(state);
    }
    Ok(audit.report)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The per-event checks beyond integrity: the newest stageTimestamp, late events,
/// duplicated (auditID, stage).
#[allow(clippy::too_many_arguments)]
fn check_event(
    audit: &mut Audit,
    options: &Options,
    by_size: &BTreeMap<u64, Vec<Hash>>,
    texts: &HashMap<Hash, &CheckpointInfo>,
    seen: &mut HashSet<u128>,
    record: &segment::Record,
    key: &str,
    line: usize,
    received_ms: Option<u64>,
) {
    let at = Some((record.index, record.index));
    let ts = record.stage_timestamp.as_deref().and_then(|t| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    });
    if let Some(ts) = ts {
        let secs = ts.unix_timestamp_nanos() as f64 / 1e9;
        if audit.report.last_event_time.is_none_or(|t| secs > t) {
            audit.report.last_event_time = Some(secs);
        }
        // A sealed batch's receipt is when the ingester got the event (a delay in sealing,
        // an outage of the signer, is not the event's); otherwise the checkpoint that first
        // covers the leaf, the smallest stored size above it.
        let reference = received_ms
            .map(|ms| (ms, "its receipt by the ingester"))
            .or_else(|| {
                by_size
                    .range(record.index + 1..)
                    .next()
                    .and_then(|(_, hs)| hs.iter().map(|h| texts[h].cp.checkpoint.time_ms).min())
                    .map(|ms| (ms, "the checkpoint that first covers it"))
            });
        if let (Some(limit), Some((ref_ms, what))) = (options.late_after, reference) {
            let late_by = ref_ms as f64 / 1000.0 - secs;
            if late_by > limit.as_secs_f64() {
                audit.find(
                    FindingKind::LateEvent,
                    at,
                    Some(key),
                    Some(line),
                    format!(
                        "stageTimestamp {} is {:.0} s older than {what} (threshold {} s): backdated or long delayed",
                        record.stage_timestamp.as_deref().unwrap_or(""),
                        late_by,
                        limit.as_secs()
                    ),
                );
            }
        }
    }
    if options.check_duplicates
        && let (Some(id), Some(stage)) = (&record.audit_id, &record.stage)
    {
        let mut h = Sha256::new();
        h.update(id.as_bytes());
        h.update([0]);
        h.update(stage.as_bytes());
        let d = h.finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        if !seen.insert(u128::from_le_bytes(k)) {
            audit.find(
                FindingKind::DuplicateAuditEvent,
                at,
                Some(key),
                Some(line),
                format!("auditID {id} stage {stage} is already stored at an earlier index"),
            );
        }
    }
}
