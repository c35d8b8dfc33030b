//! The command-line flags that say where a store is and how to reach it, declared once
//! for every binary (clap `Args`, flattened into each command).
//!
//! - [`StoreArgs`]: `--store`, `--prefix` and the S3 connection flags ([`S3Args`]:
//!   `--s3-endpoint`, `--s3-path-style`, `--s3-region`). Readers open it with
//!   [`StoreArgs::open_for_reading`], writers with [`StoreArgs::open_for_writing`].
//! - [`LockArgs`]: what a writer locks each object with (`--lock-mode`,
//!   `--retention-days`).
//!
//! The signer writes to two more stores besides its state, so the S3 and lock groups also
//! exist with a `publish-` and a `fence-` prefix ([`PublishS3Args`], [`FenceLockArgs`], ...).
//! All are generated from the one definition in `flag_groups!`; the prefixed ones convert
//! into the plain ones, which are what [`open_location`] takes.

use std::time::Duration;

use crate::s3::LockMode;
use crate::{Location, OpenedStore, S3Settings, StoreError};

/// Default Object Lock retention of what a writer stores: 7 years (and 2 leap days).
pub const DEFAULT_RETENTION_DAYS: u64 = 2557;

/// Declares an S3 connection group and a lock group whose flags start with `$prefix`.
/// `$what` ends each help line ("" or " for --publish").
macro_rules! flag_groups {
    ($s3:ident, $lock:ident, $prefix:literal, $what:literal, $heading:literal) => {
        #[doc = concat!("How to reach an S3 store: `--", $prefix, "s3-*`.")]
        #[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
        #[command(next_help_heading = $heading)]
        pub struct $s3 {
            #[arg(
                id = concat!($prefix, "s3_endpoint"),
                long = concat!($prefix, "s3-endpoint"),
                help = concat!("S3 endpoint override", $what, " (S3-compatible stores)")
            )]
            pub endpoint: Option<String>,
            #[arg(
                id = concat!($prefix, "s3_path_style"),
                long = concat!($prefix, "s3-path-style"),
                help = concat!("Path-style S3 addressing", $what, " (most S3-compatible stores)")
            )]
            pub path_style: bool,
            // AWS_REGION is what the SDK would read anyway: the env only shows it in --help.
            #[arg(
                id = concat!($prefix, "s3_region"),
                long = concat!($prefix, "s3-region"),
                env = "AWS_REGION",
                help = concat!("S3 region", $what, " (else from the environment or profile)")
            )]
            pub region: Option<String>,
        }

        #[doc = concat!("How a writer locks each object: `--", $prefix, "lock-mode`, `--",
            $prefix, "retention-days`.")]
        #[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
        #[command(next_help_heading = $heading)]
        pub struct $lock {
            #[arg(
                id = concat!($prefix, "lock_mode"),
                long = concat!($prefix, "lock-mode"),
                default_value = "compliance",
                help = concat!(
                    "S3 Object Lock mode of every object written", $what,
                    ": compliance (default) or governance (which a privileged principal can bypass)"
                )
            )]
            pub lock_mode: LockMode,
            #[arg(
                id = concat!($prefix, "retention_days"),
                long = concat!($prefix, "retention-days"),
                default_value_t = DEFAULT_RETENTION_DAYS,
                help = concat!("S3 Object Lock retention of every object written", $what, ", in days")
            )]
            pub retention_days: u64,
        }

        impl Default for $lock {
            fn default() -> Self {
                Self {
                    lock_mode: LockMode::default(),
                    retention_days: DEFAULT_RETENTION_DAYS,
                }
            }
        }
    };
    ($s3:ident, $lock:ident, $prefix:literal, $what:literal, $heading:literal, into) => {
        flag_groups!($s3, $lock, $prefix, $what, $heading);

        impl From<$s3> for S3Args {
            fn from(a: $s3) -> Self {
                Self {
                    endpoint: a.endpoint,
                    path_style: a.path_style,
                    region: a.region,
                }
            }
        }

        impl From<$lock> for LockArgs {
            fn from(a: $lock) -> Self {
                Self {
                    lock_mode: a.lock_mode,
                    retention_days: a.retention_days,
                }
            }
        }
    };
}

flag_groups!(S3Args, LockArgs, "", "", "Store");
flag_groups!(
    PublishS3Args,
    PublishLockArgs,
    "publish-",
    " for --publish",
    "Publish store",
    into
);
flag_groups!(
    FenceS3Args,
    FenceLockArgs,
    "fence-",
    " for --fence",
    "Fence store",
    into
);

impl S3Args {
    /// The settings [`Location::open`] takes; `lock` is `None` for a reader, which writes
    /// nothing (the lock settings it gets are then never used).
    pub fn settings(&self, lock: Option<&LockArgs>) -> Result<S3Settings, StoreError> {
        let (lock_mode, retention) = match lock {
            Some(l) => (l.lock_mode, l.retention()?),
            None => (LockMode::Compliance, Duration::from_secs(1)),
        };
        Ok(S3Settings {
            endpoint: self.endpoint.clone(),
            force_path_style: self.path_style,
            region: self.region.clone(),
            lock_mode,
            retention,
        })
    }
}

impl LockArgs {
    /// `--retention-days` as a duration.
    pub fn retention(&self) -> Result<Duration, StoreError> {
        self.retention_days
            .checked_mul(86_400)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                StoreError::Config(format!(
                    "retention of {} days is out of range",
                    self.retention_days
                ))
            })
    }
}

/// Where a log is stored and how to reach it.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
#[command(next_help_heading = "Store")]
pub struct StoreArgs {
    /// Where the log is: `s3://BUCKET[/PREFIX]` (S3 with Object Lock), or a local
    /// write-once directory (development and demos).
    #[arg(long)]
    pub store: String,
    /// Object key prefix of the log in a directory store, ending in '/', or empty (for S3,
    /// put it in the URL).
    #[arg(long, default_value = "")]
    pub prefix: String,
    #[command(flatten)]
    pub s3: S3Args,
}

impl StoreArgs {
    /// `--store`, refusing `--prefix` with an S3 URL (two prefixes would be ambiguous).
    pub fn location(&self) -> Result<Location, StoreError> {
        let location = Location::parse(&self.store)?;
        if matches!(location, Location::S3 { .. }) && !self.prefix.is_empty() {
            return Err(StoreError::Config(format!(
                "--store {}: give the S3 prefix in the URL (s3://bucket/prefix), not --prefix",
                self.store
            )));
        }
        Ok(location)
    }

    /// Opens the store to read it: a directory must already exist (a reader never
    /// creates one, which would hide a wrong path behind an empty log).
    pub async fn open_for_reading(&self) -> Result<OpenedStore, StoreError> {
        let location = self.location()?;
        if let Location::Dir(dir) = &location
            && !dir.is_dir()
        {
            return Err(StoreError::Config(format!(
                "store {} is not a directory",
                dir.display()
            )));
        }
        self.open(location, None).await
    }

    /// Opens the store to write it: creates a directory; an S3 bucket must have Object Lock
    /// ([`crate::s3::S3Store::check_object_lock`]) and every object is locked as `lock`
    /// says.
    pub async fn open_for_writing(&self, lock: &LockArgs) -> Result<OpenedStore, StoreError> {
        let location = self.location()?;
        self.open(location, Some(lock)).await
    }

    async fn open(
        &self,
        location: Location,
        lock: Option<&LockArgs>,
    ) -> Result<OpenedStore, StoreError> {
        let is_dir = matches!(location, Location::Dir(_));
        let mut opened = open_location(location, &self.s3, lock).await?;
        if is_dir {
            opened.prefix = self.prefix.clone();
        }
        Ok(opened)
    }
}

/// Opens `location` (a directory, or S3 reached as `s3` says); with `lock`, for writing:
/// an S3 bucket must then have Object Lock. For stores named by another flag than
/// `--store` (the signer's `--publish`, `--fence`). The prefix is the URL's.
pub async fn open_location(
    location: Location,
    s3: &S3Args,
    lock: Option<&LockArgs>,
) -> Result<OpenedStore, StoreError> {
    let opened = location.open(s3.settings(lock)?).await?;
    if lock.is_some()
        && let Some(s3) = &opened.s3
    {
        // Refuse to write where evidence could be overwritten or deleted.
        s3.check_object_lock().await?;
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, Parser};

    #[derive(Parser, Debug)]
    struct Writer {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        lock: LockArgs,
    }

    #[derive(Parser, Debug)]
    struct Signer {
        #[arg(long)]
        publish: Option<String>,
        #[command(flatten)]
        publish_s3: PublishS3Args,
        #[command(flatten)]
        publish_lock: PublishLockArgs,
        #[arg(long)]
        fence: Option<String>,
        #[command(flatten)]
        fence_s3: FenceS3Args,
        #[command(flatten)]
        fence_lock: FenceLockArgs,
    }

    #[test]
    fn flag_names() {
        Writer::command().debug_assert();
        Signer::command().debug_assert();
        let w = Writer::try_parse_from([
            "w",
            "--store=s3://b/p",
            "--s3-endpoint=http://127.0.0.1:1",
            "--s3-path-style",
            "--s3-region=eu-west-1",
            "--lock-mode=governance",
            "--retention-days=3",
        ])
        .unwrap();
        assert_eq!(
            w.store.s3,
            S3Args {
                endpoint: Some("http://127.0.0.1:1".into()),
                path_style: true,
                region: Some("eu-west-1".into()),
            }
        );
        assert_eq!(w.lock.lock_mode, LockMode::Governance);
        assert_eq!(w.lock.retention().unwrap(), Duration::from_secs(3 * 86_400));

        let s = Signer::try_parse_from([
            "s",
            "--publish=s3://b",
            "--publish-s3-endpoint=http://p",
            "--publish-s3-path-style",
            "--publish-s3-region=r1",
            "--publish-retention-days=5",
            "--fence=s3://f",
            "--fence-s3-endpoint=http://f",
            "--fence-s3-region=r2",
            "--fence-lock-mode=governance",
        ])
        .unwrap();
        let publish = S3Args::from(s.publish_s3);
        assert_eq!(publish.endpoint.as_deref(), Some("http://p"));
        assert!(publish.path_style);
        assert_eq!(publish.region.as_deref(), Some("r1"));
        assert_eq!(LockArgs::from(s.publish_lock).retention_days, 5);
        let fence = S3Args::from(s.fence_s3);
        assert_eq!(fence.endpoint.as_deref(), Some("http://f"));
        assert!(!fence.path_style);
        assert_eq!(fence.region.as_deref(), Some("r2"));
        let fence_lock = LockArgs::from(s.fence_lock);
        assert_eq!(fence_lock.lock_mode, LockMode::Governance);
        assert_eq!(fence_lock.retention_days, DEFAULT_RETENTION_DAYS);
    }

    #[test]
    fn prefix_only_for_directories() {
        let args = |store: &str, prefix: &str| StoreArgs {
            store: store.into(),
            prefix: prefix.into(),
            s3: S3Args::default(),
        };
        assert!(matches!(
            args("s3://b/p", "x/").location(),
            Err(StoreError::Config(_))
        ));
        assert!(args("s3://b/p", "").location().is_ok());
        assert!(args("/tmp/d", "x/").location().is_ok());
        let huge = LockArgs {
            retention_days: u64::MAX,
            ..LockArgs::default()
        };
        assert!(huge.retention().is_err());
    }

    #[tokio::test]
    async fn directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("log");
        let args = StoreArgs {
            store: root.display().to_string(),
            prefix: "p/".into(),
            s3: S3Args::default(),
        };
        // A reader does not create the directory; a writer does.
        assert!(matches!(
            args.open_for_reading().await,
            Err(StoreError::Config(_))
        ));
        let w = args.open_for_writing(&LockArgs::default()).await.unwrap();
        assert_eq!(w.prefix, "p/");
        assert!(w.s3.is_none());
        w.store.put_new("p/k", b"x").await.unwrap();
        let r = args.open_for_reading().await.unwrap();
        assert_eq!(r.store.get("p/k").await.unwrap(), b"x");
    }
}
