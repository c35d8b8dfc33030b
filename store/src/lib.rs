//! Write-once object storage for Sealtrail segments.
//!
//! [`ObjectStore`] is the small trait the ingester writes through and the verifier reads
//! through. Its contract is *create-new*: an object is written whole or not at all, and an
//! existing key is never replaced (a retry that brings the identical bytes is success).
//!
//! Backends here: [`local::LocalDirStore`], a directory (the embedded default for
//! development and the demo: create-new via hard link, fsync of file and directory,
//! read-only files). It is write-once against the software, not against the machine's
//! root user: production uses S3 Object Lock.
//!
//! Every backend also says how it protects a stored object ([`ObjectStore::retention`]):
//! S3 Object Lock's mode and retain-until date, or, for the directory, only that the file
//! is read-only. The verifier checks that answer against its policy.
//!
//! [`args`] declares the command-line flags that select and open a store, once for every
//! binary.
//!
//! What it does not: no knowledge of the segment format, no retries (callers decide).

#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

pub mod args;
pub mod local;
pub mod s3;

pub use local::LocalDirStore;

/// A boxed future, so that stores can be used as `dyn ObjectStore`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Longest object key accepted.
pub const MAX_KEY_LEN: usize = 1024;

/// What a create-new write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object did not exist and now does.
    Created,
    /// The object already existed with exactly these bytes (a retried write).
    AlreadyStored,
}

/// An object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Changes whenever the object's content may have changed: the S3 ETag; for a local
    /// file its inode and change time (ctime, which no user call can set back). A verifier
    /// that remembers it re-reads an object whose fingerprint moved, even at the same size.
    pub fingerprint: Option<String>,
    /// Why this entry is listed but is not an object the store can read: a symbolic link,
    /// a special file, a name that is not UTF-8 (escaped in `key` as `\xNN`), or a key
    /// [`validate_key`] refuses. Listed, never skipped, so that a reader of the store (the
    /// verifier) can report what other tools (a shell glob, DuckDB) might still read.
    /// `None` for an object.
    pub irregular: Option<String>,
}

impl ObjectInfo {
    /// An object with a readable key.
    pub fn object(key: String, size: u64, fingerprint: Option<String>) -> Self {
        // An empty "folder" placeholder (what the S3 console's Create folder writes) is an
        // object with a key no store writes but nothing to read: not irregular.
        let placeholder = size == 0
            && key
                .strip_suffix('/')
                .is_some_and(|k| validate_key(k).is_ok());
        let irregular = (!placeholder && validate_key(&key).is_err())
            .then(|| "a key the store never writes (parts of [A-Za-z0-9._-], no empty part, at most 1,024 bytes)".to_string());
        Self {
            key,
            size,
            fingerprint,
            irregular,
        }
    }
}

/// Storage errors. `Unavailable` is transient (callers answer 503 and let the client
/// retry); `Conflict` means the key holds different bytes, which must never be papered over.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("object {0} already exists with different content")]
    Conflict(String),
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage I/O error: {0}")]
    Io(String),
    /// The store as given cannot be used (flags that contradict each other, a missing
    /// directory): found before any request.
    #[error("store configuration: {0}")]
    Config(String),
}

/// How a store protects one object against replacement and deletion, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RetentionMode {
    /// Nothing keeps the object: it can be replaced or deleted.
    None,
    /// Write-once against this software only (a read-only file reached by create-new),
    /// with no time-based retention: the storage's owner can still delete or replace it.
    WriteOnce,
    /// S3 Object Lock GOVERNANCE: a principal with `s3:BypassGovernanceRetention` can
    /// delete the version or shorten its retention.
    Governance,
    /// S3 Object Lock COMPLIANCE: nobody, root included, can delete the version or shorten
    /// its retention before it runs out.
    Compliance,
}

impl RetentionMode {
    /// `NONE`, `WRITE_ONCE`, `GOVERNANCE` or `COMPLIANCE` (S3's spelling for the last two).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::WriteOnce => "WRITE_ONCE",
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }
}

impl std::fmt::Display for RetentionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a store enforces for one object, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRetention {
    pub mode: RetentionMode,
    /// Until when the object may not be deleted; `None` when nothing is time-bound.
    pub retain_until: Option<SystemTime>,
    /// The version the answer is about, for stores that keep versions (S3).
    pub version_id: Option<String>,
}

/// Create-new object storage.
pub trait ObjectStore: Send + Sync + 'static {
    /// Writes `bytes` under `key` unless the key exists. Durable when it returns `Ok`.
    fn put_new<'a>(
        &'a self,
        key: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>>;

    /// [`Self::put_new`] of bytes the caller gives away, so that a backend that must own
    /// them (a blocking task, an HTTP body) need not copy megabytes per object.
    fn put_new_owned<'a>(
        &'a self,
        key: &'a str,
        bytes: bytes::Bytes,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        Box::pin(async move { self.put_new(key, &bytes).await })
    }

    /// Reads a whole object.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>>;

    /// Reads at most the first `max_len` bytes of an object.
    fn get_prefix<'a>(
        &'a self,
        key: &'a str,
        max_len: usize,
    ) -> BoxFuture<'a, Result<Vec<u8>, StoreError>>;

    /// Every object whose key starts with `prefix`, sorted by key.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, StoreError>>;

    /// How the store protects the object under `key` (its current version), from what
    /// the store itself enforces, never from what it was configured to do.
    ///
    /// The default answers with an error: a store that cannot tell must not be taken for
    /// one that enforces nothing or everything. (A default at all, so that wrappers in
    /// tests need not implement it.)
    fn retention<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ObjectRetention, StoreError>> {
        Box::pin(async move {
            Err(StoreError::Io(format!(
                "{}: this store does not report the retention of {key}",
                self.describe()
            )))
        })
    }

    /// Where this store is, for logs and reports.
    fn describe(&self) -> String;
}

/// Checks a key: relative, `/`-separated, each part non-empty of `[A-Za-z0-9._-]`, no
/// `.`/`..` parts. Both backends use the same rule so that keys mean the same everywhere.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        validate_key("audit/segments/2026/01/01/00/1-2.jsonl").unwrap();
        for bad in ["", "/abs", "a//b", "a/../b", "a/./b", "a b", "a/b/", "ü"] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
    }
}

/// Where a log is stored, as given on a command line: a local directory, or
/// `s3://bucket[/prefix/]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Dir(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Location {
    /// Parses `s3://bucket[/prefix]` (the prefix gets a trailing `/`) or a directory path.
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        let Some(rest) = s.strip_prefix("s3://") else {
            return Ok(Self::Dir(s.into()));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        if bucket.is_empty() {
            return Err(StoreError::InvalidKey(format!("no bucket in {s:?}")));
        }
        if prefix.is_empty() {
            return Ok(Self::S3 {
                bucket: bucket.into(),
                prefix: String::new(),
            });
        }
        validate_key(prefix)?;
        Ok(Self::S3 {
            bucket: bucket.into(),
            prefix: format!("{prefix}/"),
        })
    }
}

/// What a command line says about an S3 store besides its `s3://` location.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub region: Option<String>,
    pub lock_mode: s3::LockMode,
    /// Each object written is locked until now + `retention`.
    pub retention: std::time::Duration,
}

/// A store opened from a [`Location`]: the store, its key prefix (empty for a directory),
/// and the S3 store itself when it is one (for Object Lock checks).
pub struct OpenedStore {
    pub store: std::sync::Arc<dyn ObjectStore>,
    pub prefix: String,
    pub s3: Option<std::sync::Arc<s3::S3Store>>,
}

impl Location {
    /// Opens the store: a [`LocalDirStore`], or an [`s3::S3Store`] configured by `settings`
    /// (its Object Lock is not checked here: writers call
    /// [`s3::S3Store::check_object_lock`]).
    pub async fn open(self, settings: S3Settings) -> Result<OpenedStore, StoreError> {
        Ok(match self {
            Self::Dir(dir) => OpenedStore {
                store: std::sync::Arc::new(LocalDirStore::open(dir)?),
                prefix: String::new(),
                s3: None,
            },
            Self::S3 { bucket, prefix } => {
                let config = s3::S3Config {
                    endpoint: settings.endpoint,
                    force_path_style: settings.force_path_style,
                    region: settings.region,
                    lock_mode: settings.lock_mode,
                    ..s3::S3Config::new(bucket, settings.retention)
                };
                let store = std::sync::Arc::new(s3::S3Store::connect(config).await?);
                OpenedStore {
                    store: store.clone(),
                    prefix,
                    s3: Some(store),
                }
            }
        })
    }
}

#[cfg(test)]
mod location_tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            Location::parse("/tmp/x").unwrap(),
            Location::Dir("/tmp/x".into())
        );
        assert_eq!(
            Location::parse("s3://b").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            Location::parse("s3://b/prod/eu-1/").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "prod/eu-1/".into()
            }
        );
        assert!(Location::parse("s3:///x").is_err());
        assert!(Location::parse("s3://b/../x").is_err());
    }
}
