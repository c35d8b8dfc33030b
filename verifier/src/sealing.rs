//! The sealing checks: pending batches (acknowledged, stored, not yet signed) against the
//! v2 segments that seal them.
//!
//! Run after the segments are verified, from what that pass saw of each v2 segment (the
//! batch its header names, and the digest of the leaves it holds). Each pending object is
//! read whole: it must parse strictly, and its key must name its events' digest and the
//! hour partition its events give. Then:
//! - a seal whose batch is not stored is `seal_batch_missing`; one whose batch has other
//!   bytes, other events or another receipt time is `seal_mismatch`; two segments sealing
//!   one batch are `batch_sealed_twice`;
//! - a batch no segment seals is `duplicate_batch` when a sealed batch holds the same
//!   events (an apiserver retry whose first answer was lost, or a copy), else
//!   `unsealed_batch` once it is older than the grace period (before that it is counted as
//!   pending, not a finding).
//!
//! With a state, batches an earlier run found sealed are not read again unless their size
//! or fingerprint moved.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sealtrail_core::merkle::Hash;
use sealtrail_core::pending::{self, MAX_PENDING_LEN};
use sealtrail_core::segment::SealedFrom;
use sealtrail_store::ObjectInfo;
use serde::{Deserialize, Serialize};

use crate::trail::Trail;
use crate::{Error, Finding, FindingKind};

/// Default age after which a batch without a seal is a finding.
pub const DEFAULT_SEAL_GRACE: Duration = Duration::from_secs(3600);
/// How far a batch's receipt may lie after the checkpoint that seals it (clock skew
/// between ingester and signer hosts) before the receipt time is refused.
pub const RECEIPT_SKEW: Duration = Duration::from_secs(300);

/// What the segment pass saw of one v2 segment.
#[derive(Debug, Clone)]
pub(crate) struct SealSeen {
    pub segment: String,
    pub first: u64,
    pub last: u64,
    pub sealed: SealedFrom,
    /// Digest of the leaves the segment holds, in order ([`leaves_digest`]).
    pub leaves: Hash,
    pub checkpoint_ms: u64,
}

/// A batch an earlier run found sealed (kept in the state file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedRecord {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Digest of its leaves (hex).
    pub leaves: String,
    /// SHA-256 of its bytes, as its seal names them (hex).
    pub batch_sha256: String,
    pub segment: String,
}

/// Counts for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SealingStats {
    /// Pending batch objects in the store.
    pub batches: u64,
    pub batches_sealed: u64,
    /// Batches without a seal that are younger than the grace period.
    pub batches_pending: u64,
    /// Largest and mean time from receipt to the sealing checkpoint, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seal_delay_max_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seal_delay_mean_s: Option<f64>,
}

pub(crate) use sealtrail_core::pending::events_digest as leaves_digest;

struct Batch {
    key: String,
    received_ms: Option<u64>,
    sha256: Hash,
    leaves: Hash,
}

fn finding(kind: FindingKind, range: Option<(u64, u64)>, object: &str, detail: String) -> Finding {
    Finding::new(kind, detail)
        .at_range(range)
        .at_object(Some(object))
}

/// Reads one pending object; `Err` is the finding's detail.
async fn read_batch(trail: Trail<'_>, obj: &ObjectInfo) -> Result<Result<Batch, String>, Error> {
    let Some((hour, named)) = pending::parse_object_key(trail.prefix, &obj.key) else {
        return Ok(Err("not a pending batch key".into()));
    };
    if obj.size > MAX_PENDING_LEN as u64 {
        return Ok(Err(format!(
            "{} bytes, more than a pending batch may hold",
            obj.size
        )));
    }
    let bytes = trail.get(&obj.key).await?;
    let batch = match pending::parse(&bytes) {
        Ok(b) => b,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let leaves = leaves_digest(batch.events.iter().map(|e| &e.leaf_hash));
    if leaves != named {
        return Ok(Err(format!(
            "its events' digest {} is not the one its key names (events altered, added or removed)",
            hex::encode(leaves)
        )));
    }
    let want = pending::object_key(trail.prefix, &batch.events, batch.received_ms);
    if want != obj.key {
        return Ok(Err(format!(
            "stored under the wrong hour partition {hour}: its events put it at {want} (a moved copy)"
        )));
    }
    Ok(Ok(Batch {
        key: obj.key.clone(),
        received_ms: Some(batch.received_ms),
        sha256: batch.sha256,
        leaves,
    }))
}

/// The sealing checks; returns the findings, the counts, and the sealed batches to
/// remember in the next state.
pub(crate) async fn check(
    trail: Trail<'_>,
    listed: &[ObjectInfo],
    seals: &[SealSeen],
    remembered: Option<&BTreeMap<String, SealedRecord>>,
    grace: Duration,
    now_ms: u64,
) -> Result<(Vec<Finding>, SealingStats, BTreeMap<String, SealedRecord>), Error> {
    let mut findings = Vec::new();
    let mut stats = SealingStats::default();
    let empty = BTreeMap::new();
    let remembered = remembered.unwrap_or(&empty);
    let mut batches: HashMap<String, Batch> = HashMap::new();
    let mut infos: HashMap<&str, &ObjectInfo> = HashMap::new();
    let mut next_state = BTreeMap::new();
    for obj in listed {
        stats.batches += 1;
        infos.insert(obj.key.as_str(), obj);
        if let Some(rec) = remembered.get(&obj.key)
            && rec.size == obj.size
            && rec.fingerprint.is_some()
            && rec.fingerprint == obj.fingerprint
            && let Some(leaves) = hex::decode(&rec.leaves)
                .ok()
                .and_then(|b| <Hash>::try_from(b).ok())
        {
            next_state.insert(obj.key.clone(), rec.clone());
            batches.insert(
                obj.key.clone(),
                Batch {
                    key: obj.key.clone(),
                    received_ms: None,
                    sha256: [0; 32],
                    leaves,
                },
            );
            continue;
        }
        match read_batch(trail, obj).await? {
            Ok(b) => {
                // Re-read (its fingerprint moved, e.g. a copied store): still the batch an
                // earlier run found sealed if its events are.
                if let Some(rec) = remembered.get(&obj.key) {
                    if rec.leaves == hex::encode(b.leaves)
                        && rec.batch_sha256 == hex::encode(b.sha256)
                    {
                        let mut rec = rec.clone();
                        (rec.size, rec.fingerprint) = (obj.size, obj.fingerprint.clone());
                        next_state.insert(obj.key.clone(), rec);
                    } else {
                        findings.push(finding(
                            FindingKind::SealMismatch,
                            None,
                            &obj.key,
                            format!(
                                "no longer the bytes its seal in {} names, as an earlier run verified them",
                                rec.segment
                            ),
                        ));
                        continue;
                    }
                }
                batches.insert(obj.key.clone(), b);
            }
            Err(why) => findings.push(finding(FindingKind::BadPendingBatch, None, &obj.key, why)),
        }
    }
    for (key, rec) in remembered {
        if !infos.contains_key(key.as_str()) {
            findings.push(finding(
                FindingKind::SealBatchMissing,
                None,
                key,
                format!(
                    "sealed by {} as an earlier run verified; no longer in the store",
                    rec.segment
                ),
            ));
        }
    }

    // Seals against their batches.
    let mut sealed_by: HashMap<&str, &SealSeen> = HashMap::new();
    let mut sealed_leaves: HashMap<Hash, &str> = HashMap::new();
    let mut delays = Vec::new();
    for s in seals {
        let range = Some((s.first, s.last));
        let name = s.sealed.batch.as_str();
        let earlier = sealed_by.get(name).map(|o| o.segment.clone()).or_else(|| {
            remembered
                .get(name)
                .filter(|r| r.segment != s.segment)
                .map(|r| r.segment.clone())
        });
        if let Some(by) = earlier {
            findings.push(finding(
                FindingKind::BatchSealedTwice,
                range,
                &s.segment,
                format!("seals batch {name}, which {by} seals too"),
            ));
            continue;
        }
        let named_ok = pending::parse_object_key(trail.prefix, name).is_some();
        let Some(b) = batches.get(name) else {
            let why = if infos.contains_key(name) {
                "the batch it names is not a valid pending batch (reported above)".to_string()
            } else if named_ok {
                "the batch it names is not in the store".to_string()
            } else {
                "it names a key that is not a pending batch key of this log".to_string()
            };
            let kind = if infos.contains_key(name) || !named_ok {
                FindingKind::SealMismatch
            } else {
                FindingKind::SealBatchMissing
            };
            findings.push(finding(kind, range, &s.segment, format!("{why}: {name}")));
            continue;
        };
        let mut wrong = Vec::new();
        if b.received_ms.is_some() && b.sha256 != s.sealed.batch_sha256 {
            wrong.push("its batch_sha256 is not the batch's".to_string());
        }
        if s.leaves != b.leaves {
            wrong.push("it holds other events than the batch".to_string());
        }
        if let Some(r) = b.received_ms {
            if r != s.sealed.received_ms {
                wrong.push(format!(
                    "received_ms {} is not the batch's {r}",
                    s.sealed.received_ms
                ));
            } else if r > s.checkpoint_ms + RECEIPT_SKEW.as_millis() as u64 {
                wrong.push(format!(
                    "the batch was received at {r}, after the checkpoint that seals it ({})",
                    s.checkpoint_ms
                ));
            } else {
                delays.push(s.checkpoint_ms.saturating_sub(r) as f64 / 1000.0);
            }
        }
        if !wrong.is_empty() {
            findings.push(finding(
                FindingKind::SealMismatch,
                range,
                &s.segment,
                format!("seal of {name}: {}", wrong.join("; ")),
            ));
            continue;
        }
        // Only a seal that holds counts as this batch's: a forged claim must not make the
        // genuine seal look like the second one.
        sealed_by.insert(name, s);
        sealed_leaves.insert(b.leaves, name);
        if let Some(info) = infos.get(name) {
            next_state.insert(
                name.to_string(),
                SealedRecord {
                    size: info.size,
                    fingerprint: info.fingerprint.clone(),
                    leaves: hex::encode(b.leaves),
                    batch_sha256: hex::encode(s.sealed.batch_sha256),
                    segment: s.segment.clone(),
                },
            );
        }
    }
    for (key, rec) in remembered {
        if let Some(l) = hex::decode(&rec.leaves)
            .ok()
            .and_then(|b| <Hash>::try_from(b).ok())
        {
            sealed_leaves.entry(l).or_insert(key.as_str());
        }
    }

    // Batches no seal names.
    let mut keys: Vec<&String> = batches.keys().collect();
    keys.sort();
    for key in keys {
        let b = &batches[key];
        if sealed_by.contains_key(key.as_str()) || next_state.contains_key(key) {
            stats.batches_sealed += 1;
            continue;
        }
        if let Some(original) = sealed_leaves.get(&b.leaves) {
            findings.push(finding(
                FindingKind::DuplicateBatch,
                None,
                &b.key,
                format!("the same events as {original}, which is sealed: an apiserver retry whose first answer was lost, or a copy"),
            ));
            continue;
        }
        let received = b.received_ms.unwrap_or(0);
        let age = now_ms.saturating_sub(received);
        if age > grace.as_millis() as u64 {
            findings.push(finding(
                FindingKind::UnsealedBatch,
                None,
                &b.key,
                format!(
                    "acknowledged {:.0} s ago and not sealed (grace {} s): its events are stored but not in the log",
                    age as f64 / 1000.0,
                    grace.as_secs()
                ),
            ));
        } else {
            stats.batches_pending += 1;
        }
    }
    if !delays.is_empty() {
        stats.seal_delay_max_s = delays.iter().copied().reduce(f64::max);
        stats.seal_delay_mean_s = Some(delays.iter().sum::<f64>() / delays.len() as f64);
    }
    Ok((findings, stats, next_state))
}
