//! Sealtrail's ingester: the kube-apiserver's audit webhook backend.
//!
//! For each `POST` of an `EventList` it canonicalizes every event (RFC 8785, see
//! `sealtrail-core`), sends only their leaf hashes to the signer in one Append, writes the
//! events with their inclusion proofs and the signed checkpoint as one segment object
//! through an [`ObjectStore`](sealtrail_store::ObjectStore), and answers 200 only once that
//! write is durable. Any failure answers non-2xx, so the apiserver re-sends the batch.
//!
//! What it does not: it keeps no state (any replica can die at any time), holds no
//! signing key, and never decides indexes (the signer does).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use sealtrail_store::ObjectStore;

mod server;
pub mod signer_client;
mod webhook;

/// Default limit of a webhook body. Batches of 400 large events exceed 10 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// The route the webhook kubeconfig's server URL points at.
pub const WEBHOOK_PATH: &str = "/v1/audit";

/// Errors of the ingester. The `BadRequest`/`TooLarge`/`UnsupportedMediaType` ones are the
/// client's; `Unavailable` is transient; the rest are internal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad request: {0}")]
    BadRequest(#[from] sealtrail_core::Error),
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unsupported content type {0:?} (expected application/json)")]
    UnsupportedMediaType(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("the signer answered something invalid: {0}")]
    BadSignerAnswer(String),
    #[error("storage: {0}")]
    Store(#[from] sealtrail_store::StoreError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("internal: {0}")]
    Internal(String),
}

/// TLS of the webhook endpoint (PEM files).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA of the apiserver's client certificate. A client certificate is required.
    pub client_ca: PathBuf,
}

/// Everything [`run`] needs.
pub struct Config {
    /// The log origin this ingester's cluster writes to; the signer's checkpoints must carry it.
    pub origin: String,
    pub store: Arc<dyn ObjectStore>,
    /// Prefix of every object key (e.g. `"prod-eu-1/"`), possibly empty.
    pub prefix: String,
    pub signer: signer_client::SignerClientConfig,
    pub tls: ServerTls,
    pub max_body_bytes: usize,
}

/// Serves the webhook on `listener` until `shutdown` completes, then stops accepting and
/// drains the requests in flight.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    if !sealtrail_core::checkpoint::is_valid_origin(&config.origin) {
        return Err(Error::Config(format!("invalid origin {:?}", config.origin)));
    }
    if !config.prefix.is_empty() {
        sealtrail_store::validate_key(config.prefix.trim_end_matches('/'))
            .map_err(|e| Error::Config(format!("prefix: {e}")))?;
        if !config.prefix.ends_with('/') {
            return Err(Error::Config("prefix must end with '/'".into()));
        }
    }
    let signer = signer_client::connect(&config.signer)?;
    let app = Arc::new(webhook::App {
        origin: config.origin,
        store: config.store,
        prefix: config.prefix,
        signer,
        max_body_bytes: config.max_body_bytes,
    });
    let tls = server::tls_config(&config.tls)?;
    server::serve(webhook::router(app), tls, listener, shutdown).await
}
