//! Sealtrail's signer: the single writer of a cluster's Merkle log.
//!
//! It assigns leaf indexes to the 32-byte leaf hashes the ingesters send (never event
//! content), keeps the RFC 6962 tree in its state directory, signs a chained checkpoint per
//! group commit with a key it never exports, and answers only once leaves and checkpoint
//! are durable. It serves the `sealtrail.v1.Signer` gRPC service over mutual TLS.
//!
//! What it does not: no event parsing, no object storage, no verification of the trail
//! (that is `sealtrail-verify`). Key backends in this version: the development key file
//! only ([`keys::DevKeyFile`], refused without `--insecure-dev-key`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

pub mod keys;
pub mod log;
pub mod service;
pub mod state;

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
    let state = tokio::task::spawn_blocking(move || state::State::open(&dir))
        .await
        .map_err(|e| Error::State(e.to_string()))??;
    tracing::info!(
        origin = %config.origin,
        size = state.size(),
        key_backend = config.key.kind(),
        key_id = format!("{:08x}", config.key.public_key().key_id(&config.origin)),
        "log opened"
    );
    let log = Log::start(state, &config.origin, config.key.clone(), config.commit)?;
    service::serve(log, config.key, &config.tls, listener, shutdown).await
}
