//! Sealtrail's ingester: the kube-apiserver's audit webhook backend.
//!
//! For each `POST` of an `EventList` it canonicalizes every event (RFC 8785, see
//! `sealtrail-core`), writes the batch as an immutable *pending batch* — to the local
//! [`spool`] (fsynced) when one is configured, and create-new to the
//! [`ObjectStore`](sealtrail_store::ObjectStore) — and answers 200 as soon as it is durable:
//! in the store, or in the spool while the store is unreachable. Nothing waits for a
//! signature. The [`sealer`] then appends each batch's leaf hashes to the signer, in order,
//! and writes the segment that seals it (events, inclusion proofs, signed checkpoint, and
//! the pending batch's key and SHA-256). Capture therefore rides out outages of the signer
//! and of the store as long as the spool has room for what waits (a batch leaves it once
//! sealed; the default 8 GiB holds about 90 minutes at 1,000 events/s); a full spool
//! answers 503, so the apiserver retries rather than a batch being acknowledged that no
//! process would remember to seal.
//!
//! What it does not: hold a signing key, or decide indexes (the signer does). Its only
//! state is the spool, which holds batches until they are sealed.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use sealtrail_store::ObjectStore;

/// How the ingester dials the signer (shared with the verifier).
pub use sealtrail_proto::client as signer_client;

pub mod metrics;
pub mod sealer;
mod server;
pub mod spool;
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
/// Default bound of the spool (`--spool-max-bytes`): at 1,000 events/s of 1.5 KB, about
/// 90 minutes of a store outage.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 8 * 1024 * 1024 * 1024;
/// Default time a request waits for the store once its spool record is durable.
pub const DEFAULT_STORE_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Default time graceful shutdown keeps sealing queued batches (what is left stays in the
/// spool, or pending in the store).
pub const DEFAULT_SEAL_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// Default memory batches kept from acknowledgement until sealed may hold; beyond it they
/// are read back from the spool or the store when their turn comes (a read and a SHA-256
/// check: no parsing), up to as much again for the group being sealed.
pub const DEFAULT_MAX_UNSEALED_MEMORY: usize = 64 * 1024 * 1024;
/// How often readiness re-probes the store (and the signer, for the metrics).
pub const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The ingester's clock, Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

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
    #[error("{0}")]
    SpoolFull(String),
    #[error("spool: {0}")]
    Spool(String),
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
    /// The local durable spool; without one, a request is acknowledged only once the store
    /// holds it, and batches queued for sealing when the process dies stay pending in the
    /// store, unsealed (the verifier reports them as `unsealed_batch` past its grace).
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: u64,
    pub store_ack_timeout: std::time::Duration,
    pub seal_drain_timeout: std::time::Duration,
    pub max_unsealed_memory: usize,
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
            spool_dir: None,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            store_ack_timeout: DEFAULT_STORE_ACK_TIMEOUT,
            seal_drain_timeout: DEFAULT_SEAL_DRAIN_TIMEOUT,
            max_unsealed_memory: DEFAULT_MAX_UNSEALED_MEMORY,
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
    let metrics = Arc::new(metrics::Metrics::default());
    let (spool, recovered) = open_spool(&config, &metrics).await?;
    let sealer = Arc::new(sealer::Sealer::new(
        config.origin.clone(),
        config.prefix.clone(),
        config.store.clone(),
        signer.clone(),
        spool.clone(),
        metrics.clone(),
        config.max_unsealed_memory,
    ));
    for r in recovered {
        sealer.submit(sealer::Entry {
            key: format!("{}{}", config.prefix, r.key),
            sha256: r.sha256,
            received_ms: r.received_ms,
            count: r.count,
            len: r.len,
            spool_name: Some(r.name),
            stored: false,
            batch: None,
        });
    }
    let sealing = tokio::spawn(sealer.clone().run());
    let prober = tokio::spawn(metrics::probe_loop(
        metrics.clone(),
        config.store.clone(),
        config.prefix.clone(),
        signer,
        spool.clone(),
    ));
    let app = Arc::new(webhook::App {
        store: config.store,
        prefix: config.prefix,
        sealer: sealer.clone(),
        spool: spool.clone(),
        store_ack_timeout: config.store_ack_timeout,
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
        let health = metrics::health(metrics.clone(), spool).with_tls(tls_metrics);
        sealtrail_ops::spawn_health(health, l, stop.wait())
    });
    let served = server::serve(
        webhook::router(app),
        tls,
        Arc::new(config.allowed_clients),
        listener,
        stop.wait(),
    )
    .await;
    // No new batch can arrive now: seal what is queued, for a while.
    metrics
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    sealer.drain();
    if tokio::time::timeout(config.seal_drain_timeout, sealing)
        .await
        .is_err()
    {
        let left = sealer.unsealed_keys();
        tracing::warn!(
            batches = left.len(),
            keys = ?left,
            "stopped with batches not sealed yet: they stay in the spool (sealed at the next \
             start) or, without a spool, pending in the store"
        );
    }
    prober.abort();
    if let Some(http) = http {
        let _ = http.await;
    }
    served
}

/// Opens the spool, if one is configured, and what it holds from before.
async fn open_spool(
    config: &Config,
    metrics: &metrics::Metrics,
) -> Result<(Option<Arc<spool::Spool>>, Vec<spool::Recovered>), Error> {
    let Some(dir) = config.spool_dir.clone() else {
        return Ok((None, Vec::new()));
    };
    let max = config.spool_max_bytes;
    let (spool, recovered, damaged) =
        tokio::task::spawn_blocking(move || spool::Spool::open(&dir, max))
            .await
            .map_err(|e| Error::Internal(format!("spool task: {e}")))?
            .map_err(|e| Error::Config(format!("spool: {e}")))?;
    for name in &damaged {
        metrics.spool_damaged.inc();
        tracing::error!(
            record = name,
            "damaged spool record moved to damaged/, not sealed"
        );
    }
    if !recovered.is_empty() {
        tracing::info!(
            batches = recovered.len(),
            "sealing batches the spool held at start"
        );
    }
    Ok((Some(Arc::new(spool)), recovered))
}
