//! One writer across machines: a fencing record per checkpoint in create-new object storage.
//!
//! The lock on the state directory ([`crate::state`]) keeps a second signer off the same
//! directory. It cannot see a signer on another machine started with a copy of the state
//! (restored from an old backup, a second deployment, an empty directory by mistake) and
//! the same key. The fence can: every checkpoint claims a numbered slot in object storage
//! with a create-new write (`If-None-Match: *` on S3, `link(2)` in a directory), and a slot
//! can be claimed once.
//!
//! # Records
//!
//! Under the fence location's prefix (`--fence s3://bucket/prefix` or a directory):
//!
//! - `fence/<k as 20 digits>`: the signed checkpoint of sequence number `k` (the `k`-th
//!   checkpoint of the log, from 0), exactly the note bytes the signer answers with. Those
//!   objects are a copy of the checkpoint chain: slot `k`'s checkpoint names slot `k-1`'s as
//!   its `prev`.
//! - `fence/genesis`: where fencing began, written once (create-new) by the first signer
//!   started with a fence: `sealtrail-fence-genesis v1\n`, `count <k>\n`, then the newest
//!   checkpoint's note at that moment (nothing for an empty log). Slots below `k` were never
//!   claimed (their checkpoints predate the fence), so a signer whose state is behind the
//!   genesis is refused: it could otherwise claim one of those free slots.
//!
//! # The rule, and why it prevents a fork
//!
//! A checkpoint of sequence `k` becomes durable in a state directory only once `fence/<k>`
//! holds exactly its bytes: the signer writes `fence/<k>` after signing and before the
//! checkpoint record is durable (and before anyone is answered). `Created`, or
//! `AlreadyStored` (identical bytes: our own write retried by the store client), lets the
//! commit go on; `Conflict` means another signer took slot `k`: this signer is poisoned
//! (Appends fail, `/readyz` false, logged as an error), its signature is discarded without
//! ever having been stored or answered.
//!
//! So for every `k`, every state directory that holds a checkpoint of sequence `k` holds the
//! same one (the bytes in `fence/<k>`), and since each extends the one of sequence `k-1`,
//! all checkpoints ever made durable or answered, by any number of signers, form one chain:
//! no fork. A signer whose state is behind the fence cannot catch up by signing: the slot
//! after its newest checkpoint is taken, so its first commit fails (or its start does).
//!
//! # Start
//!
//! With `k` checkpoints in the state:
//! 1. `fence/genesis` is read (created from our state if absent). `k` below the genesis
//!    count, or at it with a different newest checkpoint: refused.
//! 2. Past the genesis, `fence/<k-1>` must hold our newest checkpoint: else our state is not
//!    the fenced log (refused).
//! 3. `fence/<k>` must be absent. If present, it is either another signer that extended the
//!    log beyond our state (refused: "another signer has extended this log beyond our
//!    state"), or ourselves, killed between the fence write and the checkpoint record. In
//!    that case the stored hashes of that commit are still in the state directory (they are
//!    fsynced before signing and [`crate::state::State::open_uncut`] keeps them): if the
//!    checkpoint in `fence/<k>` is signed by our key, names our newest checkpoint as `prev`
//!    and its root is the root of those stored hashes, it is the very checkpoint we signed
//!    (or one identical in tree) and it is *adopted*: made durable locally, then step 3
//!    repeats for `k+1`. Its leaves were never answered; the apiserver's retry of their batch
//!    finds them through the dedupe window and gets that checkpoint back.
//!
//! A fence write whose outcome is unknown (storage unavailable, timeout) fails the Appends
//! of that commit (the ingester answers 503) and keeps the signed checkpoint and its stored
//! hashes pending: the next commit first writes the same bytes again, and only goes on once
//! the slot holds them. A crash meanwhile is the adoption case above. Nothing is ever
//! rolled back after a fence write was attempted, since it may have landed.
//!
//! A fence without Object Lock (a directory) protects against mistakes, not against an
//! attacker who can delete objects; in S3 the records take the bucket's Object Lock like
//! segments (the bucket must have it: [`sealtrail_store::s3::S3Store::check_object_lock`]).

use std::sync::{Arc, Mutex};

use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_store::{ObjectStore, PutOutcome, StoreError};

use crate::Error;
use crate::keys::KeyBackend;
use crate::state::State;

const GENESIS_MAGIC: &[u8] = b"sealtrail-fence-genesis v1\n";

/// Where fencing records are written: a create-new store and a key prefix (`""` or ending
/// in `/`).
#[derive(Clone)]
pub struct Fence {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fence({}, {:?})", self.store.describe(), self.prefix)
    }
}

/// What claiming a slot found.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The slot holds our checkpoint.
    Ours,
    /// Another signer holds the slot.
    Lost,
    /// Unknown: the write may or may not have landed.
    Unknown(String),
}

impl Fence {
    /// A fence in `store` under `prefix`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<String>) -> Self {
        Self {
            store,
            prefix: prefix.into(),
        }
    }

    /// Where it is, for logs.
    pub fn describe(&self) -> String {
        format!("{} {}fence/", self.store.describe(), self.prefix)
    }

    /// The key of slot `seq`.
    pub fn slot_key(&self, seq: u64) -> String {
        format!("{}fence/{seq:020}", self.prefix)
    }

    fn genesis_key(&self) -> String {
        format!("{}fence/genesis", self.prefix)
    }

    /// Claims slot `seq` for the checkpoint `note` (create-new).
    pub(crate) async fn claim(&self, seq: u64, note: &[u8]) -> Claim {
        match self.store.put_new(&self.slot_key(seq), note).await {
            Ok(PutOutcome::Created | PutOutcome::AlreadyStored) => Claim::Ours,
            Err(StoreError::Conflict(_)) => Claim::Lost,
            Err(e) => Claim::Unknown(e.to_string()),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match self.store.get(key).await {
            Ok(b) => Ok(Some(b)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(Error::Unavailable(format!("fence {key}: {e}"))),
        }
    }

    /// The start checks of the module docs, adopting a checkpoint our state lost in a crash
    /// between fence and commit. `state` may hold uncommitted stored hashes
    /// ([`State::open_uncut`]); they are left for the caller to cut.
    pub async fn recover(
        &self,
        state: &Mutex<State>,
        keys: &[&dyn KeyBackend],
        origin: &str,
    ) -> Result<(), Error> {
        let lock = || {
            state
                .lock()
                .map_err(|_| Error::State("state lock poisoned".into()))
        };
        let (mut count, latest) = {
            let s = lock()?;
            (s.checkpoint_count(), s.latest().map(|c| c.to_bytes()))
        };
        let refuse = |why: String| {
            let msg = format!("fence {}: {why}", self.describe());
            tracing::error!("{msg}");
            Error::Poisoned(msg)
        };

        // 1. The genesis.
        let genesis_key = self.genesis_key();
        let genesis = match self.get(&genesis_key).await? {
            Some(g) => g,
            None => {
                let mut g = GENESIS_MAGIC.to_vec();
                g.extend_from_slice(format!("count {count}\n").as_bytes());
                g.extend_from_slice(latest.as_deref().unwrap_or_default());
                match self.store.put_new(&genesis_key, &g).await {
                    Ok(_) => {
                        tracing::info!(count, fence = %self.describe(), "fencing begins");
                        g
                    }
                    // Someone else began at the same moment: theirs counts.
                    Err(StoreError::Conflict(_)) => {
                        self.get(&genesis_key).await?.ok_or_else(|| {
                            Error::Unavailable(format!("fence {genesis_key} vanished"))
                        })?
                    }
                    Err(e) => return Err(Error::Unavailable(format!("fence {genesis_key}: {e}"))),
                }
            }
        };
        let (g_count, g_note) = parse_genesis(&genesis)
            .ok_or_else(|| refuse(format!("{genesis_key} is not a fence genesis record")))?;
        if count < g_count || (count == g_count && latest.as_deref().unwrap_or_default() != g_note)
        {
            return Err(refuse(format!(
                "our state ({count} checkpoints) is not the log fencing began with \
                 ({g_count} checkpoints): another signer has extended this log beyond our state"
            )));
        }
        // 2. Our newest checkpoint is the fenced one.
        if count > g_count {
            let k = count - 1;
            let held = self.get(&self.slot_key(k)).await?;
            if held.as_deref() != latest.as_deref() {
                return Err(refuse(format!(
                    "{} does not hold our newest checkpoint: our state is not the fenced log",
                    self.slot_key(k)
                )));
            }
        }
        // 3. The next slot is free, or holds a checkpoint we signed and lost in a crash.
        loop {
            let slot = self.slot_key(count);
            let Some(held) = self.get(&slot).await? else {
                return Ok(());
            };
            let cp = SignedCheckpoint::parse(&held).ok();
            // Signed by one of our keys (during a rotation, the old or the new one).
            let ours = cp.as_ref().is_some_and(|cp| {
                cp.checkpoint.origin == origin
                    && keys.iter().any(|k| cp.signed_by(origin, k.public_key()))
            });
            let adopted = match cp {
                Some(cp) if ours => {
                    let size = cp.checkpoint.size;
                    let adopted = lock()?.adopt(cp)?;
                    if adopted {
                        tracing::warn!(
                            seq = count,
                            size,
                            "adopted the checkpoint of {slot}: signed before a crash, \
                             its record was not durable yet (its leaves were never answered)"
                        );
                    }
                    adopted
                }
                _ => false,
            };
            if !adopted {
                return Err(refuse(format!(
                    "{slot} exists: another signer has extended this log beyond our state \
                     ({count} checkpoints); refusing to start"
                )));
            }
            count += 1;
        }
    }
}

/// In the state directory once a fence was used: the fence's location. A signer (or
/// `rotate`) without a fence on such a state would commit a checkpoint without its slot and
/// leave the log unable to start fenced again: refused.
pub const MARKER_FILE: &str = "fenced";

/// Refuses to go on without a fence, or with another one, where one was used (see
/// [`MARKER_FILE`]).
pub fn check_marker(state_dir: &std::path::Path, fence: Option<&Fence>) -> Result<(), Error> {
    let recorded = match std::fs::read_to_string(state_dir.join(MARKER_FILE)) {
        Ok(location) => location.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    match fence {
        Some(f) if f.describe() == recorded => Ok(()),
        Some(f) => Err(Error::Config(format!(
            "this log is fenced at {recorded}, not at {}: give the same --fence",
            f.describe()
        ))),
        None => Err(Error::Config(format!(
            "this log is fenced ({recorded}): give the same --fence"
        ))),
    }
}

/// Records that `fence` is in use (see [`MARKER_FILE`]), before its first record is
/// written: a crash cannot leave a fenced log whose state forgot its fence.
pub fn write_marker(state_dir: &std::path::Path, fence: &Fence) -> Result<(), Error> {
    use std::io::Write as _;
    check_marker(state_dir, Some(fence))?;
    let path = state_dir.join(MARKER_FILE);
    if path.exists() {
        return Ok(());
    }
    let tmp = state_dir.join("fenced.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("{}\n", fence.describe()).as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(state_dir)?.sync_all()?;
    Ok(())
}

fn parse_genesis(g: &[u8]) -> Option<(u64, &[u8])> {
    let rest = g.strip_prefix(GENESIS_MAGIC)?;
    let rest = rest.strip_prefix(b"count ")?;
    let nl = rest.iter().position(|b| *b == b'\n')?;
    let count = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
    Some((count, &rest[nl + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_parses() {
        let mut g = GENESIS_MAGIC.to_vec();
        g.extend_from_slice(b"count 12\nnote");
        assert_eq!(parse_genesis(&g), Some((12, &b"note"[..])));
        assert_eq!(parse_genesis(b"count 1\n"), None);
    }
}
