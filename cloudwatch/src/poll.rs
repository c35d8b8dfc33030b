//! One pass of the source: read a window of the log group, keep what was not sent yet,
//! send it in batches, each named in the cursor before it goes out.
//!
//! The log group is read by event timestamp up to `now − settle`, in slices of at most
//! `max_slice` (so that a backfill or a catch-up after a long stop holds one slice in
//! memory, not the whole gap), and once per `overlap` period the reading goes back to
//! `through − overlap` to pick up events that became visible late. CloudWatch delivers
//! "within a few minutes, best effort", and an event may be logged with a timestamp earlier
//! than events already delivered: the settle delay waits for most of them, the re-read of
//! the overlap for the rest, and events already sent are recognised by CloudWatch's event
//! id, never by timestamp (so many events of one millisecond are all kept, each once).
//!
//! While behind (a backlog, a catch-up), the next slice is read while the current one's
//! batches are being sent, up to `max_in_flight` at once: at most two slices in memory.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use sealtrail_core::source::{DamagedSource, damaged_event};

use crate::Error;
use crate::cursor::{Cursor, CursorStore, Seen};
use crate::metrics::Metrics;
use crate::sink::{Sent, Sink};
use crate::source::{LogSource, SourceEvent};

/// The name a damaged event gives its source.
pub const SOURCE_NAME: &str = "cloudwatch";

/// How the window moves and batches are cut.
#[derive(Debug, Clone)]
pub struct PollConfig {
    pub settle: Duration,
    pub overlap: Duration,
    pub max_batch_events: usize,
    pub max_batch_bytes: usize,
    /// Most event time read in one FilterLogEvents pass.
    pub max_slice: Duration,
    /// First wait between retries of a batch (doubled up to 30 s).
    pub retry_backoff: Duration,
    /// Most batches sent at once (each named in its own intent first).
    pub max_in_flight: usize,
}

/// Prefix and suffix of a batch body.
const LIST_HEAD: &str = r#"{"kind":"EventList","apiVersion":""#;

/// Events of one window that are to be sent, in the order they are sent.
struct Item {
    seen: Seen,
    api_version: String,
    /// The event as it goes into the `EventList`: the message, or its damaged-event wrapper.
    json: Vec<u8>,
    damaged: bool,
}

/// The `apiVersion` of a message that is a whole audit event, or `None` if it is not one
/// (cut short, or not JSON at all): the ingester's own rules, without canonicalizing.
fn api_version_of(message: &str) -> Option<String> {
    sealtrail_core::event::check_event_line(message.as_bytes()).ok()
}

fn item(group: &str, e: SourceEvent) -> Item {
    let seen = Seen {
        timestamp_ms: e.timestamp_ms,
        event_id: e.event_id.clone(),
    };
    match api_version_of(&e.message) {
        Some(api_version) => Item {
            seen,
            api_version,
            json: e.message.into_bytes(),
            damaged: false,
        },
        None => {
            let from = DamagedSource {
                source: SOURCE_NAME.into(),
                log_group: group.into(),
                log_stream: e.stream,
                event_id: e.event_id,
            };
            Item {
                seen,
                api_version: sealtrail_core::event::DEFAULT_API_VERSION.into(),
                json: damaged_event(&from, e.timestamp_ms, &e.message),
                damaged: true,
            }
        }
    }
}

/// The `EventList` of `items` (all of one `apiVersion`).
fn body(items: &[Item]) -> Bytes {
    let mut out = Vec::with_capacity(items.iter().map(|i| i.json.len() + 1).sum::<usize>() + 96);
    out.extend_from_slice(LIST_HEAD.as_bytes());
    out.extend_from_slice(
        items
            .first()
            .map_or("", |i| i.api_version.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(br#"","metadata":{},"items":["#);
    for (n, i) in items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&i.json);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// Cuts `items` into batches: one `apiVersion` each, at most so many events and bytes.
fn batches(items: Vec<Item>, config: &PollConfig) -> Vec<Vec<Item>> {
    let mut out: Vec<Vec<Item>> = Vec::new();
    let mut bytes = 0;
    for i in items {
        let fits = out.last().is_some_and(|b| {
            b.len() < config.max_batch_events
                && bytes + i.json.len() < config.max_batch_bytes
                && b[0].api_version == i.api_version
        });
        if !fits {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += i.json.len() + 1;
        if let Some(b) = out.last_mut() {
            b.push(i);
        }
    }
    out
}

/// The poller's state between passes.
pub struct Poller<'a> {
    pub source: &'a dyn LogSource,
    pub sink: &'a dyn Sink,
    pub cursors: &'a CursorStore,
    pub config: &'a PollConfig,
    pub metrics: &'a Metrics,
    pub cursor: Cursor,
    /// Where the next slice starts (`None`: go back to `through − overlap` first).
    pub scan_ms: Option<i64>,
    /// Wall clock of the last going back.
    pub rescanned_at_ms: i64,
    /// The next slice, read while the one before was being sent (`None` at first).
    pub prefetched: Option<Slice>,
    /// Wall clock of the last snapshot written by a pass.
    pub snapshot_at_ms: i64,
}

/// A slice read ahead: its bounds (inclusive) and what reading it gave.
pub struct Slice {
    lo: i64,
    hi: i64,
    events: Result<Vec<SourceEvent>, Error>,
}

/// Least wall time between two snapshots written by passes that sent something: a snapshot
/// holds every event id of the overlap (some 300,000 at 5,000 events/s), while the intents
/// written meanwhile already say what was sent.
pub const SNAPSHOT_INTERVAL_MS: i64 = 10_000;

/// Least wall time between two snapshots of a window that moved with nothing to send.
pub const QUIET_SNAPSHOT_INTERVAL_MS: i64 = 60_000;

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub sent: usize,
    /// The slice ended before `now − settle`: the next pass should not wait.
    pub behind: bool,
}

impl<'a> Poller<'a> {
    /// A poller that starts from `cursor`: it re-reads the overlap first.
    pub fn new(
        source: &'a dyn LogSource,
        sink: &'a dyn Sink,
        cursors: &'a CursorStore,
        config: &'a PollConfig,
        metrics: &'a Metrics,
        cursor: Cursor,
    ) -> Self {
        Self {
            source,
            sink,
            cursors,
            config,
            metrics,
            cursor,
            scan_ms: None,
            rescanned_at_ms: 0,
            prefetched: None,
            snapshot_at_ms: 0,
        }
    }

    /// Sends again the batches the cursor names as possibly in flight (a crash or a kill
    /// between naming them and their 2xx), each exactly as it was: same events, same order;
    /// then writes a snapshot, so that they are not sent a third time.
    pub async fn resume(&mut self) -> Result<(), Error> {
        if self.cursor.in_flight.is_empty() {
            return Ok(());
        }
        let all = self.cursor.in_flight.iter().flatten();
        let lo = all.clone().map(|s| s.timestamp_ms).min().unwrap_or(0);
        let hi = all.map(|s| s.timestamp_ms).max().unwrap_or(0);
        // Read before the batches leave the cursor: a failed read keeps them for the retry.
        let mut by_id: std::collections::HashMap<String, SourceEvent> = self
            .source
            .fetch(lo, hi)
            .await?
            .into_iter()
            .map(|e| (e.event_id.clone(), e))
            .collect();
        let flying = std::mem::take(&mut self.cursor.in_flight);
        let group = self.source.log_group().to_string();
        for (n, batch) in flying.iter().enumerate() {
            let mut items = Vec::with_capacity(batch.len());
            for s in batch {
                let Some(e) = by_id.remove(&s.event_id) else {
                    // Kept for the next attempt, which fails the same way: never skipped.
                    self.cursor.in_flight = flying[n..].to_vec();
                    return Err(Error::Source(format!(
                        "event {} (timestamp {}) of a batch in flight is no longer in {group}: it may have expired from CloudWatch; its batch cannot be resent as it was",
                        s.event_id, s.timestamp_ms
                    )));
                };
                items.push(item(&group, e));
            }
            tracing::info!(
                events = items.len(),
                "resending a batch in flight at the last stop"
            );
            if let Err(e) = deliver(self.sink, self.metrics, self.config, &group, &items).await {
                self.cursor.in_flight = flying[n..].to_vec();
                return Err(e);
            }
            self.cursor.recent.extend(items.into_iter().map(|i| i.seen));
        }
        self.cursors.advance(&mut self.cursor).await
    }

    /// One pass at `now_ms`: one slice, its new events sent in batches, up to
    /// `max_in_flight` at once; then the cursor moves to the slice's end if that is past it.
    pub async fn pass(&mut self, now_ms: i64) -> Result<Pass, Error> {
        let overlap = self.config.overlap.as_millis() as i64;
        let target = now_ms - self.config.settle.as_millis() as i64;
        if self.scan_ms.is_none() || now_ms - self.rescanned_at_ms >= overlap {
            self.scan_ms = Some(self.cursor.through_ms - overlap);
            self.rescanned_at_ms = now_ms;
        }
        let lo = self.scan_ms.unwrap_or(self.cursor.through_ms).max(0);
        let slice = self.config.max_slice.as_millis() as i64;
        let mut hi = target.min(lo + slice);
        if hi < lo {
            return Ok(Pass {
                sent: 0,
                behind: false,
            });
        }
        let mut events = match self.prefetched.take() {
            // Read ahead by the previous pass: the same start, an end the target has passed.
            Some(p) if p.lo == lo && p.hi <= hi => {
                hi = p.hi;
                p.events?
            }
            _ => self.source.fetch(lo, hi).await?,
        };
        self.metrics.read.inc_by(events.len() as u64);
        events.sort_by(|a, b| {
            (a.timestamp_ms, &a.stream, &a.event_id).cmp(&(b.timestamp_ms, &b.stream, &b.event_id))
        });
        events.dedup_by(|a, b| a.event_id == b.event_id);
        let group = self.source.log_group().to_string();
        let new: Vec<Item> = events
            .into_iter()
            .filter(|e| !self.cursor.was_sent(e.timestamp_ms, &e.event_id))
            .map(|e| item(&group, e))
            .collect();
        let count = new.len();
        // While behind, the next slice is read while this one is sent: CloudWatch's time
        // and the ingester's overlap instead of adding up.
        let source = self.source;
        let ahead = async {
            if hi >= target {
                return None;
            }
            let (lo, hi) = (hi + 1, target.min(hi + 1 + slice));
            Some(Slice {
                lo,
                hi,
                events: source.fetch(lo, hi).await,
            })
        };
        let (sent, ahead) = tokio::join!(self.send_all(batches(new, self.config), &group), ahead);
        sent?;
        self.prefetched = ahead;
        // FilterLogEvents' end is inclusive: the next slice starts after it.
        self.scan_ms = Some(hi + 1);
        let moved = (hi - self.cursor.through_ms).max(0);
        if moved > 0 {
            self.cursor.through_ms = hi;
            self.cursor.prune(hi - overlap);
        }
        self.metrics.set_through(self.cursor.through_ms, now_ms);
        // The window's end is worth a snapshot after sending, now and then, or once a minute
        // while it moves: without one, a restart re-reads a longer window (and sends nothing
        // twice: the intents since the last snapshot name what was sent).
        let since = now_ms - self.snapshot_at_ms;
        let sent_a_while = count > 0 && since >= SNAPSHOT_INTERVAL_MS;
        if sent_a_while || (moved > 0 && since >= QUIET_SNAPSHOT_INTERVAL_MS) {
            self.cursors.advance(&mut self.cursor).await?;
            self.snapshot_at_ms = now_ms;
        } else if count > 0 {
            // A barrier: an empty intent of window 1 says every batch before it was stored,
            // so that a restart does not send this pass's last batches again.
            self.cursors.intend(&mut self.cursor, &[], 1).await?;
        }
        Ok(Pass {
            sent: count,
            behind: hi < target,
        })
    }

    /// Sends `batches`, each after its intent, with at most `max_in_flight` unanswered: the
    /// intent of a batch is written only once the batch `max_in_flight` before it is
    /// stored (the rule [`CursorStore::latest`] relies on). Returns once every batch sent is
    /// answered, even after an error, so that the cursor in memory names no batch in flight.
    async fn send_all(&mut self, batches: Vec<Vec<Item>>, group: &str) -> Result<(), Error> {
        let window = self.config.max_in_flight.max(1);
        let (sink, metrics, config) = (self.sink, self.metrics, self.config);
        let mut flying = FuturesOrdered::new();
        let mut failed = None;
        for batch in batches {
            while flying.len() >= window {
                if let Some((done, r)) = flying.next().await {
                    self.stored(done, r, &mut failed);
                }
            }
            if failed.is_some() {
                break;
            }
            let seen: Vec<Seen> = batch.iter().map(|i| i.seen.clone()).collect();
            if let Err(e) = self
                .cursors
                .intend(&mut self.cursor, &seen, window as u64)
                .await
            {
                keep_gravest(&mut failed, e);
                break;
            }
            flying.push_back(async move {
                let r = deliver(sink, metrics, config, group, &batch).await;
                (batch, r)
            });
        }
        while let Some((done, r)) = flying.next().await {
            self.stored(done, r, &mut failed);
        }
        failed.map_or(Ok(()), Err)
    }

    /// Counts a batch's events as sent once it is stored; keeps the gravest error.
    fn stored(&mut self, batch: Vec<Item>, r: Result<(), Error>, failed: &mut Option<Error>) {
        match r {
            Ok(()) => self.cursor.recent.extend(batch.into_iter().map(|i| i.seen)),
            Err(e) => {
                tracing::error!(error = %e, "batch not stored");
                keep_gravest(failed, e);
            }
        }
    }
}

/// Keeps the error that must end the run over one worth retrying: a refused batch (or a
/// fence) must reach the operator, not hide behind a store error that a retry clears.
fn keep_gravest(failed: &mut Option<Error>, e: Error) {
    let rank = |e: &Error| match e {
        Error::Fenced(_) => 2,
        Error::Refused(_) => 1,
        _ => 0,
    };
    if failed.as_ref().is_none_or(|f| rank(&e) > rank(f)) {
        *failed = Some(e);
    }
}

/// Sends one batch (named in an intent already) until it is stored.
async fn deliver(
    sink: &dyn Sink,
    metrics: &Metrics,
    config: &PollConfig,
    group: &str,
    items: &[Item],
) -> Result<(), Error> {
    let body = body(items);
    let mut backoff = config.retry_backoff;
    loop {
        match sink.send(body.clone()).await {
            Sent::Stored => break,
            Sent::Retry(why) => {
                metrics.retries.inc();
                tracing::warn!(%why, events = items.len(), "batch not stored; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Sent::Refused(why) => {
                // Never skipped: the cursor keeps naming it, and the operator is told.
                return Err(Error::Refused(format!(
                    "{} events from {group}: {why}",
                    items.len()
                )));
            }
        }
    }
    let damaged = items.iter().filter(|i| i.damaged).count();
    metrics.sent.inc_by(items.len() as u64);
    metrics.damaged.inc_by(damaged as u64);
    if damaged > 0 {
        tracing::warn!(
            damaged,
            "messages that are not whole events kept as damaged source events"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::sink::MemorySink;
    use crate::source::BoxFuture;
    use sealtrail_store::{LocalDirStore, ObjectStore};

    /// Events by timestamp, some of them made visible late (in-memory: unit tests only).
    struct Fake {
        events: Mutex<Vec<SourceEvent>>,
    }

    impl LogSource for Fake {
        fn fetch(&self, lo: i64, hi: i64) -> BoxFuture<'_, Result<Vec<SourceEvent>, Error>> {
            let got = self
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| (lo..=hi).contains(&e.timestamp_ms))
                .cloned()
                .collect();
            Box::pin(async move { Ok(got) })
        }
        fn log_group(&self) -> &str {
            GROUP
        }
    }

    const GROUP: &str = "/aws/eks/t/cluster";

    fn fake(events: impl IntoIterator<Item = SourceEvent>) -> Fake {
        Fake {
            events: Mutex::new(events.into_iter().collect()),
        }
    }

    /// A cursor store on a fresh local directory (kept alive by the returned guard).
    fn cursor_store() -> (tempfile::TempDir, CursorStore) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::open(dir.path()).unwrap());
        (dir, CursorStore::new(store, "", GROUP))
    }

    /// A poller from the start of the log group.
    fn poller<'a>(
        source: &'a Fake,
        sink: &'a dyn Sink,
        cursors: &'a CursorStore,
        config: &'a PollConfig,
        metrics: &'a Metrics,
    ) -> Poller<'a> {
        Poller::new(
            source,
            sink,
            cursors,
            config,
            metrics,
            Cursor::new(GROUP, 0),
        )
    }

    /// Settle 2 s, overlap 5 s, batches of at most so many events.
    fn config(max_batch_events: usize, max_slice: Duration, max_in_flight: usize) -> PollConfig {
        PollConfig {
            settle: Duration::from_secs(2),
            overlap: Duration::from_secs(5),
            max_batch_events,
            max_batch_bytes: 1 << 20,
            max_slice,
            retry_backoff: Duration::from_millis(1),
            max_in_flight,
        }
    }

    fn ev(id: u32, ts: i64) -> SourceEvent {
        SourceEvent {
            event_id: format!("{id:056}"),
            stream: "kube-apiserver-audit-a".into(),
            timestamp_ms: ts,
            message: format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"id-{id}","stage":"ResponseComplete"}}"#
            ),
        }
    }

    #[tokio::test]
    async fn late_and_same_millisecond_events_are_sent_once() {
        let (_dir, cursors) = cursor_store();
        let fake = fake((0..50).map(|i| ev(i, 10_000)));
        let sink = Arc::new(MemorySink::default());
        let config = config(20, Duration::from_secs(60), 2);
        let metrics = Metrics::default();
        let mut p = poller(&fake, &sink, &cursors, &config, &metrics);
        assert_eq!(p.pass(13_000).await.unwrap().sent, 50);
        // Arrives late, with a timestamp inside the overlap; and a damaged one.
        fake.events.lock().unwrap().push(ev(99, 10_500));
        let mut cut = ev(100, 11_000);
        cut.message.truncate(30);
        fake.events.lock().unwrap().push(cut);
        // Before the overlap period is over, only new time is read; then the overlap again.
        assert_eq!(p.pass(14_000).await.unwrap().sent, 0);
        assert_eq!(p.pass(18_500).await.unwrap().sent, 2);
        assert_eq!(p.pass(19_000).await.unwrap().sent, 0);
        {
            let got = sink.got.lock().unwrap();
            assert_eq!(got.len(), 4, "20 + 20 + 10, then the late two");
            let all: String = got
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect();
            for i in (0..50).chain([99]) {
                assert_eq!(all.matches(&format!(r#""id-{i}""#)).count(), 1, "{i}");
            }
            assert_eq!(
                all.matches(sealtrail_core::source::DAMAGED_ANNOTATION)
                    .count(),
                1
            );
            assert_eq!(metrics.damaged.get(), 1);
        }

        // A restart from the stored cursor sends nothing again.
        let mut again = Poller {
            cursor: cursors.latest().await.unwrap().unwrap(),
            scan_ms: None,
            ..p
        };
        again.resume().await.unwrap();
        assert_eq!(again.pass(20_000).await.unwrap().sent, 0);
        assert_eq!(sink.got.lock().unwrap().len(), 4);
    }

    /// Stores the first `answer` batches; every later one is received and never answered
    /// (a kill with batches in flight).
    struct Stalls {
        answer: usize,
        got: Mutex<Vec<Bytes>>,
    }

    impl Sink for Stalls {
        fn send(&self, body: Bytes) -> BoxFuture<'_, Sent> {
            let mut got = self.got.lock().unwrap();
            got.push(body);
            let n = got.len();
            Box::pin(async move {
                if n > self.answer {
                    std::future::pending::<()>().await;
                }
                Sent::Stored
            })
        }
    }

    /// A source whose first read fails (throttled).
    struct FailsOnce<'a> {
        inner: &'a Fake,
        failed: std::sync::atomic::AtomicBool,
    }

    impl LogSource for FailsOnce<'_> {
        fn fetch(&self, lo: i64, hi: i64) -> BoxFuture<'_, Result<Vec<SourceEvent>, Error>> {
            if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Box::pin(async { Err(Error::Source("ThrottlingException".into())) });
            }
            self.inner.fetch(lo, hi)
        }
        fn log_group(&self) -> &str {
            self.inner.log_group()
        }
    }

    /// Killed with 3 batches in flight: the restart sends exactly those again, byte for
    /// byte, and nothing stored before.
    #[tokio::test]
    async fn batches_in_flight_at_a_kill_are_sent_again_as_they_were() {
        let (_dir, cursors) = cursor_store();
        let fake = fake((0..100).map(|i| ev(i, 10_000 + i64::from(i % 7))));
        let config = config(10, Duration::from_secs(60), 3);
        let metrics = Metrics::default();
        let stalls = Stalls {
            answer: 4,
            got: Mutex::new(Vec::new()),
        };
        let mut p = poller(&fake, &stalls, &cursors, &config, &metrics);
        cursors.advance(&mut p.cursor).await.unwrap();
        let killed = tokio::time::timeout(Duration::from_millis(200), p.pass(13_000)).await;
        assert!(killed.is_err(), "the pass waits for its unanswered batches");
        let sent = stalls.got.lock().unwrap().clone();
        // 4 stored; then at most 3 unanswered at once, so the 5th, 6th, 7th went out.
        assert_eq!(sent.len(), 7);

        let sink = Arc::new(MemorySink::default());
        let mut again = Poller {
            sink: &sink,
            cursor: cursors.latest().await.unwrap().unwrap(),
            scan_ms: None,
            ..p
        };
        assert_eq!(again.cursor.in_flight.len(), 3);
        // CloudWatch not answering at the restart: the batches stay named for the retry.
        let throttled = FailsOnce {
            inner: &fake,
            failed: std::sync::atomic::AtomicBool::new(false),
        };
        again.source = &throttled;
        assert!(matches!(again.resume().await, Err(Error::Source(_))));
        assert_eq!(again.cursor.in_flight.len(), 3);
        again.resume().await.unwrap();
        again.source = &fake;
        assert_eq!(sink.got.lock().unwrap().as_slice(), &sent[4..]);
        assert_eq!(again.pass(13_000).await.unwrap().sent, 30);
        let all: String = sent[..4]
            .iter()
            .chain(sink.got.lock().unwrap().iter())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        for i in 0..100 {
            assert_eq!(all.matches(&format!(r#""id-{i}""#)).count(), 1, "{i}");
        }
        // Resent once only: a second restart finds nothing in flight.
        assert!(
            cursors
                .latest()
                .await
                .unwrap()
                .unwrap()
                .in_flight
                .is_empty()
        );
    }

    /// A backlog read in slices, each next one read ahead while the previous is sent: every
    /// event once, and a restart (from snapshots, intents and barriers) sends nothing again.
    #[tokio::test]
    async fn a_backlog_in_slices_read_ahead() {
        let (_dir, cursors) = cursor_store();
        let fake = fake((0..300).map(|i| ev(i, i64::from(i) * 31)));
        let sink = Arc::new(MemorySink::default());
        let config = config(7, Duration::from_millis(900), 3);
        let metrics = Metrics::default();
        let mut p = poller(&fake, &sink, &cursors, &config, &metrics);
        cursors.advance(&mut p.cursor).await.unwrap();
        let mut passes = 0;
        let now = 12_000;
        while p.pass(now).await.unwrap().behind {
            passes += 1;
            assert!(p.prefetched.is_some(), "read ahead while behind");
        }
        assert!(passes >= 10, "{passes} passes");
        let all: String = sink
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        for i in 0..300 {
            assert_eq!(all.matches(&format!(r#""id-{i}""#)).count(), 1, "{i}");
        }
        let before = sink.got.lock().unwrap().len();
        let mut again = Poller {
            cursor: cursors.latest().await.unwrap().unwrap(),
            scan_ms: None,
            prefetched: None,
            ..p
        };
        assert!(
            again.cursor.in_flight.is_empty(),
            "the last pass wrote a barrier"
        );
        again.resume().await.unwrap();
        while again.pass(now).await.unwrap().behind {}
        assert_eq!(sink.got.lock().unwrap().len(), before);
    }
}
