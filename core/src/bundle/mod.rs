//! Proof bundles, `sealtrail-proof/v1` (docs/FORMAT.md §8): offline evidence that chosen
//! events are in the log. This module is the file format only: the types, their one byte
//! spelling ([`Bundle::encode`]), the strict reader ([`Bundle::parse`]) and the structural
//! rules ([`Bundle::check_structure`]). Checking signatures and proofs, and producing a
//! bundle from a store, are the verifier's.

use std::collections::{HashMap, HashSet};

use crate::Error;
use crate::checkpoint::SignedCheckpoint;
use crate::jcs::{Object, Value};
use crate::merkle::{Hash, leaf_hash};

mod parse;
mod selection;

pub use selection::{EventFields, Matcher, Selection};

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
/// Most timestamp tokens in one bundle.
pub const MAX_BUNDLE_TIMESTAMPS: usize = 4096;

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

/// An RFC 3161 token on one of the bundle's checkpoints, as stored (docs/FORMAT.md §10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleTimestamp {
    /// Text hash of the checkpoint in [`Bundle::checkpoints`] the token is on.
    pub checkpoint: Hash,
    /// The TSA's name (its trust bundle entry).
    pub tsa: String,
    /// The token's DER bytes, as stored.
    pub token: Vec<u8>,
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
    /// Ordered by (their checkpoint's size, its text hash, TSA name), distinct; the member
    /// is absent from the file when there are none.
    pub timestamps: Vec<BundleTimestamp>,
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
        let mut out = Vec::with_capacity(self.encoded_len_estimate());
        out.extend_from_slice(b"{\"checkpoints\":[");
        write_notes(&mut out, &self.checkpoints);
        out.extend_from_slice(b"],\"consistency\":");
        match &self.consistency {
            None => out.extend_from_slice(b"null"),
            Some(c) => write_consistency(&mut out, c),
        }
        out.extend_from_slice(b",\"events\":[");
        write_joined(&mut out, &self.events, write_event);
        out.extend_from_slice(b"],\"format\":");
        write_string(&mut out, PROOF_FORMAT);
        out.extend_from_slice(b",\"origin\":");
        write_string(&mut out, &self.origin);
        out.extend_from_slice(b",\"rotations\":[");
        write_notes(&mut out, &self.rotations);
        out.extend_from_slice(b"],\"selection\":");
        self.selection.to_value().write_canonical(&mut out);
        if !self.timestamps.is_empty() {
            out.extend_from_slice(b",\"timestamps\":[");
            write_joined(&mut out, &self.timestamps, write_timestamp);
            out.push(b']');
        }
        out.extend_from_slice(b"}\n");
        out
    }

    /// About the length of [`Bundle::encode`], to allocate once.
    fn encoded_len_estimate(&self) -> usize {
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
        let tokens_len: usize = self
            .timestamps
            .iter()
            .map(|t| t.token.len() * 4 / 3 + 128)
            .sum();
        events_len + notes_len + tokens_len + 1024
    }

    /// The rules on order and references that make a bundle's content one byte string:
    /// checkpoints ordered by (size, text hash) and distinct; rotations (each with a `key`
    /// line) ordered by (size, time) and distinct; events ordered by index, distinct, each
    /// naming a checkpoint of the bundle; every checkpoint named by an event or the head;
    /// the head of the largest size, and one consistency proof per other checkpoint, in
    /// order.
    ///
    /// Errors: [`Error::Bundle`] naming the first rule broken.
    pub fn check_structure(&self) -> Result<(), Error> {
        self.structure_problem().map_err(Error::Bundle)
    }

    fn structure_problem(&self) -> Result<(), String> {
        self.check_orders()?;
        let hashes: Vec<Hash> = self
            .checkpoints
            .iter()
            .map(SignedCheckpoint::hash)
            .collect();
        let mut used = self.check_event_references(&hashes)?;
        if let Some(c) = &self.consistency {
            self.check_consistency_references(c, &hashes)?;
            used.insert(c.head);
        }
        if let Some(h) = hashes.iter().find(|h| !used.contains(*h)) {
            return Err(format!(
                "checkpoint {} is named by no event (and is not the head)",
                hex::encode(h)
            ));
        }
        self.check_timestamps(&hashes)
    }

    /// Each token on a checkpoint of the bundle, under a valid TSA name, within the size
    /// limit; ordered by (checkpoint order, TSA name), distinct.
    fn check_timestamps(&self, hashes: &[Hash]) -> Result<(), String> {
        if self.timestamps.len() > MAX_BUNDLE_TIMESTAMPS {
            return Err(format!(
                "{} timestamps (max {MAX_BUNDLE_TIMESTAMPS})",
                self.timestamps.len()
            ));
        }
        let position: HashMap<&Hash, usize> =
            hashes.iter().enumerate().map(|(i, h)| (h, i)).collect();
        let mut keys = Vec::with_capacity(self.timestamps.len());
        for (i, t) in self.timestamps.iter().enumerate() {
            let Some(pos) = position.get(&t.checkpoint) else {
                return Err(format!(
                    "timestamps[{i}] is on checkpoint {}, which the bundle does not hold",
                    hex::encode(t.checkpoint)
                ));
            };
            if !crate::timestamp::is_valid_tsa_name(&t.tsa) {
                return Err(format!("timestamps[{i}]: invalid TSA name"));
            }
            if t.token.is_empty() || t.token.len() > crate::timestamp::MAX_TOKEN_LEN {
                return Err(format!(
                    "timestamps[{i}]: a token of {} bytes",
                    t.token.len()
                ));
            }
            keys.push((*pos, t.tsa.as_str()));
        }
        if keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err("timestamps are not distinct and ordered by (checkpoint, tsa)".into());
        }
        Ok(())
    }

    /// Checkpoints, rotations and events each in their order, without repeats.
    fn check_orders(&self) -> Result<(), String> {
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
        Ok(())
    }

    /// Every event names a checkpoint of the bundle; the checkpoints named.
    fn check_event_references(&self, hashes: &[Hash]) -> Result<HashSet<Hash>, String> {
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
        Ok(used)
    }

    /// The head is a checkpoint of the largest size; one proof per other checkpoint.
    fn check_consistency_references(&self, c: &Consistency, hashes: &[Hash]) -> Result<(), String> {
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
        let others: Vec<Hash> = hashes.iter().copied().filter(|h| *h != c.head).collect();
        if c.proofs.len() != others.len() || c.proofs.iter().zip(&others).any(|(p, h)| p.from != *h)
        {
            return Err(
                "consistency proofs are not one per checkpoint other than the head, in order"
                    .into(),
            );
        }
        Ok(())
    }
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

fn write_consistency(out: &mut Vec<u8>, c: &Consistency) {
    out.extend_from_slice(b"{\"head\":");
    write_hash(out, &c.head);
    out.extend_from_slice(b",\"proofs\":[");
    write_joined(out, &c.proofs, |out, p| {
        out.extend_from_slice(b"{\"from\":");
        write_hash(out, &p.from);
        out.extend_from_slice(b",\"proof\":");
        write_hashes(out, &p.proof);
        out.push(b'}');
    });
    out.extend_from_slice(b"]}");
}

fn write_event(out: &mut Vec<u8>, e: &BundleEvent) {
    out.extend_from_slice(b"{\"checkpoint\":");
    write_hash(out, &e.checkpoint);
    out.extend_from_slice(b",\"event\":");
    out.extend_from_slice(&e.canonical);
    out.extend_from_slice(b",\"index\":");
    out.extend_from_slice(e.index.to_string().as_bytes());
    out.extend_from_slice(b",\"proof\":");
    write_hashes(out, &e.proof);
    out.push(b'}');
}

fn write_timestamp(out: &mut Vec<u8>, t: &BundleTimestamp) {
    use base64::Engine as _;
    out.extend_from_slice(b"{\"checkpoint\":");
    write_hash(out, &t.checkpoint);
    out.extend_from_slice(b",\"token\":");
    write_string(
        out,
        &base64::engine::general_purpose::STANDARD.encode(&t.token),
    );
    out.extend_from_slice(b",\"tsa\":");
    write_string(out, &t.tsa);
    out.push(b'}');
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
