//! The per-event checks beyond integrity: the newest stageTimestamp, late events,
//! duplicated (auditID, stage) pairs.

use std::collections::HashSet;

use sealtrail_core::segment;
use sha2::{Digest as _, Sha256};

use super::checkpoints::Checkpoints;
use super::{Audit, Options};
use crate::FindingKind;

pub(super) struct EventChecks {
    check_duplicates: bool,
    late_after: Option<std::time::Duration>,
    /// 128-bit digests of the (auditID, stage) pairs seen in this run.
    seen: HashSet<u128>,
}

impl EventChecks {
    pub fn new(options: &Options) -> Self {
        Self {
            check_duplicates: options.check_duplicates,
            late_after: options.late_after,
            seen: HashSet::new(),
        }
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
        self.late(audit, cps, record, key, line, received_ms);
        if self.check_duplicates {
            self.duplicate(audit, record, key, line);
        }
    }

    fn late(
        &self,
        audit: &mut Audit<'_>,
        cps: &Checkpoints,
        record: &segment::Record,
        key: &str,
        line: usize,
        received_ms: Option<u64>,
    ) {
        let ts = record.stage_timestamp.as_deref().and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        });
        let Some(ts) = ts else { return };
        let secs = ts.unix_timestamp_nanos() as f64 / 1e9;
        if audit.report.last_event_time.is_none_or(|t| secs > t) {
            audit.report.last_event_time = Some(secs);
        }
        // A sealed batch's receipt is when the ingester got the event (a delay in sealing,
        // an outage of the signer, is not the event's); otherwise the checkpoint that first
        // covers the leaf, the smallest stored size above it.
        let reference = received_ms
            .map(|ms| (ms, "its receipt by the ingester"))
            .or_else(|| {
                cps.by_size
                    .range(record.index + 1..)
                    .next()
                    .and_then(|(size, _)| cps.of_size(*size).map(|c| c.cp.checkpoint.time_ms).min())
                    .map(|ms| (ms, "the checkpoint that first covers it"))
            });
        if let (Some(limit), Some((ref_ms, what))) = (self.late_after, reference) {
            let late_by = ref_ms as f64 / 1000.0 - secs;
            if late_by > limit.as_secs_f64() {
                audit.find(
                    FindingKind::LateEvent,
                    Some((record.index, record.index)),
                    Some(key),
                    Some(line),
                    format!(
                        "stageTimestamp {} is {:.0} s older than {what} (threshold {} s): backdated or long delayed",
                        record.stage_timestamp.as_deref().unwrap_or(""),
                        late_by,
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
        let mut h = Sha256::new();
        h.update(id.as_bytes());
        h.update([0]);
        h.update(stage.as_bytes());
        let d = h.finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        if !self.seen.insert(u128::from_le_bytes(k)) {
            audit.find(
                FindingKind::DuplicateAuditEvent,
                Some((record.index, record.index)),
                Some(key),
                Some(line),
                format!("auditID {id} stage {stage} is already stored at an earlier index"),
            );
        }
    }
}
