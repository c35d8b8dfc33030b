//! RFC 3161 tokens under `timestamps/` (docs/FORMAT.md §10.5): each one verified against
//! the pinned TSA its key names and matched to a stored checkpoint; then the timestamped
//! horizon, every checkpoint's time against the TSA times that cover it, and the tail that
//! no token covers yet.

use std::time::Duration;

use sealtrail_core::timestamp::{self, MAX_TOKEN_LEN};
use sealtrail_store::ObjectInfo;

use super::Audit;
use super::checkpoints::Checkpoints;
use crate::{Error, FindingKind, TimestampHorizon, TimestampReport};

pub use sealtrail_core::timestamp::DEFAULT_TIME_TOLERANCE;
/// Default age after which checkpoints no token covers are `untimestamped_tail`.
pub const DEFAULT_UNTIMESTAMPED_AFTER: Duration = Duration::from_secs(3600);

/// A token that verified and names a checkpoint of the trail.
struct Covering {
    size: u64,
    /// Text hash of the checkpoint it is on.
    hash: [u8; 32],
    /// The TSA time, plus its stated accuracy: the latest the TSA's clock may have meant.
    latest_ms: u64,
    horizon: TimestampHorizon,
    key: String,
}

/// Checks every token; `earlier` is the horizon a resumed state remembers (tokens below
/// it are not read again: their checkpoints are not re-read either).
pub(super) async fn check(
    audit: &mut Audit<'_>,
    objects: &[ObjectInfo],
    cps: &Checkpoints,
    base_size: u64,
    earlier: Option<&TimestampHorizon>,
    now_ms: u64,
) -> Result<TimestampReport, Error> {
    let mut report = TimestampReport {
        pinned: audit.trust.tsas().len() as u64,
        ..TimestampReport::default()
    };
    let mut covering = Vec::new();
    let mut refused: Vec<(u64, String)> = Vec::new();
    for obj in objects {
        let Some((size, hash, tsa)) = timestamp::parse_object_key(audit.trail.prefix, &obj.key)
        else {
            audit.find(
                FindingKind::UnexpectedObject,
                None,
                Some(&obj.key),
                None,
                "not a timestamp token key (timestamps/<size>-<checkpoint hash>/<tsa>.tsr)",
            );
            continue;
        };
        if earlier.is_some_and(|e| size < e.size) {
            report.skipped += 1;
            continue;
        }
        report.tokens += 1;
        match check_one(audit, obj, size, &hash, &tsa, cps, base_size, earlier).await? {
            Ok(Some(c)) => covering.push(c),
            Ok(None) => {}
            Err(why) => {
                refused.push((size, hex::encode(hash)));
                audit.find(FindingKind::BadTimestamp, None, Some(&obj.key), None, why)
            }
        }
    }
    // The state's horizon stands only while its TSA is pinned and no token on its
    // checkpoint was just refused: else the report would date the trail on the word of a
    // token this run says is bad.
    let earlier = earlier.filter(|e| {
        audit.trust.tsa(&e.tsa).is_some() && !refused.contains(&(e.size, e.checkpoint.clone()))
    });
    report.valid = covering.len() as u64;
    inconsistent_times(audit, cps, &mut covering);
    let horizon = covering
        .iter()
        .map(|c| &c.horizon)
        .chain(earlier)
        .max_by_key(|h| (h.size, std::cmp::Reverse(h.tsa_time_ms)))
        .cloned();
    untimestamped_tail(audit, cps, horizon.as_ref(), now_ms, &mut report);
    report.horizon = horizon;
    Ok(report)
}

/// One token: `Err` is a `bad_timestamp`; `Ok(None)` a token that verified but whose
/// checkpoint this run cannot judge (a resumed run, below the state's size).
#[allow(clippy::too_many_arguments)]
async fn check_one(
    audit: &Audit<'_>,
    obj: &ObjectInfo,
    size: u64,
    hash: &[u8; 32],
    tsa: &str,
    cps: &Checkpoints,
    base_size: u64,
    earlier: Option<&TimestampHorizon>,
) -> Result<Result<Option<Covering>, String>, Error> {
    let Some(pinned) = audit.trust.tsa(tsa) else {
        return Ok(Err(format!(
            "a token of {tsa:?}, which the trust bundle does not pin"
        )));
    };
    if obj.size > MAX_TOKEN_LEN as u64 {
        return Ok(Err(format!("{} bytes (max {MAX_TOKEN_LEN})", obj.size)));
    }
    let bytes = audit.trail.store.get(&obj.key).await?;
    let info = match timestamp::verify_token(&bytes, pinned) {
        Ok(info) => info,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if &info.imprint != hash {
        return Ok(Err(format!(
            "the token's imprint {} names another checkpoint than its key",
            hex::encode(info.imprint)
        )));
    }
    let checkpoint_time_ms = match cps.all.get(hash) {
        Some(c) if c.cp.checkpoint.size == size => {
            if !cps.trusted.contains(hash) {
                // The checkpoint's own finding says why; its token proves nothing.
                return Ok(Ok(None));
            }
            c.cp.checkpoint.time_ms
        }
        Some(_) => {
            return Ok(Err(
                "the key names the wrong tree size for its checkpoint".into()
            ));
        }
        None => match earlier {
            Some(e) if e.size == size && &e.text_hash()? == hash => e.checkpoint_time_ms,
            // A checkpoint of the segments an earlier run verified (resumed from its
            // state), not re-read by this one: not judged.
            _ if size <= base_size => return Ok(Ok(None)),
            _ => {
                return Ok(Err(format!(
                    "the token names checkpoint {} of size {size}, which the trail does not hold",
                    hex::encode(hash)
                )));
            }
        },
    };
    Ok(Ok(Some(Covering {
        size,
        hash: *hash,
        latest_ms: info.gen_time_ms.saturating_add(info.accuracy_ms),
        horizon: TimestampHorizon {
            size,
            checkpoint: hex::encode(hash),
            checkpoint_time_ms,
            tsa_time_ms: info.gen_time_ms,
            tsa_accuracy_ms: info.accuracy_ms,
            tsa: tsa.to_string(),
        },
        key: obj.key.clone(),
    })))
}

/// `time_inconsistent`: a checkpoint dated later than the earliest TSA time among the tokens
/// that cover it (on it, or on a checkpoint of a larger tree), beyond the tolerance. A
/// token on another checkpoint of the same size (a rotation repeats the tree it follows,
/// signed later) does not cover it: the token dates that tree's other note, not this one.
fn inconsistent_times(audit: &mut Audit<'_>, cps: &Checkpoints, covering: &mut [Covering]) {
    if covering.is_empty() {
        return;
    }
    let tolerance = audit
        .options
        .time_tolerance
        .unwrap_or(DEFAULT_TIME_TOLERANCE)
        .as_millis() as u64;
    covering.sort_by_key(|c| c.size);
    // bound[i]: the covering token with the earliest time among covering[i..].
    let mut bound: Vec<usize> = (0..covering.len()).collect();
    for i in (0..covering.len().saturating_sub(1)).rev() {
        if covering[bound[i + 1]].latest_ms < covering[i].latest_ms {
            bound[i] = bound[i + 1];
        }
    }
    let mut found = Vec::new();
    for (hash, info) in &cps.all {
        if !cps.trusted.contains(hash) {
            continue;
        }
        let cp = &info.cp.checkpoint;
        let larger = bound
            .get(covering.partition_point(|c| c.size <= cp.size))
            .map(|&b| &covering[b]);
        let own = covering
            .iter()
            .filter(|c| c.horizon.size == cp.size && c.hash == *hash)
            .min_by_key(|c| c.latest_ms);
        let Some(token) = [larger, own]
            .into_iter()
            .flatten()
            .min_by_key(|c| c.latest_ms)
        else {
            continue;
        };
        if cp.time_ms > token.latest_ms.saturating_add(tolerance) {
            found.push((
                cp.size,
                info.first_object.clone(),
                format!(
                    "checkpoint of size {} is dated {} ms after the TSA time of {} ({}), which covers it (tolerance {tolerance} ms)",
                    cp.size,
                    cp.time_ms - token.latest_ms,
                    token.key,
                    crate::format_ms(token.horizon.tsa_time_ms),
                ),
            ));
        }
    }
    found.sort();
    for (_, object, detail) in found {
        audit.find(
            FindingKind::TimeInconsistent,
            None,
            Some(&object),
            None,
            detail,
        );
    }
}

/// The checkpoints after the horizon: how many leaves, since when, and `untimestamped_tail`
/// when the oldest of them is older than the threshold (only when the bundle pins a TSA).
fn untimestamped_tail(
    audit: &mut Audit<'_>,
    cps: &Checkpoints,
    horizon: Option<&TimestampHorizon>,
    now_ms: u64,
    report: &mut TimestampReport,
) {
    let covered = horizon.map_or(0, |h| h.size);
    let newest = cps
        .all
        .iter()
        .filter(|(h, _)| cps.trusted.contains(*h))
        .map(|(_, c)| c.cp.checkpoint.size)
        .max()
        .unwrap_or(0);
    report.untimestamped_leaves = newest.saturating_sub(covered);
    let oldest = cps
        .all
        .iter()
        .filter(|(h, c)| cps.trusted.contains(*h) && c.cp.checkpoint.size > covered)
        .map(|(_, c)| (c.cp.checkpoint.size, c.cp.checkpoint.time_ms))
        .min();
    let Some((size, since)) = oldest else { return };
    report.untimestamped_since_ms = Some(since);
    let threshold = audit
        .options
        .untimestamped_after
        .unwrap_or(DEFAULT_UNTIMESTAMPED_AFTER);
    let age = Duration::from_millis(now_ms.saturating_sub(since));
    if report.pinned > 0 && age > threshold {
        let covered_by = horizon.map_or("no token covers any checkpoint".to_string(), |h| {
            format!("the newest token covers size {} ({})", h.size, h.tsa)
        });
        audit.find(
            FindingKind::UntimestampedTail,
            Some((covered, newest.saturating_sub(1).max(covered))),
            None,
            None,
            format!(
                "{} leaves from size {covered} on are under no timestamp, since checkpoint {size} of {} ({} s ago, threshold {} s): {covered_by}",
                report.untimestamped_leaves,
                crate::format_ms(since),
                age.as_secs(),
                threshold.as_secs()
            ),
        );
    }
}
