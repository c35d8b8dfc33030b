//! Proof bundles: offline evidence that chosen audit events are in the log, for a third
//! party who has nothing but the file and a pinned trust bundle, possibly years later.
//!
//! [`prove`] (`sealtrail-verify prove`, [`run`]) selects stored events by auditID (every
//! stage), or by stageTimestamp range with optional `user.username` and `verb`, checks
//! each one, and writes a `sealtrail-proof/v1` file ([`Bundle`], docs/FORMAT.md §8, the
//! format in `sealtrail_core::bundle`): each event's canonical JSON as stored, its leaf
//! index and its inclusion proof into the checkpoint stored with it; those signed
//! checkpoints once each; every accepted rotation checkpoint of the store, oldest first
//! (how a key after a rotation came to be trusted); and, by default, a consistency proof
//! from each checkpoint to one *head*, the newest stored one.
//!
//! [`check_bundle`] (`sealtrail-verify check-bundle`, [`check`]) verifies such a file with
//! no store, signer or network: rotations through a keyring, each checkpoint's signature,
//! each event's leaf hash and inclusion proof, and each consistency proof; and the RFC 3161
//! tokens `prove` found on the bundle's checkpoints ([`timestamps`]), which date them.
//!
//! Why consistency proofs, although every event already proves into a signed checkpoint:
//! they make the bundle's checkpoints one history, so that a reader compares one head with
//! a checkpoint kept elsewhere (a `verify --state` file, a witness, a report) instead of
//! every checkpoint, and a fork signed with a leaked key cannot hide among them; and an
//! event's old checkpoint is re-anchored in a head signed by a later key. They are computed
//! from the stored leaves (never asked of the signer), which means reading every segment up
//! to the head; `--no-consistency` skips them, and then a time range reads only the hour
//! partitions around it (events are stored after their stageTimestamp: [`ProveOptions::margin`]).
//!
//! What a bundle cannot prove: that the log holds no *other* event matching its selection.

mod check;
mod run;
mod select;
mod timestamps;
mod tree;

pub use check::{
    CheckReport, CheckpointReport, Problem, ProvenEvent, RotationReport, check_bundle,
    check_bundle_with,
};
pub use run::{DEFAULT_MARGIN, ProveOptions, ProveReport, Proved, prove};
pub use sealtrail_core::bundle::{
    Bundle, BundleEvent, BundleTimestamp, Consistency, ConsistencyProof, EventFields,
    MAX_BUNDLE_CHECKPOINTS, MAX_BUNDLE_EVENTS, MAX_BUNDLE_LEN, MAX_BUNDLE_ROTATIONS, PROOF_FORMAT,
    Selection,
};
pub use timestamps::TokenReport;

use crate::Error;

/// Reads at most [`MAX_BUNDLE_LEN`] + 1 bytes, so that an oversized file is refused
/// without being read whole.
pub fn read_limited(r: impl std::io::Read) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    r.take(MAX_BUNDLE_LEN as u64 + 1).read_to_end(&mut out)?;
    Ok(out)
}

/// The reason a format error gives, without the prefix its variant displays: the messages
/// here put it in their own context.
fn reason(e: sealtrail_core::Error) -> String {
    use sealtrail_core::Error as E;
    match e {
        E::Bundle(why) | E::Selection(why) | E::Proof(why) => why,
        other => other.to_string(),
    }
}

/// An export that consistency proofs make impossible.
fn needs_whole_log(why: String) -> Error {
    Error::NotProvable(format!(
        "{why}; consistency proofs need every leaf up to the head (--no-consistency exports without them)"
    ))
}

/// A broken invariant of the prover (a bug), reported rather than exported.
fn internal(why: String) -> Error {
    Error::NotProvable(format!("internal error: {why}"))
}
