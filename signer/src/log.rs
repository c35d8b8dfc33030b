//! The log: one committer task owns appends. Appends that arrive while a commit is under
//! way wait in a queue and are committed together under one checkpoint signature (group
//! commit), and commits are spaced by a minimum interval, so the signature rate is bounded
//! whatever the event rate.
//!
//! # Dedupe window
//!
//! An apiserver whose webhook call timed out re-sends the whole batch; if the first
//! attempt got as far as the signer, its leaves are already in the log (answered to an
//! ingester that then failed or was too late). Such an Append is answered with what the
//! first one got: when **all** its leaf hashes are found among the last
//! [`CommitConfig::dedupe_window`] leaves, consecutive and in the request's order (indexes
//! `i..i+n`), the answer is `first_index = i`, **the checkpoint that first covered them**
//! (the first one of size > `i+n-1`, read back from the state with
//! [`State::checkpoint_covering`]) and inclusion proofs into that checkpoint's tree. The
//! ingester then re-creates a byte-identical segment object under the same key, which the
//! create-new store accepts as a retried write. A request of which only some leaves are
//! known is appended as usual (with a warning): no index is ever given two meanings.
//!
//! Memory: a `HashMap<Hash, u64>` (leaf hash → its newest index) over the window: 41 bytes
//! per bucket (32 + 8 of key and value, a control byte) and 1.14 to 2.3 buckets per entry
//! (the table keeps 1/8 free and doubles), so 47–94 bytes per entry, about 86 MB at the
//! default window of 1,000,000 leaves (2^21 buckets). Nothing else: checkpoints
//! are found through `checkpoints.idx`, and leaves leaving the window are read back from the
//! stored hashes to remove them. At start the map is rebuilt from the last
//! `dedupe_window` leaf hashes of the stored-hashes file only (a few chunked reads), so the
//! start time grows with the window, not with the log. A candidate match is confirmed by
//! comparing the request with the stored leaf hashes `i..i+n`, so a request whose leaves
//! repeat still deduplicates exactly. Not covered: two identical Appends in the same group
//! commit (both are appended), which an apiserver retry (after a 30 s timeout) does not
//! produce.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sealtrail_core::checkpoint::{Checkpoint, NoteSignature, SignedCheckpoint};
use sealtrail_core::merkle::{self, Hash};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::Error;
use crate::fence::{Claim, Fence};
use crate::keys::KeyBackend;
use crate::metrics::{BackendLabel, Metrics};
use crate::state::State;

/// Most leaves in one Append request.
pub const MAX_APPEND_LEAVES: usize = 10_000;
/// Appends queued at most before callers wait.
const QUEUE_DEPTH: usize = 1024;

/// What an Append returns.
#[derive(Debug, Clone)]
pub struct Appended {
    pub first_index: u64,
    pub checkpoint: Arc<SignedCheckpoint>,
    pub proofs: Vec<Vec<Hash>>,
}

struct Job {
    leaves: Vec<Hash>,
    reply: oneshot::Sender<Result<Appended, Error>>,
}

/// Tuning of the committer.
#[derive(Debug, Clone)]
pub struct CommitConfig {
    /// Leaves gathered into one commit at most (a single larger Append is still taken whole).
    pub max_commit_leaves: usize,
    /// Least time between two checkpoint signatures.
    pub min_interval: Duration,
    /// Sustained checkpoint signatures per second at most (a token bucket of
    /// [`CommitConfig::signature_burst`]); 0 for no bound beyond `min_interval`. Under a
    /// light load every batch is signed at once; under a heavy one commits wait for the
    /// bucket and grow, so the signature rate (HSM load, KMS cost) stays bounded whatever
    /// the event rate: at 10 per second and 10,000 leaves/s, one signature per 1,000 leaves.
    pub max_signatures_per_second: f64,
    /// Signatures the bucket holds when full: bursts of up to this many batches are each
    /// signed without waiting.
    pub signature_burst: u32,
    /// Recent leaves among which a re-sent Append is recognized and answered with its
    /// original indexes, checkpoint and proofs (see the module docs); 0 disables. About
    /// 47–94 bytes of memory per leaf of the window (~86 MB for the default).
    pub dedupe_window: u64,
    /// Fencing records in object storage (one writer across machines, see
    /// [`crate::fence`]); none if `None`.
    pub fence: Option<Fence>,
}

/// Default [`CommitConfig::max_signatures_per_second`].
pub const DEFAULT_MAX_SIGNATURES_PER_SECOND: f64 = 10.0;
/// Smallest non-zero [`CommitConfig::max_signatures_per_second`] (one per 100 s).
pub const MIN_SIGNATURES_PER_SECOND: f64 = 0.01;
/// Default [`CommitConfig::signature_burst`].
pub const DEFAULT_SIGNATURE_BURST: u32 = 20;

/// Default [`CommitConfig::dedupe_window`].
pub const DEFAULT_DEDUPE_WINDOW: u64 = 1_000_000;

impl Default for CommitConfig {
    fn default() -> Self {
        Self {
            max_commit_leaves: 100_000,
            min_interval: Duration::from_millis(10),
            max_signatures_per_second: DEFAULT_MAX_SIGNATURES_PER_SECOND,
            signature_burst: DEFAULT_SIGNATURE_BURST,
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
            fence: None,
        }
    }
}

/// Handle to the log, cheap to clone.
#[derive(Clone)]
pub struct Log {
    tx: mpsc::Sender<Job>,
    state: Arc<Mutex<State>>,
    origin: Arc<str>,
    committer: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    started: tokio::sync::watch::Receiver<Option<Result<(), Error>>>,
}

impl Log {
    /// Starts the committer over an opened state.
    pub fn start(
        state: State,
        origin: &str,
        key: Arc<dyn KeyBackend>,
        config: CommitConfig,
    ) -> Result<Self, Error> {
        Self::start_with_metrics(state, origin, key, config, Arc::new(Metrics::default()))
    }

    /// [`Log::start`], reporting into `metrics`.
    pub fn start_with_metrics(
        state: State,
        origin: &str,
        key: Arc<dyn KeyBackend>,
        config: CommitConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        if let Some(cp) = state.latest()
            && cp.checkpoint.origin != origin
        {
            return Err(Error::Config(format!(
                "the state directory holds the log {:?}, not {origin:?}",
                cp.checkpoint.origin
            )));
        }
        let rate = config.max_signatures_per_second;
        if !(rate == 0.0 || (rate.is_finite() && rate >= MIN_SIGNATURES_PER_SECOND))
            || (rate > 0.0 && config.signature_burst == 0)
        {
            return Err(Error::Config(format!(
                "max signatures per second {rate}: 0 (no budget) or at least \
                 {MIN_SIGNATURES_PER_SECOND}; signature burst {}: at least 1",
                config.signature_burst
            )));
        }
        crate::fence::check_marker(state.dir(), config.fence.as_ref())?;
        let state = Arc::new(Mutex::new(state));
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (started_tx, started) = tokio::sync::watch::channel(None);
        let committer = Committer {
            state: state.clone(),
            origin: origin.to_string(),
            key,
            config,
            poisoned: None,
            metrics,
            window: None,
            unfenced: None,
        };
        let committer = tokio::spawn(committer.run(rx, started_tx));
        Ok(Self {
            tx,
            state,
            origin: origin.into(),
            committer: Arc::new(Mutex::new(Some(committer))),
            started,
        })
    }

    /// Waits until the committer has checked the fence (adopting a checkpoint lost in a
    /// crash, see [`crate::fence`]), cut uncommitted stored hashes and built the dedupe
    /// window. An error means the signer must not run: every Append fails.
    pub async fn wait_started(&self) -> Result<(), Error> {
        let mut rx = self.started.clone();
        let outcome = rx
            .wait_for(|s| s.is_some())
            .await
            .map_err(|_| Error::Unavailable("the log is shutting down".into()))?;
        outcome.clone().unwrap_or(Ok(()))
    }

    /// Drops this handle and, once every other handle is gone too, waits for the committer
    /// to finish its last commit and release the state directory (so that a restart in
    /// the same process finds it unlocked).
    pub async fn close(self) {
        let handle = self.committer.lock().ok().and_then(|mut h| h.take());
        let Self {
            tx, state, started, ..
        } = self;
        drop((tx, state, started));
        if let Some(handle) = handle
            && tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .is_err()
        {
            tracing::warn!("the committer did not stop within 30 s");
        }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Appends leaves; returns once they and a checkpoint covering them are durable.
    pub async fn append(&self, leaves: Vec<Hash>) -> Result<Appended, Error> {
        if leaves.is_empty() || leaves.len() > MAX_APPEND_LEAVES {
            return Err(Error::InvalidRequest(format!(
                "{} leaves (1 to {MAX_APPEND_LEAVES} per append)",
                leaves.len()
            )));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { leaves, reply })
            .await
            .map_err(|_| Error::Unavailable("the log is shutting down".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("the log is shutting down".into()))?
    }

    /// The log's key history (`keys.json`, see [`crate::rotation`]).
    pub fn key_history(&self) -> Result<Option<sealtrail_core::trust::TrustBundle>, Error> {
        let dir = self.lock()?.dir().to_path_buf();
        crate::rotation::read_key_history(&dir)
    }

    pub fn latest(&self) -> Result<Option<SignedCheckpoint>, Error> {
        Ok(self.lock()?.latest().cloned())
    }

    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, Error> {
        let state = self.lock()?;
        if old_size > new_size || new_size > state.size() {
            return Err(Error::InvalidRequest(format!(
                "no consistency proof from {old_size} to {new_size} (log size {})",
                state.size()
            )));
        }
        Ok(merkle::consistency_proof(
            old_size,
            new_size,
            &state.reader(&[]),
        )?)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, Error> {
        self.state
            .lock()
            .map_err(|_| Error::State("state lock poisoned".into()))
    }
}

/// A token bucket of signatures: `rate` per second, holding at most `burst`.
struct SignatureBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl SignatureBucket {
    fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
    }

    /// When the next signature is allowed.
    fn ready_at(&mut self) -> Instant {
        if self.rate <= 0.0 {
            return Instant::now();
        }
        self.refill();
        if self.tokens >= 1.0 {
            return self.at;
        }
        self.at + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }

    /// Counts one signature.
    fn take(&mut self) {
        if self.rate > 0.0 {
            self.refill();
            self.tokens -= 1.0;
        }
    }
}

struct Committer {
    state: Arc<Mutex<State>>,
    origin: String,
    key: Arc<dyn KeyBackend>,
    config: CommitConfig,
    /// Set when a signed checkpoint could not be made durable: from then on the signer
    /// refuses to sign (it could no longer promise not to fork).
    poisoned: Option<String>,
    metrics: Arc<Metrics>,
    /// The dedupe window (`None`: disabled, or lost to an error).
    window: Option<Window>,
    /// A signed checkpoint whose fence write had an unknown outcome: it must be settled
    /// (written again) before anything else is committed.
    unfenced: Option<Unfenced>,
}

/// See [`Committer::unfenced`].
struct Unfenced {
    seq: u64,
    checkpoint: SignedCheckpoint,
    written: u64,
    first_index: u64,
    leaves: Vec<Hash>,
}

/// Result of looking an Append up in the dedupe window.
enum Lookup {
    /// All leaves are the log's leaves `i..i+n`.
    Found(u64),
    /// This many of the leaves are in the window, not all in order.
    Partial(usize),
    None,
}

/// The dedupe window: leaf hash → newest index, over leaves `start..end`.
struct Window {
    limit: u64,
    start: u64,
    end: u64,
    map: HashMap<Hash, u64>,
}

impl Window {
    /// The window over the last `limit` leaves of the log.
    fn rebuild(state: &State, limit: u64) -> Result<Self, Error> {
        let end = state.size();
        let start = end.saturating_sub(limit);
        let mut map = HashMap::with_capacity((end - start) as usize);
        let mut at = start;
        while at < end {
            let hi = end.min(at + (1 << 16));
            for (i, h) in (at..).zip(state.leaf_hashes(at, hi)?) {
                map.insert(h, i);
            }
            at = hi;
        }
        Ok(Self {
            limit,
            start,
            end,
            map,
        })
    }

    /// Adds leaves just committed at `first..` and drops those that leave the window.
    fn push(&mut self, state: &State, first: u64, leaves: &[Hash]) -> Result<(), Error> {
        if first != self.end {
            // Not contiguous (should not happen): start over from the state.
            *self = Self::rebuild(state, self.limit)?;
            return Ok(());
        }
        for (i, h) in (first..).zip(leaves) {
            self.map.insert(*h, i);
        }
        self.end = first + leaves.len() as u64;
        let new_start = self.end.saturating_sub(self.limit);
        while self.start < new_start {
            let hi = new_start.min(self.start + (1 << 16));
            for (i, h) in (self.start..).zip(state.leaf_hashes(self.start, hi)?) {
                if self.map.get(&h) == Some(&i) {
                    self.map.remove(&h);
                }
            }
            self.start = hi;
        }
        Ok(())
    }

    fn lookup(&self, state: &State, leaves: &[Hash]) -> Result<Lookup, Error> {
        let n = leaves.len() as u64;
        if let Some(last) = leaves.last()
            && let Some(&j) = self.map.get(last)
            && j + 1 >= n
            && j + 1 - n >= self.start
        {
            let i = j + 1 - n;
            if state.leaf_hashes(i, j + 1)? == leaves {
                return Ok(Lookup::Found(i));
            }
        }
        let found = leaves.iter().filter(|h| self.map.contains_key(*h)).count();
        Ok(if found > 0 {
            Lookup::Partial(found)
        } else {
            Lookup::None
        })
    }
}

impl Committer {
    fn lock_state(&self) -> Result<std::sync::MutexGuard<'_, State>, Error> {
        self.state
            .lock()
            .map_err(|_| Error::State("state lock poisoned".into()))
    }

    fn poison(&mut self, why: String) {
        tracing::error!("{why}; refusing to sign until restarted");
        self.metrics
            .ready
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.poisoned = Some(why);
    }

    /// Fence checks, cut of uncommitted stored hashes, dedupe window.
    async fn init(&mut self) -> Result<(), Error> {
        if let Some(fence) = self.config.fence.clone() {
            let dir = self.lock_state()?.dir().to_path_buf();
            crate::fence::write_marker(&dir, &fence)?;
            fence
                .recover(&self.state, &[self.key.as_ref()], &self.origin)
                .await?;
        }
        let state = self.state.clone();
        let limit = self.config.dedupe_window;
        let (origin, public) = (self.origin.clone(), self.key.public_key().clone());
        let window = tokio::task::spawn_blocking(move || -> Result<Option<Window>, Error> {
            let mut state = state
                .lock()
                .map_err(|_| Error::State("state lock poisoned".into()))?;
            state.cut_uncommitted()?;
            // After a rotation only the new key signs (crate::rotation).
            crate::rotation::check_current_key(&state, &origin, &public)?;
            crate::rotation::sync_key_history(&state, &origin, &public)?;
            if limit == 0 {
                return Ok(None);
            }
            let started = std::time::Instant::now();
            let window = Window::rebuild(&state, limit)?;
            tracing::info!(
                leaves = window.map.len(),
                seconds = started.elapsed().as_secs_f64(),
                "dedupe window rebuilt"
            );
            Ok(Some(window))
        })
        .await
        .map_err(|e| Error::State(format!("start task: {e}")))??;
        self.window = window;
        Ok(())
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Job>,
        started: tokio::sync::watch::Sender<Option<Result<(), Error>>>,
    ) {
        let outcome = self.init().await;
        if let Err(e) = &outcome {
            self.poison(format!("the log could not start: {e}"));
        }
        let _ = started.send(Some(outcome));
        let mut next_allowed = Instant::now();
        let mut bucket = SignatureBucket::new(
            self.config.max_signatures_per_second,
            self.config.signature_burst,
        );
        while let Some(first) = rx.recv().await {
            // Appends arriving meanwhile join this commit.
            tokio::time::sleep_until(next_allowed.max(bucket.ready_at())).await;
            let mut total = first.leaves.len();
            let mut jobs = vec![first];
            while total < self.config.max_commit_leaves {
                match rx.try_recv() {
                    Ok(job) => {
                        total += job.leaves.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            if let Some(why) = &self.poisoned {
                for job in jobs {
                    let _ = job.reply.send(Err(Error::Poisoned(why.clone())));
                }
                continue;
            }
            if let Err(e) = self.settle_unfenced().await {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
                continue;
            }
            let jobs = self.dedupe(jobs).await;
            if jobs.is_empty() {
                continue;
            }
            self.commit(jobs).await;
            bucket.take();
            next_allowed = Instant::now() + self.config.min_interval;
        }
    }

    /// Answers the jobs whose leaves the window holds; returns the others.
    async fn dedupe(&mut self, jobs: Vec<Job>) -> Vec<Job> {
        let Some(window) = self.window.take() else {
            return jobs;
        };
        let state = self.state.clone();
        let done = tokio::task::spawn_blocking(move || {
            let state = match state.lock() {
                Ok(s) => s,
                Err(_) => return (window, jobs),
            };
            let mut rest = Vec::with_capacity(jobs.len());
            for job in jobs {
                match window.lookup(&state, &job.leaves) {
                    Ok(Lookup::Found(first)) => {
                        let n = job.leaves.len() as u64;
                        let answer = state
                            .checkpoint_covering(first + n - 1)
                            .and_then(|cp| {
                                let cp = cp.ok_or_else(|| {
                                    Error::State(format!("no checkpoint covers leaf {first}"))
                                })?;
                                let reader = state.reader(&[]);
                                let proofs = (first..first + n)
                                    .map(|i| merkle::inclusion_proof(i, cp.checkpoint.size, &reader))
                                    .collect::<Result<Vec<_>, _>>()?;
                                Ok(Appended {
                                    first_index: first,
                                    checkpoint: Arc::new(cp),
                                    proofs,
                                })
                            });
                        match answer {
                            Ok(a) => {
                                tracing::info!(
                                    first_index = first,
                                    leaves = n,
                                    size = a.checkpoint.checkpoint.size,
                                    "re-sent Append: answered with its original indexes and checkpoint"
                                );
                                let _ = job.reply.send(Ok(a));
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "dedupe answer failed; appending");
                                rest.push(job);
                            }
                        }
                    }
                    Ok(Lookup::Partial(found)) => {
                        tracing::warn!(
                            found,
                            leaves = job.leaves.len(),
                            "an Append repeats some leaves of the log, not all in order:                              appending all of them"
                        );
                        rest.push(job);
                    }
                    Ok(Lookup::None) => rest.push(job),
                    Err(e) => {
                        tracing::error!(error = %e, "dedupe lookup failed; appending");
                        rest.push(job);
                    }
                }
            }
            (window, rest)
        })
        .await;
        match done {
            Ok((window, rest)) => {
                self.window = Some(window);
                rest
            }
            Err(e) => {
                // The jobs went down with the task: their callers see the log closing.
                tracing::error!(error = %e, "dedupe task failed; dedupe disabled");
                Vec::new()
            }
        }
    }

    /// Adds committed leaves to the dedupe window.
    async fn remember(&mut self, first: u64, leaves: Vec<Hash>) {
        let Some(mut window) = self.window.take() else {
            return;
        };
        let state = self.state.clone();
        let done = tokio::task::spawn_blocking(move || {
            let state = state
                .lock()
                .map_err(|_| Error::State("state lock poisoned".into()))?;
            window.push(&state, first, &leaves)?;
            Ok::<_, Error>(window)
        })
        .await;
        match done {
            Ok(Ok(window)) => self.window = Some(window),
            Ok(Err(e)) => tracing::error!(error = %e, "dedupe window lost; dedupe disabled"),
            Err(e) => tracing::error!(error = %e, "dedupe window lost; dedupe disabled"),
        }
    }

    /// Writes the fence record of a checkpoint whose first fence write had an unknown
    /// outcome, then makes the checkpoint durable. Its Appends were answered with an error;
    /// their retries find the leaves in the dedupe window.
    async fn settle_unfenced(&mut self) -> Result<(), Error> {
        let (Some(pending), Some(fence)) = (self.unfenced.take(), self.config.fence.clone()) else {
            return Ok(());
        };
        match fence
            .claim(pending.seq, &pending.checkpoint.to_bytes())
            .await
        {
            Claim::Ours => {}
            Claim::Lost => {
                let why = format!(
                    "another signer took fence slot {} ({}): this signer no longer extends the log",
                    pending.seq,
                    fence.slot_key(pending.seq)
                );
                self.poison(why.clone());
                return Err(Error::Poisoned(why));
            }
            Claim::Unknown(e) => {
                self.unfenced = Some(pending);
                return Err(Error::Unavailable(format!("fence unavailable: {e}")));
            }
        }
        let Unfenced {
            checkpoint,
            written,
            first_index,
            leaves,
            ..
        } = pending;
        let size = checkpoint.checkpoint.size;
        let state = self.state.clone();
        let durable = tokio::task::spawn_blocking(move || -> Result<(), Error> {
            state
                .lock()
                .map_err(|_| Error::State("state lock poisoned".into()))?
                .commit(checkpoint, written)
        })
        .await
        .map_err(|e| Error::State(format!("commit task: {e}")))
        .and_then(|r| r);
        if let Err(e) = durable {
            let why = format!("a signed and fenced checkpoint could not be made durable: {e}");
            self.poison(why.clone());
            return Err(Error::Poisoned(why));
        }
        self.metrics.checkpoints_signed.inc();
        self.metrics.leaves_appended.inc_by(leaves.len() as u64);
        self.metrics.tree_size.set(size as i64);
        self.remember(first_index, leaves).await;
        Ok(())
    }

    async fn commit(&mut self, jobs: Vec<Job>) {
        let leaves: Vec<Hash> = jobs.iter().flat_map(|j| j.leaves.iter().copied()).collect();
        match self.commit_leaves(&leaves).await {
            Ok((first_index, checkpoint)) => {
                self.remember(first_index, leaves).await;
                let checkpoint = Arc::new(checkpoint);
                let mut next = first_index;
                for job in jobs {
                    let n = job.leaves.len() as u64;
                    let result = self
                        .proofs(next, n, checkpoint.checkpoint.size)
                        .map(|proofs| Appended {
                            first_index: next,
                            checkpoint: checkpoint.clone(),
                            proofs,
                        });
                    next += n;
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, leaves = leaves.len(), "commit failed");
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }

    async fn sign(&self, checkpoint: Checkpoint) -> Result<SignedCheckpoint, Error> {
        let text = checkpoint.to_text();
        let started = std::time::Instant::now();
        let signature = self.key.sign(&text).await.inspect_err(|_| {
            self.metrics
                .sign_errors
                .get_or_create(&BackendLabel {
                    backend: self.key.kind().into(),
                })
                .inc();
        })?;
        self.metrics
            .sign_seconds
            .observe(started.elapsed().as_secs_f64());
        let public = self.key.public_key();
        // A backend that returns a bad signature must not get it into the log.
        public.verify(&text, &signature).map_err(|_| {
            Error::Key("the key backend returned a signature that does not verify".into())
        })?;
        Ok(SignedCheckpoint::new(
            checkpoint,
            vec![NoteSignature {
                name: self.origin.clone(),
                key_id: public.key_id(&self.origin),
                signature,
            }],
        )?)
    }

    fn proofs(&self, first: u64, n: u64, size: u64) -> Result<Vec<Vec<Hash>>, Error> {
        let state = self.lock_state()?;
        let reader = state.reader(&[]);
        (first..first + n)
            .map(|i| Ok(merkle::inclusion_proof(i, size, &reader)?))
            .collect()
    }

    async fn commit_leaves(&mut self, leaves: &[Hash]) -> Result<(u64, SignedCheckpoint), Error> {
        let state = self.state.clone();
        let leaves_owned = leaves.to_vec();
        // Stage and write the stored hashes, compute the new root: blocking file I/O.
        let (first_index, size, root, written, prev, seq) =
            tokio::task::spawn_blocking(move || -> Result<_, Error> {
                let mut state = state
                    .lock()
                    .map_err(|_| Error::State("state lock poisoned".into()))?;
                let first = state.size();
                let pending = state.stage(&leaves_owned)?;
                let size = first + leaves_owned.len() as u64;
                let root = merkle::tree_root(size, &state.reader(&pending))?;
                state.write_hashes(&pending)?;
                let prev = state.latest().map(|c| (c.hash(), c.checkpoint.time_ms));
                let seq = state.checkpoint_count();
                Ok((first, size, root, pending.len() as u64, prev, seq))
            })
            .await
            .map_err(|e| Error::State(format!("commit task: {e}")))??;

        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
            // Checkpoint times never go backwards, even if the clock does.
            time_ms: prev.map_or(now_ms, |(_, t)| now_ms.max(t)),
            prev: prev.map(|(h, _)| h),
            new_key: None,
        };
        let signed = match self.sign(checkpoint).await {
            Ok(signed) => signed,
            Err(e) => {
                // Nothing was promised: roll the stored hashes back and let callers retry.
                let state = self.state.clone();
                let undo = tokio::task::spawn_blocking(move || -> Result<(), Error> {
                    state
                        .lock()
                        .map_err(|_| Error::State("state lock poisoned".into()))?
                        .discard_hashes()
                })
                .await;
                if !matches!(undo, Ok(Ok(()))) {
                    self.poison("could not roll back after a failed signature".into());
                }
                return Err(Error::Unavailable(format!("signing failed: {e}")));
            }
        };

        // The fence slot before anything is durable or answered (see crate::fence).
        if let Some(fence) = self.config.fence.clone() {
            match fence.claim(seq, &signed.to_bytes()).await {
                Claim::Ours => {}
                Claim::Lost => {
                    let why = format!(
                        "another signer took fence slot {seq} ({}): it extends this log                          beyond our state; this signer's checkpoint of size {size} is discarded",
                        fence.slot_key(seq)
                    );
                    self.poison(why.clone());
                    return Err(Error::Poisoned(why));
                }
                Claim::Unknown(e) => {
                    // It may have landed: keep everything, settle it before the next commit.
                    tracing::warn!(error = %e, seq, size, "fence write failed; will write it again");
                    self.unfenced = Some(Unfenced {
                        seq,
                        checkpoint: signed,
                        written,
                        first_index,
                        leaves: leaves.to_vec(),
                    });
                    return Err(Error::Unavailable(format!("fence unavailable: {e}")));
                }
            }
        }

        let state = self.state.clone();
        let to_store = signed.clone();
        let durable = tokio::task::spawn_blocking(move || -> Result<(), Error> {
            state
                .lock()
                .map_err(|_| Error::State("state lock poisoned".into()))?
                .commit(to_store, written)
        })
        .await
        .map_err(|e| Error::State(format!("commit task: {e}")))
        .and_then(|r| r);
        if let Err(e) = durable {
            let why = format!("a signed checkpoint could not be made durable: {e}");
            self.poison(why.clone());
            return Err(Error::Poisoned(why));
        }
        self.metrics.checkpoints_signed.inc();
        self.metrics.leaves_appended.inc_by(leaves.len() as u64);
        self.metrics.tree_size.set(size as i64);
        tracing::debug!(size, leaves = leaves.len(), "checkpoint committed");
        Ok((first_index, signed))
    }
}
