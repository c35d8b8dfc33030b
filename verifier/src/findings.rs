//! The one definition of what the verifier can find: every finding kind with its name,
//! class and the subcommands that raise it, the [`Finding`] record that locates one, and
//! the grouping the human summary uses.
//!
//! The table in [`finding_kinds!`] is the only list: the enum, [`FindingKind::ALL`], the
//! names, the class, the metrics (every kind reads 0 when absent) and the test that
//! docs/FORMAT.md §9.2 documents exactly these kinds all derive from it.

use std::collections::BTreeMap;

use serde::Serialize;

/// Whether a finding breaks the trail's integrity or is reported for attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// The log's content, order, signatures or completeness do not verify: the trail is
    /// NOT INTACT, exit status 1, and a state file does not advance.
    Integrity,
    /// A property of the events or of the storage (duplicates, late events, object locks,
    /// unsealed batches): exit status 1, but a state file still advances, so each is
    /// reported by the run that first sees it.
    Advisory,
}

/// Which subcommands raise a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `verify` (a store audit).
    Verify,
    /// `check-bundle` (an offline proof bundle).
    Bundle,
    /// Both, with the same meaning.
    Both,
}

macro_rules! finding_kinds {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, $class:ident, $scope:ident; )*) => {
        /// What kind of problem a finding is (docs/FORMAT.md §9.2).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum FindingKind {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl FindingKind {
            /// Every kind, in the table's order.
            pub const ALL: &'static [FindingKind] = &[$(FindingKind::$variant,)*];

            /// The snake_case name used in JSON reports, metrics and docs/FORMAT.md.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            pub fn class(self) -> Class {
                match self { $(Self::$variant => Class::$class,)* }
            }

            pub fn scope(self) -> Scope {
                match self { $(Self::$variant => Scope::$scope,)* }
            }

            /// The one-line definition (the table's doc comment).
            pub fn definition(self) -> &'static str {
                match self { $(Self::$variant => concat!($($doc, " ",)*).trim_ascii(),)* }
            }
        }
    };
}

finding_kinds! {
    /// An entry under the log's prefix that the trail reader cannot interpret: a key outside
    /// the layout, a segment key with a bad name, a non-rotation checkpoint under
    /// `checkpoints/`, a symbolic link, a special file, a name that is not UTF-8 or that no
    /// store writes.
    UnexpectedObject = "unexpected_object", Integrity, Verify;
    /// Nothing of a log under the prefix (no segment, rotation checkpoint or pending batch)
    /// and no state to resume from: a wrong `--prefix` or `--store`, or a moved or deleted
    /// log. Not raised with `--allow-empty`.
    NoTrail = "no_trail", Integrity, Verify;
    /// A segment whose header cannot be read.
    MalformedSegment = "malformed_segment", Integrity, Verify;
    /// The object key names another index range than the segment holds.
    KeyMismatch = "key_mismatch", Integrity, Verify;
    /// An event line that is not a valid record.
    MalformedLine = "malformed_line", Integrity, Verify;
    /// A segment shorter than its header says (cut short).
    SegmentTruncated = "segment_truncated", Integrity, Verify;
    /// Leaf indexes that no stored segment holds (deleted segment or lines, lost tail).
    MissingEvents = "missing_events", Integrity, Verify;
    /// An index stored twice (a duplicated line).
    DuplicateEvent = "duplicate_event", Integrity, Verify;
    /// A whole segment whose indexes another segment already holds (a copy).
    DuplicateSegment = "duplicate_segment", Integrity, Verify;
    /// A record beyond the count its header declares.
    ExtraEvent = "extra_event", Integrity, Verify;
    /// An event whose leaf hash does not prove into its checkpoint: the event, its index or
    /// its proof was altered.
    LeafMismatch = "leaf_mismatch", Integrity, Both;
    /// A checkpoint whose root differs from the tree rebuilt from the stored leaves.
    RootMismatch = "root_mismatch", Integrity, Verify;
    /// Two different checkpoints for the same tree size.
    Fork = "fork", Integrity, Verify;
    /// A signature from a trusted key that does not verify.
    BadSignature = "bad_signature", Integrity, Both;
    /// A checkpoint with no signature from any trusted key.
    UntrustedKey = "untrusted_key", Integrity, Both;
    /// A checkpoint signed by a trusted key outside the key's validity range (or after a
    /// rotation retired the key).
    KeyOutOfRange = "key_out_of_range", Integrity, Both;
    /// A rotation checkpoint not signed by both the key it retires and the key it names:
    /// the key change is refused, and what that key signs is not trusted.
    BadRotation = "bad_rotation", Integrity, Both;
    /// A checkpoint (or a bundle) of another log.
    WrongOrigin = "wrong_origin", Integrity, Both;
    /// A checkpoint whose `prev` is not the previous stored checkpoint.
    ChainBreak = "chain_break", Integrity, Verify;
    /// A checkpoint whose time is earlier than its predecessor's.
    TimeRegression = "time_regression", Integrity, Verify;
    /// The signer's latest checkpoint is not consistent with the stored tree (or the
    /// state's): a fork, or a rollback of the signer or of the store.
    InconsistentWithSigner = "inconsistent_with_signer", Integrity, Verify;
    /// An object verified by an earlier run (`--state`) now has another size or content.
    ObjectChanged = "object_changed", Integrity, Verify;
    /// The same (auditID, stage) stored at two indexes (an apiserver retry that reached
    /// the log twice, or a replay).
    DuplicateAuditEvent = "duplicate_audit_event", Advisory, Verify;
    /// An event stored later than its own time allows, by more than the threshold:
    /// backdating.
    LateEvent = "late_event", Advisory, Verify;
    /// An event dated later than its receipt (or its checkpoint) by more than the
    /// tolerance: its stageTimestamp or requestReceivedTimestamp is in the future of when
    /// it was stored.
    FutureEvent = "future_event", Advisory, Verify;
    /// An event whose stageTimestamp or requestReceivedTimestamp is missing, not an RFC 3339
    /// date-time, or in the wrong order: its time cannot be checked (it is stored all the
    /// same: refusing the batch would make the apiserver drop it).
    BadEventTime = "bad_event_time", Advisory, Verify;
    /// A damaged source event (docs/FORMAT.md §1.4): a message the source (CloudWatch Logs)
    /// cut short or otherwise damaged, kept in its wrapper instead of the audit event it
    /// was; the event's content is lost, its place in the log is not.
    TruncatedSourceEvent = "truncated_source_event", Advisory, Verify;
    /// A segment object without Object Lock retention.
    NotLocked = "not_locked", Advisory, Verify;
    /// A segment object locked for less than the required retention.
    RetentionTooShort = "retention_too_short", Advisory, Verify;
    /// A segment object locked in GOVERNANCE mode where COMPLIANCE is required.
    GovernanceMode = "governance_mode", Advisory, Verify;
    /// An object under `pending/` that is not a valid pending batch: it does not parse, its
    /// events' digest is not the one its key names, or it is not in the hour partition its
    /// events give.
    BadPendingBatch = "bad_pending_batch", Integrity, Verify;
    /// A v2 segment whose pending batch is not in the store (or a batch an earlier run
    /// found sealed that is gone).
    SealBatchMissing = "seal_batch_missing", Integrity, Verify;
    /// A v2 segment that does not match the batch it names: other bytes (SHA-256), other
    /// events, another receipt time, or a receipt after its checkpoint.
    SealMismatch = "seal_mismatch", Integrity, Verify;
    /// Two segments that seal the same pending batch.
    BatchSealedTwice = "batch_sealed_twice", Integrity, Verify;
    /// A pending batch older than the grace period that no segment seals: acknowledged
    /// events that are not in the log.
    UnsealedBatch = "unsealed_batch", Advisory, Verify;
    /// A pending batch no segment seals whose events a sealed batch holds (a retried
    /// request, or a copy).
    DuplicateBatch = "duplicate_batch", Advisory, Verify;
    /// An RFC 3161 token under `timestamps/` that does not verify: not a token, a signature
    /// or certificate path that fails, a TSA the trust bundle does not pin, an imprint
    /// that is not the checkpoint its key names, or a checkpoint the trail does not hold.
    BadTimestamp = "bad_timestamp", Integrity, Both;
    /// A checkpoint dated later than the TSA time of a valid token covering it (on it or on
    /// a later checkpoint), beyond the tolerance: the signer's clock ran ahead, or the
    /// trail's times were set after the fact.
    TimeInconsistent = "time_inconsistent", Integrity, Both;
    /// Checkpoints that no valid token covers, the oldest of them older than the
    /// threshold, while the trust bundle pins a timestamp authority: anchoring stopped, or
    /// its tokens were deleted.
    UntimestampedTail = "untimestamped_tail", Advisory, Verify;
    /// A bundle checkpoint that is not proven consistent with the bundle's head.
    Inconsistent = "inconsistent", Integrity, Bundle;
    /// A bundle event that the bundle's own selection does not select.
    SelectionMismatch = "selection_mismatch", Integrity, Bundle;
    /// A bundle whose head (or, without consistency proofs, an event's checkpoint) is signed
    /// only by keys the pinned history has retired: whoever still holds such a key could
    /// have built it. Not settled (check-bundle exit 3) until a head signed by a current
    /// key vouches for it.
    RetiredKeyHead = "retired_key_head", Advisory, Bundle;
}

impl FindingKind {
    /// Whether the finding is about the content of the log itself ([`Class::Integrity`]).
    /// A state file advances only past runs without integrity findings.
    pub fn is_integrity(self) -> bool {
        self.class() == Class::Integrity
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

impl Finding {
    /// A finding with only a kind and a detail; locate it with the `at_*` builders.
    pub fn new(kind: FindingKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            index: None,
            last_index: None,
            object: None,
            line: None,
            detail: detail.into(),
        }
    }

    pub fn at_range(mut self, range: Option<(u64, u64)>) -> Self {
        self.index = range.map(|r| r.0);
        self.last_index = range.map(|r| r.1);
        self
    }

    pub fn at_object(mut self, object: Option<&str>) -> Self {
        self.object = object.map(str::to_string);
        self
    }

    pub fn at_line(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }

    /// One line: kind, location, detail.
    pub fn describe(&self) -> String {
        let mut s = self.kind.as_str().to_string();
        match (self.index, self.last_index) {
            (Some(a), Some(b)) if a != b => s.push_str(&format!(" indexes {a}..={b}")),
            (Some(a), _) => s.push_str(&format!(" index {a}")),
            _ => {}
        }
        if let Some(o) = &self.object {
            s.push_str(&format!(" in {o}"));
        }
        if let Some(l) = self.line {
            s.push_str(&format!(" line {l}"));
        }
        s.push_str(": ");
        s.push_str(&self.detail);
        s
    }
}

/// Findings of one kind listed in full in the human summary; beyond this, the summary
/// gives their count and index span, and `--json` keeps every one.
pub const SUMMARY_EXAMPLES: usize = 3;

/// The findings grouped by kind for a human reader: per kind, its count, the span of
/// leaf indexes concerned and the first few findings in full.
pub fn summarize(findings: &[Finding]) -> String {
    let mut by_kind: BTreeMap<FindingKind, Vec<&Finding>> = BTreeMap::new();
    for f in findings {
        by_kind.entry(f.kind).or_default().push(f);
    }
    let mut s = String::new();
    for (kind, list) in by_kind {
        let low = list.iter().filter_map(|f| f.index).min();
        let high = list.iter().filter_map(|f| f.last_index.or(f.index)).max();
        let class = match kind.class() {
            Class::Integrity => "integrity",
            Class::Advisory => "advisory",
        };
        s.push_str(&format!("  {} ({class}): {}", kind.as_str(), list.len()));
        match (low, high) {
            (Some(a), Some(b)) if a != b => s.push_str(&format!(", indexes {a}..={b}")),
            (Some(a), _) => s.push_str(&format!(", index {a}")),
            _ => {}
        }
        s.push('\n');
        for f in list.iter().take(SUMMARY_EXAMPLES) {
            s.push_str(&format!("    {}\n", f.describe()));
        }
        if list.len() > SUMMARY_EXAMPLES {
            s.push_str(&format!(
                "    … and {} more (--json lists every one)\n",
                list.len() - SUMMARY_EXAMPLES
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_match_serde() {
        let mut seen = std::collections::HashSet::new();
        for k in FindingKind::ALL {
            let name = k.as_str();
            assert!(seen.insert(name), "{name} twice");
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert_eq!(serde_json::to_value(k).unwrap(), name);
            assert!(!k.definition().is_empty());
        }
    }

    #[test]
    fn summary_groups_and_caps_examples() {
        let many: Vec<Finding> = (0..10)
            .map(|i| Finding::new(FindingKind::LateEvent, "late").at_range(Some((i, i))))
            .chain([Finding::new(FindingKind::Fork, "two roots")])
            .collect();
        let s = summarize(&many);
        assert!(
            s.contains("late_event (advisory): 10, indexes 0..=9"),
            "{s}"
        );
        assert!(s.contains("… and 7 more"), "{s}");
        assert!(s.contains("fork (integrity): 1\n"), "{s}");
        assert_eq!(s.matches("late_event index").count(), SUMMARY_EXAMPLES);
    }
}
