//! A directory as a write-once object store.
//!
//! A write goes to a temporary file in `<root>/.tmp`, is fsynced and made read-only, then
//! hard-linked to its key: `link(2)` fails if the target exists, which makes the create-new
//! check and the publication one atomic step (a crash leaves either no object or the whole
//! object, never a partial one). The key's directory is fsynced after the link.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read as _, Write as _};
use std::path::{Path, PathBuf};

use crate::{BoxFuture, ObjectInfo, ObjectStore, PutOutcome, StoreError, validate_key};

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
                let ft = entry.file_type().map_err(|e| io_err(&path, e))?;
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let Some(rel) = rel.to_str() else { continue };
                if rel == TMP_DIR {
                    continue;
                }
                if ft.is_dir() {
                    // Only descend where the prefix can still match.
                    let as_dir = format!("{rel}/");
                    if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                        stack.push(path);
                    }
                } else if ft.is_file() && rel.starts_with(prefix) {
                    use std::os::unix::fs::MetadataExt as _;
                    let meta = entry.metadata().map_err(|e| io_err(&path, e))?;
                    out.push(ObjectInfo {
                        key: rel.to_string(),
                        size: meta.len(),
                        fingerprint: Some(format!(
                            "{}:{}.{:09}",
                            meta.ino(),
                            meta.ctime(),
                            meta.ctime_nsec()
                        )),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
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
        let this = self.clone();
        let (key, bytes) = (key.to_string(), bytes.to_vec());
        blocking(move || this.put_blocking(&key, &bytes))
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        let path = self.path_of(key);
        let key = key.to_string();
        blocking(move || {
            let path = path?;
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
}
