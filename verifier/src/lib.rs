//! Sealtrail's verifier: with only the store and a pinned trust bundle, it proves the
//! trail intact or names each problem with its kind, leaf index range and object key.
//!
//! It is also the reference reader of the formats in `docs/FORMAT.md`: it recomputes every
//! canonical form and leaf hash, checks every inclusion proof and checkpoint signature,
//! rebuilds the Merkle tree from the stored leaves and compares it with every checkpoint,
//! follows the checkpoint chain, and checks that the indexes run without gaps or repeats.
//!
//! A cut tail (the newest segments deleted together with their checkpoints) needs an
//! outside reference: the signer's latest checkpoint ([`signer`], `Options::signer`) or the
//! state of an earlier run ([`state`], `Options::state`), which also makes runs
//! incremental. Optional checks: duplicated (auditID, stage) pairs, late (backdated)
//! events, and the S3 Object Lock of every segment ([`lock`]).
//!
//! [`reconcile`] lists what the apiserver's log-file backend wrote that the trail lacks.
//! [`prove`] exports chosen events as an offline proof bundle (events, inclusion proofs,
//! checkpoints, rotations, consistency proofs) and checks one with only a trust bundle.
//!
//! What it does not (yet): witnesses; proving that a log holds *no* other event than a
//! bundle's (completeness of a selection).

use serde::Serialize;

mod audit;
pub mod canonicalize;
pub mod lock;
pub mod metrics;
pub mod prove;
pub mod reconcile;
pub mod sealing;
pub mod signer;
pub mod state;

pub use audit::{Options, verify_store};
pub use lock::{ObjectLockPolicy, RetentionSource};
pub use signer::{GrpcSigner, SignerConfig, SignerSource};
pub use state::State;

/// Why a verification could not be completed (exit code 2). Problems found *in* the trail
/// are [`Finding`]s, not errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Store(#[from] sealtrail_store::StoreError),
    #[error("trust bundle: {0}")]
    Trust(sealtrail_core::Error),
    /// The signer could not be asked, or answered something unusable.
    #[error("signer: {0}")]
    Signer(String),
    /// The state file cannot be used.
    #[error("state: {0}")]
    State(String),
    /// The object lock of a segment could not be read.
    #[error("object lock: {0}")]
    Lock(String),
    /// A verification task died (a bug: reported, never taken as a verdict).
    #[error("internal: {0}")]
    Internal(String),
    /// `prove` wrote no bundle: no stored event matches, or a selected event, its
    /// checkpoint or its consistency with the head does not verify (exit 1).
    #[error("not provable: {0}")]
    NotProvable(String),
    /// A proof bundle that cannot be read: malformed, not canonical, or over a limit.
    #[error("proof bundle: {0}")]
    Bundle(String),
    /// An unusable event selection for `prove`.
    #[error("selection: {0}")]
    Selection(String),
    /// A proof bundle would exceed a limit of the format.
    #[error("limit exceeded: {0}")]
    Limit(String),
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
    /// A checkpoint signed by a trusted key outside the key's validity range (or after a
    /// rotation retired the key).
    KeyOutOfRange,
    /// A rotation checkpoint not signed by both the key it retires and the key it names:
    /// the key change is refused, and what that key signs is not trusted.
    BadRotation,
    /// A checkpoint of another log.
    WrongOrigin,
    /// A checkpoint whose `prev` is not the previous stored checkpoint.
    ChainBreak,
    /// A checkpoint whose time is earlier than its predecessor's.
    TimeRegression,
    /// The signer's latest checkpoint is not consistent with the stored tree (or the
    /// state's): a fork, or a rollback of the signer or of the store.
    InconsistentWithSigner,
    /// An object verified by an earlier run (`--state`) now has another size.
    ObjectChanged,
    /// The same (auditID, stage) stored at two indexes (an apiserver retry that reached
    /// the log twice, or a replay).
    DuplicateAuditEvent,
    /// An event whose stageTimestamp is older, by more than the threshold, than its receipt
    /// by the ingester (v2 segments) or the checkpoint that first covers it (v1): backdating.
    LateEvent,
    /// A segment object without Object Lock retention.
    NotLocked,
    /// A segment object locked for less than the required retention.
    RetentionTooShort,
    /// A segment object locked in GOVERNANCE mode where COMPLIANCE is required.
    GovernanceMode,
    /// An object under `pending/` that is not a valid pending batch: it does not parse, its
    /// events' digest is not the one its key names, or it is not in the hour partition its
    /// events give.
    BadPendingBatch,
    /// A v2 segment whose pending batch is not in the store (or a batch an earlier run
    /// found sealed that is gone).
    SealBatchMissing,
    /// A v2 segment that does not match the batch it names: other bytes (SHA-256), other
    /// events, another receipt time, or a receipt after its checkpoint.
    SealMismatch,
    /// Two segments that seal the same pending batch.
    BatchSealedTwice,
    /// A pending batch older than the grace period that no segment seals: acknowledged
    /// events that are not in the log.
    UnsealedBatch,
    /// A pending batch no segment seals whose events a sealed batch holds (a retried
    /// request, or a copy).
    DuplicateBatch,
}

impl FindingKind {
    /// The snake_case name used in JSON reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnexpectedObject => "unexpected_object",
            Self::MalformedSegment => "malformed_segment",
            Self::KeyMismatch => "key_mismatch",
            Self::MalformedLine => "malformed_line",
            Self::SegmentTruncated => "segment_truncated",
            Self::MissingEvents => "missing_events",
            Self::DuplicateEvent => "duplicate_event",
            Self::DuplicateSegment => "duplicate_segment",
            Self::ExtraEvent => "extra_event",
            Self::LeafMismatch => "leaf_mismatch",
            Self::RootMismatch => "root_mismatch",
            Self::Fork => "fork",
            Self::BadSignature => "bad_signature",
            Self::UntrustedKey => "untrusted_key",
            Self::KeyOutOfRange => "key_out_of_range",
            Self::BadRotation => "bad_rotation",
            Self::WrongOrigin => "wrong_origin",
            Self::ChainBreak => "chain_break",
            Self::TimeRegression => "time_regression",
            Self::InconsistentWithSigner => "inconsistent_with_signer",
            Self::ObjectChanged => "object_changed",
            Self::DuplicateAuditEvent => "duplicate_audit_event",
            Self::LateEvent => "late_event",
            Self::NotLocked => "not_locked",
            Self::RetentionTooShort => "retention_too_short",
            Self::GovernanceMode => "governance_mode",
            Self::BadPendingBatch => "bad_pending_batch",
            Self::SealBatchMissing => "seal_batch_missing",
            Self::SealMismatch => "seal_mismatch",
            Self::BatchSealedTwice => "batch_sealed_twice",
            Self::UnsealedBatch => "unsealed_batch",
            Self::DuplicateBatch => "duplicate_batch",
        }
    }

    /// Whether the finding is about the content of the log itself (as opposed to a
    /// property of the events or of the storage that is reported once: duplicates, late
    /// events, object locks). A state file advances only past runs without integrity
    /// findings.
    pub fn is_integrity(self) -> bool {
        !matches!(
            self,
            Self::DuplicateAuditEvent
                | Self::LateEvent
                | Self::NotLocked
                | Self::RetentionTooShort
                | Self::GovernanceMode
                | Self::UnsealedBatch
                | Self::DuplicateBatch
        )
    }
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
    /// Segment objects read in this run (the others were verified by an earlier run).
    pub segments_read: u64,
    /// Segment objects skipped because the state says an earlier run verified them.
    pub segments_skipped: u64,
    /// Tree size of the signer's latest checkpoint, when it was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer_tree_size: Option<u64>,
    /// Newest stageTimestamp among the events verified (this run or, with a state, earlier
    /// ones), Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event_time: Option<f64>,
    /// Pending batches and their seals.
    pub sealing: sealing::SealingStats,
    pub findings: Vec<Finding>,
    /// The state to remember for the next run: set when the run had no integrity finding
    /// and the store holds a verified checkpoint.
    #[serde(skip)]
    pub state: Option<State>,
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
        if self.segments_skipped > 0 {
            s.push_str(&format!(
                "{} segments read, {} verified by an earlier run (state) and skipped\n",
                self.segments_read, self.segments_skipped
            ));
        }
        let b = &self.sealing;
        if b.batches > 0 {
            s.push_str(&format!(
                "{} pending batches: {} sealed, {} waiting within the grace period",
                b.batches, b.batches_sealed, b.batches_pending
            ));
            if let (Some(max), Some(mean)) = (b.seal_delay_max_s, b.seal_delay_mean_s) {
                s.push_str(&format!(
                    "; sealing delay (receipt to checkpoint) mean {mean:.1} s, max {max:.1} s"
                ));
            }
            s.push('\n');
        }
        if let Some(n) = self.signer_tree_size {
            s.push_str(&format!("signer's latest checkpoint: tree size {n}\n"));
        }
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
    let mut s = f.kind.as_str().to_string();
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
