//! The source's metrics: how far behind CloudWatch it is, what it read, sent, retried and
//! found damaged.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Default)]
pub struct Metrics {
    /// Log events returned by FilterLogEvents (windows overlap: an event may count twice).
    pub read: Counter,
    /// Events stored in the trail (2xx from the ingester), damaged ones included.
    pub sent: Counter,
    /// Messages that were not whole audit events, kept as damaged source events.
    pub damaged: Counter,
    /// Batches sent again after a failure (the ingester or the store unavailable).
    pub retries: Counter,
    /// Event time up to which the log group has been read, Unix seconds.
    through: Gauge<f64, AtomicU64>,
    /// Wall clock minus that, seconds: the source's lag behind CloudWatch.
    lag: Gauge<f64, AtomicU64>,
}

impl Metrics {
    pub fn set_through(&self, through_ms: i64, now_ms: i64) {
        self.through.set(through_ms as f64 / 1000.0);
        self.lag.set((now_ms - through_ms) as f64 / 1000.0);
    }

    /// OpenMetrics text.
    pub fn render(&self) -> String {
        let mut r = Registry::with_prefix("sealtrail_cloudwatch");
        r.register(
            "events_read",
            "Log events FilterLogEvents returned",
            self.read.clone(),
        );
        r.register(
            "events_sent",
            "Events stored in the trail",
            self.sent.clone(),
        );
        r.register(
            "damaged_events",
            "Messages that were not whole audit events, stored as damaged source events",
            self.damaged.clone(),
        );
        r.register(
            "batch_retries",
            "Batches sent again after a failure",
            self.retries.clone(),
        );
        r.register(
            "read_through_seconds",
            "Event time up to which the log group was read",
            self.through.clone(),
        );
        r.register(
            "lag_seconds",
            "Wall clock minus the event time read through",
            self.lag.clone(),
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &r);
        out
    }
}
