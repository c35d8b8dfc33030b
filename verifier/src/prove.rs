//! Proof bundles: offline evidence that chosen audit events are in the log, for a third
//! party who has nothing but the file and a pinned trust bundle, possibly years later.
//!
//! [`prove`] (`sealtrail-verify prove`) selects stored events by auditID (every stage), or
//! by stageTimestamp range with optional `user.username` and `verb`, checks each one, and
//! writes a `sealtrail-proof/v1` file ([`Bundle`], docs/FORMAT.md §8): each event's
//! canonical JSON as stored, its leaf index and its inclusion proof into the checkpoint
//! stored with it; those signed checkpoints once each; every accepted rotation checkpoint
//! of the store, oldest first (how a key after a rotation came to be trusted); and, by
//! default, a consistency proof from each checkpoint to one *head*, the newest stored one.
//!
//! [`check_bundle`] (`sealtrail-verify check-bundle`) verifies such a file with no store,
//! signer or network: rotations through a [`Keyring`], each checkpoint's signature, each
//! event's leaf hash and inclusion proof, and each consistency proof.
//!
//! Why consistency proofs, although every event already proves into a signed checkpoint:
//! they make the bundle's checkpoints one history, so that a reader compares one head with
//! a checkpoint kept elsewhere (a `verify --state` file, a witness, a report) instead of
//! every checkpoint, and a fork signed with a leaked key cannot hide among them; and an
//! event's old checkpoint is re-anchored in a head signed by a later key. They are computed
//! from the stored leaves (never asked of the signer), which means reading every segment up
//! to the head; `--no-consistency` skips them, and then a time range reads only the hour
//! partitions around it (events are stored after their stageTimestamp: [`ProveOptions::margin`]).
//!
//! What a bundle cannot prove: that the log holds no *other* event matching its selection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use sealtrail_core::checkpoint::{CHECKPOINTS_PREFIX, MAX_NOTE_LEN, SignedCheckpoint};
use sealtrail_core::event::{MAX_AUDIT_ID_LEN, parse_timestamp_micros};
use sealtrail_core::jcs::{self, Object, Value};
use sealtrail_core::merkle::{self, Hash, MAX_PROOF_HASHES, leaf_hash, node_hash};
use sealtrail_core::segment::{self, Record};
use sealtrail_core::trust::{Keyring, SignatureVerdict, Trust};
use sealtrail_store::{ObjectInfo, ObjectStore};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::Error;

/// The `format` value of version 1 proof bundles.
pub const PROOF_FORMAT: &str = "sealtrail-proof/v1";
/// Largest bundle file read or written.
pub const MAX_BUNDLE_LEN: usize = 256 * 1024 * 1024;
/// Most events in one bundle.
pub const MAX_BUNDLE_EVENTS: usize = 100_000;
/// Most checkpoints in one bundle (one per event, plus the head).
pub const MAX_BUNDLE_CHECKPOINTS: usize = MAX_BUNDLE_EVENTS + 1;
/// Most rotation checkpoints in one bundle.
pub const MAX_BUNDLE_ROTATIONS: usize = 1024;
/// Default [`ProveOptions::margin`]: the verifier's default late-event threshold.
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(3600);
/// Above this many hour partitions, a time range lists the whole segments prefix and
/// filters, rather than listing each partition.
const MAX_PARTITION_LISTS: i64 = 7 * 24;
/// Segments tried, newest first, to find the head (the newest may share its checkpoint
/// with a segment that is still being written).
const HEAD_CANDIDATES: usize = 16;
/// Bytes read to find a segment's header line (as the verifier's pass 1).
const HEADER_READ_LEN: usize = 2 * MAX_NOTE_LEN + 1024;
/// Failures named in a `NotProvable` error; the rest are counted.
const MAX_LISTED_FAILURES: usize = 20;

// ---------------------------------------------------------------------------------------
// Selection
// ---------------------------------------------------------------------------------------

/// Which events a bundle holds, as stated by its exporter (not proven complete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Selection {
    /// Every stored event (every stage) of one request.
    AuditId { audit_id: String },
    /// Events with `from ≤ stageTimestamp < to` (RFC 3339), optionally of one
    /// `user.username` and one `verb`.
    TimeRange {
        from: String,
        to: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        verb: Option<String>,
    },
}

/// The members of an event a selection and a summary look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventFields {
    pub audit_id: String,
    pub stage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
}

impl EventFields {
    /// Reads them from an event object: `auditID` and `stage` are required strings (every
    /// stored event has them); the others are taken when they are strings.
    pub fn of(event: &Value) -> Result<Self, String> {
        let obj = event.as_object().ok_or("event is not an object")?;
        let s = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(Self {
            audit_id: s("auditID").ok_or("event has no string auditID")?,
            stage: s("stage").ok_or("event has no string stage")?,
            stage_timestamp: s("stageTimestamp"),
            user: obj
                .get("user")
                .and_then(Value::as_object)
                .and_then(|u| u.get("username"))
                .and_then(Value::as_str)
                .map(str::to_string),
            verb: s("verb"),
        })
    }
}

impl Selection {
    /// Checks the selection: a non-empty auditID of at most 256 bytes, or RFC 3339 times
    /// with `from < to` and non-empty filters.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::AuditId { audit_id } => {
                if audit_id.is_empty() || audit_id.len() > MAX_AUDIT_ID_LEN {
                    return Err(format!("auditID of {} bytes", audit_id.len()));
                }
            }
            Self::TimeRange { user, verb, .. } => {
                let (from, to) = self
                    .time_bounds()
                    .ok_or("from and to must be RFC 3339 times")?;
                if from >= to {
                    return Err("from must be before to".into());
                }
                if user.as_deref() == Some("") || verb.as_deref() == Some("") {
                    return Err("empty user or verb".into());
                }
            }
        }
        Ok(())
    }

    /// `(from, to)` in Unix microseconds, for a time range that parses.
    fn time_bounds(&self) -> Option<(i64, i64)> {
        match self {
            Self::AuditId { .. } => None,
            Self::TimeRange { from, to, .. } => {
                Some((parse_timestamp_micros(from)?, parse_timestamp_micros(to)?))
            }
        }
    }

    /// Whether an event belongs to the selection.
    pub fn matches(&self, e: &EventFields) -> bool {
        self.matcher().matches(e)
    }

    /// The selection with its times parsed once, to test many events.
    fn matcher(&self) -> Matcher<'_> {
        Matcher {
            selection: self,
            bounds: self.time_bounds(),
        }
    }

    fn to_value(&self) -> Value {
        let mut o = Object::new();
        let s = |v: &str| Value::String(v.to_string());
        match self {
            Self::AuditId { audit_id } => {
                o.insert("audit_id", s(audit_id));
            }
            Self::TimeRange {
                from,
                to,
                user,
                verb,
            } => {
                o.insert("from", s(from));
                o.insert("to", s(to));
                if let Some(u) = user {
                    o.insert("user", s(u));
                }
                if let Some(v) = verb {
                    o.insert("verb", s(v));
                }
            }
        }
        Value::Object(o)
    }

    fn from_value(v: &Value) -> Result<Self, String> {
        let o = v.as_object().ok_or("selection is not an object")?;
        let s = |k: &str| -> Result<Option<String>, String> {
            match o.get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("selection.{k} is not a string")),
            }
        };
        let sel = if o.get("audit_id").is_some() {
            only_members(o, &["audit_id"], &[], "selection")?;
            Self::AuditId {
                audit_id: s("audit_id")?.unwrap_or_default(),
            }
        } else {
            only_members(o, &["from", "to"], &["user", "verb"], "selection")?;
            Self::TimeRange {
                from: s("from")?.unwrap_or_default(),
                to: s("to")?.unwrap_or_default(),
                user: s("user")?,
                verb: s("verb")?,
            }
        };
        sel.validate().map_err(|e| format!("selection: {e}"))?;
        Ok(sel)
    }

    /// A human description.
    pub fn describe(&self) -> String {
        match self {
            Self::AuditId { audit_id } => format!("auditID {audit_id}"),
            Self::TimeRange {
                from,
                to,
                user,
                verb,
            } => {
                let mut s = format!("stageTimestamp from {from} (included) to {to} (excluded)");
                if let Some(u) = user {
                    s.push_str(&format!(", user {u}"));
                }
                if let Some(v) = verb {
                    s.push_str(&format!(", verb {v}"));
                }
                s
            }
        }
    }
}

/// A [`Selection`] with its time range parsed.
#[derive(Debug, Clone, Copy)]
struct Matcher<'a> {
    selection: &'a Selection,
    bounds: Option<(i64, i64)>,
}

impl Matcher<'_> {
    fn matches(&self, e: &EventFields) -> bool {
        match self.selection {
            Selection::AuditId { audit_id } => e.audit_id == *audit_id,
            Selection::TimeRange { user, verb, .. } => {
                self.time_matches(e.stage_timestamp.as_deref())
                    && user.as_ref().is_none_or(|u| e.user.as_ref() == Some(u))
                    && verb.as_ref().is_none_or(|v| e.verb.as_ref() == Some(v))
            }
        }
    }

    fn time_matches(&self, stage_timestamp: Option<&str>) -> bool {
        match (
            self.bounds,
            stage_timestamp.and_then(parse_timestamp_micros),
        ) {
            (Some((from, to)), Some(t)) => from <= t && t < to,
            _ => false,
        }
    }

    /// Whether the event of a stored record may match, from what the segment reader already
    /// extracted (the full check needs the parsed event, for user and verb).
    fn may_match(&self, r: &Record) -> bool {
        match self.selection {
            Selection::AuditId { audit_id } => r.audit_id.as_deref() == Some(audit_id.as_str()),
            Selection::TimeRange { .. } => self.time_matches(r.stage_timestamp.as_deref()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The bundle
// ---------------------------------------------------------------------------------------

/// One proven event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEvent {
    pub index: u64,
    /// Text hash of its checkpoint in [`Bundle::checkpoints`].
    pub checkpoint: Hash,
    /// Its canonical JSON (docs/FORMAT.md §1.2), as stored.
    pub canonical: Vec<u8>,
    /// Inclusion proof of its leaf at `index` into that checkpoint.
    pub proof: Vec<Hash>,
    pub fields: EventFields,
}

impl BundleEvent {
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.canonical)
    }
}

/// Consistency of one checkpoint with the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// Text hash of the older checkpoint.
    pub from: Hash,
    pub proof: Vec<Hash>,
}

/// Consistency proofs from every checkpoint of a bundle to its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consistency {
    /// Text hash of the head: the bundle checkpoint of the largest size.
    pub head: Hash,
    /// One per other checkpoint, in the order of [`Bundle::checkpoints`].
    pub proofs: Vec<ConsistencyProof>,
}

/// A `sealtrail-proof/v1` file (docs/FORMAT.md §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub origin: String,
    pub selection: Selection,
    /// Distinct by text hash, ordered by (size, text hash).
    pub checkpoints: Vec<SignedCheckpoint>,
    /// Rotation checkpoints, distinct, ordered by (size, time).
    pub rotations: Vec<SignedCheckpoint>,
    pub consistency: Option<Consistency>,
    /// Ordered by index, one per index.
    pub events: Vec<BundleEvent>,
}

impl Bundle {
    /// The checkpoint with this text hash (a linear search: for many lookups, use
    /// [`Bundle::checkpoints_by_hash`]).
    pub fn checkpoint(&self, text_hash: &Hash) -> Option<&SignedCheckpoint> {
        self.checkpoints.iter().find(|c| c.hash() == *text_hash)
    }

    /// The checkpoints by text hash (each text hashed once).
    pub fn checkpoints_by_hash(&self) -> HashMap<Hash, &SignedCheckpoint> {
        self.checkpoints.iter().map(|c| (c.hash(), c)).collect()
    }

    /// The file: the RFC 8785 canonical JSON of the bundle object and one `\n`. Member
    /// order is fixed here by hand (as in the segment writer) so that event bytes are
    /// copied, not re-serialized; a test checks it is what `jcs::canonicalize` gives.
    pub fn encode(&self) -> Vec<u8> {
        let events_len: usize = self
            .events
            .iter()
            .map(|e| e.canonical.len() + 120 + 67 * e.proof.len())
            .sum();
        // Signature lines are about 100 to 130 bytes once escaped.
        let notes_len: usize = self
            .checkpoints
            .iter()
            .chain(&self.rotations)
            .map(|c| c.text().len() + 16 + 136 * c.signatures.len())
            .sum();
        let mut out = Vec::with_capacity(events_len + notes_len + 1024);
        out.extend_from_slice(b"{\"checkpoints\":[");
        write_notes(&mut out, &self.checkpoints);
        out.extend_from_slice(b"],\"consistency\":");
        match &self.consistency {
            None => out.extend_from_slice(b"null"),
            Some(c) => {
                out.extend_from_slice(b"{\"head\":");
                write_hash(&mut out, &c.head);
                out.extend_from_slice(b",\"proofs\":[");
                write_joined(&mut out, &c.proofs, |out, p| {
                    out.extend_from_slice(b"{\"from\":");
                    write_hash(out, &p.from);
                    out.extend_from_slice(b",\"proof\":");
                    write_hashes(out, &p.proof);
                    out.push(b'}');
                });
                out.extend_from_slice(b"]}");
            }
        }
        out.extend_from_slice(b",\"events\":[");
        write_joined(&mut out, &self.events, |out, e| {
            out.extend_from_slice(b"{\"checkpoint\":");
            write_hash(out, &e.checkpoint);
            out.extend_from_slice(b",\"event\":");
            out.extend_from_slice(&e.canonical);
            out.extend_from_slice(b",\"index\":");
            out.extend_from_slice(e.index.to_string().as_bytes());
            out.extend_from_slice(b",\"proof\":");
            write_hashes(out, &e.proof);
            out.push(b'}');
        });
        out.extend_from_slice(b"],\"format\":");
        write_string(&mut out, PROOF_FORMAT);
        out.extend_from_slice(b",\"origin\":");
        write_string(&mut out, &self.origin);
        out.extend_from_slice(b",\"rotations\":[");
        write_notes(&mut out, &self.rotations);
        out.extend_from_slice(b"],\"selection\":");
        self.selection.to_value().write_canonical(&mut out);
        out.extend_from_slice(b"}\n");
        out
    }

    /// Parses a bundle file strictly: the size limit first, then strict JSON (duplicate
    /// members refused), exactly the members of the format, the counts within the limits
    /// before any decoding, every note a canonical signed checkpoint of the bundle's origin,
    /// the orders and references of [`Bundle::check_structure`], and finally the bytes must
    /// be exactly [`Bundle::encode`] of what was read (one bundle, one byte string).
    /// Nothing is verified against keys or proofs here: see [`check_bundle`].
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let bad = |why: String| Error::Bundle(why);
        if bytes.len() > MAX_BUNDLE_LEN {
            return Err(bad(format!("{} bytes (max {MAX_BUNDLE_LEN})", bytes.len())));
        }
        let json = bytes
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("does not end in a newline".into()))?;
        let value = jcs::parse(json).map_err(|e| bad(e.to_string()))?;
        let top = value
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        if top.get("format").and_then(Value::as_str) != Some(PROOF_FORMAT) {
            return Err(bad(format!("format is not {PROOF_FORMAT:?}")));
        }
        only_members(
            top,
            &[
                "checkpoints",
                "consistency",
                "events",
                "format",
                "origin",
                "rotations",
                "selection",
            ],
            &[],
            "bundle",
        )
        .map_err(bad)?;
        let array = |k: &str, max: usize, min: usize| -> Result<&[Value], Error> {
            let a = top
                .get(k)
                .and_then(Value::as_array)
                .ok_or_else(|| bad(format!("{k} is not an array")))?;
            if a.len() > max || a.len() < min {
                return Err(bad(format!("{} {k} ({min} to {max} allowed)", a.len())));
            }
            Ok(a)
        };
        let checkpoint_values = array("checkpoints", MAX_BUNDLE_CHECKPOINTS, 1)?;
        let event_values = array("events", MAX_BUNDLE_EVENTS, 1)?;
        let rotation_values = array("rotations", MAX_BUNDLE_ROTATIONS, 0)?;
        let origin = top
            .get("origin")
            .and_then(Value::as_str)
            .filter(|o| sealtrail_core::checkpoint::is_valid_origin(o))
            .ok_or_else(|| bad("origin is not a valid log origin".into()))?
            .to_string();
        let selection =
            Selection::from_value(top.get("selection").unwrap_or(&Value::Null)).map_err(bad)?;
        let notes = |values: &[Value], what: &str| -> Result<Vec<SignedCheckpoint>, Error> {
            values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let note = v
                        .as_str()
                        .ok_or_else(|| bad(format!("{what}[{i}] is not a string")))?;
                    let sc = SignedCheckpoint::parse(note.as_bytes())
                        .map_err(|e| bad(format!("{what}[{i}]: {e}")))?;
                    if sc.checkpoint.origin != origin {
                        return Err(bad(format!(
                            "{what}[{i}] is of log {:?}, the bundle of {origin:?}",
                            sc.checkpoint.origin
                        )));
                    }
                    Ok(sc)
                })
                .collect()
        };
        let checkpoints = notes(checkpoint_values, "checkpoints")?;
        let rotations = notes(rotation_values, "rotations")?;
        let mut events = Vec::with_capacity(event_values.len());
        for (i, v) in event_values.iter().enumerate() {
            events.push(parse_event(v).map_err(|e| bad(format!("events[{i}]: {e}")))?);
        }
        let consistency = match top.get("consistency") {
            Some(Value::Null) => None,
            Some(v) => Some(parse_consistency(v).map_err(|e| bad(format!("consistency: {e}")))?),
            None => None,
        };
        let bundle = Self {
            origin,
            selection,
            checkpoints,
            rotations,
            consistency,
            events,
        };
        bundle.check_structure().map_err(bad)?;
        if bundle.encode() != bytes {
            return Err(bad(
                "not in canonical form (RFC 8785 JSON and one final newline)".into(),
            ));
        }
        Ok(bundle)
    }

    /// The rules on order and references that make a bundle's content one byte string:
    /// checkpoints ordered by (size, text hash) and distinct; rotations (each with a `key`
    /// line) ordered by (size, time) and distinct; events ordered by index, distinct, each naming a
    /// checkpoint of the bundle; every checkpoint named by an event or the head; the head
    /// of the largest size, and one consistency proof per other checkpoint, in order.
    pub fn check_structure(&self) -> Result<(), String> {
        let key = |c: &SignedCheckpoint| (c.checkpoint.size, c.hash());
        if self
            .checkpoints
            .windows(2)
            .any(|w| key(&w[0]) >= key(&w[1]))
        {
            return Err("checkpoints are not distinct and ordered by (size, text hash)".into());
        }
        if let Some(i) = self.rotations.iter().position(|r| !r.is_rotation()) {
            return Err(format!("rotations[{i}] is not a rotation checkpoint"));
        }
        let rkey = |c: &SignedCheckpoint| (c.checkpoint.size, c.checkpoint.time_ms);
        if self.rotations.windows(2).any(|w| rkey(&w[0]) > rkey(&w[1])) {
            return Err("rotations are not ordered by (size, time)".into());
        }
        let distinct: HashSet<Hash> = self.rotations.iter().map(SignedCheckpoint::hash).collect();
        if distinct.len() != self.rotations.len() {
            return Err("a rotation is repeated".into());
        }
        if self.events.windows(2).any(|w| w[0].index >= w[1].index) {
            return Err("events are not distinct and ordered by index".into());
        }
        let hashes: Vec<Hash> = self
            .checkpoints
            .iter()
            .map(SignedCheckpoint::hash)
            .collect();
        let known: HashSet<Hash> = hashes.iter().copied().collect();
        let mut used: HashSet<Hash> = HashSet::new();
        for e in &self.events {
            if !known.contains(&e.checkpoint) {
                return Err(format!(
                    "the event at index {} names checkpoint {}, which the bundle does not hold",
                    e.index,
                    hex::encode(e.checkpoint)
                ));
            }
            used.insert(e.checkpoint);
        }
        if let Some(c) = &self.consistency {
            let Some(head_pos) = hashes.iter().position(|h| *h == c.head) else {
                return Err("the consistency head is not one of the checkpoints".into());
            };
            let head_size = self.checkpoints[head_pos].checkpoint.size;
            if self
                .checkpoints
                .iter()
                .any(|cp| cp.checkpoint.size > head_size)
            {
                return Err("the consistency head is not of the largest size".into());
            }
            used.insert(c.head);
            let others: Vec<Hash> = hashes.iter().copied().filter(|h| *h != c.head).collect();
            if c.proofs.len() != others.len()
                || c.proofs.iter().zip(&others).any(|(p, h)| p.from != *h)
            {
                return Err(
                    "consistency proofs are not one per checkpoint other than the head, in order"
                        .into(),
                );
            }
        }
        if let Some(h) = hashes.iter().find(|h| !used.contains(*h)) {
            return Err(format!(
                "checkpoint {} is named by no event (and is not the head)",
                hex::encode(h)
            ));
        }
        Ok(())
    }
}

fn parse_event(v: &Value) -> Result<BundleEvent, String> {
    let o = v.as_object().ok_or("not an object")?;
    only_members(
        o,
        &["checkpoint", "event", "index", "proof"],
        &[],
        "event entry",
    )?;
    let event = o.get("event").ok_or("no event")?;
    Ok(BundleEvent {
        index: o
            .get("index")
            .and_then(Value::as_u64)
            .ok_or("index is not an unsigned integer")?,
        checkpoint: parse_hash(o.get("checkpoint")).ok_or("checkpoint is not 64 hex digits")?,
        fields: EventFields::of(event)?,
        canonical: event.to_canonical(),
        proof: parse_hashes(o.get("proof"))?,
    })
}

fn parse_consistency(v: &Value) -> Result<Consistency, String> {
    let o = v.as_object().ok_or("not an object or null")?;
    only_members(o, &["head", "proofs"], &[], "consistency")?;
    let head = parse_hash(o.get("head")).ok_or("head is not 64 hex digits")?;
    let values = o
        .get("proofs")
        .and_then(Value::as_array)
        .ok_or("proofs is not an array")?;
    if values.len() >= MAX_BUNDLE_CHECKPOINTS {
        return Err(format!("{} proofs", values.len()));
    }
    let proofs = values
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let po = p
                .as_object()
                .ok_or_else(|| format!("proofs[{i}] is not an object"))?;
            only_members(po, &["from", "proof"], &[], "consistency proof")?;
            Ok(ConsistencyProof {
                from: parse_hash(po.get("from"))
                    .ok_or_else(|| format!("proofs[{i}].from is not 64 hex digits"))?,
                proof: parse_hashes(po.get("proof")).map_err(|e| format!("proofs[{i}]: {e}"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Consistency { head, proofs })
}

/// Refuses members outside `required ∪ optional` and missing required ones.
fn only_members(
    o: &Object,
    required: &[&str],
    optional: &[&str],
    what: &str,
) -> Result<(), String> {
    if let Some((k, _)) = o
        .iter()
        .find(|(k, _)| !required.contains(k) && !optional.contains(k))
    {
        return Err(format!("{what}: unknown member {k:?}"));
    }
    if let Some(k) = required.iter().find(|k| o.get(k).is_none()) {
        return Err(format!("{what}: no member {k:?}"));
    }
    Ok(())
}

/// 64 lowercase hex digits.
fn parse_hash(v: Option<&Value>) -> Option<Hash> {
    let s = v?.as_str()?;
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    hex::decode(s).ok()?.try_into().ok()
}

fn parse_hashes(v: Option<&Value>) -> Result<Vec<Hash>, String> {
    let a = v.and_then(Value::as_array).ok_or("proof is not an array")?;
    if a.len() > MAX_PROOF_HASHES {
        return Err(format!(
            "proof of {} hashes (max {MAX_PROOF_HASHES})",
            a.len()
        ));
    }
    a.iter()
        .map(|h| parse_hash(Some(h)).ok_or_else(|| "proof hash is not 64 hex digits".to_string()))
        .collect()
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    Value::String(s.to_string()).write_canonical(out);
}

fn write_hash(out: &mut Vec<u8>, h: &Hash) {
    out.push(b'"');
    out.extend_from_slice(hex::encode(h).as_bytes());
    out.push(b'"');
}

fn write_hashes(out: &mut Vec<u8>, hashes: &[Hash]) {
    out.push(b'[');
    write_joined(out, hashes, write_hash);
    out.push(b']');
}

fn write_notes(out: &mut Vec<u8>, notes: &[SignedCheckpoint]) {
    write_joined(out, notes, |out, n| {
        write_string(out, &String::from_utf8_lossy(&n.to_bytes()));
    });
}

/// Writes `items` with `write`, separated by commas.
fn write_joined<T>(out: &mut Vec<u8>, items: &[T], mut write: impl FnMut(&mut Vec<u8>, &T)) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
}

// ---------------------------------------------------------------------------------------
// Checking a bundle
// ---------------------------------------------------------------------------------------

/// What kind of problem a bundle has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The bundle is of another log than the trust bundle.
    WrongOrigin,
    /// A rotation checkpoint that is not signed by both the key it retires and the key it
    /// names: its key is not learned.
    BadRotation,
    /// A signature from a known key that does not verify.
    BadSignature,
    /// A checkpoint signed by no trusted key (nor one learned from a rotation).
    UntrustedKey,
    /// A checkpoint signed by a trusted key outside its validity range.
    KeyOutOfRange,
    /// An event whose leaf hash does not prove into its checkpoint: the event, its index or
    /// its proof was altered.
    LeafMismatch,
    /// A checkpoint not proven consistent with the head.
    Inconsistent,
    /// An event that the bundle's own selection does not select.
    SelectionMismatch,
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WrongOrigin => "wrong_origin",
            Self::BadRotation => "bad_rotation",
            Self::BadSignature => "bad_signature",
            Self::UntrustedKey => "untrusted_key",
            Self::KeyOutOfRange => "key_out_of_range",
            Self::LeafMismatch => "leaf_mismatch",
            Self::Inconsistent => "inconsistent",
            Self::SelectionMismatch => "selection_mismatch",
        }
    }
}

/// One problem, with the event or checkpoint it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// Leaf index of the event concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_id: Option<String>,
    /// Text hash (hex) of the checkpoint concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    pub detail: String,
}

/// A checked event.
#[derive(Debug, Clone, Serialize)]
pub struct ProvenEvent {
    pub index: u64,
    #[serde(flatten)]
    pub fields: EventFields,
    /// Hex leaf hash, recomputed from the event.
    pub leaf_hash: String,
    /// Text hash (hex) of its checkpoint.
    pub checkpoint: String,
    pub checkpoint_size: u64,
    /// Its checkpoint's time, RFC 3339: the event was in the log by then.
    pub checkpoint_time: String,
    /// Keys (hex ids) whose valid signature on the checkpoint made it trusted.
    pub key_ids: Vec<String>,
    /// Inclusion proof, checkpoint signature and (when present) consistency all hold.
    pub verified: bool,
}

/// A checked checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointReport {
    pub text_hash: String,
    pub size: u64,
    pub time: String,
    /// The root as the note spells it (base64).
    pub root: String,
    pub key_ids: Vec<String>,
    pub trusted: bool,
    pub head: bool,
    /// Proven consistent with the head (`None`: the bundle has no consistency proofs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistent: Option<bool>,
}

/// A rotation checkpoint walked.
#[derive(Debug, Clone, Serialize)]
pub struct RotationReport {
    pub text_hash: String,
    pub size: u64,
    pub time: String,
    /// The key it names (hex id).
    pub new_key_id: String,
    pub accepted: bool,
}

/// The outcome of [`check_bundle`].
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub format: &'static str,
    pub origin: String,
    /// The selection as the exporter states it (a bundle cannot prove it complete).
    pub selection: Selection,
    /// Everything verified: no problem.
    pub verified: bool,
    pub rotations: Vec<RotationReport>,
    pub checkpoints: Vec<CheckpointReport>,
    /// Text hash (hex) of the head, when the bundle has consistency proofs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    pub events: Vec<ProvenEvent>,
    pub problems: Vec<Problem>,
}

/// Verifies a parsed bundle against a pinned trust bundle, with nothing else: rotations
/// (oldest first, through a [`Keyring`]), every checkpoint signature, every event's leaf
/// hash and inclusion proof, every consistency proof, and that every event is one the
/// bundle's selection selects. Every problem is reported, not only the first.
pub fn check_bundle(bundle: &Bundle, trust: &Trust) -> CheckReport {
    let mut report = CheckReport {
        format: PROOF_FORMAT,
        origin: bundle.origin.clone(),
        selection: bundle.selection.clone(),
        verified: false,
        rotations: Vec::new(),
        checkpoints: Vec::new(),
        head: bundle.consistency.as_ref().map(|c| hex::encode(c.head)),
        events: Vec::new(),
        problems: Vec::new(),
    };
    let mut problem =
        |kind, index: Option<u64>, audit_id: Option<&str>, cp: Option<&Hash>, detail: String| {
            report_problem(&mut report.problems, kind, index, audit_id, cp, detail);
        };
    let by_hash = bundle.checkpoints_by_hash();
    let matcher = bundle.selection.matcher();
    let origin_ok = bundle.origin == trust.origin();
    if !origin_ok {
        problem(
            ProblemKind::WrongOrigin,
            None,
            None,
            None,
            format!(
                "the bundle is of log {:?}, the trust bundle for {:?}: no signature is checked",
                bundle.origin,
                trust.origin()
            ),
        );
    }
    // Rotations first: a key's validity depends on sizes only, so learning every rotation
    // before checking the checkpoints judges each as the chain walk would.
    let mut ring = Keyring::new(trust.clone());
    for rot in &bundle.rotations {
        let new_key_id = rot
            .checkpoint
            .new_key
            .as_ref()
            .map_or(0, |k| k.key_id(&bundle.origin));
        let accepted = origin_ok && {
            match ring.rotate(rot) {
                Ok(()) => true,
                Err(e) => {
                    problem(
                        ProblemKind::BadRotation,
                        None,
                        None,
                        Some(&rot.hash()),
                        format!("rotation checkpoint of size {}: {e}", rot.checkpoint.size),
                    );
                    false
                }
            }
        };
        report.rotations.push(RotationReport {
            text_hash: hex::encode(rot.hash()),
            size: rot.checkpoint.size,
            time: format_ms(rot.checkpoint.time_ms),
            new_key_id: format!("{new_key_id:08x}"),
            accepted,
        });
    }
    let mut trusted: HashMap<Hash, Vec<String>> = HashMap::new();
    for cp in &bundle.checkpoints {
        let h = cp.hash();
        let ids = |ids: &[u32]| ids.iter().map(|k| format!("{k:08x}")).collect::<Vec<_>>();
        let verdict = if origin_ok {
            ring.verify(cp)
        } else {
            SignatureVerdict::WrongOrigin {
                origin: cp.checkpoint.origin.clone(),
            }
        };
        let what = format!("checkpoint of size {}", cp.checkpoint.size);
        match verdict {
            SignatureVerdict::Trusted { key_ids } => {
                trusted.insert(h, ids(&key_ids));
            }
            SignatureVerdict::BadSignature { key_id } => problem(
                ProblemKind::BadSignature,
                None,
                None,
                Some(&h),
                format!("{what}: the signature of key {key_id:08x} does not verify"),
            ),
            SignatureVerdict::Untrusted { key_ids } => problem(
                ProblemKind::UntrustedKey,
                None,
                None,
                Some(&h),
                format!(
                    "{what}: signed only by keys neither in the trust bundle nor learned from a rotation ({})",
                    ids(&key_ids).join(", ")
                ),
            ),
            SignatureVerdict::KeyOutOfRange { key_ids } => problem(
                ProblemKind::KeyOutOfRange,
                None,
                None,
                Some(&h),
                format!(
                    "{what}: signed by trusted keys outside their validity ({})",
                    ids(&key_ids).join(", ")
                ),
            ),
            // Reported once above.
            SignatureVerdict::WrongOrigin { .. } => {}
        }
    }
    // Consistency with the head.
    let mut consistent: HashMap<Hash, bool> = HashMap::new();
    if let Some(c) = &bundle.consistency
        && let Some(head) = by_hash.get(&c.head)
    {
        consistent.insert(c.head, true);
        let hc = &head.checkpoint;
        for p in &c.proofs {
            let Some(from) = by_hash.get(&p.from) else {
                continue;
            };
            let f = &from.checkpoint;
            let ok = match merkle::verify_consistency(f.size, hc.size, &f.root, &hc.root, &p.proof)
            {
                Ok(()) => true,
                Err(e) => {
                    problem(
                        ProblemKind::Inconsistent,
                        None,
                        None,
                        Some(&p.from),
                        format!(
                            "checkpoint of size {} is not proven consistent with the head (size {}): {e}",
                            f.size, hc.size
                        ),
                    );
                    false
                }
            };
            consistent.insert(p.from, ok);
        }
    }
    for cp in &bundle.checkpoints {
        let h = cp.hash();
        report.checkpoints.push(CheckpointReport {
            text_hash: hex::encode(h),
            size: cp.checkpoint.size,
            time: format_ms(cp.checkpoint.time_ms),
            root: root_text(cp),
            key_ids: trusted.get(&h).cloned().unwrap_or_default(),
            trusted: trusted.contains_key(&h),
            head: bundle.consistency.as_ref().is_some_and(|c| c.head == h),
            consistent: bundle
                .consistency
                .as_ref()
                .map(|_| consistent.get(&h).copied().unwrap_or(false)),
        });
    }
    for e in &bundle.events {
        let Some(cp) = by_hash.get(&e.checkpoint) else {
            continue;
        };
        let c = &cp.checkpoint;
        let leaf = e.leaf_hash();
        let id = Some(e.fields.audit_id.as_str());
        let included = match merkle::verify_inclusion(e.index, c.size, &leaf, &e.proof, &c.root) {
            Ok(()) => true,
            Err(err) => {
                problem(
                    ProblemKind::LeafMismatch,
                    Some(e.index),
                    id,
                    Some(&e.checkpoint),
                    format!(
                        "event (auditID {}, stage {}) does not prove into its checkpoint of size {}: {err}: the event, its index or its proof was altered",
                        e.fields.audit_id, e.fields.stage, c.size
                    ),
                );
                false
            }
        };
        let selected = matcher.matches(&e.fields);
        if !selected {
            problem(
                ProblemKind::SelectionMismatch,
                Some(e.index),
                id,
                None,
                format!(
                    "event (auditID {}, stage {}) is not selected by the bundle's selection ({})",
                    e.fields.audit_id,
                    e.fields.stage,
                    bundle.selection.describe()
                ),
            );
        }
        let key_ids = trusted.get(&e.checkpoint).cloned();
        report.events.push(ProvenEvent {
            index: e.index,
            fields: e.fields.clone(),
            leaf_hash: hex::encode(leaf),
            checkpoint: hex::encode(e.checkpoint),
            checkpoint_size: c.size,
            checkpoint_time: format_ms(c.time_ms),
            verified: included
                && key_ids.is_some()
                && selected
                && (bundle.consistency.is_none()
                    || consistent.get(&e.checkpoint).copied().unwrap_or(false)),
            key_ids: key_ids.unwrap_or_default(),
        });
    }
    report.verified = report.problems.is_empty();
    report
}

fn report_problem(
    problems: &mut Vec<Problem>,
    kind: ProblemKind,
    index: Option<u64>,
    audit_id: Option<&str>,
    checkpoint: Option<&Hash>,
    detail: String,
) {
    problems.push(Problem {
        kind,
        index,
        audit_id: audit_id.map(str::to_string),
        checkpoint: checkpoint.map(hex::encode),
        detail,
    });
}

/// The root line of a checkpoint's note (base64, as signed).
fn root_text(cp: &SignedCheckpoint) -> String {
    String::from_utf8_lossy(cp.text())
        .split('\n')
        .nth(2)
        .unwrap_or_default()
        .to_string()
}

fn format_ms(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

impl Problem {
    fn describe(&self) -> String {
        let mut s = self.kind.as_str().to_string();
        if let Some(i) = self.index {
            s.push_str(&format!(" event index {i}"));
        }
        if let Some(c) = &self.checkpoint {
            s.push_str(&format!(" checkpoint {c}"));
        }
        s.push_str(": ");
        s.push_str(&self.detail);
        s
    }
}

impl CheckReport {
    /// A human summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "proof bundle ({}) of log {}\nselection, as the exporter states it (a bundle cannot prove that no other event matches): {}\n",
            self.format,
            self.origin,
            self.selection.describe()
        );
        for r in &self.rotations {
            s.push_str(&format!(
                "rotation at size {} ({}): key {} {}\n",
                r.size,
                r.time,
                r.new_key_id,
                if r.accepted { "learned" } else { "REFUSED" }
            ));
        }
        for c in &self.checkpoints {
            s.push_str(&format!(
                "checkpoint size {} at {} root {} text hash {}: {}{}\n",
                c.size,
                c.time,
                c.root,
                c.text_hash,
                if c.trusted {
                    format!("signed by key {}", c.key_ids.join(", "))
                } else {
                    "NOT TRUSTED".to_string()
                },
                match (c.head, c.consistent) {
                    (true, _) => " [head]",
                    (false, Some(true)) => ", consistent with the head",
                    (false, Some(false)) => ", NOT consistent with the head",
                    (false, None) => "",
                }
            ));
        }
        match &self.head {
            Some(h) => s.push_str(&format!(
                "head {h}: compare it with a checkpoint kept independently (a `verify --state` file, a witness) to tie these events to the log others saw\n"
            )),
            None => s.push_str(
                "no consistency proofs: each event is proven into its own checkpoint only\n",
            ),
        }
        let proven = self.events.iter().filter(|e| e.verified).count();
        let count = |f: &dyn Fn(&ProvenEvent) -> Option<String>| {
            let mut m: BTreeMap<String, usize> = BTreeMap::new();
            for e in &self.events {
                *m.entry(f(e).unwrap_or_else(|| "-".into())).or_default() += 1;
            }
            m.iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let ids: HashSet<&str> = self
            .events
            .iter()
            .map(|e| e.fields.audit_id.as_str())
            .collect();
        let times: Vec<&str> = self
            .events
            .iter()
            .filter_map(|e| e.fields.stage_timestamp.as_deref())
            .collect();
        s.push_str(&format!(
            "events: {proven} of {} proven; distinct auditIDs: {}; stages: {}; users: {}; verbs: {}",
            self.events.len(),
            ids.len(),
            count(&|e| Some(e.fields.stage.clone())),
            count(&|e| e.fields.user.clone()),
            count(&|e| e.fields.verb.clone()),
        ));
        if let (Some(a), Some(b)) = (times.iter().min(), times.iter().max()) {
            s.push_str(&format!("; stageTimestamp {a} to {b}"));
        }
        s.push('\n');
        for e in &self.events {
            s.push_str(&format!(
                "  {} index {} {} {} {} {} auditID {} checkpoint size {} ({}) key {}\n",
                if e.verified { "ok " } else { "BAD" },
                e.index,
                e.fields.stage_timestamp.as_deref().unwrap_or("-"),
                e.fields.stage,
                e.fields.verb.as_deref().unwrap_or("-"),
                e.fields.user.as_deref().unwrap_or("-"),
                e.fields.audit_id,
                e.checkpoint_size,
                e.checkpoint_time,
                if e.key_ids.is_empty() {
                    "-".to_string()
                } else {
                    e.key_ids.join(",")
                }
            ));
        }
        if self.verified {
            s.push_str(
                "VERIFIED: every event, inclusion proof, checkpoint signature, rotation and consistency proof holds\n",
            );
        } else {
            s.push_str(&format!("NOT VERIFIED: {} problems\n", self.problems.len()));
            for p in &self.problems {
                s.push_str(&format!("  {}\n", p.describe()));
            }
        }
        s
    }
}

// ---------------------------------------------------------------------------------------
// Consistency proofs from the stored leaves
// ---------------------------------------------------------------------------------------

/// The subtrees `[a, b)` whose hashes make the RFC 6962 consistency proof from size `m` to
/// size `n` (RFC 6962 §2.1.2, `SUBPROOF`), in proof order. Empty unless `0 < m < n`.
fn consistency_ranges(m: u64, n: u64) -> Vec<(u64, u64)> {
    fn subproof(m: u64, a: u64, b: u64, complete: bool, out: &mut Vec<(u64, u64)>) {
        let n = b - a;
        if m == n {
            if !complete {
                out.push((a, b));
            }
            return;
        }
        // n > m ≥ 1 here, so n ≥ 2: k is the largest power of two below n.
        let k = 1u64 << (63 - (n - 1).leading_zeros());
        if m <= k {
            subproof(m, a, a + k, complete, out);
            out.push((a + k, b));
        } else {
            subproof(m - k, a + k, b, false, out);
            out.push((a, a + k));
        }
    }
    let mut out = Vec::new();
    if 0 < m && m < n {
        subproof(m, 0, n, true, &mut out);
    }
    out
}

/// `(level, position)` of `[a, b)` if it is a perfect, aligned subtree.
fn perfect_node(a: u64, b: u64) -> Option<(u32, u64)> {
    let len = b.checked_sub(a)?;
    (len.is_power_of_two() && a & (len - 1) == 0)
        .then(|| (len.trailing_zeros(), a >> len.trailing_zeros()))
}

/// The tree of the stored leaves, streamed from leaf 0 in `O(log n)` memory, keeping the
/// hashes of the subtrees that the registered consistency proofs need.
///
/// A proof from `m` to the head `n` is registered while the stream is at a size `p ≤ m`.
/// Its subtrees left of `p` are perfect subtrees of the old tree, which at `p` are still
/// whole on the frontier; those right of it are kept as they complete; those that end at
/// `n` and are not perfect are folded from the frontier at `n`.
#[derive(Debug, Default)]
struct Stream {
    size: u64,
    /// Perfect subtrees of the first `size` leaves, largest (leftmost) first: (level, hash).
    frontier: Vec<(u32, Hash)>,
    wanted: HashSet<(u32, u64)>,
    kept: HashMap<(u32, u64), Hash>,
}

impl Stream {
    fn push(&mut self, leaf: Hash) {
        let (mut level, mut pos, mut h) = (0u32, self.size, leaf);
        self.keep(level, pos, h);
        while let Some(&(l, left)) = self.frontier.last() {
            if l != level {
                break;
            }
            self.frontier.pop();
            h = node_hash(&left, &h);
            level += 1;
            pos >>= 1;
            self.keep(level, pos, h);
        }
        self.frontier.push((level, h));
        self.size += 1;
    }

    fn keep(&mut self, level: u32, pos: u64, h: Hash) {
        if self.wanted.remove(&(level, pos)) {
            self.kept.insert((level, pos), h);
        }
    }

    fn root(&self) -> Hash {
        self.fold_from(0).unwrap_or_else(merkle::empty_root)
    }

    /// The hash of `[a, size)` if `a` starts a frontier subtree.
    fn fold_from(&self, a: u64) -> Option<Hash> {
        let mut start = 0u64;
        let mut parts = Vec::new();
        for (level, h) in &self.frontier {
            if start >= a {
                parts.push(*h);
            } else if start + (1u64 << level) > a {
                return None;
            }
            start += 1u64 << level;
        }
        let mut it = parts.into_iter().rev();
        let last = it.next()?;
        Some(it.fold(last, |acc, left| node_hash(&left, &acc)))
    }

    /// The frontier subtree that is exactly `[a, b)`.
    fn frontier_node(&self, a: u64, b: u64) -> Option<Hash> {
        let mut start = 0u64;
        for (level, h) in &self.frontier {
            let end = start + (1u64 << level);
            if start == a && end == b {
                return Some(*h);
            }
            start = end;
        }
        None
    }

    /// Registers the subtrees of the proof from `m` to `n` (at the current size `≤ m`).
    fn register(&mut self, m: u64, n: u64) -> Result<(), String> {
        if m < self.size {
            return Err(format!(
                "the proof from size {m} was registered after the stream passed it"
            ));
        }
        for (a, b) in consistency_ranges(m, n) {
            let Some(node) = perfect_node(a, b) else {
                continue; // Ends at n: folded from the frontier at n.
            };
            if self.kept.contains_key(&node) {
                continue;
            }
            if b <= self.size {
                let h = self.frontier_node(a, b).ok_or_else(|| {
                    format!(
                        "subtree {a}..{b} is no longer on the frontier at size {}",
                        self.size
                    )
                })?;
                self.kept.insert(node, h);
            } else {
                self.wanted.insert(node);
            }
        }
        Ok(())
    }

    /// The proof from `m` to the current size, once the stream is there.
    fn proof(&self, m: u64) -> Result<Vec<Hash>, String> {
        consistency_ranges(m, self.size)
            .into_iter()
            .map(|(a, b)| {
                match perfect_node(a, b) {
                    Some(node) => self.kept.get(&node).copied(),
                    None => self.fold_from(a).filter(|_| b == self.size),
                }
                .ok_or_else(|| format!("subtree {a}..{b} was not kept"))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Producing a bundle from a store
// ---------------------------------------------------------------------------------------

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

#[derive(Debug, Clone)]
struct Seg {
    key: String,
    size: u64,
    first: u64,
    last: u64,
}

struct Run<'a> {
    store: &'a dyn ObjectStore,
    trust: &'a Trust,
    selection: &'a Selection,
    options: &'a ProveOptions,
    ring: Keyring,
    report: ProveReport,
    /// SHA-256 of a note's bytes → whether the keyring trusts it (or why not).
    verdicts: HashMap<Hash, Result<(), String>>,
    events: BTreeMap<u64, BundleEvent>,
    notes: HashMap<Hash, SignedCheckpoint>,
    failures: Vec<String>,
    approx_len: usize,
}

/// Produces a bundle of the events `selection` selects among the segments of `store`
/// under `options.prefix`. Every event is checked before it is exported (its checkpoint
/// against the trust bundle and the rotations stored under `checkpoints/`, its inclusion
/// proof), and so is the finished file ([`Bundle::parse`], [`check_bundle`]).
///
/// Errors: [`Error::NotProvable`] when nothing matches or something selected does not
/// verify (each named); [`Error::Limit`] past [`MAX_BUNDLE_EVENTS`] or [`MAX_BUNDLE_LEN`];
/// [`Error::Store`] when the store cannot be read.
pub async fn prove(
    store: &dyn ObjectStore,
    trust: &Trust,
    selection: &Selection,
    options: &ProveOptions,
) -> Result<Proved, Error> {
    selection.validate().map_err(Error::Selection)?;
    let mut run = Run {
        store,
        trust,
        selection,
        options,
        ring: Keyring::new(trust.clone()),
        report: ProveReport::default(),
        verdicts: HashMap::new(),
        events: BTreeMap::new(),
        notes: HashMap::new(),
        failures: Vec::new(),
        approx_len: 0,
    };
    run.learn_rotations().await?;
    let segments = run.plan().await?;
    let head = if options.consistency {
        Some(run.head(&segments).await?)
    } else {
        None
    };
    let mut stream = Stream::default();
    // Size → (root, what) that the stream must reproduce there.
    let mut roots: BTreeMap<u64, Vec<(Hash, String)>> = BTreeMap::new();
    let mut registered: HashSet<Hash> = HashSet::new();
    if let Some(h) = &head {
        roots
            .entry(h.checkpoint.size)
            .or_default()
            .push((h.checkpoint.root, "the head checkpoint".into()));
    }
    let head_size = head.as_ref().map(|h| h.checkpoint.size);
    for seg in &segments {
        if let Some(n) = head_size {
            if seg.last < stream.size {
                run.report.warnings.push(format!(
                    "{}: indexes already read from another segment (a copy?), passed over",
                    seg.key
                ));
                continue;
            }
            if seg.first >= n {
                run.report.warnings.push(format!(
                    "{}: beyond the head (size {n}), passed over",
                    seg.key
                ));
                continue;
            }
            if seg.first < stream.size {
                return Err(needs_whole_log(format!(
                    "{} overlaps indexes {}..={} read from another segment (run `sealtrail-verify verify`)",
                    seg.key,
                    seg.first,
                    stream.size - 1
                )));
            }
            if seg.first > stream.size {
                return Err(needs_whole_log(format!(
                    "the store holds no segment for indexes {}..={} before {} (run `sealtrail-verify verify`)",
                    stream.size,
                    seg.first - 1,
                    seg.key
                )));
            }
        }
        let Some((header_cp, records)) = run.read_segment(seg, head.is_some()).await? else {
            continue;
        };
        let cp_hash = header_cp.hash();
        let selected = run.select(seg, &header_cp, &records)?;
        if let Some(n) = head_size {
            if selected && registered.insert(cp_hash) {
                let m = header_cp.checkpoint.size;
                if m > n {
                    return Err(needs_whole_log(format!(
                        "{}: its checkpoint (size {m}) is newer than the head (size {n})",
                        seg.key
                    )));
                }
                stream.register(m, n).map_err(internal)?;
                roots.entry(m).or_default().push((
                    header_cp.checkpoint.root,
                    format!("the checkpoint of {}", seg.key),
                ));
            }
            for (_, r) in &records {
                if stream.size >= n {
                    break;
                }
                stream.push(r.leaf_hash);
                if let Some(want) = roots.get(&stream.size) {
                    let root = stream.root();
                    // Listed with the events that fail (an altered leaf is named there).
                    for (_, what) in want.iter().filter(|(r, _)| *r != root) {
                        run.failures.push(format!(
                            "the stored leaves 0..{} do not give the root of {what}: no consistency proof can be computed (run `sealtrail-verify verify`; --no-consistency exports without them)",
                            stream.size
                        ));
                    }
                }
            }
        }
    }
    run.finish(head, &stream).await
}

fn needs_whole_log(why: String) -> Error {
    Error::NotProvable(format!(
        "{why}; consistency proofs need every leaf up to the head (--no-consistency exports without them)"
    ))
}

fn internal(why: String) -> Error {
    Error::NotProvable(format!("internal error: {why}"))
}

impl Run<'_> {
    /// Walks the rotation checkpoints stored under `checkpoints/`, oldest first; the
    /// accepted ones teach the keyring their keys and go into the bundle.
    async fn learn_rotations(&mut self) -> Result<(), Error> {
        let prefix = format!("{}{CHECKPOINTS_PREFIX}", self.options.prefix);
        let mut rotations = Vec::new();
        for obj in self.store.list(&prefix).await? {
            if obj.size > MAX_NOTE_LEN as u64 {
                self.report
                    .warnings
                    .push(format!("{}: {} bytes, not a checkpoint", obj.key, obj.size));
                continue;
            }
            let bytes = self.store.get(&obj.key).await?;
            match SignedCheckpoint::parse(&bytes) {
                Ok(sc) if sc.is_rotation() && sc.checkpoint.origin == self.trust.origin() => {
                    rotations.push((obj.key, sc));
                }
                Ok(sc) if sc.is_rotation() => self.report.warnings.push(format!(
                    "{}: a rotation of log {:?}, passed over",
                    obj.key, sc.checkpoint.origin
                )),
                Ok(_) => {}
                Err(e) => self.report.warnings.push(format!("{}: {e}", obj.key)),
            }
        }
        rotations.sort_by_key(|(_, r)| (r.checkpoint.size, r.checkpoint.time_ms));
        for (key, r) in rotations {
            if let Err(e) = self.ring.rotate(&r) {
                self.report
                    .warnings
                    .push(format!("{key}: rotation not accepted, passed over: {e}"));
            }
        }
        self.report.rotations = self.ring.rotations().len() as u64;
        Ok(())
    }

    /// The segments to read, in index order.
    async fn plan(&mut self) -> Result<Vec<Seg>, Error> {
        let seg_prefix = format!("{}segments/", self.options.prefix);
        let mut objects: Vec<ObjectInfo> = Vec::new();
        match self
            .selection
            .time_bounds()
            .filter(|_| !self.options.consistency)
        {
            None => objects = self.store.list(&seg_prefix).await?,
            Some((from, to)) => {
                let margin = i64::try_from(self.options.margin.as_secs()).unwrap_or(i64::MAX);
                let lo = (from.div_euclid(1_000_000).saturating_sub(margin)).div_euclid(3600);
                // `to` is excluded: its last included microsecond is `to - 1`.
                let hi = ((to - 1).div_euclid(1_000_000).saturating_add(margin)).div_euclid(3600);
                let (lo_s, hi_s) = (partition(lo)?, partition(hi)?);
                self.report.partitions = Some((lo_s.clone(), hi_s.clone()));
                if hi - lo < MAX_PARTITION_LISTS {
                    for hour in lo..=hi {
                        let p = format!("{seg_prefix}{}/", partition(hour)?);
                        objects.extend(self.store.list(&p).await?);
                    }
                } else {
                    objects = self.store.list(&seg_prefix).await?;
                    objects.retain(|o| {
                        o.key
                            .strip_prefix(&seg_prefix)
                            .and_then(|r| r.get(..13))
                            .is_some_and(|p| lo_s.as_str() <= p && p <= hi_s.as_str())
                    });
                }
            }
        }
        self.report.segments_listed = objects.len() as u64;
        let mut segments = Vec::with_capacity(objects.len());
        for o in objects {
            match segment::parse_object_key(&self.options.prefix, &o.key) {
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

    /// The head: the checkpoint of the newest segment, unless it covers leaves that no
    /// listed segment holds (a segment sharing it not yet written): then of the one before.
    async fn head(&mut self, segments: &[Seg]) -> Result<SignedCheckpoint, Error> {
        let stored = segments.iter().map(|s| s.last + 1).max().unwrap_or(0);
        for seg in segments.iter().rev().take(HEAD_CANDIDATES) {
            let head = self.store.get_prefix(&seg.key, HEADER_READ_LEN).await?;
            let Ok((h, _)) = segment::parse_header(&head) else {
                continue;
            };
            if h.checkpoint.checkpoint.size > stored {
                continue;
            }
            if let Err(why) = self.trusted(&h.checkpoint) {
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
        if seg.size > segment::MAX_SEGMENT_LEN as u64 {
            problem(
                self,
                format!("{} bytes, more than a segment may hold", seg.size),
            )?;
            return Ok(None);
        }
        let bytes = self.store.get(&seg.key).await?;
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

    /// Whether the keyring trusts a checkpoint (cached per note).
    fn trusted(&mut self, cp: &SignedCheckpoint) -> Result<(), String> {
        let key: Hash = Sha256::digest(cp.to_bytes()).into();
        if let Some(v) = self.verdicts.get(&key) {
            return v.clone();
        }
        let v = match self.ring.verify(cp) {
            SignatureVerdict::Trusted { .. } => Ok(()),
            other => Err(format!("{other:?}")),
        };
        self.verdicts.insert(key, v.clone());
        v
    }

    /// Checks and keeps the selected events of one segment; whether any was kept.
    fn select(
        &mut self,
        seg: &Seg,
        cp: &SignedCheckpoint,
        records: &[(usize, Record)],
    ) -> Result<bool, Error> {
        let matcher = self.selection.matcher();
        let mut kept = false;
        for (line, r) in records {
            if !matcher.may_match(r) {
                continue;
            }
            let value = match jcs::parse(&r.canonical) {
                Ok(v) => v,
                Err(e) => {
                    self.failures
                        .push(format!("{} line {line}: event unreadable: {e}", seg.key));
                    continue;
                }
            };
            let fields = match EventFields::of(&value) {
                Ok(f) => f,
                Err(e) => {
                    self.failures.push(format!("{} line {line}: {e}", seg.key));
                    continue;
                }
            };
            if !matcher.matches(&fields) {
                continue;
            }
            let at = format!(
                "index {} (auditID {}, stage {}) in {} line {line}",
                r.index, fields.audit_id, fields.stage, seg.key
            );
            if let Err(why) = self.trusted(cp) {
                self.failures.push(format!(
                    "{at}: its checkpoint (size {}) does not verify: {why}",
                    cp.checkpoint.size
                ));
                continue;
            }
            let c = &cp.checkpoint;
            if let Err(e) =
                merkle::verify_inclusion(r.index, c.size, &r.leaf_hash, &r.proof, &c.root)
            {
                self.failures.push(format!(
                    "{at}: does not prove into its checkpoint of size {}: {e}",
                    c.size
                ));
                continue;
            }
            match self.events.get(&r.index) {
                // The same leaf from a copy of a segment.
                Some(e) if e.leaf_hash() == r.leaf_hash => continue,
                Some(_) => {
                    self.failures
                        .push(format!("{at}: another event is stored at this index"));
                    continue;
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
            kept = true;
        }
        Ok(kept)
    }

    async fn finish(
        mut self,
        head: Option<SignedCheckpoint>,
        stream: &Stream,
    ) -> Result<Proved, Error> {
        if !self.failures.is_empty() {
            let n = self.failures.len();
            let mut s = format!("{n} problems, no bundle written:");
            for f in self.failures.iter().take(MAX_LISTED_FAILURES) {
                s.push_str("\n  ");
                s.push_str(f);
            }
            if n > MAX_LISTED_FAILURES {
                s.push_str(&format!("\n  … and {} more", n - MAX_LISTED_FAILURES));
            }
            return Err(Error::NotProvable(s));
        }
        if self.events.is_empty() {
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
        let consistency = match &head {
            None => None,
            Some(h) => {
                if stream.size != h.checkpoint.size {
                    return Err(needs_whole_log(format!(
                        "the head covers {} leaves, the store holds {}",
                        h.checkpoint.size, stream.size
                    )));
                }
                self.notes.entry(h.hash()).or_insert_with(|| h.clone());
                Some(h.hash())
            }
        };
        let mut checkpoints: Vec<SignedCheckpoint> = self.notes.into_values().collect();
        checkpoints.sort_by_cached_key(|c| (c.checkpoint.size, c.hash()));
        let consistency = match consistency {
            None => None,
            Some(head) => {
                let mut proofs = Vec::new();
                for cp in checkpoints.iter().filter(|c| c.hash() != head) {
                    proofs.push(ConsistencyProof {
                        from: cp.hash(),
                        proof: stream.proof(cp.checkpoint.size).map_err(internal)?,
                    });
                }
                Some(Consistency { head, proofs })
            }
        };
        self.report.events = self.events.len() as u64;
        self.report.checkpoints = checkpoints.len() as u64;
        self.report.head_size = head.as_ref().map(|h| h.checkpoint.size);
        let bundle = Bundle {
            origin: self.trust.origin().to_string(),
            selection: self.selection.clone(),
            checkpoints,
            rotations: self.ring.rotations().to_vec(),
            consistency,
            events: self.events.into_values().collect(),
        };
        bundle.check_structure().map_err(internal)?;
        let bytes = bundle.encode();
        if bytes.len() > MAX_BUNDLE_LEN {
            return Err(Error::Limit(format!(
                "a bundle of {} bytes (max {MAX_BUNDLE_LEN}): narrow the selection",
                bytes.len()
            )));
        }
        // Never export what the checker would refuse.
        let parsed = Bundle::parse(&bytes).map_err(|e| internal(e.to_string()))?;
        let check = check_bundle(&parsed, self.trust);
        if !check.verified {
            let why: Vec<String> = check.problems.iter().map(Problem::describe).collect();
            return Err(Error::NotProvable(format!(
                "the bundle does not verify: {}",
                why.join("; ")
            )));
        }
        Ok(Proved {
            bytes,
            report: self.report,
        })
    }
}

/// `YYYY/MM/DD/HH` of an hour since the epoch, as in segment keys.
fn partition(hour: i64) -> Result<String, Error> {
    let t = hour
        .checked_mul(3600)
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| Error::Selection("time out of range".into()))?;
    Ok(format!(
        "{:04}/{:02}/{:02}/{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour()
    ))
}

/// Reads at most [`MAX_BUNDLE_LEN`] + 1 bytes, so that an oversized file is refused
/// without being read whole.
pub fn read_limited(r: impl std::io::Read) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    r.take(MAX_BUNDLE_LEN as u64 + 1).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sealtrail_core::merkle::MemoryLog;

    fn leaf(i: u64) -> Hash {
        leaf_hash(&i.to_be_bytes())
    }

    #[test]
    fn streamed_consistency_proofs_match_the_reference() {
        for n in 1..=40u64 {
            let mut log = MemoryLog::new();
            for i in 0..n {
                log.append(leaf(i));
            }
            for m in 1..=n {
                // Registered at every size the stream may be at when the checkpoint of
                // size m is first seen (a segment starting at p < m, or at m itself).
                for p in 0..m {
                    let mut s = Stream::default();
                    for i in 0..p {
                        s.push(leaf(i));
                    }
                    s.register(m, n).unwrap();
                    for i in p..n {
                        s.push(leaf(i));
                    }
                    let proof = s.proof(m).unwrap();
                    assert_eq!(
                        proof,
                        log.consistency_proof(m, n).unwrap(),
                        "m={m} n={n} p={p}"
                    );
                    merkle::verify_consistency(m, n, &log.root_at(m).unwrap(), &s.root(), &proof)
                        .unwrap();
                }
            }
            let mut s = Stream::default();
            for i in 0..n {
                s.push(leaf(i));
            }
            assert_eq!(s.root(), log.root());
        }
    }

    #[test]
    fn selection_roundtrip_and_matching() {
        let t = Selection::TimeRange {
            from: "2025-11-27T05:00:00Z".into(),
            to: "2025-11-27T06:00:00Z".into(),
            user: Some("alice".into()),
            verb: None,
        };
        t.validate().unwrap();
        assert_eq!(Selection::from_value(&t.to_value()).unwrap(), t);
        let mut e = EventFields {
            audit_id: "a".into(),
            stage: "ResponseComplete".into(),
            stage_timestamp: Some("2025-11-27T05:59:59.999999Z".into()),
            user: Some("alice".into()),
            verb: Some("get".into()),
        };
        assert!(t.matches(&e));
        e.stage_timestamp = Some("2025-11-27T06:00:00Z".into());
        assert!(!t.matches(&e), "to is excluded");
        for bad in [
            Selection::AuditId {
                audit_id: String::new(),
            },
            Selection::TimeRange {
                from: "2025-11-27T06:00:00Z".into(),
                to: "2025-11-27T05:00:00Z".into(),
                user: None,
                verb: None,
            },
            Selection::TimeRange {
                from: "yesterday".into(),
                to: "2025-11-27T05:00:00Z".into(),
                user: None,
                verb: None,
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partitions_are_key_partitions() {
        assert_eq!(partition(1_764_221_736 / 3600).unwrap(), "2025/11/27/05");
    }
}
