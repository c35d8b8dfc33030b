//! The reference checks, once the stored tree is known: the signer's latest checkpoint
//! (the outside reference against a cut tail, a rollback or a fork), the leaves a
//! checkpoint covers that no segment holds, and the chain of checkpoints.

use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::merkle;
use sealtrail_core::trust::{Keyring, SignatureVerdict};

use super::checkpoints::Checkpoints;
use super::resume::Base;
use super::{Audit, CheckpointInfo, Options, STATE_FILE, chain_order};
use crate::signer::SignerError;
use crate::{Error, FindingKind};

/// The signer's latest checkpoint, parsed (its signature is checked once the stored
/// rotations are known).
pub(super) async fn signer_latest(options: &Options) -> Result<Option<SignedCheckpoint>, Error> {
    let Some(s) = &options.signer else {
        return Ok(None);
    };
    let Some(note) = s.latest_checkpoint().await.map_err(Error::Signer)? else {
        return Ok(None);
    };
    SignedCheckpoint::parse(&note).map(Some).map_err(|e| {
        Error::Signer(SignerError::Unusable(format!(
            "latest checkpoint of {}: {e}",
            s.describe()
        )))
    })
}

/// The signer's latest checkpoint must verify against the keys the stored rotations left
/// trusted, and extend the newest stored (or remembered) trusted checkpoint. Whether it
/// is consistent (it then vouches for the tail).
pub(super) async fn check_signer(
    audit: &mut Audit<'_>,
    latest: Option<&SignedCheckpoint>,
    keyring: &Keyring,
    cps: &Checkpoints,
) -> Result<bool, Error> {
    let (Some(latest), Some(source)) = (latest, &audit.options.signer) else {
        return Ok(true);
    };
    let verdict = keyring.verify(latest);
    if !matches!(verdict, SignatureVerdict::Trusted { .. }) {
        return Err(Error::Signer(SignerError::Unusable(format!(
            "the latest checkpoint of {} (size {}) does not verify against the trust bundle \
             and the stored rotations: {verdict:?} (after a key rotation, the rotation \
             checkpoint must be published or the trust bundle updated)",
            source.describe(),
            latest.checkpoint.size
        ))));
    }
    let l = &latest.checkpoint;
    let newest = cps
        .by_size
        .values()
        .rev()
        .flat_map(|hs| hs.iter())
        .filter(|h| cps.trusted.contains(*h))
        .filter_map(|h| cps.all.get(h))
        .next();
    let Some(info) = newest else {
        return Ok(true);
    };
    let s = &info.cp.checkpoint;
    let remembered = info.first_object == STATE_FILE;
    let at = Some(info.first_object.as_str()).filter(|_| !remembered);
    let range = Some((s.size.saturating_sub(1), s.size.saturating_sub(1)));
    if s.size > l.size {
        let detail = format!(
            "{} holds a checkpoint of size {} but the signer's latest ({}) is of size {}: the signer was rolled back or its log forked",
            if remembered {
                "the state of an earlier run"
            } else {
                "the store"
            },
            s.size,
            source.describe(),
            l.size
        );
        audit.find(FindingKind::InconsistentWithSigner, range, at, None, detail);
        return Ok(false);
    }
    if s.size == 0 {
        return Ok(true);
    }
    let proof = if s.size < l.size {
        source
            .consistency_proof(s.size, l.size)
            .await
            .map_err(Error::Signer)?
    } else {
        Vec::new()
    };
    if let Err(e) = merkle::verify_consistency(s.size, l.size, &s.root, &l.root, &proof) {
        let detail = format!(
            "the signer's latest checkpoint (size {}) does not extend the {} checkpoint of size {} (a fork or a rollback): {e}",
            l.size,
            if remembered { "remembered" } else { "stored" },
            s.size
        );
        audit.find(FindingKind::InconsistentWithSigner, range, at, None, detail);
        return Ok(false);
    }
    Ok(true)
}

/// Leaves covered by a checkpoint (stored, or the signer's when consistent) that no
/// segment holds.
pub(super) fn missing_tail(
    audit: &mut Audit<'_>,
    next: u64,
    signed_size: u64,
    last_object: Option<&str>,
) {
    let stored_size = audit.report.tree_size;
    let want = stored_size.max(signed_size);
    if next >= want {
        return;
    }
    let detail = if signed_size > stored_size {
        format!("signed by the signer (checkpoint of size {signed_size}) but not in the store")
    } else {
        format!(
            "a stored checkpoint covers {stored_size} leaves but the store holds only {next} (tail lost or deleted)"
        )
    };
    audit.find(
        FindingKind::MissingEvents,
        Some((next, want - 1)),
        last_object,
        None,
        detail,
    );
}

/// The chain, oldest first (with a state: from the remembered checkpoint on): each names
/// the one before as `prev` (the first none), and times never go back.
pub(super) fn check_chain(audit: &mut Audit<'_>, cps: &Checkpoints, base: &Base) {
    let mut chain: Vec<&CheckpointInfo> = cps.all.values().collect();
    chain.sort_by_key(|c| chain_order(c));
    if let Some(remembered) = &base.info {
        // What comes after the remembered checkpoint (a rotation may share its size).
        let hash = remembered.cp.hash();
        chain = match chain.iter().position(|c| c.cp.hash() == hash) {
            Some(i) => chain.split_off(i + 1),
            None => chain
                .into_iter()
                .filter(|c| c.cp.checkpoint.size > base.size())
                .collect(),
        };
    }
    let mut prev: Option<&CheckpointInfo> = base.info.as_ref();
    for info in chain {
        link(audit, cps, prev, info);
        let cp = &info.cp.checkpoint;
        if let Some(p) = prev
            && cp.time_ms < p.cp.checkpoint.time_ms
        {
            audit.find(
                FindingKind::TimeRegression,
                Some((cp.size.saturating_sub(1), cp.size.saturating_sub(1))),
                Some(&info.first_object),
                Some(1),
                format!(
                    "checkpoint of size {} is dated {} ms before its predecessor",
                    cp.size,
                    p.cp.checkpoint.time_ms - cp.time_ms
                ),
            );
        }
        prev = Some(info);
    }
}

/// One link of the chain: `info` must name `prev` (none for the first).
fn link(
    audit: &mut Audit<'_>,
    cps: &Checkpoints,
    prev: Option<&CheckpointInfo>,
    info: &CheckpointInfo,
) {
    let cp = &info.cp.checkpoint;
    let (from, expect) = match prev {
        None => (0, None),
        Some(p) => (p.cp.checkpoint.size, Some(p.cp.hash())),
    };
    if cp.prev == expect {
        return;
    }
    // A checkpoint that no longer is in the store, because the leaves it covered are gone
    // or their segment's checkpoint was replaced, is reported there already. Only a
    // predecessor that is not stored can be explained that way: a `prev` that names a
    // stored checkpoint other than the one before is never excused.
    let explained = cp.prev.is_some_and(|h| !cps.all.contains_key(&h))
        && audit
            .missing
            .iter()
            .chain(&audit.unproven)
            .any(|&(a, b)| a < cp.size && b >= from);
    if explained {
        return;
    }
    let detail = match prev {
        None => format!(
            "the oldest stored checkpoint (size {}) refers to an earlier one that is not stored",
            cp.size
        ),
        Some(p) => format!(
            "checkpoint of size {} does not link to the previous one (size {})",
            cp.size, p.cp.checkpoint.size
        ),
    };
    audit.find(
        FindingKind::ChainBreak,
        Some((cp.size.saturating_sub(1), cp.size.saturating_sub(1))),
        Some(&info.first_object),
        Some(1),
        detail,
    );
}
