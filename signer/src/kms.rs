//! AWS KMS key backend: checkpoints signed by an asymmetric KMS key that never leaves KMS.
//!
//! Why: the signing key is the root of the trail's integrity, so it must not be readable by
//! anyone who runs the signer (DESIGN invariant 6). KMS holds it, signs on request, logs every
//! use in CloudTrail, and access is an IAM decision that the security team owns.
//!
//! The key must be `KeySpec = ECC_NIST_P256`, `KeyUsage = SIGN_VERIFY` with
//! `ECDSA_SHA_256` among its signing algorithms (KMS has no Ed25519 here); anything else is
//! refused at start with a [`Error::Config`] that says what the key is. It may be named by
//! key id, key ARN or `alias/...`; the alias is resolved once at start (the signer then
//! signs with the key ARN that `GetPublicKey` returned), so re-pointing an alias never
//! switches keys under a running signer: a key rotation is a restart plus a trust-bundle
//! entry.
//!
//! At start, [`KmsKey::connect`] fetches the public key (DER SPKI), checks its type, then
//! makes one test signature and verifies it locally, so a wrong key, a missing permission or
//! an unreachable endpoint shows up at start and not at the first Append. The test message
//! is a single line (`sealtrail-signer kms key check`), which can never parse as a
//! checkpoint, so the key signs nothing that could be mistaken for log content.
//!
//! Each checkpoint is one `Sign` call with `MessageType = RAW` and
//! `SigningAlgorithm = ECDSA_SHA_256`: KMS hashes the note text with SHA-256 and signs it,
//! exactly what the note format needs (docs/FORMAT.md). RAW messages are limited to
//! 4096 bytes by KMS; checkpoint texts are a few hundred. The returned DER signature is
//! normalized to low-S and verified locally before it is used: a signature that does not
//! verify is an error, never evidence.
//!
//! IAM: the signer's role (IRSA on EKS, or any identity of the default credential chain)
//! needs `kms:GetPublicKey` and `kms:Sign` on this one key, nothing else.
//!
//! Failures: throttling, KMS 5xx, `KeyUnavailable`, `DependencyTimeout`, timeouts and
//! connection errors are [`Error::Unavailable`] (transient: the ingester answers 503 and the
//! apiserver retries); access denied, disabled key, key pending deletion, unknown key are
//! [`Error::Key`] with a message that says which. Either way the Append fails and nothing is
//! signed by anything else. Throttling is retried inside the SDK (standard retry mode,
//! exponential backoff with jitter, [`KmsConfig::max_attempts`] attempts), bounded by
//! [`KmsConfig::timeout`] per signature.
//!
//! moto (the test KMS) deviations: `MessageType = DIGEST` signs sha256(digest) instead of
//! the digest; this backend uses RAW, which both real KMS and moto implement correctly, so
//! that one needs no workaround. moto's `GetPublicKey` returns only the deprecated
//! `CustomerMasterKeySpec` (real KMS returns it too, next to `KeySpec`, with the same value)
//! and names the key by bare id instead of ARN: the key check reads `KeySpec`, else
//! `CustomerMasterKeySpec`, and in every case requires the returned SPKI to be a P-256 key.

use std::time::Duration;

use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use sealtrail_core::keys::{Algorithm, PublicKey, p256_der_low_s};

use crate::Error;
use crate::keys::{BoxFuture, KeyBackend};

/// Largest message KMS signs with `MessageType = RAW`.
pub const MAX_RAW_MESSAGE: usize = 4096;

/// The message of the start-up test signature: one line, so never a checkpoint.
const CHECK_MESSAGE: &[u8] = b"sealtrail-signer kms key check\n";

/// Where the key is and how hard to try.
#[derive(Debug, Clone)]
pub struct KmsConfig {
    /// Key id, key ARN or `alias/...`.
    pub key: String,
    /// KMS endpoint URL (a VPC endpoint, or a test server); `None`: the region's endpoint.
    pub endpoint: Option<String>,
    /// AWS region; `None`: from the environment / profile (`AWS_REGION`, ...).
    pub region: Option<String>,
    /// Upper bound on one `Sign` (or `GetPublicKey`) call, SDK retries included.
    pub timeout: Duration,
    /// Attempts per call in the SDK's standard retry mode (throttling and transient
    /// errors are retried with exponential backoff); at least 1.
    pub max_attempts: u32,
}

impl KmsConfig {
    /// Defaults: region and endpoint from the environment, 5 s per call, 5 attempts.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            endpoint: None,
            region: None,
            timeout: Duration::from_secs(5),
            max_attempts: 5,
        }
    }
}

/// An ECDSA P-256 key in AWS KMS.
pub struct KmsKey {
    client: aws_sdk_kms::Client,
    /// The key as `GetPublicKey` named it: its ARN on real KMS (moto: the bare key id).
    /// An alias is resolved once, at start; every Sign names this key.
    key_arn: String,
    public: PublicKey,
}

impl std::fmt::Debug for KmsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsKey")
            .field("key_arn", &self.key_arn)
            .finish_non_exhaustive()
    }
}

impl KmsKey {
    /// Connects with the default credential chain (environment, profile, IRSA web
    /// identity, ...), checks the key and makes one test signature.
    pub async fn connect(config: KmsConfig) -> Result<Self, Error> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(retry_config(&config))
            .timeout_config(timeout_config(None, &config));
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(Error::Config(
                "no AWS region for KMS: set the signer's KMS region option or AWS_REGION".into(),
            ));
        }
        Self::with_client(aws_sdk_kms::Client::new(&sdk), config).await
    }

    /// Uses `client` (its credentials, region and endpoint) with the timeout and retry
    /// settings of `config`; checks the key and makes one test signature.
    pub async fn with_client(
        client: aws_sdk_kms::Client,
        config: KmsConfig,
    ) -> Result<Self, Error> {
        let conf = client
            .config()
            .to_builder()
            .retry_config(retry_config(&config))
            .timeout_config(timeout_config(client.config().timeout_config(), &config))
            .build();
        let client = aws_sdk_kms::Client::from_conf(conf);

        let out = client
            .get_public_key()
            .key_id(&config.key)
            .send()
            .await
            .map_err(|e| classify("GetPublicKey", &config.key, e))?;
        let key_arn = out.key_id().unwrap_or(&config.key).to_string();
        let what = format!("KMS key {:?} ({key_arn})", config.key);
        // Real KMS returns KeySpec and its deprecated twin CustomerMasterKeySpec (same
        // value); moto returns only the deprecated one. Either is accepted, and the SPKI
        // itself must be P-256 below whatever the spec field said.
        #[allow(deprecated)]
        let legacy_spec = out
            .customer_master_key_spec()
            .map(|s| KeySpec::from(s.as_str()));
        let spec = out.key_spec().or(legacy_spec.as_ref());
        let usage = out.key_usage();
        let algorithms = out.signing_algorithms();
        if spec != Some(&KeySpec::EccNistP256)
            || usage != Some(&KeyUsageType::SignVerify)
            || !algorithms.contains(&SigningAlgorithmSpec::EcdsaSha256)
        {
            return Err(Error::Config(format!(
                "{what} is KeySpec {}, KeyUsage {}, signing algorithms [{}]; the signer needs \
                 an asymmetric ECC_NIST_P256 SIGN_VERIFY key with ECDSA_SHA_256",
                spec.map_or("(none)", |s| s.as_str()),
                usage.map_or("(none)", |u| u.as_str()),
                algorithms
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let spki = out
            .public_key()
            .ok_or_else(|| Error::Key(format!("{what}: GetPublicKey returned no public key")))?;
        let public = PublicKey::from_spki_der(spki.as_ref())
            .map_err(|e| Error::Key(format!("{what}: public key does not parse: {e}")))?;
        if public.algorithm() != Algorithm::EcdsaP256Sha256 {
            return Err(Error::Config(format!(
                "{what}: public key is {}, not ECDSA P-256",
                public.algorithm().as_str()
            )));
        }
        let key = Self {
            client,
            key_arn,
            public,
        };
        key.sign_text(CHECK_MESSAGE).await.map_err(|e| match e {
            Error::Key(m) => Error::Key(format!("{what}: test signature at start: {m}")),
            Error::Unavailable(m) => {
                Error::Unavailable(format!("{what}: test signature at start: {m}"))
            }
            other => other,
        })?;
        tracing::info!(key = %key.key_arn, "AWS KMS key ready");
        Ok(key)
    }

    /// The key that signs, as `GetPublicKey` named it: its ARN on real KMS (moto returns
    /// the bare key id). Aliases are resolved at start.
    pub fn key_arn(&self) -> &str {
        &self.key_arn
    }

    async fn sign_text(&self, text: &[u8]) -> Result<Vec<u8>, Error> {
        if text.len() > MAX_RAW_MESSAGE {
            return Err(Error::Key(format!(
                "message of {} bytes: KMS signs RAW messages of at most {MAX_RAW_MESSAGE} bytes",
                text.len()
            )));
        }
        let out = self
            .client
            .sign()
            .key_id(&self.key_arn)
            .message(Blob::new(text))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| classify("Sign", &self.key_arn, e))?;
        let der = out.signature().ok_or_else(|| {
            Error::Key(format!(
                "KMS Sign with {} returned no signature",
                self.key_arn
            ))
        })?;
        let sig = p256_der_low_s(der.as_ref()).map_err(|_| {
            Error::Key(format!(
                "KMS Sign with {} returned a signature that is not DER ECDSA",
                self.key_arn
            ))
        })?;
        self.public.verify(text, &sig).map_err(|_| {
            Error::Key(format!(
                "KMS Sign with {} returned a signature that does not verify with its public key",
                self.key_arn
            ))
        })?;
        Ok(sig)
    }
}

impl KeyBackend for KmsKey {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn kind(&self) -> &'static str {
        "aws-kms"
    }

    fn sign<'a>(&'a self, text: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, Error>> {
        Box::pin(self.sign_text(text))
    }
}

fn retry_config(config: &KmsConfig) -> RetryConfig {
    RetryConfig::standard().with_max_attempts(config.max_attempts.max(1))
}

fn timeout_config(existing: Option<&TimeoutConfig>, config: &KmsConfig) -> TimeoutConfig {
    let mut b = existing.map(|t| t.to_builder()).unwrap_or_default();
    b = b.operation_timeout(config.timeout);
    // A dead endpoint must not eat the whole budget in one connect attempt.
    let connect = existing
        .and_then(|t| t.connect_timeout())
        .map_or(config.timeout, |c| c.min(config.timeout));
    b.connect_timeout(connect).build()
}

/// KMS error codes that are transient: the request may succeed if retried later.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "KMSInternalException",
    "KMSInternal",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Maps an SDK error to the signer's errors: transient ones to `Unavailable`, the key's
/// own trouble to `Key` with what to fix.
fn classify<E>(op: &str, key: &str, err: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::TimeoutError(_) => {
            Error::Unavailable(format!("KMS {op} with {key} timed out: {detail}"))
        }
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Error::Unavailable(format!("KMS {op} with {key}: cannot reach KMS: {detail}"))
        }
        SdkError::ConstructionFailure(_) => {
            Error::Config(format!("KMS {op} with {key}: request not built: {detail}"))
        }
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("");
            let status = se.raw().status().as_u16();
            let message = se.err().message().unwrap_or("");
            if TRANSIENT_CODES.contains(&code) || status >= 500 || status == 429 {
                return Error::Unavailable(format!(
                    "KMS {op} with {key}: {code} (HTTP {status}): {message}"
                ));
            }
            let why = match code {
                "AccessDeniedException"
                | "AccessDenied"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException" => format!(
                    "access denied ({code}): the signer's identity needs kms:GetPublicKey and \
                     kms:Sign on this key (check the IAM role / IRSA and the key policy)"
                ),
                "DisabledException" => "the key is disabled".into(),
                "KMSInvalidStateException" => {
                    "the key is not usable in its current state (pending deletion or import?)"
                        .into()
                }
                "NotFoundException" => {
                    "no such key or alias (check the id, ARN, alias and region)".into()
                }
                "InvalidKeyUsageException" => {
                    "the key cannot sign with ECDSA_SHA_256 (wrong key usage or spec)".into()
                }
                "InvalidArnException" => "malformed key ARN".into(),
                _ => format!("{code} (HTTP {status})"),
            };
            Error::Key(format!("KMS {op} with {key}: {why}: {message}"))
        }
        _ => Error::Key(format!("KMS {op} with {key}: {detail}")),
    }
}
