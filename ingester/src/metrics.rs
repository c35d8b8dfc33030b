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
use sealtrail_store::{ObjectStore, StoreError};

use crate::spool::Spool;
use sealtrail_proto::v1::signer_client::SignerClient;
use tonic::transport::Channel;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: String,
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
    /// The last signer call and the last store write or probe succeeded (or none happened
    /// yet).
    pub signer_ok: AtomicBool,
    pub store_ok: AtomicBool,
    /// Set when the webhook stops accepting (shutdown): not ready.
    pub draining: AtomicBool,
    newest_micros: AtomicI64,
    /// Batches acknowledged and not sealed yet.
    pub pending_batches: Gauge,
    /// `received_ms` of the oldest of them (0: none).
    pub oldest_unsealed_ms: AtomicU64,
    oldest_unsealed_seconds: Gauge<f64, AtomicU64>,
    pub seal_lag_seconds: Histogram,
    pub sealed_batches: Counter,
    pub events_sealed: Counter,
    pub seal_errors: Family<StageLabel, Counter>,
    pub duplicate_batches: Counter,
    spool_bytes: Gauge,
    spool_records: Gauge,
    pub spool_damaged: Counter,
    pub spool_full: Counter,
    store_up: Gauge,
    signer_up: Gauge,
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
            draining: AtomicBool::new(false),
            newest_micros: AtomicI64::new(i64::MIN),
            registry: Registry::default(),
            pending_batches: Gauge::default(),
            oldest_unsealed_ms: AtomicU64::new(0),
            oldest_unsealed_seconds: Gauge::default(),
            seal_lag_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 18)),
            sealed_batches: Counter::default(),
            events_sealed: Counter::default(),
            seal_errors: Family::default(),
            duplicate_batches: Counter::default(),
            spool_bytes: Gauge::default(),
            spool_records: Gauge::default(),
            spool_damaged: Counter::default(),
            spool_full: Counter::default(),
            store_up: Gauge::default(),
            signer_up: Gauge::default(),
        };
        m.register_sealing(&mut r);
        r.register(
            "audit_last_event_timestamp",
            "stageTimestamp (Unix seconds) of the newest event stored",
            m.last_event_timestamp.clone(),
        );
        r.register(
            "audit_storage_errors",
            "Store writes of pending batches that failed",
            m.storage_errors.clone(),
        );
        r.register(
            "sealtrail_ingester_events_received",
            "Events received in webhook batches",
            m.events_received.clone(),
        );
        r.register(
            "sealtrail_ingester_events_stored",
            "Events durably stored (store or spool) and acknowledged",
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
    fn register_sealing(&self, r: &mut Registry) {
        let p = "sealtrail_ingester_";
        let gauges: [(&str, &str, &Gauge); 5] = [
            (
                "pending_batches",
                "Batches acknowledged and not sealed yet",
                &self.pending_batches,
            ),
            ("spool_bytes", "Bytes in the spool", &self.spool_bytes),
            ("spool_records", "Batches in the spool", &self.spool_records),
            (
                "store_up",
                "1 when the last store write or probe succeeded",
                &self.store_up,
            ),
            (
                "signer_up",
                "1 when the last signer call or probe succeeded",
                &self.signer_up,
            ),
        ];
        for (name, help, g) in gauges {
            r.register(format!("{p}{name}"), help, g.clone());
        }
        let counters: [(&str, &str, &Counter); 5] = [
            (
                "sealed_batches",
                "Batches sealed into the log",
                &self.sealed_batches,
            ),
            (
                "events_sealed",
                "Events sealed into the log",
                &self.events_sealed,
            ),
            (
                "duplicate_batches",
                "Batches found already sealed from an identical batch (retried requests)",
                &self.duplicate_batches,
            ),
            (
                "spool_damaged",
                "Spool records or pending batches that failed their SHA-256 or did not parse (kept aside, not sealed)",
                &self.spool_damaged,
            ),
            (
                "spool_full",
                "Requests refused (503) because the spool was full",
                &self.spool_full,
            ),
        ];
        for (name, help, c) in counters {
            r.register(format!("{p}{name}"), help, c.clone());
        }
        r.register(
            format!("{p}oldest_unsealed_seconds"),
            "Age of the oldest batch acknowledged and not sealed (0: none)",
            self.oldest_unsealed_seconds.clone(),
        );
        r.register(
            format!("{p}seal_lag_seconds"),
            "Time from a batch's receipt to its segment being stored",
            self.seal_lag_seconds.clone(),
        );
        r.register(
            format!("{p}seal_errors"),
            "Failed sealing steps (each is retried), by stage",
            self.seal_errors.clone(),
        );
    }

    pub fn seal_error(&self, stage: &str) {
        self.seal_errors
            .get_or_create(&StageLabel {
                stage: stage.into(),
            })
            .inc();
    }

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
        let oldest = self.oldest_unsealed_ms.load(Ordering::Relaxed);
        let age = if oldest == 0 {
            0.0
        } else {
            crate::now_ms().saturating_sub(oldest) as f64 / 1000.0
        };
        self.oldest_unsealed_seconds.set(age);
        self.store_up
            .set(self.store_ok.load(Ordering::Relaxed).into());
        self.signer_up
            .set(self.signer_ok.load(Ordering::Relaxed).into());
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Time a probe waits for the store or the signer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Room the spool must have for the ingester to call itself ready without the store.
const READY_SPOOL_ROOM: u64 = 64 * 1024 * 1024;

/// Probes the store and the signer every [`crate::PROBE_INTERVAL`], so that readiness and
/// the `*_up` gauges recover by themselves when they come back (an unready pod gets no
/// requests, so the requests themselves cannot be what brings it back).
pub async fn probe_loop(
    metrics: Arc<Metrics>,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    signer: SignerClient<Channel>,
    spool: Option<Arc<Spool>>,
) {
    let probe_key = format!("{prefix}{}probe", sealtrail_core::pending::PENDING_PREFIX);
    loop {
        let store_ok =
            match tokio::time::timeout(PROBE_TIMEOUT, store.get_prefix(&probe_key, 1)).await {
                Ok(Ok(_)) | Ok(Err(StoreError::NotFound(_))) => true,
                Ok(Err(StoreError::Unavailable(_) | StoreError::Io(_))) | Err(_) => false,
                Ok(Err(_)) => true,
            };
        metrics.store_ok.store(store_ok, Ordering::Relaxed);
        let answer = tokio::time::timeout(
            PROBE_TIMEOUT,
            signer.clone().latest_checkpoint(LatestCheckpointRequest {}),
        )
        .await;
        let signer_ok = match answer {
            Ok(Ok(_)) => true,
            // An empty log is a reachable signer.
            Ok(Err(s)) => s.code() == tonic::Code::NotFound,
            Err(_) => false,
        };
        metrics.signer_ok.store(signer_ok, Ordering::Relaxed);
        if let Some(spool) = &spool {
            metrics.spool_bytes.set(spool.used_bytes() as i64);
            metrics.spool_records.set(spool.records() as i64);
        }
        tokio::time::sleep(crate::PROBE_INTERVAL).await;
    }
}

/// The health listener's view of the ingester: its metrics; ready while it can make a batch
/// durable — the spool has room (with a spool), or the store answers (without). The signer
/// is not needed to accept (batches wait for it, sealed later).
pub fn health(metrics: Arc<Metrics>, spool: Option<Arc<Spool>>) -> sealtrail_ops::Health {
    let (m, counted) = (metrics.clone(), spool.clone());
    sealtrail_ops::Health {
        metrics: Arc::new(move || {
            if let Some(spool) = &counted {
                m.spool_bytes.set(spool.used_bytes() as i64);
                m.spool_records.set(spool.records() as i64);
            }
            m.encode()
        }),
        ready: Arc::new(move || {
            let (metrics, spool) = (metrics.clone(), spool.clone());
            Box::pin(async move {
                if metrics.draining.load(Ordering::Relaxed) {
                    return Some("shutting down".to_string());
                }
                // With a spool every request is recorded there first: no room, no request.
                match spool {
                    Some(s) if !s.has_room(READY_SPOOL_ROOM) => {
                        Some("the spool is full (batches wait for sealing)".into())
                    }
                    Some(_) => None,
                    None if metrics.store_ok.load(Ordering::Relaxed) => None,
                    None => Some("the store does not answer (and there is no spool)".into()),
                }
            })
        }),
    }
}
