//! Sealtrail's verifier: with only the store and a pinned trust bundle, it proves the
//! trail intact or names each problem with its kind, leaf index range and object key.
//!
//! It is also the reference reader of the formats in `docs/FORMAT.md`: it recomputes every
//! canonical form and leaf hash, checks every inclusion proof and checkpoint signature,
//! rebuilds the Merkle tree from the stored leaves and compares it with every checkpoint,
//! follows the checkpoint chain, and checks that the indexes run without gaps or repeats.
//!
//! What it does not (yet): fetch the signer's latest checkpoint to detect a cut tail, keep
//! state between runs, or check S3 Object Lock retention. Without an outside reference a
//! cut tail (the newest segments deleted together with their checkpoints) cannot be seen.

use serde::Serialize;

mod audit;
pub mod canonicalize;

pub use audit::{Options, verify_store};

/// Why a verification could not be completed (exit code 2). Problems found *in* the trail
/// are [`Finding`]s, not errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Store(#[from] sealtrail_store::StoreError),
    #[error("trust bundle: {0}")]
    Trust(sealtrail_core::Error),
}

/// What kind of problem a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// An object under the segments prefix whose key is not a segment key.
    UnexpectedObject,
    /// A segment whose header cannot be read.
    MalformedSegment,
    /// The object key names another index range than the segment holds.
    KeyMismatch,
    /// An event line that is not a valid record.
    MalformedLine,
    /// A segment shorter than its header says (cut short).
    SegmentTruncated,
    /// Leaf indexes that no stored segment holds (deleted segment or lines, lost tail).
    MissingEvents,
    /// An index stored twice (a duplicated line).
    DuplicateEvent,
    /// A whole segment whose indexes another segment already holds (a copy).
    DuplicateSegment,
    /// A record beyond the count its header declares.
    ExtraEvent,
    /// An event whose leaf hash does not prove into its checkpoint: the event, its index or
    /// its proof was altered.
    LeafMismatch,
    /// A checkpoint whose root differs from the tree rebuilt from the stored leaves.
    RootMismatch,
    /// Two different checkpoints for the same tree size.
    Fork,
    /// A signature from a trusted key that does not verify.
    BadSignature,
    /// A checkpoint with no signature from any trusted key.
    UntrustedKey,
    /// A checkpoint signed by a trusted key outside the key's validity range.
    KeyOutOfRange,
    /// A checkpoint of another log.
    WrongOrigin,
    /// A checkpoint whose `prev` is not the previous stored checkpoint.
    ChainBreak,
    /// A checkpoint whose time is earlier than its predecessor's.
    TimeRegression,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// First leaf index concerned, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// Last leaf index concerned (inclusive), when a range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_index: Option<u64>,
    /// The object key concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Line in the object (1 is the header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub detail: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub origin: String,
    pub segments: u64,
    pub events: u64,
    pub checkpoints: u64,
    /// Largest tree size of a stored checkpoint.
    pub tree_size: u64,
    /// Checkpoints whose root was recomputed from stored leaves and matched.
    pub roots_verified: u64,
    /// Events verified: canonical form, leaf hash and inclusion proof all good.
    pub events_verified: u64,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }

    /// A human summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "log {}: {} events in {} segments, {} checkpoints, tree size {}\n\
             {} events verified, {} checkpoint roots recomputed from the stored leaves\n",
            self.origin,
            self.events,
            self.segments,
            self.checkpoints,
            self.tree_size,
            self.events_verified,
            self.roots_verified
        );
        if self.intact() {
            s.push_str("INTACT: every event, proof, signature and chain link verifies\n");
        } else {
            s.push_str(&format!("NOT INTACT: {} findings\n", self.findings.len()));
            for f in &self.findings {
                s.push_str(&format!("  {}\n", describe(f)));
            }
        }
        s
    }
}

fn describe(f: &Finding) -> String {
    let kind = serde_json::to_value(f.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut s = kind;
    match (f.index, f.last_index) {
        (Some(a), Some(b)) if a != b => s.push_str(&format!(" indexes {a}..={b}")),
        (Some(a), _) => s.push_str(&format!(" index {a}")),
        _ => {}
    }
    if let Some(o) = &f.object {
        s.push_str(&format!(" in {o}"));
    }
    if let Some(l) = f.line {
        s.push_str(&format!(" line {l}"));
    }
    s.push_str(": ");
    s.push_str(&f.detail);
    s
}
