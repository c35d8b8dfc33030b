//! The RFC 3161 tokens of a proof bundle (docs/FORMAT.md §10.6): which stored tokens
//! `prove` puts in (those on the bundle's checkpoints that verify), and what
//! `check-bundle` concludes of them offline — each token verified against the pinned TSA
//! it names, checkpoint times against the TSA times covering them, and for each event the
//! earliest TSA time by which it was in the log.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sealtrail_core::bundle::{Bundle, BundleTimestamp, MAX_BUNDLE_TIMESTAMPS};
use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::merkle::Hash;
use sealtrail_core::timestamp::{self, MAX_TOKEN_LEN, TIMESTAMPS_PREFIX};
use sealtrail_core::trust::Trust;
use serde::Serialize;

use crate::findings::FindingKind;
use crate::trail::Trail;
use crate::{Error, format_ms};

use super::check::Problem;

/// Bundles with at most this many checkpoints list each one's tokens; larger ones list
/// every token of the store once.
const MAX_PER_CHECKPOINT_LISTS: usize = 64;

/// The stored tokens on `checkpoints` that verify against the TSA they name; the others
/// are left out, each with a warning (`verify` reports them).
pub(super) async fn stored_for(
    trail: &Trail<'_>,
    trust: &Trust,
    checkpoints: &[SignedCheckpoint],
    warnings: &mut Vec<String>,
) -> Result<Vec<BundleTimestamp>, Error> {
    if trust.tsas().is_empty() {
        return Ok(Vec::new());
    }
    let position: HashMap<Hash, usize> = checkpoints
        .iter()
        .enumerate()
        .map(|(i, c)| (c.hash(), i))
        .collect();
    let base = format!("{}{TIMESTAMPS_PREFIX}", trail.prefix);
    let mut listed = Vec::new();
    if checkpoints.len() <= MAX_PER_CHECKPOINT_LISTS {
        for c in checkpoints {
            let dir = format!("{base}{:020}-{}/", c.checkpoint.size, hex::encode(c.hash()));
            listed.extend(trail.store.list(&dir).await?);
        }
    } else {
        listed = trail.store.list(&base).await?;
    }
    let mut out = Vec::new();
    for obj in listed.into_iter().filter(|o| o.irregular.is_none()) {
        let Some((size, hash, tsa)) = timestamp::parse_object_key(trail.prefix, &obj.key) else {
            continue;
        };
        let Some(&pos) = position.get(&hash) else {
            continue;
        };
        if checkpoints[pos].checkpoint.size != size {
            continue;
        }
        let Some(pinned) = trust.tsa(&tsa) else {
            warnings.push(format!("{}: a token of an unpinned TSA, left out", obj.key));
            continue;
        };
        if obj.size > MAX_TOKEN_LEN as u64 {
            warnings.push(format!("{}: {} bytes, left out", obj.key, obj.size));
            continue;
        }
        let token = trail.store.get(&obj.key).await?;
        match timestamp::verify_token(&token, pinned) {
            Ok(info) if info.imprint == hash => out.push((pos, tsa.clone(), token)),
            Ok(_) => warnings.push(format!("{}: names another checkpoint, left out", obj.key)),
            Err(e) => warnings.push(format!("{}: {e}, left out", obj.key)),
        }
    }
    out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    out.dedup_by(|a, b| (a.0, &a.1) == (b.0, &b.1));
    if out.len() > MAX_BUNDLE_TIMESTAMPS {
        // The newest checkpoints' tokens cover the most (the head's, every event): those
        // are kept.
        warnings.push(format!(
            "{} tokens on the bundle's checkpoints: the {MAX_BUNDLE_TIMESTAMPS} on the largest are kept",
            out.len()
        ));
        out.drain(..out.len() - MAX_BUNDLE_TIMESTAMPS);
    }
    Ok(out
        .into_iter()
        .map(|(pos, tsa, token)| BundleTimestamp {
            checkpoint: checkpoints[pos].hash(),
            tsa,
            token,
        })
        .collect())
}

/// One token of a bundle, as `check-bundle` found it.
#[derive(Debug, Clone, Serialize)]
pub struct TokenReport {
    /// Text hash (hex) of the checkpoint it is on.
    pub checkpoint: String,
    pub size: u64,
    pub tsa: String,
    /// The TSA's time, RFC 3339, when the token verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tsa_time: Option<String>,
    pub valid: bool,
}

/// A valid token: on which checkpoint, and the latest time its TSA may have meant.
struct Valid {
    checkpoint: Hash,
    size: u64,
    latest_ms: u64,
    gen_ms: u64,
}

/// What [`check`] found.
pub(super) struct Checked {
    pub tokens: Vec<TokenReport>,
    pub problems: Vec<Problem>,
    valid: Vec<Valid>,
}

/// Verifies every token of `bundle`. `trusted` are the checkpoints whose signatures
/// verified, `consistent` those proven consistent with the head (the head included).
pub(super) fn check(
    bundle: &Bundle,
    trust: &Trust,
    trusted: &HashSet<Hash>,
    consistent: &HashMap<Hash, bool>,
    tolerance: Duration,
) -> Checked {
    let by_hash = bundle.checkpoints_by_hash();
    let mut out = Checked {
        tokens: Vec::new(),
        problems: Vec::new(),
        valid: Vec::new(),
    };
    for t in &bundle.timestamps {
        let Some(cp) = by_hash.get(&t.checkpoint) else {
            continue;
        };
        let size = cp.checkpoint.size;
        let verdict = match trust.tsa(&t.tsa) {
            None => Err(format!(
                "a token of {:?}, which the trust bundle does not pin",
                t.tsa
            )),
            Some(pinned) => match timestamp::verify_token(&t.token, pinned) {
                Ok(info) if info.imprint == t.checkpoint => Ok(info),
                Ok(_) => Err("the token's imprint names another checkpoint".into()),
                Err(e) => Err(e.to_string()),
            },
        };
        let mut report = TokenReport {
            checkpoint: hex::encode(t.checkpoint),
            size,
            tsa: t.tsa.clone(),
            tsa_time: None,
            valid: false,
        };
        match verdict {
            Ok(info) => {
                report.valid = true;
                report.tsa_time = Some(format_ms(info.gen_time_ms));
                if trusted.contains(&t.checkpoint) {
                    out.valid.push(Valid {
                        checkpoint: t.checkpoint,
                        size,
                        latest_ms: info.gen_time_ms.saturating_add(info.accuracy_ms),
                        gen_ms: info.gen_time_ms,
                    });
                }
            }
            Err(why) => out.problems.push(problem(
                FindingKind::BadTimestamp,
                &t.checkpoint,
                format!(
                    "token of TSA {} on the checkpoint of size {size}: {why}",
                    t.tsa
                ),
            )),
        }
        out.tokens.push(report);
    }
    let tolerance = tolerance.as_millis() as u64;
    for cp in &bundle.checkpoints {
        let h = cp.hash();
        if !trusted.contains(&h) {
            continue;
        }
        let covering = out
            .valid
            .iter()
            .filter(|v| {
                v.checkpoint == h
                    || (v.size > cp.checkpoint.size && both_consistent(v, &h, consistent))
            })
            .min_by_key(|v| v.latest_ms);
        if let Some(v) = covering
            && cp.checkpoint.time_ms > v.latest_ms.saturating_add(tolerance)
        {
            out.problems.push(problem(
                FindingKind::TimeInconsistent,
                &h,
                format!(
                    "checkpoint of size {} is dated {} ms after the TSA time {} of the token on the checkpoint of size {}, which covers it (tolerance {tolerance} ms)",
                    cp.checkpoint.size,
                    cp.checkpoint.time_ms - v.latest_ms,
                    format_ms(v.gen_ms),
                    v.size
                ),
            ));
        }
    }
    out
}

impl Checked {
    /// The earliest TSA time by which the event at `index`, proven into the checkpoint
    /// `checkpoint`, was in the log: a valid token on that checkpoint, or on any
    /// checkpoint of more than `index` leaves when both are proven consistent with the head.
    pub fn existed_by(
        &self,
        index: u64,
        checkpoint: &Hash,
        consistent: &HashMap<Hash, bool>,
    ) -> Option<String> {
        self.valid
            .iter()
            .filter(|v| {
                v.checkpoint == *checkpoint
                    || (v.size > index && both_consistent(v, checkpoint, consistent))
            })
            .map(|v| v.gen_ms)
            .min()
            .map(format_ms)
    }
}

/// Whether the checkpoint token `v` is on and checkpoint `h` are both proven consistent
/// with the head (one history): only then does a token on one date the other's leaves. A
/// checkpoint is covered by tokens on itself or on a larger tree (one on another note of
/// the same size, a rotation signed later, dates that note only).
fn both_consistent(v: &Valid, h: &Hash, consistent: &HashMap<Hash, bool>) -> bool {
    let ok = |h: &Hash| consistent.get(h).copied().unwrap_or(false);
    ok(&v.checkpoint) && ok(h)
}

fn problem(kind: FindingKind, checkpoint: &Hash, detail: String) -> Problem {
    Problem {
        kind,
        index: None,
        audit_id: None,
        checkpoint: Some(hex::encode(checkpoint)),
        detail,
    }
}
