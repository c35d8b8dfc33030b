//! S3 with Object Lock as a write-once object store (the production backend).
//!
//! # What and why
//!
//! Segments are the audit trail's evidence: once written they must not be replaced or
//! deleted before their retention runs out, not even by the account that wrote them.
//! [`S3Store`] gets that from S3 itself rather than from this software:
//!
//! - The bucket must have **Object Lock** enabled (which implies versioning).
//!   [`S3Store::check_object_lock`] verifies it; the ingester calls it at start and refuses
//!   to run without it.
//! - Every PUT carries its own lock: `x-amz-object-lock-mode` (COMPLIANCE by default: no
//!   principal, root included, can shorten it or delete the version; GOVERNANCE can be
//!   bypassed by a principal with `s3:BypassGovernanceRetention`, so it is logged as a
//!   warning) and `x-amz-object-lock-retain-until-date` = now + the configured retention.
//!   So the lock does not depend on the bucket's default retention being set right.
//! - Every PUT carries `If-None-Match: *`: S3 refuses (412) to write a key that exists.
//!   Without it a PUT to an existing key in a versioned bucket silently creates a new
//!   *current* version: the old one stays locked, but readers of the key see the new
//!   bytes. On 412 (or 409 `ConditionalRequestConflict`, a concurrent conditional write)
//!   the store reads the existing object and compares: identical bytes are a retried write
//!   ([`PutOutcome::AlreadyStored`]), different bytes are [`StoreError::Conflict`].
//! - Every PUT carries a SHA-256 checksum (`x-amz-checksum-sha256`, computed by the SDK):
//!   S3 refuses Object Lock uploads without an integrity checksum, and it catches
//!   corruption on the way.
//!
//! # Errors
//!
//! Throttling (`SlowDown`, 503), other 5xx, `RequestTimeout`, timeouts, connection and
//! dispatch failures are [`StoreError::Unavailable`]: transient, the ingester answers 503
//! and the apiserver retries. Access denied, a missing bucket or bad credentials are
//! [`StoreError::Io`] with a message saying it is a configuration problem. A missing key
//! is [`StoreError::NotFound`].
//!
//! The client built by [`S3Store::connect`] uses the SDK's standard retry mode (a few
//! attempts with exponential backoff and jitter) and an operation timeout (10 s by default,
//! see [`S3ClientOptions`]) that bounds the whole call, retries included, so that the
//! ingester answers the apiserver (30 s per attempt) in time.
//!
//! # What Object Lock does not do by itself
//!
//! In S3 (and moto), a PUT *without* `If-None-Match` to an existing key of a locked bucket
//! succeeds and creates a new current version (the locked one is kept, readable by version
//! id), and a DELETE without a version id adds a delete marker. Only deleting a locked
//! *version* is refused (403 `AccessDenied`, COMPLIANCE with or without the governance
//! bypass header). So the writer's IAM policy should allow only conditional PUTs and no
//! `s3:DeleteObject`; the verifier is what detects a replaced or hidden object.
//!
//! # moto (the S3 the tests run against)
//!
//! Verified with moto 5.2.5 by `store/tests/s3.rs`, which fails if moto changes. The
//! product sends what real S3 needs and works around nothing:
//!
//! - Like S3: `If-None-Match: *` on PutObject is honoured (412 `PreconditionFailed`, no new
//!   version); the SHA-256 checksum is stored and returned by `HeadObject`
//!   (`ChecksumMode=ENABLED`); `GetObjectLockConfiguration` parses, and a bucket without
//!   Object Lock answers `ObjectLockConfigurationNotFoundError`; deleting a locked version
//!   is `AccessDenied`; Range requests are honoured (206); ListObjectsV2 pages with continuation tokens.
//! - Deviations (docs/DESIGN.md §4): `GetObjectRetention` and `GetBucketVersioning` responses do
//!   not parse in the Rust SDK, so [`S3Store::retention`] uses `HeadObject` (which returns
//!   the lock mode and retain-until date on AWS too); moto does not validate
//!   `x-amz-checksum-sha256` and lets COMPLIANCE retention be shortened (AWS refuses both).
//! - Not reproducible on moto: 409 `ConditionalRequestConflict` (two conditional PUTs of
//!   one key in flight at once); its handling (compare if the object is there, else
//!   `Unavailable`) is untested.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockEnabled, ObjectLockMode};

use crate::{
    BoxFuture, ObjectInfo, ObjectStore, PutOutcome, RetentionMode, StoreError, validate_key,
};

/// Content type of segment objects (JSON Lines).
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// The Object Lock retention mode put on every object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockMode {
    /// Nobody, root included, can delete the version or shorten its retention. The default.
    #[default]
    Compliance,
    /// A principal with `s3:BypassGovernanceRetention` can delete or shorten: weaker, and
    /// logged as a warning.
    Governance,
}

impl LockMode {
    /// The S3 spelling: `COMPLIANCE` or `GOVERNANCE`.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }

    fn sdk(self) -> ObjectLockMode {
        match self {
            LockMode::Compliance => ObjectLockMode::Compliance,
            LockMode::Governance => ObjectLockMode::Governance,
        }
    }
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LockMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "compliance" => Ok(LockMode::Compliance),
            "governance" => Ok(LockMode::Governance),
            _ => Err(format!(
                "unknown Object Lock mode {s:?} (expected compliance or governance)"
            )),
        }
    }
}

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Endpoint override for S3-compatible stores (and moto in tests).
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible stores.
    pub force_path_style: bool,
    /// Region; `None` takes it from the environment / profile.
    pub region: Option<String>,
    pub lock_mode: LockMode,
    /// Each object is locked until now + `retention`.
    pub retention: Duration,
}

impl S3Config {
    /// AWS S3 (no endpoint override), COMPLIANCE mode, region from the environment.
    pub fn new(bucket: impl Into<String>, retention: Duration) -> Self {
        Self {
            bucket: bucket.into(),
            endpoint: None,
            force_path_style: false,
            region: None,
            lock_mode: LockMode::Compliance,
            retention,
        }
    }
}

/// Client timeouts and retries used by [`S3Store::connect_with_options`].
#[derive(Debug, Clone)]
pub struct S3ClientOptions {
    /// Bounds a whole call, retries included. Default 10 s.
    pub operation_timeout: Duration,
    /// Bounds one attempt. Default none (large segments may take a while).
    pub attempt_timeout: Option<Duration>,
    /// TCP/TLS connect timeout. Default 3 s.
    pub connect_timeout: Duration,
    /// Attempts per call, the first included (SDK standard retry mode: exponential backoff
    /// with jitter, retries throttling, 5xx, timeouts and connection errors). Default 3.
    pub max_attempts: u32,
}

impl S3ClientOptions {
    /// Applies these timeouts and retries to an S3 client configuration.
    pub fn apply(&self, builder: aws_sdk_s3::config::Builder) -> aws_sdk_s3::config::Builder {
        let mut timeouts = TimeoutConfig::builder()
            .operation_timeout(self.operation_timeout)
            .connect_timeout(self.connect_timeout);
        if let Some(t) = self.attempt_timeout {
            timeouts = timeouts.operation_attempt_timeout(t);
        }
        builder
            .retry_config(RetryConfig::standard().with_max_attempts(self.max_attempts.max(1)))
            .timeout_config(timeouts.build())
    }
}

impl Default for S3ClientOptions {
    fn default() -> Self {
        Self {
            operation_timeout: Duration::from_secs(10),
            attempt_timeout: None,
            connect_timeout: Duration::from_secs(3),
            max_attempts: 3,
        }
    }
}

/// The backend-neutral answer, re-exported where S3 callers used to find it.
pub use crate::ObjectRetention;

/// An S3 bucket with Object Lock as an [`ObjectStore`].
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    config: S3Config,
    list_page_size: Option<i32>,
}

impl S3Store {
    /// Default credential chain (env, profile, IRSA web identity) via
    /// `aws_config::defaults(BehaviorVersion::latest())`; endpoint override + path style for
    /// S3-compatible stores; default [`S3ClientOptions`].
    pub async fn connect(config: S3Config) -> Result<Self, StoreError> {
        Self::connect_with_options(config, S3ClientOptions::default()).await
    }

    /// [`connect`](Self::connect) with explicit timeouts and retries.
    pub async fn connect_with_options(
        config: S3Config,
        options: S3ClientOptions,
    ) -> Result<Self, StoreError> {
        if config.bucket.is_empty() {
            return Err(StoreError::Io("S3 bucket name is empty".into()));
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let mut builder = options
            .apply(aws_sdk_s3::config::Builder::from(&shared))
            .force_path_style(config.force_path_style);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        Ok(Self::with_client(
            Client::from_conf(builder.build()),
            config,
        ))
    }

    /// Same, with a ready client (tests). The client's own endpoint, region, timeouts and
    /// retries apply; `config.endpoint`, `force_path_style` and `region` are not re-read.
    pub fn with_client(client: Client, config: S3Config) -> Self {
        Self {
            client,
            config,
            list_page_size: None,
        }
    }

    /// Page size for ListObjectsV2 (S3's default and maximum is 1,000). For tests of
    /// pagination.
    pub fn with_list_page_size(mut self, max_keys: i32) -> Self {
        self.list_page_size = Some(max_keys);
        self
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// GetObjectLockConfiguration: `Ok` only if Object Lock is enabled on the bucket;
    /// otherwise an error saying why. The ingester calls this at start and refuses to run
    /// on error. Logs a warning when the configured mode is GOVERNANCE.
    pub async fn check_object_lock(&self) -> Result<(), StoreError> {
        let bucket = &self.config.bucket;
        if self.config.retention.is_zero() {
            return Err(StoreError::Io(format!(
                "S3 bucket {bucket}: the Object Lock retention must be positive"
            )));
        }
        let out = match self
            .client
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                if e.code() == Some("ObjectLockConfigurationNotFoundError") {
                    return Err(StoreError::Io(format!(
                        "S3 bucket {bucket} does not have Object Lock enabled \
                         (ObjectLockConfigurationNotFoundError): segments could be overwritten \
                         or deleted. Create the bucket with Object Lock enabled (see \
                         deploy/); refusing to use it"
                    )));
                }
                return Err(map_err("GetObjectLockConfiguration", bucket, None, e));
            }
        };
        let enabled = out
            .object_lock_configuration()
            .and_then(|c| c.object_lock_enabled())
            .cloned();
        if enabled != Some(ObjectLockEnabled::Enabled) {
            return Err(StoreError::Io(format!(
                "S3 bucket {bucket}: Object Lock is not enabled (ObjectLockEnabled = {}): \
                 segments could be overwritten or deleted; refusing to use it",
                enabled.as_ref().map_or("absent", |e| e.as_str())
            )));
        }
        if self.config.lock_mode == LockMode::Governance {
            tracing::warn!(
                bucket = %bucket,
                "Object Lock mode GOVERNANCE: a principal with s3:BypassGovernanceRetention can \
                 delete segments or shorten their retention; use COMPLIANCE for an audit trail"
            );
        }
        Ok(())
    }

    /// HeadObject: lock mode and retain-until of the current version of `key`. (moto's
    /// GetObjectRetention response does not parse in the Rust SDK; HeadObject carries the
    /// same information on AWS and moto alike.) Also [`ObjectStore::retention`].
    pub async fn retention(&self, key: &str) -> Result<ObjectRetention, StoreError> {
        validate_key(key)?;
        let out = self
            .client
            .head_object()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_err("HeadObject", &self.config.bucket, Some(key), e))?;
        let retain_until = match out.object_lock_retain_until_date() {
            Some(d) => Some(SystemTime::try_from(*d).map_err(|e| {
                StoreError::Io(format!("{key}: retain-until date out of range: {e}"))
            })?),
            None => None,
        };
        let mode = match out.object_lock_mode() {
            None => RetentionMode::None,
            Some(ObjectLockMode::Compliance) => RetentionMode::Compliance,
            Some(ObjectLockMode::Governance) => RetentionMode::Governance,
            // A mode this build does not know: guessing either way would misreport it.
            Some(other) => {
                return Err(StoreError::Io(format!(
                    "HeadObject s3://{}/{key}: unknown Object Lock mode {:?}",
                    self.config.bucket,
                    other.as_str()
                )));
            }
        };
        Ok(ObjectRetention {
            mode,
            retain_until,
            version_id: out.version_id().map(str::to_string),
        })
    }

    async fn put_impl(&self, key: &str, bytes: bytes::Bytes) -> Result<PutOutcome, StoreError> {
        validate_key(key)?;
        let bucket = &self.config.bucket;
        let retain_until = SystemTime::now()
            .checked_add(self.config.retention)
            .ok_or_else(|| StoreError::Io("retention overflows the clock".into()))?;
        let result = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .if_none_match("*")
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .object_lock_mode(self.config.lock_mode.sdk())
            .object_lock_retain_until_date(DateTime::from(retain_until))
            .content_type(CONTENT_TYPE)
            .body(ByteStream::from(bytes.clone()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                let code = e.code().map(str::to_string);
                let exists = status == Some(412) || code.as_deref() == Some("PreconditionFailed");
                let racing = status == Some(409)
                    && matches!(code.as_deref(), Some("ConditionalRequestConflict") | None);
                if !(exists || racing) {
                    return Err(map_err("PutObject", bucket, Some(key), e));
                }
                match self.get_impl(key, None).await {
                    Ok(existing) if existing == bytes => Ok(PutOutcome::AlreadyStored),
                    Ok(_) => Err(StoreError::Conflict(key.to_string())),
                    // 409: another writer's conditional PUT is still in flight.
                    Err(StoreError::NotFound(_)) => Err(StoreError::Unavailable(format!(
                        "s3://{bucket}/{key}: concurrent conditional write in progress ({})",
                        code.as_deref().unwrap_or("409")
                    ))),
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn get_impl(&self, key: &str, max_len: Option<usize>) -> Result<Vec<u8>, StoreError> {
        validate_key(key)?;
        let bucket = &self.config.bucket;
        let mut req = self.client.get_object().bucket(bucket).key(key);
        match max_len {
            Some(0) => {
                // An empty range cannot be expressed: check the object exists.
                self.client
                    .head_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| map_err("HeadObject", bucket, Some(key), e))?;
                return Ok(Vec::new());
            }
            Some(n) => req = req.range(format!("bytes=0-{}", n - 1)),
            None => {}
        }
        let out = match req.send().await {
            Ok(out) => out,
            // A range on an empty object is unsatisfiable: the prefix is empty.
            Err(e)
                if max_len.is_some()
                    && (e.code() == Some("InvalidRange")
                        || e.raw_response().map(|r| r.status().as_u16()) == Some(416)) =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(map_err("GetObject", bucket, Some(key), e)),
        };
        let mut data = out
            .body
            .collect()
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "s3://{bucket}/{key}: reading the body: {}",
                    error_chain(&e)
                ))
            })?
            .into_bytes()
            .to_vec();
        if let Some(n) = max_len {
            // A server that ignores Range still returns at most the contract's length.
            data.truncate(n);
        }
        Ok(data)
    }

    async fn list_impl(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let bucket = &self.config.bucket;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self.client.list_objects_v2().bucket(bucket).prefix(prefix);
            if let Some(n) = self.list_page_size {
                req = req.max_keys(n);
            }
            if let Some(t) = token.take() {
                req = req.continuation_token(t);
            }
            let page = req
                .send()
                .await
                .map_err(|e| map_err("ListObjectsV2", bucket, None, e))?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                out.push(ObjectInfo::object(
                    key.to_string(),
                    obj.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    obj.e_tag().map(str::to_string),
                ));
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(t)) if !t.is_empty() => token = Some(t.to_string()),
                (Some(true), _) => {
                    return Err(StoreError::Io(format!(
                        "s3://{bucket}: ListObjectsV2 truncated without a continuation token"
                    )));
                }
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }
}

/// A one-line description: `code (HTTP status): message` for service errors, else the
/// chain of causes (DisplayErrorContext would append a Debug dump of the whole response).
fn describe_err<E>(err: &SdkError<E>, status: Option<u16>, code: Option<&str>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let SdkError::ServiceError(_) = err {
        return format!(
            "{} (HTTP {}): {}",
            code.unwrap_or("no error code"),
            status.map_or_else(|| "?".to_string(), |s| s.to_string()),
            err.message().unwrap_or("no message")
        );
    }
    error_chain(err)
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = e.source();
    }
    out
}

/// Maps an SDK error to a [`StoreError`]: transient → `Unavailable`, missing key →
/// `NotFound`, configuration problems and the rest → `Io`.
fn map_err<E>(op: &str, bucket: &str, key: Option<&str>, err: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let what = match key {
        Some(k) => format!("{op} s3://{bucket}/{k}"),
        None => format!("{op} s3://{bucket}"),
    };
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_string);
    let detail = describe_err(&err, status, code.as_deref());
    match &err {
        SdkError::TimeoutError(_) => {
            return StoreError::Unavailable(format!("{what}: timed out: {detail}"));
        }
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            return StoreError::Unavailable(format!("{what}: {detail}"));
        }
        SdkError::ConstructionFailure(_) => {
            return StoreError::Io(format!("{what}: building the request: {detail}"));
        }
        _ => {}
    }
    let code_str = code.as_deref().unwrap_or("");
    match code_str {
        "SlowDown"
        | "Throttling"
        | "ThrottlingException"
        | "RequestTimeout"
        | "ServiceUnavailable"
        | "InternalError" => {
            return StoreError::Unavailable(format!("{what}: {detail}"));
        }
        "NoSuchKey" => return StoreError::NotFound(key.unwrap_or_default().to_string()),
        "NoSuchBucket" => {
            return StoreError::Io(format!(
                "{what}: bucket {bucket} does not exist (configuration problem): {detail}"
            ));
        }
        "AccessDenied"
        | "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "InvalidToken"
        | "AllAccessDisabled" => {
            return StoreError::Io(format!(
                "{what}: access denied ({code_str}): check the credentials and the IAM / bucket \
                 policy (configuration problem): {detail}"
            ));
        }
        _ => {}
    }
    match status {
        Some(s) if s >= 500 || s == 429 => StoreError::Unavailable(format!("{what}: {detail}")),
        // HeadObject errors have no body, so no code: a 404 there is the key.
        Some(404) if key.is_some() => StoreError::NotFound(key.unwrap_or_default().to_string()),
        Some(403) => StoreError::Io(format!(
            "{what}: access denied (403): check the credentials and the IAM / bucket policy \
             (configuration problem): {detail}"
        )),
        _ => StoreError::Io(format!("{what}: {detail}")),
    }
}

impl ObjectStore for S3Store {
    fn put_new<'a>(
        &'a self,
        key: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        Box::pin(self.put_impl(key, bytes::Bytes::copy_from_slice(bytes)))
    }

    fn put_new_owned<'a>(
        &'a self,
        key: &'a str,
        bytes: bytes::Bytes,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        Box::pin(self.put_impl(key, bytes))
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        Box::pin(self.get_impl(key, None))
    }

    fn get_prefix<'a>(
        &'a self,
        key: &'a str,
        max_len: usize,
    ) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        Box::pin(self.get_impl(key, Some(max_len)))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, StoreError>> {
        Box::pin(self.list_impl(prefix))
    }

    fn retention<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ObjectRetention, StoreError>> {
        Box::pin(S3Store::retention(self, key))
    }

    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "s3://{} ({}, Object Lock {} for {} days)",
            c.bucket,
            c.endpoint.as_deref().unwrap_or("AWS endpoint"),
            c.lock_mode,
            c.retention.as_secs() / 86_400
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_mode_parses() {
        assert_eq!("COMPLIANCE".parse::<LockMode>(), Ok(LockMode::Compliance));
        assert_eq!("governance".parse::<LockMode>(), Ok(LockMode::Governance));
        assert!("none".parse::<LockMode>().is_err());
        assert_eq!(LockMode::default(), LockMode::Compliance);
    }
}
