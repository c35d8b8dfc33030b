//! The signer's durable state, in one directory:
//!
//! - `signer.lock`: held with an exclusive advisory lock while a signer runs: a second
//!   signer on the same directory refuses to start.
//! - `hashes`: the tree's stored hashes (the Go tlog layout: the leaf hashes and every
//!   complete subtree hash, 32 bytes each, append-only), so that any root or proof costs
//!   O(log n) reads and nothing has to be loaded at start.
//! - `checkpoints`: every signed checkpoint, append-only, one record each:
//!   `u32 LE length ‖ signed note ‖ SHA-256(signed note)`.
//! - `head`: the byte offsets of the start and end of the newest checkpoint record (u64 LE
//!   each) and the SHA-256 of its note, replaced atomically (write, fsync, rename, fsync dir) after each commit, so
//!   that a start reads only the tail of `checkpoints`: start time does not grow with the log.
//!
//! Commit order: stored hashes appended and fsynced; checkpoint signed; checkpoint record
//! appended and fsynced; head replaced; only then are callers answered. A crash before the
//! checkpoint record is durable leaves extra stored hashes, which the next start cuts off
//! (those leaves were never answered); a crash after it keeps the checkpoint, which the
//! next start finds by reading past the head. An index is never handed out twice, and no
//! two different checkpoints of one size are ever durable.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use sealtrail_core::checkpoint::{MAX_NOTE_LEN, SignedCheckpoint};
use sealtrail_core::merkle::{self, HASH_LEN, Hash, HashReader};
use sha2::{Digest as _, Sha256};

use crate::Error;

const LOCK_FILE: &str = "signer.lock";
const HASHES_FILE: &str = "hashes";
const CHECKPOINTS_FILE: &str = "checkpoints";
const HEAD_FILE: &str = "head";
const HEAD_TMP: &str = "head.tmp";

/// The open state directory.
pub struct State {
    dir: PathBuf,
    _lock: File,
    hashes: File,
    /// Stored hashes durable in `hashes` (the file may be longer only mid-commit).
    stored: u64,
    checkpoints: File,
    checkpoints_end: u64,
    latest: Option<SignedCheckpoint>,
}

/// Reads stored hashes from the file, plus ones computed but not yet written.
pub struct Reader<'a> {
    file: &'a File,
    stored: u64,
    pending: &'a [Hash],
}

impl HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, sealtrail_core::Error> {
        indexes
            .iter()
            .map(|&i| {
                if i >= self.stored {
                    let j = (i - self.stored) as usize;
                    return self.pending.get(j).copied().ok_or_else(|| {
                        sealtrail_core::Error::Proof(format!("stored hash {i} not present"))
                    });
                }
                let mut h = [0u8; HASH_LEN];
                self.file
                    .read_exact_at(&mut h, i * HASH_LEN as u64)
                    .map_err(|e| sealtrail_core::Error::Proof(format!("stored hash {i}: {e}")))?;
                Ok(h)
            })
            .collect()
    }
}

impl State {
    /// Opens (or creates) the state directory, recovering from any crash.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked(dir.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let open_rw = |name: &str| {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(dir.join(name))
        };
        let hashes = open_rw(HASHES_FILE)?;
        let mut checkpoints = open_rw(CHECKPOINTS_FILE)?;
        sync_dir(dir)?;

        // The newest checkpoint: from the head's offset, read every complete record after it.
        let (mut offset, mut latest) = read_head(dir, &checkpoints)?;
        let file_len = checkpoints.metadata()?.len();
        while let Some((record, end)) = read_record(&checkpoints, offset, file_len)? {
            latest = Some(record);
            offset = end;
        }
        if offset < file_len {
            tracing::warn!(
                cut = file_len - offset,
                "cutting a torn checkpoint record left by a crash"
            );
            checkpoints.set_len(offset)?;
            checkpoints.sync_all()?;
        }
        checkpoints.seek(SeekFrom::Start(offset))?;

        let size = latest.as_ref().map_or(0, |c| c.checkpoint.size);
        let stored = merkle::stored_hash_count(size);
        let have = hashes.metadata()?.len() / HASH_LEN as u64;
        if have < stored {
            return Err(Error::State(format!(
                "{} holds {have} stored hashes but the newest checkpoint (size {size}) needs \
                 {stored}: the state directory is damaged; restore it from backup",
                dir.join(HASHES_FILE).display()
            )));
        }
        if hashes.metadata()?.len() != stored * HASH_LEN as u64 {
            tracing::warn!(
                extra = have - stored,
                "cutting stored hashes of leaves no checkpoint covers (never answered)"
            );
            hashes.set_len(stored * HASH_LEN as u64)?;
            hashes.sync_all()?;
        }
        let state = Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            hashes,
            stored,
            checkpoints,
            checkpoints_end: offset,
            latest,
        };
        if let Some(cp) = &state.latest {
            let root = merkle::tree_root(size, &state.reader(&[]))?;
            if root != cp.checkpoint.root {
                return Err(Error::State(format!(
                    "stored hashes give a root that differs from the newest checkpoint's \
                     (size {size}): the state directory is damaged; restore it from backup"
                )));
            }
        }
        Ok(state)
    }

    pub fn size(&self) -> u64 {
        self.latest.as_ref().map_or(0, |c| c.checkpoint.size)
    }

    pub fn latest(&self) -> Option<&SignedCheckpoint> {
        self.latest.as_ref()
    }

    pub fn reader<'a>(&'a self, pending: &'a [Hash]) -> Reader<'a> {
        Reader {
            file: &self.hashes,
            stored: self.stored,
            pending,
        }
    }

    /// Computes the stored hashes that appending `leaves` adds (nothing is written).
    pub fn stage(&self, leaves: &[Hash]) -> Result<Vec<Hash>, Error> {
        let mut pending = Vec::with_capacity(leaves.len() * 2);
        for (index, leaf) in (self.size()..).zip(leaves) {
            let new = merkle::stored_hashes_for_leaf(index, leaf, &self.reader(&pending))?;
            pending.extend_from_slice(&new);
        }
        Ok(pending)
    }

    /// Appends staged stored hashes and fsyncs them. Not yet a commit: see [`Self::commit`].
    pub fn write_hashes(&mut self, pending: &[Hash]) -> Result<(), Error> {
        let mut buf = Vec::with_capacity(pending.len() * HASH_LEN);
        for h in pending {
            buf.extend_from_slice(h);
        }
        self.hashes
            .write_all_at(&buf, self.stored * HASH_LEN as u64)?;
        self.hashes.sync_data()?;
        Ok(())
    }

    /// Undoes [`Self::write_hashes`] after a failed signature.
    pub fn discard_hashes(&mut self) -> Result<(), Error> {
        self.hashes.set_len(self.stored * HASH_LEN as u64)?;
        self.hashes.sync_data()?;
        Ok(())
    }

    /// Makes a signed checkpoint durable: record appended and fsynced, head replaced.
    /// `written` is the number of stored hashes [`Self::write_hashes`] wrote for it.
    pub fn commit(&mut self, cp: SignedCheckpoint, written: u64) -> Result<(), Error> {
        let note = cp.to_bytes();
        let mut rec = Vec::with_capacity(note.len() + 36);
        rec.extend_from_slice(&(note.len() as u32).to_le_bytes());
        rec.extend_from_slice(&note);
        rec.extend_from_slice(&Sha256::digest(&note));
        self.checkpoints.write_all(&rec)?;
        self.checkpoints.sync_data()?;
        let start = self.checkpoints_end;
        self.checkpoints_end += rec.len() as u64;
        self.stored += written;
        let mut head = Vec::with_capacity(48);
        head.extend_from_slice(&start.to_le_bytes());
        head.extend_from_slice(&self.checkpoints_end.to_le_bytes());
        head.extend_from_slice(&Sha256::digest(&note));
        let tmp = self.dir.join(HEAD_TMP);
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&head)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(HEAD_FILE))?;
        sync_dir(&self.dir)?;
        self.latest = Some(cp);
        Ok(())
    }

    /// Every checkpoint record in the log, oldest first (for tools, not the hot path).
    pub fn all_checkpoints(&self) -> Result<Vec<SignedCheckpoint>, Error> {
        let mut out = Vec::new();
        let mut offset = 0;
        while let Some((cp, end)) = read_record(&self.checkpoints, offset, self.checkpoints_end)? {
            out.push(cp);
            offset = end;
        }
        Ok(out)
    }
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// The head: where to start reading checkpoint records, and the newest one before it.
fn read_head(dir: &Path, log: &File) -> Result<(u64, Option<SignedCheckpoint>), Error> {
    let mut buf = Vec::new();
    match File::open(dir.join(HEAD_FILE)) {
        Ok(mut f) => {
            f.read_to_end(&mut buf)?;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok((0, None)),
        Err(e) => return Err(e.into()),
    }
    let damaged = |why: &str| {
        Error::State(format!(
            "{}: {why}; the state directory is damaged: restore it from backup",
            dir.join(HEAD_FILE).display()
        ))
    };
    let (Ok(start), Ok(end)) = (
        <[u8; 8]>::try_from(buf.get(..8).unwrap_or_default()),
        <[u8; 8]>::try_from(buf.get(8..16).unwrap_or_default()),
    ) else {
        return Err(damaged("wrong length"));
    };
    if buf.len() != 48 {
        return Err(damaged("wrong length"));
    }
    let (start, end) = (u64::from_le_bytes(start), u64::from_le_bytes(end));
    match read_record(log, start, log.metadata()?.len())? {
        Some((cp, rec_end))
            if rec_end == end && Sha256::digest(cp.to_bytes())[..] == buf[16..48] =>
        {
            Ok((end, Some(cp)))
        }
        _ => Err(damaged("does not name an intact checkpoint record")),
    }
}

/// Reads the complete, intact record at `offset`, if there is one.
fn read_record(
    log: &File,
    offset: u64,
    file_len: u64,
) -> Result<Option<(SignedCheckpoint, u64)>, Error> {
    if offset + 4 > file_len {
        return Ok(None);
    }
    let mut len = [0u8; 4];
    log.read_exact_at(&mut len, offset)?;
    let len = u32::from_le_bytes(len) as u64;
    if len == 0 || len > MAX_NOTE_LEN as u64 || offset + 4 + len + 32 > file_len {
        return Ok(None);
    }
    let mut body = vec![0u8; (len + 32) as usize];
    log.read_exact_at(&mut body, offset + 4)?;
    let (note, digest) = body.split_at(len as usize);
    if Sha256::digest(note)[..] != *digest {
        return Ok(None);
    }
    let cp = SignedCheckpoint::parse(note)?;
    Ok(Some((cp, offset + 4 + len + 32)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealtrail_core::checkpoint::{Checkpoint, NoteSignature};

    fn commit_leaves(state: &mut State, n: u64) -> SignedCheckpoint {
        let first = state.size();
        let leaves: Vec<Hash> = (first..first + n)
            .map(|i| merkle::leaf_hash(&i.to_le_bytes()))
            .collect();
        let pending = state.stage(&leaves).unwrap();
        let size = first + n;
        let root = merkle::tree_root(size, &state.reader(&pending)).unwrap();
        state.write_hashes(&pending).unwrap();
        let cp = SignedCheckpoint::new(
            Checkpoint {
                origin: "example.com/log".into(),
                size,
                root,
                time_ms: size,
                prev: state.latest().map(|c| c.hash()),
            },
            vec![NoteSignature {
                name: "example.com/log".into(),
                key_id: 1,
                signature: vec![0; 64],
            }],
        )
        .unwrap();
        state.commit(cp.clone(), pending.len() as u64).unwrap();
        cp
    }

    #[test]
    fn reopen_recovers_the_newest_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        commit_leaves(&mut state, 5);
        let cp = commit_leaves(&mut state, 7);
        assert!(matches!(State::open(dir.path()), Err(Error::Locked(_))));
        drop(state);
        let state = State::open(dir.path()).unwrap();
        assert_eq!(state.latest(), Some(&cp));
        assert_eq!(state.size(), 12);
        assert_eq!(state.all_checkpoints().unwrap().len(), 2);
    }

    #[test]
    fn uncommitted_hashes_and_torn_records_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        let cp = commit_leaves(&mut state, 3);
        // A crash after writing hashes, before the checkpoint: extra stored hashes.
        let pending = state.stage(&[[7u8; 32], [8u8; 32]]).unwrap();
        state.write_hashes(&pending).unwrap();
        drop(state);
        // And a torn checkpoint record at the end of the log.
        let mut log = OpenOptions::new()
            .append(true)
            .open(dir.path().join(CHECKPOINTS_FILE))
            .unwrap();
        log.write_all(&[200, 0, 0, 0, b'x', b'y']).unwrap();
        drop(log);
        let mut state = State::open(dir.path()).unwrap();
        assert_eq!(state.latest(), Some(&cp));
        assert_eq!(
            std::fs::metadata(dir.path().join(HASHES_FILE))
                .unwrap()
                .len(),
            merkle::stored_hash_count(3) * HASH_LEN as u64
        );
        // The log continues at index 3: no index is reused or skipped.
        let next = commit_leaves(&mut state, 2);
        assert_eq!(next.checkpoint.size, 5);
        assert_eq!(next.checkpoint.prev, Some(cp.hash()));
    }

    #[test]
    fn a_checkpoint_durable_before_the_head_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        commit_leaves(&mut state, 4);
        let head = std::fs::read(dir.path().join(HEAD_FILE)).unwrap();
        let cp = commit_leaves(&mut state, 4);
        drop(state);
        // A crash between the record's fsync and the head's rename: the old head.
        std::fs::write(dir.path().join(HEAD_FILE), head).unwrap();
        let state = State::open(dir.path()).unwrap();
        assert_eq!(state.latest(), Some(&cp));
    }

    #[test]
    fn missing_hashes_refuse_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        commit_leaves(&mut state, 9);
        drop(state);
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join(HASHES_FILE))
            .unwrap();
        f.set_len(32).unwrap();
        drop(f);
        assert!(matches!(State::open(dir.path()), Err(Error::State(_))));
    }
}
