//! Prometheus metrics and readiness, served by `sealtrail-ops` on a plain HTTP listener of
//! their own (metrics carry no secrets; the gRPC port stays mTLS-only).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabel {
    pub key_id: String,
    pub backend: String,
}

/// The signer's metrics.
pub struct Metrics {
    registry: Registry,
    pub tree_size: Gauge,
    pub checkpoints_signed: Counter,
    pub leaves_appended: Counter,
    pub sign_seconds: Histogram,
    pub sign_errors: Family<BackendLabel, Counter>,
    pub appends_rejected: Family<ReasonLabel, Counter>,
    pub current_key: Family<KeyLabel, Gauge>,
    /// False once the signer refuses to sign (a checkpoint could not be made durable).
    pub ready: AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sealtrail_signer");
        let m = Self {
            tree_size: Gauge::default(),
            checkpoints_signed: Counter::default(),
            leaves_appended: Counter::default(),
            // 100 µs (a dev key) to ~3 s (a throttled KMS).
            sign_seconds: Histogram::new(exponential_buckets(0.0001, 2.5, 14)),
            sign_errors: Family::default(),
            appends_rejected: Family::default(),
            current_key: Family::default(),
            ready: AtomicBool::new(true),
            registry: Registry::default(),
        };
        registry.register("tree_size", "Leaves in the log", m.tree_size.clone());
        registry.register(
            "checkpoints_signed",
            "Checkpoints signed and made durable",
            m.checkpoints_signed.clone(),
        );
        registry.register(
            "leaves_appended",
            "Leaves appended",
            m.leaves_appended.clone(),
        );
        registry.register(
            "sign_seconds",
            "Time to get a checkpoint signature from the key backend",
            m.sign_seconds.clone(),
        );
        registry.register(
            "sign_errors",
            "Failed signatures by key backend",
            m.sign_errors.clone(),
        );
        registry.register(
            "appends_rejected",
            "Append calls refused, by reason",
            m.appends_rejected.clone(),
        );
        registry.register(
            "current_key",
            "The key that signs new checkpoints (value 1)",
            m.current_key.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    pub fn reject(&self, reason: &str) {
        self.appends_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// The health listener's view of the signer: its metrics, and ready unless it refuses to
/// sign.
pub fn health(metrics: Arc<Metrics>) -> sealtrail_ops::Health {
    let m = metrics.clone();
    sealtrail_ops::Health {
        metrics: Arc::new(move || m.encode()),
        ready: Arc::new(move || {
            let ready = metrics.is_ready();
            Box::pin(async move { (!ready).then(|| "refusing to sign: see the logs".to_string()) })
        }),
    }
}
