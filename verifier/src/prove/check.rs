//! `check-bundle`: verifies a parsed proof bundle with a pinned trust bundle and nothing
//! else (docs/FORMAT.md §8.2), and reports every checkpoint, event and problem.

use std::collections::{BTreeMap, HashMap, HashSet};

use sealtrail_core::bundle::{
    Bundle, BundleEvent, Consistency, EventFields, Matcher, PROOF_FORMAT, Selection,
};
use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::merkle::{self, Hash};
use sealtrail_core::trust::{Keyring, SignatureVerdict, Trust};
use serde::Serialize;

use std::time::Duration;

use crate::findings::FindingKind;
use crate::format_ms;

use super::timestamps::{self, TokenReport};

/// One problem, with the event or checkpoint it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// One of the kinds `check-bundle` raises ([`crate::findings::Scope::Bundle`] or
    /// `Both`), named as everywhere else.
    pub kind: FindingKind,
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
    /// The earliest TSA time, RFC 3339, of a valid timestamp token covering the event: it
    /// was in the log no later than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existed_by: Option<String>,
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
    /// No `retired_key_head`: the events rest on a key still current (exit 3 otherwise,
    /// when it is the only problem).
    pub settled: bool,
    pub rotations: Vec<RotationReport>,
    pub checkpoints: Vec<CheckpointReport>,
    /// Text hash (hex) of the head, when the bundle has consistency proofs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    pub events: Vec<ProvenEvent>,
    /// The bundle's RFC 3161 tokens.
    pub timestamps: Vec<TokenReport>,
    pub problems: Vec<Problem>,
}

/// [`check_bundle_with`] with the default tolerance between checkpoint and TSA times.
pub fn check_bundle(bundle: &Bundle, trust: &Trust) -> CheckReport {
    check_bundle_with(bundle, trust, crate::DEFAULT_TIME_TOLERANCE)
}

/// Verifies a parsed bundle against a pinned trust bundle, with nothing else: rotations
/// (oldest first, through a [`Keyring`]), every checkpoint signature, every event's leaf
/// hash and inclusion proof, every consistency proof, and that every event is one the
/// bundle's selection selects, and its timestamp tokens (`time_tolerance`: how much later
/// than a covering TSA time a checkpoint may be dated). Every problem is reported, not
/// only the first.
pub fn check_bundle_with(bundle: &Bundle, trust: &Trust, time_tolerance: Duration) -> CheckReport {
    let mut c = Checker::new(bundle, trust);
    // Rotations first: a key's validity depends on sizes only, so learning every rotation
    // before checking the checkpoints judges each as the chain walk would.
    c.check_rotations();
    c.check_signatures();
    if let Some(consistency) = &bundle.consistency {
        c.check_consistency(consistency);
    }
    c.check_anchors();
    c.report_checkpoints();
    let trusted: HashSet<Hash> = c.trusted.keys().copied().collect();
    let stamps = timestamps::check(bundle, trust, &trusted, &c.consistent, time_tolerance);
    for e in &bundle.events {
        c.check_event(e, &stamps);
    }
    c.report.timestamps = stamps.tokens;
    c.report.problems.extend(stamps.problems);
    c.report.verified = c.report.problems.is_empty();
    c.report.settled = c
        .report
        .problems
        .iter()
        .all(|p| p.kind != FindingKind::RetiredKeyHead);
    c.report
}

/// The state of one [`check_bundle`], step by step (in the order problems are listed).
struct Checker<'a> {
    bundle: &'a Bundle,
    by_hash: HashMap<Hash, &'a SignedCheckpoint>,
    matcher: Matcher<'a>,
    /// The bundle is of the trust bundle's log: only then are signatures checked.
    origin_ok: bool,
    ring: Keyring,
    /// Text hash → the keys (hex ids) that made the checkpoint trusted.
    trusted: HashMap<Hash, Vec<String>>,
    /// Text hash → proven consistent with the head (the head itself: true).
    consistent: HashMap<Hash, bool>,
    report: CheckReport,
}

impl<'a> Checker<'a> {
    fn new(bundle: &'a Bundle, trust: &Trust) -> Self {
        let mut c = Self {
            bundle,
            by_hash: bundle.checkpoints_by_hash(),
            matcher: bundle.selection.matcher(),
            origin_ok: bundle.origin == trust.origin(),
            ring: Keyring::new(trust.clone()),
            trusted: HashMap::new(),
            consistent: HashMap::new(),
            report: CheckReport {
                format: PROOF_FORMAT,
                origin: bundle.origin.clone(),
                selection: bundle.selection.clone(),
                verified: false,
                settled: false,
                rotations: Vec::new(),
                checkpoints: Vec::new(),
                head: bundle.consistency.as_ref().map(|c| hex::encode(c.head)),
                events: Vec::new(),
                timestamps: Vec::new(),
                problems: Vec::new(),
            },
        };
        if !c.origin_ok {
            c.problem(
                FindingKind::WrongOrigin,
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
        c
    }

    fn problem(
        &mut self,
        kind: FindingKind,
        index: Option<u64>,
        audit_id: Option<&str>,
        checkpoint: Option<&Hash>,
        detail: String,
    ) {
        self.report.problems.push(Problem {
            kind,
            index,
            audit_id: audit_id.map(str::to_string),
            checkpoint: checkpoint.map(hex::encode),
            detail,
        });
    }

    /// Takes each rotation in file order; an accepted one teaches the keyring its key.
    fn check_rotations(&mut self) {
        let bundle = self.bundle;
        for rot in &bundle.rotations {
            let new_key_id = rot
                .checkpoint
                .new_key
                .as_ref()
                .map_or(0, |k| k.key_id(&bundle.origin));
            let accepted = self.origin_ok && {
                match self.ring.rotate(rot) {
                    Ok(()) => true,
                    Err(e) => {
                        self.problem(
                            FindingKind::BadRotation,
                            None,
                            None,
                            Some(&rot.hash()),
                            format!("rotation checkpoint of size {}: {e}", rot.checkpoint.size),
                        );
                        false
                    }
                }
            };
            self.report.rotations.push(RotationReport {
                text_hash: hex::encode(rot.hash()),
                size: rot.checkpoint.size,
                time: format_ms(rot.checkpoint.time_ms),
                new_key_id: format!("{new_key_id:08x}"),
                accepted,
            });
        }
    }

    /// Each checkpoint's signatures, with the keyring the rotations left.
    fn check_signatures(&mut self) {
        let ids = |ids: &[u32]| ids.iter().map(|k| format!("{k:08x}")).collect::<Vec<_>>();
        for cp in &self.bundle.checkpoints {
            let h = cp.hash();
            let verdict = if self.origin_ok {
                self.ring.verify(cp)
            } else {
                SignatureVerdict::WrongOrigin {
                    origin: cp.checkpoint.origin.clone(),
                }
            };
            let what = format!("checkpoint of size {}", cp.checkpoint.size);
            let (kind, detail) = match verdict {
                SignatureVerdict::Trusted { key_ids } => {
                    self.trusted.insert(h, ids(&key_ids));
                    continue;
                }
                SignatureVerdict::BadSignature { key_id } => (
                    FindingKind::BadSignature,
                    format!("{what}: the signature of key {key_id:08x} does not verify"),
                ),
                SignatureVerdict::Untrusted { key_ids } => (
                    FindingKind::UntrustedKey,
                    format!(
                        "{what}: signed only by keys neither in the trust bundle nor learned from a rotation ({})",
                        ids(&key_ids).join(", ")
                    ),
                ),
                SignatureVerdict::KeyOutOfRange { key_ids } => (
                    FindingKind::KeyOutOfRange,
                    format!(
                        "{what}: signed by trusted keys outside their validity ({})",
                        ids(&key_ids).join(", ")
                    ),
                ),
                // Reported once, in `new`.
                SignatureVerdict::WrongOrigin { .. } => continue,
            };
            self.problem(kind, None, None, Some(&h), detail);
        }
    }

    /// What the events rest on — the head, or without consistency proofs each event's own
    /// checkpoint — must be signed by a key still current in the pinned history: a retired
    /// key (one rotates because a key leaked) could have signed another tree for the sizes
    /// it once covered.
    fn check_anchors(&mut self) {
        let anchors: Vec<Hash> = match &self.bundle.consistency {
            Some(c) => vec![c.head],
            None => {
                let mut seen = HashSet::new();
                self.bundle
                    .events
                    .iter()
                    .map(|e| e.checkpoint)
                    .filter(|h| seen.insert(*h))
                    .collect()
            }
        };
        for h in anchors {
            let Some(cp) = self.by_hash.get(&h).copied() else {
                continue;
            };
            let Some(ids) = self.trusted.get(&h) else {
                continue;
            };
            let current = ids
                .iter()
                .any(|id| u32::from_str_radix(id, 16).is_ok_and(|id| self.ring.is_current(id)));
            if !current {
                let what = if self.bundle.consistency.is_some() {
                    "the head"
                } else {
                    "the checkpoint of its events"
                };
                let detail = format!(
                    "{what} (size {}) is signed only by retired keys ({}): whoever still holds one could have built it. What would settle it: a bundle exported now, whose head a current key signed and to which this checkpoint is proven consistent; or, once available, a timestamp token from before the retirement or a witness quorum",
                    cp.checkpoint.size,
                    ids.join(", ")
                );
                self.problem(FindingKind::RetiredKeyHead, None, None, Some(&h), detail);
            }
        }
    }

    /// Each consistency proof, from its checkpoint to the head.
    fn check_consistency(&mut self, c: &Consistency) {
        let Some(head) = self.by_hash.get(&c.head).copied() else {
            return;
        };
        self.consistent.insert(c.head, true);
        let hc = &head.checkpoint;
        for p in &c.proofs {
            let Some(from) = self.by_hash.get(&p.from).copied() else {
                continue;
            };
            let f = &from.checkpoint;
            let ok = match merkle::verify_consistency(f.size, hc.size, &f.root, &hc.root, &p.proof)
            {
                Ok(()) => true,
                Err(e) => {
                    self.problem(
                        FindingKind::Inconsistent,
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
            self.consistent.insert(p.from, ok);
        }
    }

    /// Whether the checkpoint with this text hash is proven consistent with the head.
    fn is_consistent(&self, h: &Hash) -> bool {
        self.consistent.get(h).copied().unwrap_or(false)
    }

    fn report_checkpoints(&mut self) {
        let consistency = self.bundle.consistency.as_ref();
        for cp in &self.bundle.checkpoints {
            let h = cp.hash();
            let report = CheckpointReport {
                text_hash: hex::encode(h),
                size: cp.checkpoint.size,
                time: format_ms(cp.checkpoint.time_ms),
                root: root_text(cp),
                key_ids: self.trusted.get(&h).cloned().unwrap_or_default(),
                trusted: self.trusted.contains_key(&h),
                head: consistency.is_some_and(|c| c.head == h),
                consistent: consistency.map(|_| self.is_consistent(&h)),
            };
            self.report.checkpoints.push(report);
        }
    }

    /// One event: its inclusion proof into its checkpoint, and the bundle's selection.
    fn check_event(&mut self, e: &BundleEvent, stamps: &timestamps::Checked) {
        let Some(cp) = self.by_hash.get(&e.checkpoint).copied() else {
            return;
        };
        let c = &cp.checkpoint;
        let leaf = e.leaf_hash();
        let id = Some(e.fields.audit_id.as_str());
        let included = match merkle::verify_inclusion(e.index, c.size, &leaf, &e.proof, &c.root) {
            Ok(()) => true,
            Err(err) => {
                self.problem(
                    FindingKind::LeafMismatch,
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
        // The bundle's parser read the same bytes: they parse.
        let selected = sealtrail_core::jcs::parse(&e.canonical)
            .is_ok_and(|v| self.matcher.matches(&sealtrail_core::query::Facts::of(&v)));
        if !selected {
            self.problem(
                FindingKind::SelectionMismatch,
                Some(e.index),
                id,
                None,
                format!(
                    "event (auditID {}, stage {}) is not selected by the bundle's selection ({})",
                    e.fields.audit_id,
                    e.fields.stage,
                    self.bundle.selection.describe()
                ),
            );
        }
        let key_ids = self.trusted.get(&e.checkpoint).cloned();
        let consistent = self.bundle.consistency.is_none() || self.is_consistent(&e.checkpoint);
        let verified = included && key_ids.is_some() && selected && consistent;
        self.report.events.push(ProvenEvent {
            index: e.index,
            fields: e.fields.clone(),
            leaf_hash: hex::encode(leaf),
            checkpoint: hex::encode(e.checkpoint),
            checkpoint_size: c.size,
            checkpoint_time: format_ms(c.time_ms),
            verified,
            key_ids: key_ids.unwrap_or_default(),
            // A time only for an event the bundle proves.
            existed_by: verified
                .then(|| stamps.existed_by(e.index, &e.checkpoint, &self.consistent))
                .flatten(),
        });
    }
}

/// The root line of a checkpoint's note (base64, as signed).
fn root_text(cp: &SignedCheckpoint) -> String {
    String::from_utf8_lossy(cp.text())
        .split('\n')
        .nth(2)
        .unwrap_or_default()
        .to_string()
}

impl Problem {
    /// One line: the kind, what it is about, the detail.
    pub(super) fn describe(&self) -> String {
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
    /// Whether the only problem is that the bundle rests on retired keys.
    pub fn only_unsettled(&self) -> bool {
        !self.problems.is_empty()
            && self
                .problems
                .iter()
                .all(|p| p.kind == FindingKind::RetiredKeyHead)
    }

    /// A human summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "proof bundle ({}) of log {}\nselection, as the exporter states it (a bundle cannot prove that no other event matches): {}\n",
            self.format,
            self.origin,
            self.selection.describe()
        );
        self.summarize_checkpoints(&mut s);
        self.summarize_timestamps(&mut s);
        self.summarize_events(&mut s);
        if self.verified {
            s.push_str(
                "VERIFIED: every event, inclusion proof, checkpoint signature, rotation and consistency proof holds\n",
            );
        } else if self.only_unsettled() {
            s.push_str(
                "NOT SETTLED: every proof holds, but the bundle rests on a checkpoint signed only by retired keys (exit status 3)\n",
            );
            for p in &self.problems {
                s.push_str(&format!("  {}\n", p.describe()));
            }
        } else {
            s.push_str(&format!("NOT VERIFIED: {} problems\n", self.problems.len()));
            for p in &self.problems {
                s.push_str(&format!("  {}\n", p.describe()));
            }
        }
        s
    }

    /// The rotations, the checkpoints and the head.
    fn summarize_checkpoints(&self, s: &mut String) {
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
    }

    /// The tokens, and how many events a valid one covers.
    fn summarize_timestamps(&self, s: &mut String) {
        for t in &self.timestamps {
            s.push_str(&format!(
                "timestamp of TSA {} on checkpoint size {}: {}\n",
                t.tsa,
                t.size,
                match &t.tsa_time {
                    Some(at) => format!("valid, the checkpoint existed by {at}"),
                    None => "DOES NOT VERIFY".to_string(),
                }
            ));
        }
        if !self.timestamps.is_empty() {
            let covered = self
                .events
                .iter()
                .filter(|e| e.existed_by.is_some())
                .count();
            s.push_str(&format!(
                "{covered} of {} events under a valid timestamp (each line gives the time it was in the log by)\n",
                self.events.len()
            ));
        }
    }

    /// The events: counts by stage, user and verb, then one line each.
    fn summarize_events(&self, s: &mut String) {
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
                "  {} index {} {} {} {} {} auditID {} checkpoint size {} ({}) key {}{}\n",
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
                },
                e.existed_by
                    .as_ref()
                    .map_or(String::new(), |t| format!(" timestamped by {t}"))
            ));
        }
    }
}
