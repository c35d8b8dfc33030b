//! `sealtrail-verify reconcile`: what the apiserver's log-file backend wrote that the trail
//! does not hold, i.e. what the webhook path dropped (the apiserver gives up on a batch after
//! its retries and only counts it in `apiserver_audit_error_total`); or, on EKS, what a
//! CloudWatch log group holds over a time range that the trail does not, and what the
//! trail holds in that range that the log group does not (`extra`).
//!
//! Each log line is canonicalized as the trail would store it (`docs/FORMAT.md` §1) and
//! matched on its leaf hash; failing that, on (auditID, stage), which still counts as held
//! but is reported (the same event serialized differently by the two backends, or a changed
//! event: the verifier proper judges the stored one).

use std::collections::HashSet;

use sealtrail_core::event::parse_event_line;
use sealtrail_core::merkle::Hash;
use sealtrail_core::segment;
use sealtrail_store::ObjectStore;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::Error;

/// One log event the trail does not hold.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    /// Line in the log file, from 1.
    pub line: usize,
    pub audit_id: String,
    pub stage: String,
    pub stage_timestamp: Option<String>,
    /// Hex leaf hash the trail would have stored.
    pub leaf_hash: String,
    /// Where the log's source has it (CloudWatch: `<stream> <event id>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The outcome of a reconciliation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileReport {
    pub log_events: u64,
    pub stored_events: u64,
    /// Log events found in the trail with the same canonical digest.
    pub matched: u64,
    /// Log events found only by (auditID, stage): held, but not byte-identical.
    pub matched_by_id: Vec<(usize, String, String)>,
    pub missing: Vec<Missing>,
    /// Log lines that are not events (line, reason).
    pub unreadable: Vec<(usize, String)>,
    /// With a time range: stored events whose stageTimestamp is in it that the log does
    /// not hold (damaged source events, §1.4, are not counted: their original is lost).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<Extra>,
}

/// A stored event the log does not hold.
#[derive(Debug, Clone, Serialize)]
pub struct Extra {
    pub index: u64,
    pub object: String,
    pub audit_id: Option<String>,
    pub stage: Option<String>,
    pub stage_timestamp: Option<String>,
}

/// Stored events whose stageTimestamp falls in `[from, to)` (Unix microseconds).
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub from_us: i64,
    pub to_us: i64,
}

fn id_key(audit_id: &str, stage: &str) -> [u8; 16] {
    let d = Sha256::new()
        .chain_update(audit_id.as_bytes())
        .chain_update([0])
        .chain_update(stage.as_bytes())
        .finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

/// Reconciles the log (JSON Lines as the log-file backend writes them) with every segment
/// under `prefix`. Memory: 48 bytes of keys per stored event (plus hash-set overhead).
pub async fn reconcile(
    store: &dyn ObjectStore,
    prefix: &str,
    log: &[u8],
) -> Result<ReconcileReport, Error> {
    reconcile_range(store, prefix, log, &[], None).await
}

/// [`reconcile`], and with `range`, the stored events in it that the log lacks. `labels[i]`,
/// if given, says where line `i + 1` of `log` came from.
pub async fn reconcile_range(
    store: &dyn ObjectStore,
    prefix: &str,
    log: &[u8],
    labels: &[String],
    range: Option<Range>,
) -> Result<ReconcileReport, Error> {
    let mut report = ReconcileReport::default();
    let mut digests: HashSet<Hash> = HashSet::new();
    let mut ids: HashSet<[u8; 16]> = HashSet::new();
    // Stored events in the range: (leaf hash, where), to find those the log lacks.
    let mut in_range: Vec<(Hash, Extra)> = Vec::new();
    let trail = crate::trail::Trail::new(store, prefix);
    for obj in trail.segments().await? {
        let bytes = store.get(&obj.key).await?;
        // Unreadable segments and lines are the verifier's business; here they hold nothing.
        let Ok((_, body)) = segment::parse_header(&bytes) else {
            continue;
        };
        for (_, record) in segment::records(body) {
            let Ok(r) = record else { continue };
            report.stored_events += 1;
            digests.insert(r.leaf_hash);
            if let Some(range) = range
                && r.damaged_source.is_none()
                && let Some(t) = r
                    .stage_timestamp
                    .as_deref()
                    .and_then(sealtrail_core::event::parse_timestamp_micros)
                && (range.from_us..range.to_us).contains(&t)
            {
                in_range.push((
                    r.leaf_hash,
                    Extra {
                        index: r.index,
                        object: obj.key.clone(),
                        audit_id: r.audit_id.clone(),
                        stage: r.stage.clone(),
                        stage_timestamp: r.stage_timestamp.clone(),
                    },
                ));
            }
            if let (Some(a), Some(s)) = (&r.audit_id, &r.stage) {
                ids.insert(id_key(a, s));
            }
        }
    }
    let mut logged: HashSet<Hash> = HashSet::new();
    for (i, line) in log.split(|b| *b == b'\n').enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let event = match parse_event_line(line) {
            Ok(e) => e,
            Err(e) => {
                report.unreadable.push((i + 1, e.to_string()));
                continue;
            }
        };
        report.log_events += 1;
        logged.insert(event.leaf_hash);
        if digests.contains(&event.leaf_hash) {
            report.matched += 1;
        } else if ids.contains(&id_key(&event.audit_id, &event.stage)) {
            report
                .matched_by_id
                .push((i + 1, event.audit_id, event.stage));
        } else {
            report.missing.push(Missing {
                line: i + 1,
                audit_id: event.audit_id,
                stage: event.stage,
                stage_timestamp: event.stage_timestamp,
                leaf_hash: hex::encode(event.leaf_hash),
                source: labels.get(i).cloned(),
            });
        }
    }
    report.extra = in_range
        .into_iter()
        .filter(|(h, _)| !logged.contains(h))
        .map(|(_, e)| e)
        .collect();
    Ok(report)
}

impl ReconcileReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "log: {} events; trail: {} events\n{} held (same digest), {} held by auditID+stage only, {} MISSING from the trail, {} extra in the trail, {} unreadable log lines\n",
            self.log_events,
            self.stored_events,
            self.matched,
            self.matched_by_id.len(),
            self.missing.len(),
            self.extra.len(),
            self.unreadable.len()
        );
        for m in &self.missing {
            s.push_str(&format!(
                "  missing: line {} auditID {} stage {} at {}\n",
                m.line,
                m.audit_id,
                m.stage,
                m.stage_timestamp.as_deref().unwrap_or("?")
            ));
        }
        for e in &self.extra {
            s.push_str(&format!(
                "  extra (in the trail, not in the log): index {} in {} auditID {} stage {} at {}\n",
                e.index,
                e.object,
                e.audit_id.as_deref().unwrap_or("?"),
                e.stage.as_deref().unwrap_or("?"),
                e.stage_timestamp.as_deref().unwrap_or("?")
            ));
        }
        for (line, why) in &self.unreadable {
            s.push_str(&format!("  unreadable: line {line}: {why}\n"));
        }
        s
    }
}
