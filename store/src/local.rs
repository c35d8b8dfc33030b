//! A directory as a write-once object store.
//!
//! A write goes to a temporary file in `<root>/.tmp`, is fsynced and made read-only, then
//! hard-linked to its key: `link(2)` fails if the target exists, which makes the create-new
//! check and the publication one atomic step (a crash leaves either no object or the whole
//! object, never a partial one). The key's directory is fsynced after the link.
//!
//! That is all it enforces: no time-based retention, nothing against the files' owner or
//! root (who can make a file writable, replace or delete it). So [`ObjectStore::retention`]
//! answers [`RetentionMode::WriteOnce`] for a file that is still read-only, and
//! [`RetentionMode::None`] for one that was made writable, never an Object Lock mode.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read as _, Write as _};
use std::path::{Path, PathBuf};

use crate::{
    BoxFuture, ObjectInfo, ObjectRetention, ObjectStore, PutOutcome, RetentionMode, StoreError,
    validate_key,
};

const TMP_DIR: &str = ".tmp";

/// A local directory store.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
}

impl LocalDirStore {
    /// Opens (creating if needed) the store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        fs::create_dir_all(root.join(TMP_DIR)).map_err(|e| io_err(&root, e))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn put_blocking(&self, key: &str, bytes: &[u8]) -> Result<PutOutcome, StoreError> {
        let path = self.path_of(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        create_dirs_synced(&self.root, &dir)?;
        let tmp = self
            .root
            .join(TMP_DIR)
            .join(format!("{}.tmp", hex::encode(rand::random::<[u8; 16]>())));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| io_err(&tmp, e))?;
            f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
            let mut perms = f.metadata().map_err(|e| io_err(&tmp, e))?.permissions();
            perms.set_readonly(true);
            f.set_permissions(perms).map_err(|e| io_err(&tmp, e))?;
            f.sync_all().map_err(|e| io_err(&tmp, e))?;
            match fs::hard_link(&tmp, &path) {
                Ok(()) => {
                    sync_dir(&dir)?;
                    Ok(PutOutcome::Created)
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let existing = fs::read(&path).map_err(|e| io_err(&path, e))?;
                    if existing == bytes {
                        Ok(PutOutcome::AlreadyStored)
                    } else {
                        Err(StoreError::Conflict(key.to_string()))
                    }
                }
                Err(e) => Err(io_err(&path, e)),
            }
        })();
        let _ = fs::remove_file(&tmp);
        result
    }

    /// Every entry under `prefix`, objects and irregular entries alike (see
    /// [`ObjectInfo::irregular`]): symbolic links are listed, never followed; a directory
    /// whose name is not UTF-8 is listed, not entered (no key can name what is inside).
    fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_err(&dir, e))?;
                let path = entry.path();
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let (key, utf8) = key_of_path(rel);
                if key == TMP_DIR {
                    continue;
                }
                // entry.file_type() does not follow symbolic links.
                let ft = entry.file_type().map_err(|e| io_err(&path, e))?;
                if ft.is_dir() && utf8 {
                    // Only descend where the prefix can still match.
                    let as_dir = format!("{key}/");
                    if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                        stack.push(path);
                    }
                    continue;
                }
                if !key.starts_with(prefix) {
                    continue;
                }
                use std::os::unix::fs::MetadataExt as _;
                let meta = entry.metadata().map_err(|e| io_err(&path, e))?;
                let irregular = if !utf8 {
                    Some("a name that is not UTF-8".to_string())
                } else if ft.is_symlink() {
                    let target = fs::read_link(&path)
                        .map(|t| t.display().to_string())
                        .unwrap_or_default();
                    Some(format!("a symbolic link (to {target:?}), not followed"))
                } else if !ft.is_file() {
                    Some("not a regular file (a device, a socket or a FIFO)".to_string())
                } else {
                    None
                };
                let mut info = ObjectInfo::object(
                    key,
                    meta.len(),
                    Some(format!(
                        "{}:{}.{:09}",
                        meta.ino(),
                        meta.ctime(),
                        meta.ctime_nsec()
                    )),
                );
                if irregular.is_some() {
                    info.irregular = irregular;
                }
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// Refuses a symbolic link in place of an object: the listing reports one as irregular, and
/// reading through it would read something the key does not name.
fn refuse_symlink(path: &Path, key: &str) -> Result<(), StoreError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(StoreError::Io(format!(
            "{}: a symbolic link, not an object",
            path.display()
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(StoreError::NotFound(key.into())),
        Err(e) => Err(io_err(path, e)),
    }
}

/// The key of a path relative to the root, `/` between parts, and whether every part is
/// UTF-8; bytes that are not are escaped as `\xNN` (so the key shows, and never names, them).
fn key_of_path(rel: &Path) -> (String, bool) {
    use std::os::unix::ffi::OsStrExt as _;
    let mut key = String::new();
    let mut utf8 = true;
    for (i, part) in rel.iter().enumerate() {
        if i > 0 {
            key.push('/');
        }
        for chunk in part.as_bytes().utf8_chunks() {
            key.push_str(chunk.valid());
            for b in chunk.invalid() {
                utf8 = false;
                key.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    (key, utf8)
}

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// Creates `dir` (under `root`) and fsyncs each parent whose entry list changed.
fn create_dirs_synced(root: &Path, dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.is_dir() && cur != root {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    for d in missing.iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(d, e)),
        }
        if let Some(parent) = d.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> BoxFuture<'static, Result<T, StoreError>> {
    Box::pin(async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Io(format!("blocking task failed: {e}")))?
    })
}

impl ObjectStore for LocalDirStore {
    fn put_new<'a>(
        &'a self,
        key: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        self.put_new_owned(key, bytes::Bytes::copy_from_slice(bytes))
    }

    fn put_new_owned<'a>(
        &'a self,
        key: &'a str,
        bytes: bytes::Bytes,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        let this = self.clone();
        let key = key.to_string();
        blocking(move || this.put_blocking(&key, &bytes))
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        let path = self.path_of(key);
        let key = key.to_string();
        blocking(move || {
            let path = path?;
            refuse_symlink(&path, &key)?;
            fs::read(&path).map_err(|e| match e.kind() {
                ErrorKind::NotFound => StoreError::NotFound(key),
                _ => io_err(&path, e),
            })
        })
    }

    fn get_prefix<'a>(
        &'a self,
        key: &'a str,
        max_len: usize,
    ) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        let path = self.path_of(key);
        let key = key.to_string();
        blocking(move || {
            let path = path?;
            refuse_symlink(&path, &key)?;
            let f = File::open(&path).map_err(|e| match e.kind() {
                ErrorKind::NotFound => StoreError::NotFound(key),
                _ => io_err(&path, e),
            })?;
            let mut buf = Vec::new();
            f.take(max_len as u64)
                .read_to_end(&mut buf)
                .map_err(|e| io_err(&path, e))?;
            Ok(buf)
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, StoreError>> {
        let this = self.clone();
        let prefix = prefix.to_string();
        blocking(move || this.list_blocking(&prefix))
    }

    fn retention<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ObjectRetention, StoreError>> {
        let path = self.path_of(key);
        let key = key.to_string();
        blocking(move || {
            let path = path?;
            // symlink_metadata: a link put in place of the object is not the object.
            let meta = fs::symlink_metadata(&path).map_err(|e| match e.kind() {
                ErrorKind::NotFound => StoreError::NotFound(key.clone()),
                _ => io_err(&path, e),
            })?;
            if !meta.is_file() {
                return Err(StoreError::Io(format!(
                    "{}: not a regular file",
                    path.display()
                )));
            }
            use std::os::unix::fs::PermissionsExt as _;
            let read_only = meta.permissions().mode() & 0o222 == 0;
            Ok(ObjectRetention {
                mode: if read_only {
                    RetentionMode::WriteOnce
                } else {
                    RetentionMode::None
                },
                retain_until: None,
                version_id: None,
            })
        })
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[tokio::test]
    async fn create_new_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        let key = "p/segments/2026/11/27/05/a.jsonl";
        assert_eq!(
            store.put_new(key, b"one").await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            store.put_new(key, b"one").await.unwrap(),
            PutOutcome::AlreadyStored
        );
        assert!(matches!(
            store.put_new(key, b"two").await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.get(key).await.unwrap(), b"one");
        assert_eq!(store.get_prefix(key, 2).await.unwrap(), b"on");
        let mode = fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o222, 0, "stored files are read-only");
        store.put_new("p/other", b"x").await.unwrap();
        store.put_new("q/x", b"x").await.unwrap();
        let keys: Vec<_> = store
            .list("p/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["p/other".to_string(), key.to_string()]);
        assert!(
            fs::read_dir(dir.path().join(TMP_DIR))
                .unwrap()
                .next()
                .is_none()
        );
        assert!(matches!(
            store.get("p/missing").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(store.put_new("../escape", b"x").await.is_err());
    }

    /// Entries that are not objects are listed, marked, never skipped nor followed: a link
    /// to a file, a linked directory, a socket, names that are not UTF-8 (a directory of
    /// them is not entered) and a file name the store never writes.
    #[tokio::test]
    async fn irregular_entries_are_listed() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        store.put_new("p/segments/a.jsonl", b"one").await.unwrap();
        let seg = dir.path().join("p/segments");
        let elsewhere = tempfile::tempdir().unwrap();
        fs::write(elsewhere.path().join("forged.jsonl"), b"forged").unwrap();
        fs::create_dir(elsewhere.path().join("d")).unwrap();
        fs::write(elsewhere.path().join("d/inside.jsonl"), b"x").unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("forged.jsonl"), seg.join("l.jsonl"))
            .unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("d"), seg.join("linked")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(seg.join("s.sock")).unwrap();
        fs::write(seg.join(OsStr::from_bytes(b"bad\xff.jsonl")), b"x").unwrap();
        let bad_dir = seg.join(OsStr::from_bytes(b"d\xfe"));
        fs::create_dir(&bad_dir).unwrap();
        fs::write(bad_dir.join("hidden.jsonl"), b"x").unwrap();
        fs::write(seg.join("a b.jsonl"), b"x").unwrap();

        let listed = store.list("p/").await.unwrap();
        let got: Vec<(&str, bool)> = listed
            .iter()
            .map(|o| (o.key.as_str(), o.irregular.is_some()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("p/segments/a b.jsonl", true),
                ("p/segments/a.jsonl", false),
                ("p/segments/bad\\xff.jsonl", true),
                ("p/segments/d\\xfe", true),
                ("p/segments/l.jsonl", true),
                ("p/segments/linked", true),
                ("p/segments/s.sock", true),
            ]
        );
        let why = |k: &str| {
            listed
                .iter()
                .find(|o| o.key == k)
                .unwrap()
                .irregular
                .clone()
        };
        assert!(why("p/segments/l.jsonl").unwrap().contains("symbolic link"));
        assert!(
            why("p/segments/s.sock")
                .unwrap()
                .contains("not a regular file")
        );
        assert!(why("p/segments/d\\xfe").unwrap().contains("UTF-8"));
        // Reading through a link is refused even under a valid key.
        assert!(store.get("p/segments/l.jsonl").await.is_err());
        assert!(store.get_prefix("p/segments/l.jsonl", 3).await.is_err());
    }

    /// The directory reports what it enforces: read-only, no retention; writable once
    /// someone changed the file's mode. Never an Object Lock mode.
    #[tokio::test]
    async fn retention_is_what_the_file_is() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        let key = "p/segments/a.jsonl";
        store.put_new(key, b"one").await.unwrap();
        let r = store.retention(key).await.unwrap();
        assert_eq!(
            r,
            ObjectRetention {
                mode: RetentionMode::WriteOnce,
                retain_until: None,
                version_id: None,
            }
        );
        let path = dir.path().join(key);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            store.retention(key).await.unwrap().mode,
            RetentionMode::None
        );
        assert!(matches!(
            store.retention("p/missing").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.retention("../escape").await,
            Err(StoreError::InvalidKey(_))
        ));
        // Through the trait object, as the verifier asks.
        let dyn_store: &dyn ObjectStore = &store;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
        assert_eq!(
            dyn_store.retention(key).await.unwrap().mode,
            RetentionMode::WriteOnce
        );
    }
}
