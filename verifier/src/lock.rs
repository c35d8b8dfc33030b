//! S3 Object Lock: each segment object must be locked in COMPLIANCE mode until at least
//! its checkpoint's time plus the required retention.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sealtrail_store::BoxFuture;
use sealtrail_store::s3::{ObjectRetention, S3Store};

/// Where the lock state of an object comes from (`HeadObject` for S3).
pub trait RetentionSource: Send + Sync + std::fmt::Debug {
    fn retention<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ObjectRetention, String>>;
}

impl RetentionSource for S3Store {
    fn retention<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ObjectRetention, String>> {
        Box::pin(async move {
            S3Store::retention(self, key)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// What the lock of every segment must be.
#[derive(Debug, Clone)]
pub struct ObjectLockPolicy {
    pub source: Arc<dyn RetentionSource>,
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
    let Some(mode) = r.mode.as_deref() else {
        out.push((
            K::NotLocked,
            "the object has no Object Lock retention".to_string(),
        ));
        return out;
    };
    if mode.eq_ignore_ascii_case("GOVERNANCE") && policy.require_compliance {
        out.push((
            K::GovernanceMode,
            "locked in GOVERNANCE mode: a principal with s3:BypassGovernanceRetention can delete it"
                .to_string(),
        ));
    }
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
