//! The log: one committer task owns appends. Appends that arrive while a commit is under
//! way wait in a queue and are committed together under one checkpoint signature (group
//! commit), and commits are spaced by a minimum interval, so the signature rate is bounded
//! whatever the event rate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sealtrail_core::checkpoint::{Checkpoint, NoteSignature, SignedCheckpoint};
use sealtrail_core::merkle::{self, Hash};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::Error;
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
    /// Least time between two checkpoint signatures: bounds the signature rate.
    pub min_interval: Duration,
}

impl Default for CommitConfig {
    fn default() -> Self {
        Self {
            max_commit_leaves: 100_000,
            min_interval: Duration::from_millis(10),
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
        let state = Arc::new(Mutex::new(state));
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let committer = Committer {
            state: state.clone(),
            origin: origin.to_string(),
            key,
            config,
            poisoned: None,
            metrics,
        };
        let committer = tokio::spawn(committer.run(rx));
        Ok(Self {
            tx,
            state,
            origin: origin.into(),
            committer: Arc::new(Mutex::new(Some(committer))),
        })
    }

    /// Drops this handle and, once every other handle is gone too, waits for the committer
    /// to finish its last commit and release the state directory (so that a restart in
    /// the same process finds it unlocked).
    pub async fn close(self) {
        let handle = self.committer.lock().ok().and_then(|mut h| h.take());
        let Self { tx, state, .. } = self;
        drop((tx, state));
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

struct Committer {
    state: Arc<Mutex<State>>,
    origin: String,
    key: Arc<dyn KeyBackend>,
    config: CommitConfig,
    /// Set when a signed checkpoint could not be made durable: from then on the signer
    /// refuses to sign (it could no longer promise not to fork).
    poisoned: Option<String>,
    metrics: Arc<Metrics>,
}

impl Committer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut next_allowed = Instant::now();
        while let Some(first) = rx.recv().await {
            tokio::time::sleep_until(next_allowed).await;
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
            self.commit(jobs).await;
            next_allowed = Instant::now() + self.config.min_interval;
        }
    }

    async fn commit(&mut self, jobs: Vec<Job>) {
        let leaves: Vec<Hash> = jobs.iter().flat_map(|j| j.leaves.iter().copied()).collect();
        match self.commit_leaves(&leaves).await {
            Ok((first_index, checkpoint)) => {
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
        let state = self
            .state
            .lock()
            .map_err(|_| Error::State("state lock poisoned".into()))?;
        let reader = state.reader(&[]);
        (first..first + n)
            .map(|i| Ok(merkle::inclusion_proof(i, size, &reader)?))
            .collect()
    }

    async fn commit_leaves(&mut self, leaves: &[Hash]) -> Result<(u64, SignedCheckpoint), Error> {
        let state = self.state.clone();
        let leaves_owned = leaves.to_vec();
        // Stage and write the stored hashes, compute the new root: blocking file I/O.
        let (first_index, size, root, written, prev) =
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
                Ok((first, size, root, pending.len() as u64, prev))
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
                    self.metrics
                        .ready
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    self.poisoned = Some("could not roll back after a failed signature".into());
                }
                return Err(Error::Unavailable(format!("signing failed: {e}")));
            }
        };

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
            tracing::error!("{why}; refusing to sign until restarted");
            self.metrics
                .ready
                .store(false, std::sync::atomic::Ordering::Relaxed);
            self.poisoned = Some(why.clone());
            return Err(Error::Poisoned(why));
        }
        self.metrics.checkpoints_signed.inc();
        self.metrics.leaves_appended.inc_by(leaves.len() as u64);
        self.metrics.tree_size.set(size as i64);
        tracing::debug!(size, leaves = leaves.len(), "checkpoint committed");
        Ok((first_index, signed))
    }
}
