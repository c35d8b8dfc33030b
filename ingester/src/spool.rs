//! The local durable spool: every acknowledged batch that is not yet sealed, as the exact
//! bytes of its pending batch object.
//!
//! A record is `<dir>/<received_ms, 20 digits>-<sha256 hex>.jsonl`; its name carries the
//! SHA-256 of its content, so a damaged record is found by hashing it. A record is written
//! to `.tmp/` first, fsynced, renamed into place and the directory fsynced, all before the
//! webhook answers 200: a crash leaves a whole record or none (a stray `.tmp/` file is
//! removed at start). It is removed once its batch is sealed. A record whose content does
//! not match its name, or does not parse, is moved to `damaged/`, counted and logged, and
//! never sealed: an operator decides what it was.
//!
//! The spool is the sealing queue's memory across restarts (the deployment keeps it on a
//! volume of its own) and the outage buffer when the object store is unreachable.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sealtrail_core::merkle::Hash;
use sealtrail_core::pending;
use sha2::{Digest as _, Sha256};

const TMP_DIR: &str = ".tmp";
const DAMAGED_DIR: &str = "damaged";

/// Why a record was not written.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool full: {used} of {max} bytes used, {need} more needed")]
    Full { used: u64, max: u64, need: u64 },
    #[error("spool I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A record found at start (its events are not kept: a spool of gigabytes is read back
/// batch by batch when each is sealed, not held in memory at once).
#[derive(Debug)]
pub struct Recovered {
    pub name: String,
    /// Its pending object key without the log's prefix.
    pub key: String,
    pub received_ms: u64,
    pub sha256: Hash,
    pub count: u64,
    pub len: u64,
}

/// The spool directory and its accounting.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    used: AtomicU64,
    records: AtomicU64,
    /// The length each counted record was counted with (what `remove` and `quarantine`
    /// give back, whatever the file holds by then).
    counted: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// The record name of a pending batch.
pub fn record_name(received_ms: u64, sha256: &Hash) -> String {
    format!("{received_ms:020}-{}.jsonl", hex::encode(sha256))
}

/// The SHA-256 a record name carries.
fn name_digest(name: &str) -> Option<Hash> {
    let (ms, rest) = name.split_once('-')?;
    let hex_digest = rest.strip_suffix(".jsonl")?;
    if ms.len() != 20
        || !ms.bytes().all(|b| b.is_ascii_digit())
        || hex_digest.len() != 64
        || hex_digest.bytes().any(|b| b.is_ascii_uppercase())
    {
        return None;
    }
    <Hash>::try_from(hex::decode(hex_digest).ok()?).ok()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Spool {
    /// Opens (creating) the spool; returns the records to seal, oldest first, after moving
    /// damaged ones aside (their names are returned too, for the log and the metric).
    pub fn open(
        dir: &Path,
        max_bytes: u64,
    ) -> std::io::Result<(Self, Vec<Recovered>, Vec<String>)> {
        fs::create_dir_all(dir.join(TMP_DIR))?;
        fs::create_dir_all(dir.join(DAMAGED_DIR))?;
        // Half-written records never reached their name: nothing was acknowledged for them.
        for entry in fs::read_dir(dir.join(TMP_DIR))? {
            fs::remove_file(entry?.path())?;
        }
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                continue;
            }
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        let spool = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            used: AtomicU64::new(0),
            records: AtomicU64::new(0),
            counted: Default::default(),
        };
        let (mut found, mut damaged) = (Vec::new(), Vec::new());
        for name in names {
            let bytes = fs::read(dir.join(&name))?;
            let good = name_digest(&name)
                .filter(|d| *d == <Hash>::from(Sha256::digest(&bytes)))
                .and_then(|_| pending::parse(&bytes).ok());
            match good {
                Some(batch) => {
                    spool.count(&name, bytes.len() as u64);
                    found.push(Recovered {
                        name,
                        key: pending::object_key("", &batch.events, batch.received_ms),
                        received_ms: batch.received_ms,
                        sha256: batch.sha256,
                        count: batch.events.len() as u64,
                        len: bytes.len() as u64,
                    });
                }
                None => {
                    spool.quarantine(&name)?;
                    damaged.push(name);
                }
            }
        }
        Ok((spool, found, damaged))
    }

    /// Writes a record durably (file and directory fsynced), or nothing.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), SpoolError> {
        let need = bytes.len() as u64;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + need <= self.max_bytes).then_some(used + need)
            })
            .map_err(|used| SpoolError::Full {
                used,
                max: self.max_bytes,
                need,
            })?;
        let tmp = self.dir.join(TMP_DIR).join(name);
        let written = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            // A link never replaces: the same name twice (the same bytes in the same
            // millisecond) is one record, counted once.
            let linked = fs::hard_link(&tmp, self.dir.join(name));
            fs::remove_file(&tmp)?;
            match linked {
                Ok(()) => sync_dir(&self.dir).map(|()| true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        })();
        self.used.fetch_sub(need, Ordering::AcqRel);
        match written {
            Ok(true) => {
                self.count(name, need);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e.into())
            }
        }
    }

    fn lens(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u64>> {
        self.counted.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, name: &str, len: u64) {
        self.used.fetch_add(len, Ordering::AcqRel);
        self.records.fetch_add(1, Ordering::Relaxed);
        self.lens().insert(name.to_string(), len);
    }

    fn uncount(&self, name: &str) {
        if let Some(len) = self.lens().remove(name) {
            self.used.fetch_sub(len, Ordering::AcqRel);
            self.records.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Reads a record back, checking it against the SHA-256 its name carries; `None` when
    /// it does not match or is gone.
    pub fn read(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        let bytes = match fs::read(self.dir.join(name)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let ok = name_digest(name) == Some(Sha256::digest(&bytes).into());
        Ok(ok.then_some(bytes))
    }

    /// Removes the record of a sealed batch (one already gone is removed).
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        match fs::remove_file(self.dir.join(name)) {
            Ok(()) => sync_dir(&self.dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.uncount(name);
        Ok(())
    }

    /// Moves a damaged record aside, out of the sealing path.
    pub fn quarantine(&self, name: &str) -> std::io::Result<()> {
        match fs::rename(self.dir.join(name), self.dir.join(DAMAGED_DIR).join(name)) {
            Ok(()) => sync_dir(&self.dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.uncount(name);
        Ok(())
    }

    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Whether a record of `len` bytes would fit now.
    pub fn has_room(&self, len: u64) -> bool {
        self.used_bytes() + len <= self.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealtrail_core::event::parse_event_list;

    fn batch() -> (Vec<u8>, Hash) {
        let body = br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"auditID":"a","stage":"ResponseComplete"}]}"#;
        pending::encode(7, &parse_event_list(body).unwrap().events).unwrap()
    }

    #[test]
    fn write_recover_remove_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, sha) = batch();
        let name = record_name(7, &sha);
        {
            let (spool, found, damaged) = Spool::open(dir.path(), 1 << 20).unwrap();
            assert!(found.is_empty() && damaged.is_empty());
            spool.write(&name, &bytes).unwrap();
            assert_eq!(
                (spool.records(), spool.used_bytes()),
                (1, bytes.len() as u64)
            );
            assert!(matches!(
                spool.write("x", &vec![0; 1 << 20]),
                Err(SpoolError::Full { .. })
            ));
            fs::write(dir.path().join(TMP_DIR).join("half"), b"{").unwrap();
        }
        let (spool, found, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].sha256, sha);
        assert!(
            fs::read_dir(dir.path().join(TMP_DIR))
                .unwrap()
                .next()
                .is_none()
        );
        spool.remove(&name).unwrap();
        assert_eq!((spool.records(), spool.used_bytes()), (0, 0));

        // One flipped byte: moved aside at the next start, not returned.
        spool.write(&name, &bytes).unwrap();
        let mut flipped = bytes.clone();
        flipped[bytes.len() - 3] ^= 1;
        let path = dir.path().join(&name);
        fs::write(&path, &flipped).unwrap();
        assert_eq!(spool.read(&name).unwrap(), None);
        let (spool, found, damaged) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(found.is_empty());
        assert_eq!(damaged, vec![name.clone()]);
        assert!(dir.path().join(DAMAGED_DIR).join(&name).exists());
        assert_eq!(spool.records(), 0);
    }
}
