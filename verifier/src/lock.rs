//! Object Lock: each segment object must be locked in COMPLIANCE mode until at least its
//! checkpoint's time plus the required retention.
//!
//! The lock state comes from the store itself ([`ObjectStore::retention`]): HeadObject for
//! S3; for a directory, only that the file is read-only (write-once, no retention), which
//! this policy reports as not locked.

use std::time::{Duration, SystemTime};

use sealtrail_store::{ObjectRetention, RetentionMode};

/// What the lock of every segment must be. The store verified is asked.
#[derive(Debug, Clone)]
pub struct ObjectLockPolicy {
    /// retain-until must be at least the checkpoint time plus this.
    pub min_retention: Duration,
    /// GOVERNANCE mode is a finding (a privileged principal can bypass it).
    pub require_compliance: bool,
}

/// A lock problem: (kind, detail).
pub(crate) fn check(
    policy: &ObjectLockPolicy,
    r: &ObjectRetention,
    written_ms: u64,
) -> Vec<(crate::FindingKind, String)> {
    use crate::FindingKind as K;
    let mut out = Vec::new();
    match r.mode {
        RetentionMode::None => {
            out.push((
                K::NotLocked,
                "the object has no Object Lock retention".to_string(),
            ));
            return out;
        }
        RetentionMode::WriteOnce => {
            out.push((
                K::NotLocked,
                "the object is a read-only file without retention: its owner can delete or \
                 replace it"
                    .to_string(),
            ));
            return out;
        }
        RetentionMode::Governance if policy.require_compliance => out.push((
            K::GovernanceMode,
            "locked in GOVERNANCE mode: a principal with s3:BypassGovernanceRetention can delete it"
                .to_string(),
        )),
        RetentionMode::Governance | RetentionMode::Compliance => {}
    }
    let mode = r.mode;
    let need = SystemTime::UNIX_EPOCH + Duration::from_millis(written_ms) + policy.min_retention;
    match r.retain_until {
        None => out.push((
            K::NotLocked,
            format!("lock mode {mode} without a retain-until date"),
        )),
        Some(until) if until < need => {
            let days = |t: SystemTime| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64() / 86_400.0)
            };
            out.push((
                K::RetentionTooShort,
                format!(
                    "retained {:.1} days after its checkpoint time, {} required",
                    days(until) - days(SystemTime::UNIX_EPOCH + Duration::from_millis(written_ms)),
                    policy.min_retention.as_secs() / 86_400
                ),
            ));
        }
        Some(_) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FindingKind as K;

    fn kinds(policy: &ObjectLockPolicy, mode: RetentionMode, days: Option<u64>) -> Vec<K> {
        let r = ObjectRetention {
            mode,
            retain_until: days.map(|d| SystemTime::now() + Duration::from_secs(d * 86_400)),
            version_id: None,
        };
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        check(policy, &r, now_ms)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn each_mode() {
        let strict = ObjectLockPolicy {
            min_retention: Duration::from_secs(365 * 86_400),
            require_compliance: true,
        };
        let lax = ObjectLockPolicy {
            require_compliance: false,
            ..strict.clone()
        };
        assert_eq!(kinds(&strict, RetentionMode::Compliance, Some(400)), vec![]);
        assert_eq!(
            kinds(&strict, RetentionMode::Compliance, Some(30)),
            vec![K::RetentionTooShort]
        );
        assert_eq!(
            kinds(&strict, RetentionMode::Compliance, None),
            vec![K::NotLocked]
        );
        assert_eq!(
            kinds(&strict, RetentionMode::Governance, Some(400)),
            vec![K::GovernanceMode]
        );
        assert_eq!(kinds(&lax, RetentionMode::Governance, Some(400)), vec![]);
        // A write-once directory is never taken for a lock, with or without a date.
        for mode in [RetentionMode::None, RetentionMode::WriteOnce] {
            assert_eq!(kinds(&lax, mode, None), vec![K::NotLocked]);
            assert_eq!(kinds(&lax, mode, Some(400)), vec![K::NotLocked]);
        }
    }
}
