//! The per-event checks beyond integrity (docs/FORMAT.md §9.4): the two timestamps
//! (`bad_event_time`), late and future events, duplicated (auditID, stage) pairs, and the
//! newest event time.

use std::collections::HashSet;
use std::time::Duration;

use sealtrail_core::event::parse_timestamp_micros;
use sealtrail_core::segment;
use sha2::{Digest as _, Sha256};

use super::checkpoints::Checkpoints;
use super::{Audit, Options};
use crate::FindingKind;

/// How much longer than the late threshold a request may have been open when its event is
/// stored: a watch lasts up to an hour, an exec or port-forward session longer. Only
/// `requestReceivedTimestamp` gets it; `stageTimestamp` is when the stage happened.
pub const LONG_REQUEST_SPAN: Duration = Duration::from_secs(24 * 3600);

pub(super) struct EventChecks {
    check_duplicates: bool,
    late_after: Option<Duration>,
    future_after: Option<Duration>,
    /// Digests ([`pair_digest`]) of the (auditID, stage) pairs stored so far: the state's
    /// (earlier runs) and this run's.
    seen: HashSet<u128>,
}

/// An event's two timestamps, parsed (Unix microseconds), or why one is unusable.
struct Times {
    stage: Option<i64>,
    request: Option<i64>,
    problems: Vec<String>,
}

fn parse_times(record: &segment::Record) -> Times {
    // Events of apiservers before audit.k8s.io/v1beta1 carry one `timestamp` instead of
    // the two: it stands for both (and is checked as both).
    if record.stage_timestamp.is_none()
        && record.request_received_timestamp.is_none()
        && let Some(t) = record
            .legacy_timestamp
            .as_deref()
            .and_then(parse_timestamp_micros)
    {
        return Times {
            stage: Some(t),
            request: Some(t),
            problems: Vec::new(),
        };
    }
    let mut problems = Vec::new();
    let mut parse = |name: &str, value: Option<&str>| match value {
        None => {
            problems.push(format!("{name} is missing (or not a string)"));
            None
        }
        Some(v) => {
            let t = parse_timestamp_micros(v);
            if t.is_none() {
                problems.push(format!("{name} {v:?} is not an RFC 3339 date-time"));
            }
            t
        }
    };
    let stage = parse("stageTimestamp", record.stage_timestamp.as_deref());
    let request = parse(
        "requestReceivedTimestamp",
        record.request_received_timestamp.as_deref(),
    );
    if let (Some(s), Some(r)) = (stage, request)
        && r > s
    {
        problems.push("requestReceivedTimestamp is after stageTimestamp".to_string());
    }
    Times {
        stage,
        request,
        problems,
    }
}

impl EventChecks {
    /// `seen`: the pairs an earlier run stored in its state.
    pub fn new(options: &Options, seen: HashSet<u128>) -> Self {
        Self {
            check_duplicates: options.check_duplicates,
            late_after: options.late_after,
            future_after: options.future_after,
            seen,
        }
    }

    /// The pairs seen, for the next state (`None` when duplicates are not checked).
    pub fn into_seen(self) -> Option<HashSet<u128>> {
        self.check_duplicates.then_some(self.seen)
    }

    /// The checks of one verified event, stored at `line` of `key`. `received_ms` is its
    /// batch's receipt by the ingester (v2 segments).
    pub fn check(
        &mut self,
        audit: &mut Audit<'_>,
        cps: &Checkpoints,
        record: &segment::Record,
        key: &str,
        line: usize,
        received_ms: Option<u64>,
    ) {
        if let Some(from) = &record.damaged_source {
            audit.find(
                FindingKind::TruncatedSourceEvent,
                Some((record.index, record.index)),
                Some(key),
                Some(line),
                format!(
                    "a message of {} that is not a whole audit event (cut short by its size limit?), kept as received: log group {}, stream {}, event id {}",
                    from.source, from.log_group, from.log_stream, from.event_id
                ),
            );
        }
        self.times(audit, cps, record, key, line, received_ms);
        if self.check_duplicates {
            self.duplicate(audit, record, key, line);
        }
    }

    fn times(
        &self,
        audit: &mut Audit<'_>,
        cps: &Checkpoints,
        record: &segment::Record,
        key: &str,
        line: usize,
        received_ms: Option<u64>,
    ) {
        let at = Some((record.index, record.index));
        let times = parse_times(record);
        if !times.problems.is_empty() {
            audit.find(
                FindingKind::BadEventTime,
                at,
                Some(key),
                Some(line),
                times.problems.join("; "),
            );
        }
        let reference = reference_ms(cps, record.index, received_ms);
        let mut future = false;
        if let (Some(tolerance), Some((ref_ms, what))) = (self.future_after, reference) {
            let tolerance_ms = i64::try_from(tolerance.as_millis()).unwrap_or(i64::MAX);
            let limit_us = i64::try_from(ref_ms)
                .unwrap_or(i64::MAX)
                .saturating_add(tolerance_ms)
                .saturating_mul(1000);
            let ahead: Vec<String> = [
                ("stageTimestamp", times.stage),
                ("requestReceivedTimestamp", times.request),
            ]
            .into_iter()
            .filter_map(|(name, t)| {
                let t = t?;
                (t > limit_us).then(|| {
                    format!(
                        "{name} is {:.0} s after {what}",
                        (t / 1000 - ref_ms as i64) as f64 / 1000.0
                    )
                })
            })
            .collect();
            if !ahead.is_empty() {
                future = true;
                audit.find(
                    FindingKind::FutureEvent,
                    at,
                    Some(key),
                    Some(line),
                    format!(
                        "{} (tolerance {} s): dated ahead of when it was stored",
                        ahead.join("; "),
                        tolerance.as_secs()
                    ),
                );
            }
        }
        // An event dated ahead must not move the newest event time forward.
        if let Some(t) = times.stage
            && !future
        {
            let secs = t as f64 / 1e6;
            if audit.report.last_event_time.is_none_or(|last| secs > last) {
                audit.report.last_event_time = Some(secs);
            }
        }
        if let (Some(limit), Some((ref_ms, what))) = (self.late_after, reference) {
            let late_by = |t: i64| ref_ms as f64 / 1000.0 - t as f64 / 1e6;
            let mut late = Vec::new();
            if let Some(t) = times.stage
                && late_by(t) > limit.as_secs_f64()
            {
                late.push(format!(
                    "stageTimestamp is {:.0} s older than {what}",
                    late_by(t)
                ));
            }
            if let Some(t) = times.request
                && late_by(t) > (limit + LONG_REQUEST_SPAN).as_secs_f64()
            {
                late.push(format!(
                    "requestReceivedTimestamp is {:.0} s older than {what} (allowed: {} s more, for long requests)",
                    late_by(t),
                    LONG_REQUEST_SPAN.as_secs()
                ));
            }
            if !late.is_empty() {
                audit.find(
                    FindingKind::LateEvent,
                    at,
                    Some(key),
                    Some(line),
                    format!(
                        "{} (threshold {} s): backdated or long delayed",
                        late.join("; "),
                        limit.as_secs()
                    ),
                );
            }
        }
    }

    fn duplicate(
        &mut self,
        audit: &mut Audit<'_>,
        record: &segment::Record,
        key: &str,
        line: usize,
    ) {
        let (Some(id), Some(stage)) = (&record.audit_id, &record.stage) else {
            return;
        };
        if !self.seen.insert(pair_digest(id, stage)) {
            audit.find(
                FindingKind::DuplicateAuditEvent,
                Some((record.index, record.index)),
                Some(key),
                Some(line),
                format!(
                    "auditID {id} stage {stage} is already stored at an earlier index (or was, by an earlier run)"
                ),
            );
        }
    }
}

/// What an event's times are compared with: a sealed batch's receipt by the ingester (a
/// delay in sealing, an outage of the signer, is not the event's), else the time of the
/// checkpoint that first covers the leaf (the smallest stored size above it).
fn reference_ms(
    cps: &Checkpoints,
    index: u64,
    received_ms: Option<u64>,
) -> Option<(u64, &'static str)> {
    received_ms
        .map(|ms| (ms, "its receipt by the ingester"))
        .or_else(|| {
            cps.by_size
                .range(index + 1..)
                .next()
                .and_then(|(size, _)| cps.of_size(*size).map(|c| c.cp.checkpoint.time_ms).min())
                .map(|ms| (ms, "the checkpoint that first covers it"))
        })
}

/// The first 16 bytes (little-endian) of SHA-256(auditID ‖ 0x00 ‖ stage), with a UUID
/// auditID in lower case: an apiserver writes UUIDs in lower case, and an upper-cased twin
/// names the same request.
pub fn pair_digest(audit_id: &str, stage: &str) -> u128 {
    let mut h = Sha256::new();
    if is_uuid(audit_id) {
        let mut lower = [0u8; 36];
        lower.copy_from_slice(audit_id.as_bytes());
        lower.make_ascii_lowercase();
        h.update(lower);
    } else {
        h.update(audit_id.as_bytes());
    }
    h.update([0]);
    h.update(stage.as_bytes());
    let d = h.finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    u128::from_le_bytes(k)
}

/// `8-4-4-4-12` hex digits, either case.
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_compare_case_insensitively() {
        let id = "f9b8a3f2-4c7e-4a55-9a07-8f0f2f1d6c11";
        let stage = "ResponseComplete";
        assert_eq!(
            pair_digest(id, stage),
            pair_digest(&id.to_uppercase(), stage)
        );
        assert_ne!(pair_digest(id, stage), pair_digest(id, "RequestReceived"));
        // Not a UUID: compared byte for byte.
        assert_ne!(pair_digest("req-a", stage), pair_digest("REQ-A", stage));
        assert!(!is_uuid("f9b8a3f2-4c7e-4a55-9a07-8f0f2f1d6c1"));
        assert!(!is_uuid("f9b8a3f2x4c7e-4a55-9a07-8f0f2f1d6c11"));
    }
}
