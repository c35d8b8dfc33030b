//! `sealtrail-verify reconcile`: what the apiserver's log-file backend wrote that the trail
//! does not hold, i.e. what the webhook path dropped (the apiserver gives up on a batch after
//! its retries and only counts it in `apiserver_audit_error_total`).
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
    let mut report = ReconcileReport::default();
    let mut digests: HashSet<Hash> = HashSet::new();
    let mut ids: HashSet<[u8; 16]> = HashSet::new();
    for obj in store.list(&format!("{prefix}segments/")).await? {
        let bytes = store.get(&obj.key).await?;
        // Unreadable segments and lines are the verifier's business; here they hold nothing.
        let Ok((_, body)) = segment::parse_header(&bytes) else {
            continue;
        };
        for (_, record) in segment::records(body) {
            let Ok(r) = record else { continue };
            report.stored_events += 1;
            digests.insert(r.leaf_hash);
            if let (Some(a), Some(s)) = (&r.audit_id, &r.stage) {
                ids.insert(id_key(a, s));
            }
        }
    }
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
            });
        }
    }
    Ok(report)
}

impl ReconcileReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "apiserver log: {} events; trail: {} events\n{} held (same digest), {} held by auditID+stage only, {} MISSING from the trail, {} unreadable log lines\n",
            self.log_events,
            self.stored_events,
            self.matched,
            self.matched_by_id.len(),
            self.missing.len(),
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
        for (line, why) in &self.unreadable {
            s.push_str(&format!("  unreadable: line {line}: {why}\n"));
        }
        s
    }
}
