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

/// How the ingester dials the signer (shared with the verifier).
pub use sealtrail_proto::client as signer_client;

pub mod metrics;
mod server;
mod webhook;

/// Default limit of a webhook body. Batches of 400 large events exceed 10 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// The route the webhook kubeconfig's server URL points at.
pub const WEBHOOK_PATH: &str = "/v1/audit";
/// Default bound on requests being handled at once; beyond it, 429.
pub const DEFAULT_MAX_IN_FLIGHT_REQUESTS: usize = 64;
/// Default bound on the memory requests may hold at once (bodies times
/// `MEMORY_PER_BODY_BYTE`); beyond it, 429 (memory stays bounded).
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 512 * 1024 * 1024;
/// Default time a client gets to send a whole body (the apiserver's own timeout is 30 s).
pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

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
    #[error("not authorized: {0}")]
    Unauthorized(String),
    #[error("client identity {0:?} is not allowed")]
    Forbidden(Vec<String>),
    #[error("too busy: {0}")]
    Busy(String),
    #[error("the body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
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
    /// TLS of the webhook; `None` serves plain HTTP (only on the operator's explicit
    /// `--insecure-http`, e.g. behind a TLS-terminating sidecar on the same pod).
    pub tls: Option<ServerTls>,
    pub max_body_bytes: usize,
    pub max_in_flight_requests: usize,
    pub max_in_flight_bytes: usize,
    pub body_timeout: std::time::Duration,
    /// Client-certificate identities (CN or SAN) allowed to post; empty: any from the CA.
    pub allowed_clients: Vec<String>,
    /// If set, requests must carry `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// Where to serve `/metrics`, `/healthz`, `/readyz` (plain HTTP), if anywhere.
    pub metrics_listener: Option<tokio::net::TcpListener>,
}

impl Config {
    /// A configuration with every limit at its default.
    pub fn new(
        origin: String,
        store: Arc<dyn ObjectStore>,
        signer: signer_client::SignerClientConfig,
        tls: ServerTls,
    ) -> Self {
        Self {
            origin,
            store,
            prefix: String::new(),
            signer,
            tls: Some(tls),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_in_flight_requests: DEFAULT_MAX_IN_FLIGHT_REQUESTS,
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            allowed_clients: Vec::new(),
            bearer_token: None,
            metrics_listener: None,
        }
    }
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
    if config.max_in_flight_bytes < config.max_body_bytes * webhook::MEMORY_PER_BODY_BYTE {
        return Err(Error::Config(format!(
            "max in-flight bytes must be at least {} times the body limit (a request holds \
             about that much memory per body byte)",
            webhook::MEMORY_PER_BODY_BYTE
        )));
    }
    // Certificates are reloaded when their files change; their expiry is on /metrics.
    let tls_metrics = sealtrail_ops::tls::TlsMetrics::default();
    let signer =
        signer_client::connect_with(&config.signer, &tls_metrics, "ingester-signer-client")
            .map_err(|e| Error::Config(e.to_string()))?;
    // Readiness asks the signer (a cheap read) rather than trusting the last Append alone.
    let probe = signer.clone();
    let metrics = Arc::new(metrics::Metrics::default());
    let app = Arc::new(webhook::App {
        origin: config.origin,
        store: config.store,
        prefix: config.prefix,
        signer,
        max_body_bytes: config.max_body_bytes,
        body_timeout: config.body_timeout,
        requests: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight_requests)),
        kib: Arc::new(tokio::sync::Semaphore::new(
            config.max_in_flight_bytes / 1024,
        )),
        bearer_token: config.bearer_token,
        metrics: metrics.clone(),
    });
    let tls = match &config.tls {
        Some(files) => Some(server::tls_config(files, &tls_metrics)?),
        None if !config.allowed_clients.is_empty() => {
            return Err(Error::Config(
                "a client allowlist needs TLS client certificates (not --insecure-http)".into(),
            ));
        }
        None => {
            tracing::warn!("serving plain HTTP: no client authentication on the webhook");
            None
        }
    };

    let stop = sealtrail_ops::Shutdown::new(shutdown);
    let http = config.metrics_listener.map(|l| {
        let health = metrics::health(metrics, probe).with_tls(tls_metrics);
        let stop = stop.wait();
        tokio::spawn(async move {
            if let Err(e) = sealtrail_ops::serve_health(health, l, stop).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        })
    });
    let served = server::serve(
        webhook::router(app),
        tls,
        Arc::new(config.allowed_clients),
        listener,
        stop.wait(),
    )
    .await;
    if let Some(http) = http {
        let _ = http.await;
    }
    served
}
