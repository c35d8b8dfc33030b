//! `--metrics-file`: the report as Prometheus text for node-exporter's textfile collector,
//! written atomically.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::{FindingKind, Report};

/// Every finding kind, so that a kind with no finding reads 0 rather than absent: the one
/// table of [`crate::findings`] (the kinds only `check-bundle` raises always read 0 here).
pub const ALL_KINDS: &[FindingKind] = FindingKind::ALL;

/// The Prometheus text exposition of `report`.
pub fn render(report: &Report) -> String {
    let mut s = String::new();
    let origin = escape(&report.origin);
    let _ = writeln!(
        s,
        "# HELP audit_chain_verification_status 1 if the audit trail verified intact, 0 if not.\n\
         # TYPE audit_chain_verification_status gauge\n\
         audit_chain_verification_status{{origin=\"{origin}\"}} {}",
        u8::from(report.intact())
    );
    let _ = writeln!(
        s,
        "# HELP audit_last_verified_size Tree size of the newest checkpoint verified.\n\
         # TYPE audit_last_verified_size gauge\n\
         audit_last_verified_size{{origin=\"{origin}\"}} {}",
        report.tree_size
    );
    if let Some(t) = report.last_event_time {
        let _ = writeln!(
            s,
            "# HELP audit_last_event_timestamp Newest stageTimestamp of a verified event, Unix seconds.\n\
             # TYPE audit_last_event_timestamp gauge\n\
             audit_last_event_timestamp{{origin=\"{origin}\"}} {t}"
        );
    }
    let mut counts: BTreeMap<FindingKind, u64> = ALL_KINDS.iter().map(|k| (*k, 0)).collect();
    for f in &report.findings {
        *counts.entry(f.kind).or_default() += 1;
    }
    let _ = writeln!(
        s,
        "# HELP audit_verification_findings Findings of the last verification, by kind.\n\
         # TYPE audit_verification_findings gauge"
    );
    for (kind, n) in counts {
        let _ = writeln!(
            s,
            "audit_verification_findings{{origin=\"{origin}\",kind=\"{}\"}} {n}",
            kind.as_str()
        );
    }
    s
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
