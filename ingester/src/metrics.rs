//! Prometheus metrics and readiness, served by `sealtrail-ops` on a plain HTTP listener of
//! their own.
//! `audit_last_event_timestamp` and `audit_storage_errors_total` carry the names the
//! reference article's alert rules use, so such rules work unchanged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sealtrail_proto::v1::LatestCheckpointRequest;
use sealtrail_proto::v1::signer_client::SignerClient;
use tonic::transport::Channel;

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
}

/// Time a readiness probe waits for the signer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The health listener's view of the ingester: its metrics; ready when the signer answers a
/// read now and the last segment write (if any) succeeded.
pub fn health(metrics: Arc<Metrics>, signer: SignerClient<Channel>) -> sealtrail_ops::Health {
    let m = metrics.clone();
    sealtrail_ops::Health {
        metrics: Arc::new(move || m.encode()),
        ready: Arc::new(move || {
            let (metrics, mut signer) = (metrics.clone(), signer.clone());
            Box::pin(async move {
                let answer = tokio::time::timeout(
                    PROBE_TIMEOUT,
                    signer.latest_checkpoint(LatestCheckpointRequest {}),
                )
                .await;
                let signer_ok = match answer {
                    Ok(Ok(_)) => true,
                    // An empty log is a reachable signer.
                    Ok(Err(s)) => s.code() == tonic::Code::NotFound,
                    Err(_) => false,
                };
                metrics.signer_ok.store(signer_ok, Ordering::Relaxed);
                if !signer_ok {
                    Some("the signer does not answer".to_string())
                } else if !metrics.store_ok.load(Ordering::Relaxed) {
                    Some("the last segment write failed".to_string())
                } else {
                    None
                }
            })
        }),
    }
}
