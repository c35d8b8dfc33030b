//! The signer's durable state, in one directory:
//!
//! - `signer.lock`: held with an exclusive advisory lock while a signer runs: a second
//!   signer on the same directory refuses to start.
//! - `hashes`: the tree's stored hashes (the Go tlog layout: the leaf hashes and every
//!   complete subtree hash, 32 bytes each, append-only), so that any root or proof costs
//!   O(log n) reads and nothing has to be loaded at start.
//! - `checkpoints`: every signed checkpoint, append-only, one record each:
//!   `u32 LE length ‖ signed note ‖ SHA-256(signed note)`.
//! - `checkpoints.idx`: a fixed-size index of `checkpoints`, one 16-byte entry per record,
//!   appended (and fsynced) right after the record: `u64 LE tree size ‖ u64 LE byte offset
//!   of the record in checkpoints`. Entry `k` is the checkpoint of sequence number `k` (the
//!   `k`-th checkpoint, from 0), sizes increase (a key-rotation checkpoint repeats the size
//!   of the one before it, see [`crate::rotation`]), so the entry count is the number of
//!   checkpoints (the fence's sequence number, see [`crate::fence`]) and "the first
//!   checkpoint that covers leaf `i`" is a binary search (O(log n) reads of 16 bytes): this is
//!   how a deduplicated Append gets the original checkpoint back without any checkpoint in
//!   memory. A state directory without the file (older versions) gets it built once, by one
//!   forward scan of `checkpoints`.
//! - `keys.json`: the log's key history, the trust bundle `export-trust` writes (see
//!   [`crate::rotation`]): every key that has signed with its range of tree sizes. Replaced
//!   atomically; derived from the checkpoints, so a crash that leaves it behind is repaired
//!   at the next start.
//! - `fenced`: the fence's location, once a fence was used ([`crate::fence::MARKER_FILE`]).
//! - `head`: the byte offsets of the start and end of the newest checkpoint record (u64 LE
//!   each) and the SHA-256 of its note, replaced atomically (write, fsync, rename, fsync dir) after each commit, so
//!   that a start reads only the tail of `checkpoints`: start time does not grow with the log.
//!
//! Commit order: stored hashes appended and fsynced; checkpoint signed; (with a fence: the
//! fence record created, see [`crate::fence`]); checkpoint record appended and fsynced;
//! index entry appended and fsynced; head replaced; only then are callers answered. A crash
//! before the checkpoint record is durable leaves extra stored hashes, which the next start
//! cuts off (those leaves were never answered; [`State::open_uncut`] keeps them so that a
//! fenced checkpoint can be adopted first); a crash after it keeps the checkpoint, which the
//! next start finds by reading past the head. A crash before the index entry is durable (or
//! a torn entry) is repaired at start: a partial entry is cut, an entry that does not name
//! an intact record is dropped (only the last one can be, since an entry is written only
//! after its record is fsynced), and entries missing for the records after the last good
//! one are appended again. An index is never handed out twice, and no two different
//! checkpoints of one size are ever durable.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use sealtrail_core::checkpoint::{MAX_NOTE_LEN, SignedCheckpoint};
use sealtrail_core::merkle::{self, HASH_LEN, Hash, HashReader};
use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::cache::{HashCache, TAIL_HASHES};

const LOCK_FILE: &str = "signer.lock";
const HASHES_FILE: &str = "hashes";
const CHECKPOINTS_FILE: &str = "checkpoints";
const HEAD_FILE: &str = "head";
const HEAD_TMP: &str = "head.tmp";
const INDEX_FILE: &str = "checkpoints.idx";
/// Bytes per `checkpoints.idx` entry.
const INDEX_ENTRY: u64 = 16;
/// Leaves read per chunk by [`State::leaf_hashes`].
const LEAF_CHUNK: u64 = 1 << 16;

/// The open state directory.
pub struct State {
    dir: PathBuf,
    _lock: File,
    hashes: File,
    /// Stored hashes durable in `hashes` (the file may be longer only mid-commit).
    stored: u64,
    /// Stored hashes in `hashes` after the durable ones: written for a commit that is not
    /// (yet) durable, or left by a crash until [`Self::cut_uncommitted`].
    uncommitted: u64,
    checkpoints: File,
    checkpoints_end: u64,
    index: File,
    /// Entries in `checkpoints.idx`: the number of checkpoints.
    count: u64,
    latest: Option<SignedCheckpoint>,
    /// The newest stored hashes and the old ones recent proofs share (bounded).
    cache: HashCache,
}

/// Reads stored hashes from memory or the file, plus ones computed but not yet written.
pub struct Reader<'a> {
    file: &'a File,
    cache: &'a HashCache,
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
                if let Some(h) = self.cache.get(i) {
                    return Ok(h);
                }
                let mut h = [0u8; HASH_LEN];
                self.file
                    .read_exact_at(&mut h, i * HASH_LEN as u64)
                    .map_err(|e| sealtrail_core::Error::Proof(format!("stored hash {i}: {e}")))?;
                self.cache.remember(i, h);
                Ok(h)
            })
            .collect()
    }
}

impl State {
    /// Opens (or creates) the state directory, recovering from any crash: stored hashes
    /// that no durable checkpoint covers are cut.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let mut state = Self::open_uncut(dir)?;
        state.cut_uncommitted()?;
        Ok(state)
    }

    /// [`Self::open`], but stored hashes written after the newest durable checkpoint (a
    /// commit cut short by a crash) are kept for now: see [`Self::uncommitted`],
    /// [`Self::adopt`], [`Self::cut_uncommitted`]. Nothing is appended until they are cut
    /// or adopted.
    pub fn open_uncut(dir: &Path) -> Result<Self, Error> {
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
        let index = open_rw(INDEX_FILE)?;
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
        if hashes.metadata()?.len() % HASH_LEN as u64 != 0 {
            // A torn write of uncommitted hashes: never part of any checkpoint.
            hashes.set_len(have * HASH_LEN as u64)?;
            hashes.sync_all()?;
        }
        let count = repair_index(dir, &index, &checkpoints, offset, latest.as_ref())?;
        let cache = load_tail(&hashes, stored)?;
        let state = Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            hashes,
            stored,
            uncommitted: have - stored,
            checkpoints,
            checkpoints_end: offset,
            index,
            count,
            latest,
            cache,
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

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn size(&self) -> u64 {
        self.latest.as_ref().map_or(0, |c| c.checkpoint.size)
    }

    pub fn latest(&self) -> Option<&SignedCheckpoint> {
        self.latest.as_ref()
    }

    /// How many checkpoints the log has: the sequence number of the next one.
    pub fn checkpoint_count(&self) -> u64 {
        self.count
    }

    /// Stored hashes written after the newest durable checkpoint (see [`Self::open_uncut`]).
    pub fn uncommitted(&self) -> u64 {
        self.uncommitted
    }

    /// Cuts the stored hashes that no durable checkpoint covers (those leaves were never
    /// answered).
    pub fn cut_uncommitted(&mut self) -> Result<(), Error> {
        if self.uncommitted > 0 || self.hashes.metadata()?.len() != self.stored * HASH_LEN as u64 {
            tracing::warn!(
                extra = self.uncommitted,
                "cutting stored hashes of leaves no checkpoint covers (never answered)"
            );
            self.hashes.set_len(self.stored * HASH_LEN as u64)?;
            self.hashes.sync_all()?;
            self.cache.truncate(self.stored);
            self.uncommitted = 0;
        }
        Ok(())
    }

    /// Makes `cp` durable if it is the checkpoint that the uncommitted stored hashes were
    /// written for: it must extend the newest checkpoint (`prev`), and the stored hashes of
    /// its size must be present and give its root. Used after a crash between the fence
    /// record and the checkpoint record (the fence holds a checkpoint our state lost).
    /// The caller checks origin and signature. Returns whether `cp` was adopted.
    pub fn adopt(&mut self, cp: SignedCheckpoint) -> Result<bool, Error> {
        let size = cp.checkpoint.size;
        if cp.is_rotation() {
            // A rotation fenced before a crash: it adds no stored hash.
            let follows = self.latest.as_ref().is_some_and(|l| {
                l.checkpoint.size == size
                    && l.checkpoint.root == cp.checkpoint.root
                    && cp.checkpoint.prev == Some(l.hash())
            });
            if follows {
                self.commit(cp, 0)?;
            }
            return Ok(follows);
        }
        let needed = merkle::stored_hash_count(size);
        if size <= self.size()
            || needed > self.stored + self.uncommitted
            || cp.checkpoint.prev != self.latest.as_ref().map(|c| c.hash())
        {
            return Ok(false);
        }
        let reader = Reader {
            file: &self.hashes,
            cache: &self.cache,
            stored: needed,
            pending: &[],
        };
        if merkle::tree_root(size, &reader)? != cp.checkpoint.root {
            return Ok(false);
        }
        let written = needed - self.stored;
        self.commit(cp, written)?;
        Ok(true)
    }

    /// The leaf hashes of leaves `start..end` (`end` at most the size), read from the
    /// stored hashes in chunks (one read per [`LEAF_CHUNK`] leaves).
    pub fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<Hash>, Error> {
        if start > end || end > self.size() {
            return Err(Error::State(format!(
                "no leaves {start}..{end} in a log of size {}",
                self.size()
            )));
        }
        let mut out = Vec::with_capacity((end - start) as usize);
        let mut lo = start;
        while lo < end {
            let hi = end.min(lo + LEAF_CHUNK);
            let first = merkle::stored_hash_index(0, lo);
            let last = merkle::stored_hash_index(0, hi - 1);
            let mut buf = vec![0u8; ((last - first + 1) * HASH_LEN as u64) as usize];
            self.hashes
                .read_exact_at(&mut buf, first * HASH_LEN as u64)?;
            for i in lo..hi {
                let at = ((merkle::stored_hash_index(0, i) - first) * HASH_LEN as u64) as usize;
                let mut h = [0u8; HASH_LEN];
                h.copy_from_slice(&buf[at..at + HASH_LEN]);
                out.push(h);
            }
            lo = hi;
        }
        Ok(out)
    }

    /// The first checkpoint whose tree covers leaf `index` (size > `index`): the one that
    /// was answered when the leaf was appended. A binary search in `checkpoints.idx`.
    pub fn checkpoint_covering(&self, index: u64) -> Result<Option<SignedCheckpoint>, Error> {
        if index >= self.size() {
            return Ok(None);
        }
        // The first entry whose size > index; the last one qualifies.
        let (mut lo, mut hi) = (0, self.count - 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.index_entry(mid)?.0 > index {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let (size, offset) = self.index_entry(lo)?;
        match read_record(&self.checkpoints, offset, self.checkpoints_end)? {
            Some((cp, _)) if cp.checkpoint.size == size => Ok(Some(cp)),
            _ => Err(Error::State(format!(
                "{} entry {lo} does not name an intact checkpoint record",
                self.dir.join(INDEX_FILE).display()
            ))),
        }
    }

    fn index_entry(&self, k: u64) -> Result<(u64, u64), Error> {
        read_index_entry(&self.index, k)
    }

    pub fn reader<'a>(&'a self, pending: &'a [Hash]) -> Reader<'a> {
        Reader {
            file: &self.hashes,
            cache: &self.cache,
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
        if self.uncommitted > 0 {
            return Err(Error::State(
                "stored hashes of an unfinished commit are still present".into(),
            ));
        }
        let mut buf = Vec::with_capacity(pending.len() * HASH_LEN);
        for h in pending {
            buf.extend_from_slice(h);
        }
        self.hashes
            .write_all_at(&buf, self.stored * HASH_LEN as u64)?;
        self.hashes.sync_data()?;
        self.cache.extend(self.stored, pending);
        self.uncommitted = pending.len() as u64;
        Ok(())
    }

    /// Undoes [`Self::write_hashes`] after a failed signature.
    pub fn discard_hashes(&mut self) -> Result<(), Error> {
        self.hashes.set_len(self.stored * HASH_LEN as u64)?;
        self.hashes.sync_data()?;
        self.cache.truncate(self.stored);
        self.uncommitted = 0;
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
        // A rotation checkpoint repeats the tree of the newest one; every other one grows it.
        let extends = match (&self.latest, cp.is_rotation()) {
            (None, rotation) => !rotation,
            (Some(l), false) => l.checkpoint.size < cp.checkpoint.size,
            (Some(l), true) => {
                written == 0
                    && l.checkpoint.size == cp.checkpoint.size
                    && l.checkpoint.root == cp.checkpoint.root
                    && cp.checkpoint.prev == Some(l.hash())
            }
        };
        if written > self.uncommitted || !extends {
            return Err(Error::State(format!(
                "refusing to commit a checkpoint of size {} over {} written stored hashes",
                cp.checkpoint.size, self.uncommitted
            )));
        }
        self.checkpoints.write_all(&rec)?;
        self.checkpoints.sync_data()?;
        let start = self.checkpoints_end;
        self.checkpoints_end += rec.len() as u64;
        self.stored += written;
        self.uncommitted -= written;
        let mut entry = [0u8; INDEX_ENTRY as usize];
        entry[..8].copy_from_slice(&cp.checkpoint.size.to_le_bytes());
        entry[8..].copy_from_slice(&start.to_le_bytes());
        self.index.write_all_at(&entry, self.count * INDEX_ENTRY)?;
        self.index.sync_data()?;
        self.count += 1;
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

/// The newest durable stored hashes (up to [`TAIL_HASHES`]), read in one go at open.
fn load_tail(hashes: &File, stored: u64) -> Result<HashCache, Error> {
    let n = stored.min(TAIL_HASHES as u64);
    let start = stored - n;
    let mut buf = vec![0u8; n as usize * HASH_LEN];
    hashes.read_exact_at(&mut buf, start * HASH_LEN as u64)?;
    let tail = buf
        .chunks_exact(HASH_LEN)
        .map(|c| {
            let mut h = [0u8; HASH_LEN];
            h.copy_from_slice(c);
            h
        })
        .collect();
    Ok(HashCache::new(start, tail))
}

fn read_index_entry(index: &File, k: u64) -> Result<(u64, u64), Error> {
    let mut e = [0u8; INDEX_ENTRY as usize];
    index.read_exact_at(&mut e, k * INDEX_ENTRY)?;
    let (size, offset) = e.split_at(8);
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    Ok((word(size), word(offset)))
}

/// Brings `checkpoints.idx` in line with the intact records `0..end` of `checkpoints`
/// (see the module docs); returns the number of entries (= checkpoints).
fn repair_index(
    dir: &Path,
    index: &File,
    log: &File,
    end: u64,
    latest: Option<&SignedCheckpoint>,
) -> Result<u64, Error> {
    let damaged = |why: String| {
        Error::State(format!(
            "{}: {why}; the state directory is damaged: restore it from backup",
            dir.join(INDEX_FILE).display()
        ))
    };
    let len = index.metadata()?.len();
    let mut n = len / INDEX_ENTRY;
    // Where the records not yet indexed start.
    let mut resume = 0;
    let mut dropped = 0;
    while n > 0 {
        let (size, offset) = read_index_entry(index, n - 1)?;
        match read_record(log, offset, end) {
            Ok(Some((cp, rec_end))) if cp.checkpoint.size == size => {
                resume = rec_end;
                break;
            }
            _ => {
                // Written after its record was fsynced: only the newest can be torn.
                dropped += 1;
                if dropped > 1 {
                    return Err(damaged(format!(
                        "entry {} does not name an intact checkpoint record",
                        n - 1
                    )));
                }
                n -= 1;
            }
        }
    }
    let mut added = Vec::new();
    let mut prev_size = match n {
        0 => None,
        _ => Some(read_index_entry(index, n - 1)?.0),
    };
    let mut offset = resume;
    while offset < end {
        let Some((cp, rec_end)) = read_record(log, offset, end)? else {
            return Err(damaged(format!("no intact record at offset {offset}")));
        };
        // Equal only for a rotation checkpoint, which repeats the previous tree.
        if prev_size.is_some_and(|p| {
            p > cp.checkpoint.size || (p == cp.checkpoint.size && !cp.is_rotation())
        }) {
            return Err(damaged(format!("sizes do not increase at offset {offset}")));
        }
        prev_size = Some(cp.checkpoint.size);
        added.extend_from_slice(&cp.checkpoint.size.to_le_bytes());
        added.extend_from_slice(&offset.to_le_bytes());
        offset = rec_end;
    }
    let entries = n + (added.len() as u64) / INDEX_ENTRY;
    if !added.is_empty() || len != entries * INDEX_ENTRY {
        if n == 0 && added.len() as u64 > INDEX_ENTRY {
            tracing::info!(
                entries,
                "building checkpoints.idx (once, from the whole checkpoint log)"
            );
        } else {
            tracing::warn!(
                cut = len - n * INDEX_ENTRY,
                added = added.len() as u64 / INDEX_ENTRY,
                "repairing checkpoints.idx after a crash"
            );
        }
        index.set_len(n * INDEX_ENTRY)?;
        index.write_all_at(&added, n * INDEX_ENTRY)?;
        index.sync_all()?;
    }
    if prev_size != latest.map(|c| c.checkpoint.size) {
        return Err(damaged(
            "its newest entry is not the newest checkpoint".into(),
        ));
    }
    Ok(entries)
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
                new_key: None,
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

    /// Proofs and roots through the in-memory cache equal those of a memory log, for a log
    /// well past the cache's tail, after a discarded commit and after a reopen.
    #[test]
    fn proofs_through_the_cache_match_a_memory_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        let mut mem = merkle::MemoryLog::new();
        let check = |state: &State, mem: &merkle::MemoryLog| {
            let size = state.size();
            let r = state.reader(&[]);
            assert_eq!(merkle::tree_root(size, &r).unwrap(), mem.root());
            for i in [0, 1, size / 3, size / 2, size - 40_000, size - 2, size - 1] {
                assert_eq!(
                    merkle::inclusion_proof(i, size, &r).unwrap(),
                    mem.inclusion_proof(i, size).unwrap(),
                    "leaf {i} of {size}"
                );
            }
            // Once more: the second round reads old hashes from the memo.
            let i = size - 1;
            assert_eq!(
                merkle::inclusion_proof(i, size, &r).unwrap(),
                mem.inclusion_proof(i, size).unwrap()
            );
        };
        for n in [9_000, 30_001, 25_000, 17, 20_000] {
            let first = state.size();
            commit_leaves(&mut state, n);
            for i in first..first + n {
                mem.append(merkle::leaf_hash(&i.to_le_bytes()));
            }
        }
        assert!(merkle::stored_hash_count(state.size()) > 2 * TAIL_HASHES as u64);
        check(&state, &mem);
        // Hashes written for a commit that failed are cut from the cache too.
        let junk: Vec<Hash> = (0..50u64)
            .map(|i| merkle::leaf_hash(&[i as u8, 7]))
            .collect();
        let pending = state.stage(&junk).unwrap();
        state.write_hashes(&pending).unwrap();
        state.discard_hashes().unwrap();
        let first = state.size();
        commit_leaves(&mut state, 3);
        for i in first..first + 3 {
            mem.append(merkle::leaf_hash(&i.to_le_bytes()));
        }
        check(&state, &mem);
        drop(state);
        let state = State::open(dir.path()).unwrap();
        check(&state, &mem);
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

    #[test]
    fn the_index_finds_the_checkpoint_covering_a_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        assert_eq!(state.checkpoint_covering(0).unwrap(), None);
        let cps: Vec<_> = [3, 1, 4, 1, 5]
            .iter()
            .map(|n| commit_leaves(&mut state, *n))
            .collect();
        assert_eq!(state.checkpoint_count(), 5);
        // Sizes 3, 4, 8, 9, 14.
        for (leaf, want) in [
            (0, 0),
            (2, 0),
            (3, 1),
            (4, 2),
            (7, 2),
            (8, 3),
            (9, 4),
            (13, 4),
        ] {
            assert_eq!(
                state.checkpoint_covering(leaf).unwrap().as_ref(),
                Some(&cps[want]),
                "leaf {leaf}"
            );
        }
        assert_eq!(state.checkpoint_covering(14).unwrap(), None);
        let leaves = state.leaf_hashes(2, 9).unwrap();
        let want: Vec<Hash> = (2u64..9)
            .map(|i| merkle::leaf_hash(&i.to_le_bytes()))
            .collect();
        assert_eq!(leaves, want);
        assert!(state.leaf_hashes(10, 15).is_err());
    }

    #[test]
    fn a_torn_or_missing_index_tail_is_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        commit_leaves(&mut state, 2);
        let idx_one = std::fs::read(dir.path().join(INDEX_FILE)).unwrap();
        commit_leaves(&mut state, 2);
        let cp = commit_leaves(&mut state, 2);
        drop(state);
        let idx = std::fs::read(dir.path().join(INDEX_FILE)).unwrap();
        assert_eq!(idx.len(), 3 * INDEX_ENTRY as usize);

        // A crash after the record, before (or in the middle of) the index entries.
        for torn in [
            idx_one.clone(),
            [&idx_one[..], &[1, 2, 3]].concat(),
            [&idx[..32], &[0u8; 16][..]].concat(),
            Vec::new(),
        ] {
            std::fs::write(dir.path().join(INDEX_FILE), &torn).unwrap();
            let state = State::open(dir.path()).unwrap();
            assert_eq!(state.checkpoint_count(), 3);
            assert_eq!(state.latest(), Some(&cp));
            assert_eq!(state.checkpoint_covering(5).unwrap(), Some(cp.clone()));
            drop(state);
            assert_eq!(std::fs::read(dir.path().join(INDEX_FILE)).unwrap(), idx);
        }

        // Garbage in more than the newest entry is damage, not a crash.
        let mut bad = idx.clone();
        bad[8..16].copy_from_slice(&[9; 8]);
        bad[24..32].copy_from_slice(&[9; 8]);
        bad[40..48].copy_from_slice(&[9; 8]);
        std::fs::write(dir.path().join(INDEX_FILE), &bad).unwrap();
        assert!(matches!(State::open(dir.path()), Err(Error::State(_))));
    }

    #[test]
    fn a_lost_checkpoint_can_be_adopted_from_the_uncut_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        commit_leaves(&mut state, 3);
        drop(state);
        // The same log, one commit further, in another directory: its checkpoint stands
        // for the one "our" state lost in a crash after writing the stored hashes.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), other.path().join(entry.file_name())).unwrap();
        }
        let mut ahead = State::open(other.path()).unwrap();
        let lost = commit_leaves(&mut ahead, 4);

        let mut state = State::open(dir.path()).unwrap();
        let leaves: Vec<Hash> = (3u64..7)
            .map(|i| merkle::leaf_hash(&i.to_le_bytes()))
            .collect();
        let pending = state.stage(&leaves).unwrap();
        state.write_hashes(&pending).unwrap();
        drop(state);

        let mut state = State::open_uncut(dir.path()).unwrap();
        assert_eq!(state.uncommitted(), pending.len() as u64);
        assert!(state.write_hashes(&pending).is_err());
        // Not a checkpoint of these hashes: refused.
        let mut wrong = lost.clone();
        wrong.checkpoint.root = [0; 32];
        assert!(!state.adopt(wrong).unwrap());
        assert!(state.adopt(lost.clone()).unwrap());
        assert_eq!(state.latest(), Some(&lost));
        assert_eq!(state.uncommitted(), 0);
        drop(state);
        let state = State::open(dir.path()).unwrap();
        assert_eq!(state.latest(), Some(&lost));
        assert_eq!(state.checkpoint_count(), 2);
    }
}
