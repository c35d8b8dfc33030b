//! Prometheus metrics and `/healthz`, `/readyz` on a plain HTTP listener of their own.
//! `audit_last_event_timestamp` and `audit_storage_errors_total` carry the names the
//! reference article's alert rules use, so such rules work unchanged.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

pub struct Metrics {
    registry: Registry,
    /// Newest `stageTimestamp` (Unix seconds) of an event stored and acknowledged.
    pub last_event_timestamp: Gauge<f64, AtomicU64>,
    pub storage_errors: Counter,
    pub events_received: Counter,
    pub events_stored: Counter,
    pub events_rejected: Family<ReasonLabel, Counter>,
    pub batch_size: Histogram,
    pub request_seconds: Histogram,
    pub signer_rpc_seconds: Histogram,
    /// The last signer call and the last store write succeeded (or none happened yet).
    pub signer_ok: AtomicBool,
    pub store_ok: AtomicBool,
    newest_micros: AtomicI64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        let m = Self {
            last_event_timestamp: Gauge::default(),
            storage_errors: Counter::default(),
            events_received: Counter::default(),
            events_stored: Counter::default(),
            events_rejected: Family::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            request_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            signer_rpc_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            signer_ok: AtomicBool::new(true),
            store_ok: AtomicBool::new(true),
            newest_micros: AtomicI64::new(i64::MIN),
            registry: Registry::default(),
        };
        r.register(
            "audit_last_event_timestamp",
            "stageTimestamp (Unix seconds) of the newest event stored",
            m.last_event_timestamp.clone(),
        );
        r.register(
            "audit_storage_errors",
            "Segment writes that failed",
            m.storage_errors.clone(),
        );
        r.register(
            "sealtrail_ingester_events_received",
            "Events received in webhook batches",
            m.events_received.clone(),
        );
        r.register(
            "sealtrail_ingester_events_stored",
            "Events stored and acknowledged",
            m.events_stored.clone(),
        );
        r.register(
            "sealtrail_ingester_events_rejected",
            "Events not stored, by reason",
            m.events_rejected.clone(),
        );
        r.register(
            "sealtrail_ingester_batch_size",
            "Events per webhook batch",
            m.batch_size.clone(),
        );
        r.register(
            "sealtrail_ingester_request_seconds",
            "Webhook request latency",
            m.request_seconds.clone(),
        );
        r.register(
            "sealtrail_ingester_signer_rpc_seconds",
            "Signer Append latency",
            m.signer_rpc_seconds.clone(),
        );
        Self { registry: r, ..m }
    }
}

impl Metrics {
    pub fn rejected(&self, reason: &str, events: u64) {
        self.events_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc_by(events);
    }

    /// Raises `audit_last_event_timestamp` to `micros` (Unix microseconds) if newer.
    pub fn saw_event_time(&self, micros: i64) {
        let newest = self
            .newest_micros
            .fetch_max(micros, Ordering::Relaxed)
            .max(micros);
        self.last_event_timestamp.set(newest as f64 / 1e6);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn is_ready(&self) -> bool {
        self.signer_ok.load(Ordering::Relaxed) && self.store_ok.load(Ordering::Relaxed)
    }
}

/// Serves `/metrics`, `/healthz`, `/readyz` until `shutdown`.
pub async fn serve(
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let m = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let m = metrics.clone();
                async move {
                    if m.is_ready() {
                        (StatusCode::OK, "ready")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the last signer call or store write failed",
                        )
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
