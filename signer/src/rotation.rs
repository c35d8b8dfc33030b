//! Key rotation and the log's key history.
//!
//! `sealtrail-signer rotate` ([`rotate`]) runs with the signer stopped (it takes the state
//! directory's lock) and holds both keys. It signs a *rotation checkpoint*
//! ([`sealtrail_core::checkpoint`]): the newest checkpoint's size and root, its hash as
//! `prev`, the new key in a `key` line, signed by the old key and by the new one. It is
//! fenced (when the signer uses a fence) and committed like any checkpoint. From then on
//! the state refuses any other key than the new one ([`check_current_key`]): the old key
//! can no longer extend the log, even if someone starts a signer with it.
//!
//! Verifiers learn the new key from that checkpoint alone ([`sealtrail_core::trust::Keyring`]):
//! it must be stored where they read (`rotate --publish`, required, as
//! `checkpoints/<size>-<hash>.note`), since no segment carries a checkpoint that adds no
//! leaf and the chain runs through it. `keys.json` in the state directory is the log's key
//! history with each key's validity range, which `export-trust` writes for verifiers that
//! want to pin every key.
//!
//! Crash safety: the rotation checkpoint is durable before `keys.json` is updated, and
//! `keys.json` is brought in line with the newest checkpoint at every start
//! ([`sync_key_history`]). A rotation interrupted after its fence write is adopted by the
//! next run of `rotate` (or the signer's start) like any fenced checkpoint. `rotate` is
//! idempotent: run again after a rotation to the same key, it only republishes.

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use sealtrail_core::checkpoint::{Checkpoint, NoteSignature, SignedCheckpoint};
use sealtrail_core::keys::PublicKey;
use sealtrail_core::trust::{Trust, TrustBundle, TrustedKey};

use crate::Error;
use crate::fence::{Claim, Fence};
use crate::keys::KeyBackend;
use crate::state::State;

/// The key history in the state directory.
pub const KEYS_FILE: &str = "keys.json";
const KEYS_TMP: &str = "keys.json.tmp";

/// The key id (under `origin`) that must sign the next checkpoint of this log: the key a
/// rotation checkpoint names, else the key that signed the newest checkpoint. `None` for
/// an empty log.
pub fn current_key_id(state: &State, origin: &str) -> Option<u32> {
    let latest = state.latest()?;
    match &latest.checkpoint.new_key {
        Some(key) => Some(key.key_id(origin)),
        None => latest.signatures.first().map(|s| s.key_id),
    }
}

/// Refuses a key that is not the log's current one (see [`current_key_id`]).
pub fn check_current_key(state: &State, origin: &str, key: &PublicKey) -> Result<(), Error> {
    let have = key.key_id(origin);
    match current_key_id(state, origin) {
        Some(want) if want != have => Err(Error::Config(format!(
            "this log is signed by key {want:08x}, not by the configured key {have:08x}: \
             after a rotation only the new key may sign; to change keys run \
             `sealtrail-signer rotate` (run it again if one was interrupted)"
        ))),
        _ => Ok(()),
    }
}

/// Reads `keys.json` from a state directory, if present.
pub fn read_key_history(dir: &Path) -> Result<Option<TrustBundle>, Error> {
    let bytes = match std::fs::read(dir.join(KEYS_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let trust = Trust::parse(&bytes)
        .map_err(|e| Error::State(format!("{}: {e}", dir.join(KEYS_FILE).display())))?;
    Ok(Some(trust.bundle().clone()))
}

fn write_key_history(dir: &Path, bundle: &TrustBundle) -> Result<(), Error> {
    use std::io::Write as _;
    let tmp = dir.join(KEYS_TMP);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bundle.to_json())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(KEYS_FILE))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The key history of a state directory without `keys.json` (a new log, one from before key
/// histories, or a restore that lost it), from its checkpoints: `first_key` from size 0 if
/// it signed the first checkpoint, then each rotation. `None` (with a warning) when the
/// first key is another one: its public key is nowhere in the state.
fn rebuild_key_history(
    state: &State,
    origin: &str,
    first_key: &PublicKey,
) -> Result<Option<TrustBundle>, Error> {
    let checkpoints = if state.checkpoint_count() > 0 {
        state.all_checkpoints()?
    } else {
        Vec::new()
    };
    let first_id = checkpoints
        .first()
        .and_then(|c| c.signatures.first())
        .map(|s| s.key_id);
    if first_id.is_some_and(|id| id != first_key.key_id(origin)) {
        tracing::warn!(
            "{} is missing and the log's first key is not the configured one: restore it \
             from a backup (export-trust cannot list the old keys without it)",
            state.dir().join(KEYS_FILE).display()
        );
        return Ok(None);
    }
    let mut bundle = TrustBundle::new(origin, vec![TrustedKey::new(origin, first_key, 0)]);
    for rotation in checkpoints.iter().filter(|c| c.is_rotation()) {
        if let Some(key) = &rotation.checkpoint.new_key {
            close_and_open(&mut bundle, origin, key, rotation.checkpoint.size);
        }
    }
    Ok(Some(bundle))
}

/// Ends the open ranges at `size` and opens `key`'s from there.
fn close_and_open(bundle: &mut TrustBundle, origin: &str, key: &PublicKey, size: u64) {
    for k in &mut bundle.keys {
        if k.valid_to_size.is_none() {
            k.valid_to_size = Some(size);
        }
    }
    bundle.keys.push(TrustedKey::new(origin, key, size));
}

/// Brings `keys.json` in line with the log: built from the checkpoints when absent (see
/// [`rebuild_key_history`]; `None` if it cannot be); a newest checkpoint that is a rotation
/// not yet recorded closes the open ranges at its size and opens the new key's.
pub fn sync_key_history(
    state: &State,
    origin: &str,
    first_key: &PublicKey,
) -> Result<Option<TrustBundle>, Error> {
    let (mut bundle, mut changed) = match read_key_history(state.dir())? {
        Some(b) => (b, false),
        None => match rebuild_key_history(state, origin, first_key)? {
            Some(b) => (b, true),
            None => return Ok(None),
        },
    };
    if bundle.origin != origin {
        return Err(Error::Config(format!(
            "{} is the key history of {:?}, not {origin:?}",
            state.dir().join(KEYS_FILE).display(),
            bundle.origin
        )));
    }
    if let Some(latest) = state.latest()
        && let Some(new_key) = &latest.checkpoint.new_key
    {
        let size = latest.checkpoint.size;
        let entry = TrustedKey::new(origin, new_key, size);
        let recorded = bundle
            .keys
            .last()
            .is_some_and(|k| k.key_id == entry.key_id && k.valid_from_size == size);
        if !recorded {
            close_and_open(&mut bundle, origin, new_key, size);
            changed = true;
        }
    }
    if changed {
        write_key_history(state.dir(), &bundle)?;
    }
    Ok(Some(bundle))
}

async fn sign_note(
    key: &dyn KeyBackend,
    origin: &str,
    text: &[u8],
) -> Result<NoteSignature, Error> {
    let signature = key.sign(text).await?;
    let public = key.public_key();
    public.verify(text, &signature).map_err(|_| {
        Error::Key(format!(
            "the {} key backend returned a signature that does not verify",
            key.kind()
        ))
    })?;
    Ok(NoteSignature {
        name: origin.to_string(),
        key_id: public.key_id(origin),
        signature,
    })
}

/// Rotates the log in `state` from `old` to `new` (see the module docs) and returns the
/// rotation checkpoint. With a fence, its start checks run first and the rotation claims
/// the next slot like any checkpoint.
pub async fn rotate(
    state: State,
    origin: &str,
    old: &dyn KeyBackend,
    new: &dyn KeyBackend,
    fence: Option<&Fence>,
) -> Result<SignedCheckpoint, Error> {
    let state = Mutex::new(state);
    let lock = || {
        state
            .lock()
            .map_err(|_| Error::State("state lock poisoned".into()))
    };
    crate::fence::check_marker(lock()?.dir(), fence)?;
    if let Some(fence) = fence {
        crate::fence::write_marker(lock()?.dir(), fence)?;
        fence.recover(&state, &[old, new], origin).await?;
    }
    let (checkpoint, seq) = {
        let mut s = lock()?;
        s.cut_uncommitted()?;
        sync_key_history(&s, origin, old.public_key())?;
        let Some(latest) = s.latest().cloned() else {
            return Err(Error::InvalidRequest(
                "the log is empty: nothing to rotate; start the signer with the new key".into(),
            ));
        };
        // Already rotated to this key (a re-run to publish again, maybe after the new key
        // signed more): the rotation that named it.
        if current_key_id(&s, origin) == Some(new.public_key().key_id(origin)) {
            let named =
                |c: &SignedCheckpoint| c.checkpoint.new_key.as_ref() == Some(new.public_key());
            let rotation = if named(&latest) {
                Some(latest.clone())
            } else {
                s.all_checkpoints()?.into_iter().rev().find(named)
            };
            if let Some(rotation) = rotation {
                tracing::info!(
                    size = rotation.checkpoint.size,
                    "the log is already rotated to this key"
                );
                return Ok(rotation);
            }
        }
        check_current_key(&s, origin, old.public_key())?;
        if old.public_key().key_id(origin) == new.public_key().key_id(origin) {
            return Err(Error::InvalidRequest(
                "the new key is the current key".into(),
            ));
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let prev = &latest.checkpoint;
        (
            Checkpoint {
                origin: origin.to_string(),
                size: prev.size,
                root: prev.root,
                // Strictly later, so that chain order is also time order at one size.
                time_ms: now_ms.max(prev.time_ms + 1),
                prev: Some(latest.hash()),
                new_key: Some(new.public_key().clone()),
            },
            s.checkpoint_count(),
        )
    };
    let text = checkpoint.to_text();
    let signatures = vec![
        sign_note(old, origin, &text).await?,
        sign_note(new, origin, &text).await?,
    ];
    let signed = SignedCheckpoint::new(checkpoint, signatures)?;
    if let Some(fence) = fence {
        match fence.claim(seq, &signed.to_bytes()).await {
            Claim::Ours => {}
            Claim::Lost => {
                return Err(Error::Poisoned(format!(
                    "another signer took fence slot {}: it extends this log beyond our state",
                    fence.slot_key(seq)
                )));
            }
            Claim::Unknown(e) => {
                return Err(Error::Unavailable(format!(
                    "the fence write of the rotation ({}) has an unknown outcome ({e}): \
                     run rotate again",
                    fence.slot_key(seq)
                )));
            }
        }
    }
    let s = &mut *lock()?;
    s.commit(signed.clone(), 0)?;
    sync_key_history(s, origin, old.public_key())?;
    tracing::info!(
        size = signed.checkpoint.size,
        from = format!("{:08x}", old.public_key().key_id(origin)),
        to = format!("{:08x}", new.public_key().key_id(origin)),
        "rotated the signing key"
    );
    Ok(signed)
}
