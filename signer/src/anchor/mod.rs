//! The anchor (`sealtrail-signer anchor`): the signer's companion that gets an RFC 3161
//! timestamp for the newest stored checkpoint from every configured timestamp authority,
//! at most once per interval, and stores each token create-new beside the trail
//! (docs/FORMAT.md §10).
//!
//! It holds no key of the log. It anchors the checkpoint of the newest segment in the
//! store (a checkpoint every verifier already holds), so that a token needs nothing else
//! to be checked. A TSA that is down or refuses never blocks ingest: the anchor retries at
//! the next interval, and the lag of each TSA is a metric that alerts past `alert_after`.

mod newest;
mod tsa;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::timestamp;
use sealtrail_core::trust::Trust;
use sealtrail_store::{ObjectStore, StoreError};

pub use newest::NewestCheckpoint;
pub use tsa::{Tsa, TsaError, client_tls};

/// Default least time between two requests to one TSA.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Default lag after which a TSA is overdue (`sealtrail_anchor_overdue`).
pub const DEFAULT_ALERT_AFTER: Duration = Duration::from_secs(15 * 60);
/// Default time one request may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the anchor does.
#[derive(Debug, Clone)]
pub struct AnchorConfig {
    /// Object key prefix of the log (as the ingester's `--prefix`).
    pub prefix: String,
    pub tsas: Vec<Tsa>,
    /// Verifies the checkpoints the anchor finds (the signer's exported key history).
    pub trust: Trust,
    pub interval: Duration,
    pub alert_after: Duration,
    pub timeout: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TsaLabel {
    pub tsa: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabel {
    pub tsa: String,
    pub reason: String,
}

/// The anchor's metrics (prefix `sealtrail_anchor`).
pub struct AnchorMetrics {
    registry: Registry,
    pub tokens: Family<TsaLabel, Counter>,
    pub failures: Family<FailureLabel, Counter>,
    pub anchored_size: Family<TsaLabel, Gauge>,
    pub lag_seconds: Family<TsaLabel, Gauge>,
    pub overdue: Family<TsaLabel, Gauge>,
    pub store_errors: Counter,
    pub unverified_checkpoints: Counter,
}

impl Default for AnchorMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sealtrail_anchor");
        let m = Self {
            registry: Registry::default(),
            tokens: Family::default(),
            failures: Family::default(),
            anchored_size: Family::default(),
            lag_seconds: Family::default(),
            overdue: Family::default(),
            store_errors: Counter::default(),
            unverified_checkpoints: Counter::default(),
        };
        registry.register(
            "tokens",
            "Tokens obtained, checked and stored, by TSA",
            m.tokens.clone(),
        );
        registry.register(
            "failures",
            "Failed token requests, by TSA and reason (unreachable, http, refused, store)",
            m.failures.clone(),
        );
        registry.register(
            "anchored_size",
            "Tree size of the newest checkpoint a stored token of the TSA covers",
            m.anchored_size.clone(),
        );
        registry.register(
            "lag_seconds",
            "Seconds since the oldest stored checkpoint the TSA's tokens do not cover yet (0: up to date)",
            m.lag_seconds.clone(),
        );
        registry.register(
            "overdue",
            "1 while the TSA's lag is beyond --tsa-alert-after",
            m.overdue.clone(),
        );
        registry.register(
            "store_errors",
            "Failed reads of the store while looking for the newest checkpoint",
            m.store_errors.clone(),
        );
        registry.register(
            "unverified_checkpoints",
            "Newest segments whose checkpoint the anchor's trust bundle does not verify (passed over: a stale bundle after a rotation, or a planted segment)",
            m.unverified_checkpoints.clone(),
        );
        Self { registry, ..m }
    }
}

impl std::fmt::Debug for AnchorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnchorMetrics")
    }
}

impl AnchorMetrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The health listener's view: metrics, and always ready (a TSA down is an alert, not
    /// a reason to restart the anchor).
    pub fn health(self: Arc<Self>) -> sealtrail_ops::Health {
        sealtrail_ops::Health {
            metrics: Arc::new(move || self.encode()),
            ready: Arc::new(|| Box::pin(async { None })),
        }
    }
}

/// Where one TSA stands.
#[derive(Debug, Default)]
struct TsaState {
    /// Text hash of the newest checkpoint it has a stored token for.
    anchored: Option<[u8; 32]>,
    /// Time (Unix ms) of the oldest checkpoint seen since then that it does not cover.
    behind_since_ms: Option<u64>,
}

/// Anchors until `shutdown`: each interval, the newest stored checkpoint, with each TSA.
pub async fn run(
    config: AnchorConfig,
    store: Arc<dyn ObjectStore>,
    metrics: Arc<AnchorMetrics>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let tls = client_tls();
    let mut newest = NewestCheckpoint::new(&config.prefix);
    let mut states: Vec<TsaState> = config.tsas.iter().map(|_| TsaState::default()).collect();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut shutdown => return,
        }
        let cp = match newest.find(store.as_ref(), &config.trust).await {
            Ok((cp, unverified)) => {
                metrics.unverified_checkpoints.inc_by(unverified);
                cp
            }
            Err(e) => {
                metrics.store_errors.inc();
                tracing::warn!(error = %e, "anchor: cannot read the newest checkpoint");
                // Whatever is stored meanwhile waits for a token: the lag runs from now.
                for state in &mut states {
                    state.behind_since_ms.get_or_insert_with(now_ms);
                }
                None
            }
        };
        let round = async {
            for (tsa, state) in config.tsas.iter().zip(&mut states) {
                if let Some(cp) = &cp {
                    anchor_one(&config, store.as_ref(), &metrics, &tls, tsa, state, cp).await;
                }
                // Also while the store cannot be read: the lag keeps growing, and alerts.
                report_lag(&config, &metrics, tsa, state);
            }
        };
        // A stop does not wait for TSAs that are slow to answer (nothing is half-stored:
        // a token is one create-new write).
        tokio::select! {
            () = round => {}
            () = &mut shutdown => return,
        }
    }
}

/// Makes sure `tsa` has a stored token for `cp`, then updates its metrics.
async fn anchor_one(
    config: &AnchorConfig,
    store: &dyn ObjectStore,
    metrics: &AnchorMetrics,
    tls: &Arc<rustls::ClientConfig>,
    tsa: &Tsa,
    state: &mut TsaState,
    cp: &SignedCheckpoint,
) {
    let label = TsaLabel {
        tsa: tsa.name().to_string(),
    };
    let hash = cp.hash();
    if state.anchored == Some(hash) {
        // Up to date (again, after a store outage): nothing newer is stored.
        state.behind_since_ms = None;
    } else {
        state.behind_since_ms.get_or_insert(cp.checkpoint.time_ms);
        match stamp_and_store(config, store, tls, tsa, cp).await {
            Ok(created) => {
                if created {
                    metrics.tokens.get_or_create(&label).inc();
                }
                state.anchored = Some(hash);
                state.behind_since_ms = None;
                metrics
                    .anchored_size
                    .get_or_create(&label)
                    .set(i64::try_from(cp.checkpoint.size).unwrap_or(i64::MAX));
            }
            Err((reason, why)) => {
                tracing::warn!(tsa = tsa.name(), size = cp.checkpoint.size, error = %why, "anchor: no token this time");
                metrics
                    .failures
                    .get_or_create(&FailureLabel {
                        tsa: label.tsa.clone(),
                        reason: reason.into(),
                    })
                    .inc();
            }
        }
    }
}

/// The lag and overdue gauges of `tsa`.
fn report_lag(config: &AnchorConfig, metrics: &AnchorMetrics, tsa: &Tsa, state: &TsaState) {
    let label = TsaLabel {
        tsa: tsa.name().to_string(),
    };
    let lag_ms = state
        .behind_since_ms
        .map_or(0, |since| now_ms().saturating_sub(since));
    let lag = Duration::from_millis(lag_ms);
    metrics
        .lag_seconds
        .get_or_create(&label)
        .set(i64::try_from(lag.as_secs()).unwrap_or(i64::MAX));
    metrics
        .overdue
        .get_or_create(&label)
        .set(i64::from(lag > config.alert_after));
}

/// A checked token of `tsa` for `cp`, stored create-new. `Ok(false)`: one was stored
/// already (a restart, or another anchor).
async fn stamp_and_store(
    config: &AnchorConfig,
    store: &dyn ObjectStore,
    tls: &Arc<rustls::ClientConfig>,
    tsa: &Tsa,
    cp: &SignedCheckpoint,
) -> Result<bool, (&'static str, String)> {
    let key = timestamp::object_key(&config.prefix, cp.checkpoint.size, &cp.hash(), tsa.name());
    match store.get(&key).await {
        Ok(existing) => return already_stored(&key, &existing, tsa, cp),
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(("store", e.to_string())),
    }
    let (token, info) = tsa
        .stamp(&cp.hash(), tls, config.timeout)
        .await
        .map_err(|e| (e.reason(), e.to_string()))?;
    let behind = cp
        .checkpoint
        .time_ms
        .saturating_sub(info.gen_time_ms + info.accuracy_ms);
    // The verifier's default tolerance: never store a token `verify` would call
    // time_inconsistent (a TSA or signer clock is wrong: the failure alerts instead).
    if behind > timestamp::DEFAULT_TIME_TOLERANCE.as_millis() as u64 {
        return Err((
            "refused",
            format!(
                "the TSA's time is {behind} ms before the checkpoint's: a clock is wrong (not stored)"
            ),
        ));
    }
    match store.put_new(&key, &token).await {
        Ok(_) => {
            tracing::info!(
                tsa = tsa.name(),
                size = cp.checkpoint.size,
                tsa_time_ms = info.gen_time_ms,
                "anchored"
            );
            Ok(true)
        }
        // Another anchor stored its own token for this checkpoint meanwhile.
        Err(StoreError::Conflict(_)) => match store.get(&key).await {
            Ok(existing) => already_stored(&key, &existing, tsa, cp),
            Err(e) => Err(("store", e.to_string())),
        },
        Err(e) => Err(("store", e.to_string())),
    }
}

/// What is already at a token's key counts only if it is a valid token of `tsa` for `cp`:
/// anything else cannot be replaced (create-new) and is the verifier's `bad_timestamp`.
fn already_stored(
    key: &str,
    existing: &[u8],
    tsa: &Tsa,
    cp: &SignedCheckpoint,
) -> Result<bool, (&'static str, String)> {
    match timestamp::verify_token(existing, &tsa.pinned) {
        Ok(info) if info.imprint == cp.hash() => Ok(false),
        Ok(_) => Err((
            "store",
            format!("{key} holds a token for another checkpoint"),
        )),
        Err(e) => Err(("store", format!("{key} holds no valid token ({e})"))),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
