//! `sealtrail-cloudwatch`: keeps the trail of an EKS cluster (whose apiserver cannot send
//! the audit webhook) within minutes of CloudWatch Logs, each event once.
//!
//! It polls the log group's `kube-apiserver-audit-*` streams with `FilterLogEvents`
//! ([`source`]) in overlapping windows behind a settle delay ([`poll`]), sends each new event
//! to the ingester's webhook exactly as the apiserver would ([`sink`]), and keeps its cursor
//! in the log's own store, create-new, which also fences a second replica ([`cursor`]).
//! Why `FilterLogEvents` and not a subscription to Kinesis: docs/DESIGN.md, "EKS source".
//!
//! What it does not: no filtering (every audit event of the group is kept), no parsing
//! beyond telling a whole event from a damaged one; canonical form, durability and
//! dedupe are the ingester's.

#![forbid(unsafe_code)]

pub mod cursor;
pub mod metrics;
pub mod poll;
pub mod sink;
pub mod source;

use std::sync::Arc;
use std::time::Duration;

use sealtrail_store::ObjectStore;

pub use poll::PollConfig;

/// Default settle delay: how far behind the wall clock the window ends.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(120);
/// Default overlap: how far back each window re-reads the previous one.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(60);
/// Default time between passes.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Most events in one batch (the apiserver's default batch is 400).
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 1_000;
/// Most bytes in one batch: below the ingester's default body limit of 3 MiB, with room
/// for one event of CloudWatch's largest (256 KiB).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Most batches in flight at once: enough to keep the ingester's durable writes and the
/// signer's group commits busy while each batch waits for its own.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// Most event time read in one pass: bounds the memory of a backfill or a catch-up (two
/// slices, the one being sent and the next: at 5,000 events/s of 5 KB, about 100 MB), and
/// small enough that reading the next and sending this one overlap.
pub const DEFAULT_MAX_SLICE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// CloudWatch Logs could not be read (transient or not: the pass is retried).
    #[error("source: {0}")]
    Source(String),
    #[error("store: {0}")]
    Store(#[from] sealtrail_store::StoreError),
    #[error("cursor: {0}")]
    Cursor(String),
    /// Another writer advanced the cursor: this process must stop.
    #[error("fenced: another source took cursor {0} (two replicas for one log group?)")]
    Fenced(String),
    /// The ingester refused a batch as it is (a 4xx other than 429).
    #[error("batch refused: {0}")]
    Refused(String),
    #[error("configuration: {0}")]
    Config(String),
}

/// Everything [`run`] needs.
pub struct Config {
    pub source: Arc<dyn source::LogSource>,
    pub sink: Arc<dyn sink::Sink>,
    pub store: Arc<dyn ObjectStore>,
    /// The log's prefix in `store` (the ingester's `--prefix`).
    pub prefix: String,
    pub poll: PollConfig,
    pub interval: Duration,
    /// Where a log group with no cursor yet starts, Unix milliseconds.
    pub start_ms: i64,
    pub metrics: Arc<metrics::Metrics>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Polls until `shutdown` completes or the cursor is fenced. Stopping mid-batch is safe: the
/// cursor names the batches in flight, and the next start sends them again as they were.
/// Source and store errors are retried; a fence or a refused batch ends the run.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let group = config.source.log_group().to_string();
    let cursors = cursor::CursorStore::new(config.store.clone(), &config.prefix, &group);
    let cursor = loop {
        match cursors.latest().await {
            Ok(Some(c)) => break c,
            // The first snapshot before any intent: a restart always finds one.
            Ok(None) => {
                let mut c = cursor::Cursor::new(&group, config.start_ms);
                match cursors.advance(&mut c).await {
                    Ok(()) => break c,
                    Err(Error::Store(e)) => {
                        tracing::warn!(error = %e, "writing the first cursor; retrying")
                    }
                    Err(e) => return Err(e),
                }
                tokio::time::sleep(config.interval).await;
            }
            Err(Error::Store(e)) => {
                tracing::warn!(error = %e, "reading the cursor; retrying");
                tokio::time::sleep(config.interval).await;
            }
            Err(e) => return Err(e),
        }
    };
    if cursor.log_group != group {
        return Err(Error::Cursor(format!(
            "the stored cursor is for {:?}, not {group:?}",
            cursor.log_group
        )));
    }
    tracing::info!(log_group = %group, seq = cursor.seq, through_ms = cursor.through_ms, "source starting");
    let mut poller = poll::Poller::new(
        config.source.as_ref(),
        config.sink.as_ref(),
        &cursors,
        &config.poll,
        &config.metrics,
        cursor,
    );
    tokio::pin!(shutdown);
    loop {
        let step = async {
            // Batches left in flight (at the last stop, or by a failed resend) go first.
            poller.resume().await?;
            poller.pass(now_ms()).await
        };
        let result = tokio::select! {
            r = step => r,
            () = &mut shutdown => return Ok(()),
        };
        match result {
            Ok(pass) => {
                tracing::debug!(events = pass.sent, behind = pass.behind, "pass done");
                if pass.behind {
                    continue;
                }
            }
            Err(
                e @ (Error::Fenced(_) | Error::Refused(_) | Error::Cursor(_) | Error::Config(_)),
            ) => {
                return Err(e);
            }
            Err(e) => tracing::warn!(error = %e, "pass failed; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(config.interval) => {}
            () = &mut shutdown => return Ok(()),
        }
    }
}
