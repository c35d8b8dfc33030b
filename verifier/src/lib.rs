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
//! [`search`] answers an investigator's query ([`sealtrail_core::query`]) with stored
//! events, each verified before it is handed out, reading only the hours it needs.
//!
//! What it does not (yet): witnesses; proving that a log holds *no* other event than a
//! bundle's (completeness of a selection).

use serde::Serialize;

mod audit;
pub mod canonicalize;
pub mod findings;
mod keyring;
pub mod lock;
pub mod metrics;
pub mod prove;
pub mod reconcile;
pub mod sealing;
pub mod search;
pub mod signer;
pub mod state;
pub mod trail;

pub use audit::{DEFAULT_TIME_TOLERANCE, DEFAULT_UNTIMESTAMPED_AFTER, Options, verify_store};
pub use findings::{Class, Finding, FindingKind};
pub use lock::ObjectLockPolicy;
pub use signer::{GrpcSigner, SignerConfig, SignerError, SignerSource};
pub use state::{State, StateError, StateKey};

/// Why a verification could not be completed (exit code 2). Problems found *in* the trail
/// are [`Finding`]s, not errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Store(#[from] sealtrail_store::StoreError),
    #[error("trust bundle: {0}")]
    Trust(sealtrail_core::Error),
    /// The signer could not be asked, or answered something unusable.
    #[error(transparent)]
    Signer(#[from] signer::SignerError),
    /// The state file cannot be used.
    #[error(transparent)]
    State(#[from] state::StateError),
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
    /// An unusable event selection for `prove`.
    #[error("selection: {0}")]
    Selection(String),
    /// A proof bundle would exceed a limit of the format.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// The results could not be written (a closed pipe, a full disk).
    #[error("output: {0}")]
    Output(std::io::Error),
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
    /// The newest trusted checkpoint whose leaves this run (with a state: and earlier runs)
    /// verified: what the verdict covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<VerifiedCheckpoint>,
    /// What vouches for the tail after the newest stored checkpoint.
    pub tail_reference: TailReference,
    /// RFC 3161 trusted time: the tokens read and the timestamped horizon.
    pub timestamps: TimestampReport,
    pub findings: Vec<Finding>,
    /// The state to remember for the next run: set when the run had no integrity finding
    /// and the store holds a verified checkpoint.
    #[serde(skip)]
    pub state: Option<State>,
}

/// The RFC 3161 tokens of a run (docs/FORMAT.md §10.5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TimestampReport {
    /// Timestamp authorities the trust bundle pins (0: the trail is not expected to be
    /// timestamped, and no `untimestamped_tail` is raised).
    pub pinned: u64,
    /// Tokens read and checked in this run.
    pub tokens: u64,
    /// Of those, the ones that verified and cover a trusted checkpoint of the trail.
    pub valid: u64,
    /// Tokens below a resumed state's horizon, not read again.
    pub skipped: u64,
    /// The newest checkpoint a valid token covers (this run, or the state's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub horizon: Option<TimestampHorizon>,
    /// Leaves after the horizon, up to the newest trusted checkpoint.
    pub untimestamped_leaves: u64,
    /// Time of the oldest checkpoint after the horizon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untimestamped_since_ms: Option<u64>,
}

/// The newest checkpoint that a valid token covers, and the token's time: everything up to
/// `size` existed no later than `tsa_time_ms`, on the word of `tsa`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampHorizon {
    pub size: u64,
    /// SHA-256 of the checkpoint's note text, hex.
    pub checkpoint: String,
    pub checkpoint_time_ms: u64,
    pub tsa_time_ms: u64,
    /// The token's stated accuracy: the TSA vouches for no later than `tsa_time_ms` plus this.
    #[serde(default)]
    pub tsa_accuracy_ms: u64,
    pub tsa: String,
}

impl TimestampReport {
    /// The summary's lines on trusted time (none when nothing is pinned or stored).
    pub fn describe(&self) -> String {
        if self.pinned == 0 && self.tokens == 0 {
            return String::new();
        }
        let mut s = format!(
            "{} timestamp tokens read, {} valid{}\n",
            self.tokens,
            self.valid,
            match self.skipped {
                0 => String::new(),
                n => format!(", {n} below the state's horizon not read again"),
            }
        );
        match &self.horizon {
            Some(h) => s.push_str(&format!(
                "timestamped up to checkpoint {} ({}): existed by {} (accuracy ±{} ms) on the word of TSA {}; {} leaves after it untimestamped\n",
                thousands(h.size),
                format_ms(h.checkpoint_time_ms),
                format_ms(h.tsa_time_ms),
                h.tsa_accuracy_ms,
                h.tsa,
                thousands(self.untimestamped_leaves)
            )),
            None => s.push_str("no checkpoint is covered by a valid timestamp\n"),
        }
        s
    }
}

impl TimestampHorizon {
    pub(crate) fn text_hash(&self) -> Result<[u8; 32], Error> {
        hex::decode(&self.checkpoint)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| {
                state::StateError::Invalid("timestamped.checkpoint is not 32 hex bytes".into())
                    .into()
            })
    }
}

/// A checkpoint, by size and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VerifiedCheckpoint {
    pub size: u64,
    pub time_ms: u64,
}

/// What shows that no segment was cut after the newest stored checkpoint (deleted together
/// with its checkpoint): the store alone cannot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum TailReference {
    /// The signer's latest checkpoint, consistent with the stored tree, whose every leaf is
    /// stored.
    Signer { size: u64, time_ms: u64 },
    /// The checkpoint an earlier run verified (`--state`): the store still extends it.
    State { size: u64, time_ms: u64 },
    /// Nothing: a cut tail would not show.
    #[default]
    Nothing,
}

impl TailReference {
    /// How the summary names it.
    pub fn describe(&self) -> String {
        match self {
            Self::Signer { size, time_ms } => format!(
                "the signer's latest checkpoint (size {}, {})",
                thousands(*size),
                format_ms(*time_ms)
            ),
            Self::State { size, time_ms } => format!(
                "the state file of {} (checkpoint of size {})",
                format_ms(*time_ms),
                thousands(*size)
            ),
            Self::Nothing => {
                "nothing (a cut tail would not show: pass --signer or --state)".to_string()
            }
        }
    }
}

/// A Unix time in milliseconds as RFC 3339 UTC, to the millisecond.
pub(crate) fn format_ms(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// 1332 → "1,332".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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
        s.push_str(&self.timestamps.describe());
        let integrity = self
            .findings
            .iter()
            .filter(|f| f.kind.is_integrity())
            .count();
        if integrity > 0 {
            s.push_str(&format!(
                "NOT INTACT: {integrity} integrity findings ({} in all)\n",
                self.findings.len()
            ));
        } else {
            match self.verified {
                Some(c) => s.push_str(&format!(
                    "INTACT up to checkpoint {} ({}): every event, proof, signature and chain link verifies\n",
                    thousands(c.size),
                    format_ms(c.time_ms)
                )),
                None => s.push_str("INTACT: the store holds no checkpoint yet\n"),
            }
            s.push_str(&format!(
                "The tail after it is vouched for by: {}\n",
                self.tail_reference.describe()
            ));
            if !self.findings.is_empty() {
                s.push_str(&format!(
                    "{} advisory findings (exit status 1):\n",
                    self.findings.len()
                ));
            }
        }
        s.push_str(&findings::summarize(&self.findings));
        s
    }
}
