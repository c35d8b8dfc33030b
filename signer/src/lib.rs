//! Sealtrail's signer: the single writer of a cluster's Merkle log.
//!
//! It assigns leaf indexes to the 32-byte leaf hashes the ingesters send (never event
//! content), keeps the RFC 6962 tree in its state directory, signs a chained checkpoint per
//! group commit with a key it never exports, and answers only once leaves and checkpoint
//! are durable. It serves the `sealtrail.v1.Signer` gRPC service over mutual TLS.
//!
//! Key backends ([`KeyBackend`]): a PKCS#11 HSM ([`pkcs11::Pkcs11Key`]), AWS KMS
//! ([`kms::KmsKey`]), and for development only a key file ([`keys::DevKeyFile`], refused
//! without `--insecure-dev-key`). Callers are authorized by client-certificate identity
//! ([`authz`]); metrics and health are served on a plain HTTP port ([`metrics`]); the TLS
//! certificate and client CA are reloaded when their files change ([`tls`]).
//!
//! One writer: the state directory is locked ([`state`]), and with a fence
//! ([`CommitConfig::fence`], `--fence`) every checkpoint first claims a create-new slot in
//! object storage, so that a second signer elsewhere cannot extend the log ([`fence`]).
//! A re-sent Append is answered with its original indexes and checkpoint ([`log`]).
//!
//! [`anchor`] (`sealtrail-signer anchor`) runs beside it without any key: RFC 3161 tokens
//! from timestamp authorities on the newest stored checkpoint, stored next to the trail.
//!
//! What it does not: no event parsing, no segment objects (only the fence records; the
//! anchor reads segment headers and writes tokens), no verification of the trail (that is
//! `sealtrail-verify`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

pub mod anchor;
pub mod authz;
mod cache;
pub mod fence;
pub mod keys;
pub mod kms;
pub mod log;
pub mod metrics;
pub mod pkcs11;
pub mod rotation;
pub mod service;
pub mod state;
pub mod tls;

pub use fence::Fence;
pub use keys::{DevKeyFile, KeyBackend};
pub use log::{CommitConfig, Log};

/// Errors of the signer. `InvalidRequest` is the caller's fault; `Unavailable` is
/// transient (the caller may retry); the others are the signer's own trouble.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("key backend: {0}")]
    Key(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("another signer already uses the state directory {0}")]
    Locked(PathBuf),
    #[error("state: {0}")]
    State(String),
    #[error("refusing to sign: {0}")]
    Poisoned(String),
    #[error("format: {0}")]
    Format(#[from] sealtrail_core::Error),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::State(e.to_string())
    }
}

/// TLS material of the gRPC endpoint (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA whose client certificates are accepted; a client certificate is required.
    pub client_ca: PathBuf,
}

/// Everything [`run`] needs.
pub struct Config {
    /// The log's origin (one per cluster), also the note key name.
    pub origin: String,
    pub state_dir: PathBuf,
    pub key: Arc<dyn KeyBackend>,
    pub tls: TlsFiles,
    pub commit: CommitConfig,
    /// Which client-certificate identities may append and read.
    pub identities: authz::Identities,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (plain HTTP), if anywhere.
    pub metrics_listener: Option<tokio::net::TcpListener>,
}

/// Opens the state and serves the gRPC API on `listener` until `shutdown` completes; then
/// stops accepting and finishes the requests in flight.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    if !sealtrail_core::checkpoint::is_valid_origin(&config.origin) {
        return Err(Error::Config(format!(
            "invalid origin {:?}: non-empty, no spaces or '+', at most {} bytes",
            config.origin,
            sealtrail_core::checkpoint::MAX_ORIGIN_LEN
        )));
    }
    let dir = config.state_dir.clone();
    // Uncut: a checkpoint lost between fence and commit can still be adopted (fence docs).
    let state = tokio::task::spawn_blocking(move || state::State::open_uncut(&dir))
        .await
        .map_err(|e| Error::State(e.to_string()))??;
    // After the state lock: a second signer on the same directory says so first. Reloaded
    // when its files change; the served certificate's expiry is on /metrics.
    let tls_metrics = sealtrail_ops::tls::TlsMetrics::default();
    let tls = tls::server_tls(&config.tls, &tls_metrics)?;
    tracing::info!(
        origin = %config.origin,
        size = state.size(),
        key_backend = config.key.kind(),
        key_id = format!("{:08x}", config.key.public_key().key_id(&config.origin)),
        "log opened"
    );
    let metrics = Arc::new(metrics::Metrics::default());
    metrics
        .current_key
        .get_or_create(&metrics::KeyLabel {
            key_id: format!("{:08x}", config.key.public_key().key_id(&config.origin)),
            backend: config.key.kind().into(),
        })
        .set(1);
    metrics.tree_size.set(state.size() as i64);
    let log = Log::start_with_metrics(
        state,
        &config.origin,
        config.key.clone(),
        config.commit.clone(),
        metrics.clone(),
    )?;
    if let Err(e) = log.wait_started().await {
        log.close().await;
        return Err(e);
    }
    if let Some(fence) = &config.commit.fence {
        tracing::info!(fence = %fence.describe(), "fencing every checkpoint");
    }
    metrics
        .tree_size
        .set(log.latest()?.map_or(0, |c| c.checkpoint.size) as i64);

    // One shutdown signal for both listeners.
    let stop = sealtrail_ops::Shutdown::new(shutdown);
    let http = config.metrics_listener.map(|l| {
        let health = metrics::health(metrics.clone()).with_tls(tls_metrics);
        sealtrail_ops::spawn_health(health, l, stop.wait())
    });
    let served = service::serve(
        log.clone(),
        config.key,
        config.identities,
        metrics,
        tls,
        listener,
        stop.wait(),
    )
    .await;
    log.close().await;
    if let Some(http) = http {
        let _ = http.await;
    }
    served
}
