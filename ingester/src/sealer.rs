//! The sealing loop: appends each acknowledged (pending) batch's leaf hashes to the signer,
//! in the order the batches were acknowledged, and writes the segment that seals it.
//!
//! Every step is idempotent, so the loop simply retries each one until it succeeds: the
//! pending object is written create-new (the same bytes land on the same key); an Append
//! the signer already committed is answered from its dedupe window with the same indexes
//! and checkpoint, so the segment comes out byte for byte the same and its create-new write
//! is a retried write. A batch is taken off the spool only once its segment is durable.
//!
//! Batches are sealed in groups (up to [`MAX_GROUP`] Appends in flight), so that one
//! checkpoint signature covers many batches and a backlog drains far faster than batches
//! arrive. Two batches of identical events (an apiserver retry of a batch whose answer was
//! lost) are never in one group: the signer's dedupe does not see two Appends of one
//! commit, so the second waits for the next group, where it is recognised as sealed.

use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::event::CanonicalEvent;
use sealtrail_core::merkle::{self, Hash, InclusionVerifier};
use sealtrail_core::{pending, segment};
use sealtrail_proto::v1::AppendRequest;
use sealtrail_proto::v1::signer_client::SignerClient;
use sealtrail_store::{ObjectStore, StoreError};
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;
use tonic::transport::Channel;

use crate::metrics::Metrics;
use crate::spool::Spool;

/// Most batches sealed together (one Append each, sharing the signer's group commit).
pub const MAX_GROUP: usize = 64;
/// Bytes of pending batches one group seals at most (about 15 full batches of the sample
/// events): their segments are in memory together.
pub const MAX_GROUP_BYTES: u64 = 32 * 1024 * 1024;
/// First and longest wait between attempts of a failing step.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// An acknowledged batch waiting to be sealed.
#[derive(Debug)]
pub struct Entry {
    /// Its pending object key.
    pub key: String,
    pub sha256: Hash,
    pub received_ms: u64,
    pub count: u64,
    /// Bytes of its pending object (what reading it back costs).
    pub len: u64,
    /// Its spool record, if the spool holds it.
    pub spool_name: Option<String>,
    /// Whether the pending object is known to be durable in the store.
    pub stored: bool,
    /// The batch, while the memory budget allows; else read back when sealed.
    pub batch: Option<Batch>,
}

/// A batch as sealing needs it: its pending object's bytes, where each event line is in
/// them (a line is the event's canonical form, what the segment repeats) and the events'
/// leaf hashes. Holding the object's bytes rather than the events keeps one copy of each
/// event in memory, and a batch read back needs no parsing of its events.
#[derive(Debug, Clone)]
pub struct Batch {
    bytes: Bytes,
    lines: Vec<Range<usize>>,
    leaves: Vec<Hash>,
}

impl Batch {
    /// The batch [`pending::encode`] wrote as `bytes` for `events`.
    pub fn encoded(bytes: Bytes, events: &[CanonicalEvent]) -> Self {
        let mut at = bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |p| p + 1);
        let lines = events
            .iter()
            .map(|e| {
                let line = at..at + e.canonical.len();
                at = line.end + 1;
                line
            })
            .collect();
        let leaves = events.iter().map(|e| e.leaf_hash).collect();
        Self {
            bytes,
            lines,
            leaves,
        }
    }

    /// A batch read back from the spool or the store whose bytes have the SHA-256 the
    /// ingester computed when it wrote them (or checked strictly when it adopted them):
    /// the same bytes, so only the lines are found again and hashed.
    fn read_back(bytes: Vec<u8>) -> Result<Self, sealtrail_core::Error> {
        let (_, lines) = pending::split_lines(&bytes)?;
        let leaves = lines
            .iter()
            .map(|l| merkle::leaf_hash(&bytes[l.clone()]))
            .collect();
        Ok(Self {
            bytes: bytes.into(),
            lines,
            leaves,
        })
    }

    /// The events' leaf hashes, in order.
    pub fn leaves(&self) -> &[Hash] {
        &self.leaves
    }

    fn events(&self) -> Vec<&[u8]> {
        self.lines.iter().map(|l| &self.bytes[l.clone()]).collect()
    }
}

/// What the sealing loop needs.
pub struct Sealer {
    pub origin: String,
    pub prefix: String,
    pub store: Arc<dyn ObjectStore>,
    pub signer: SignerClient<Channel>,
    pub spool: Option<Arc<Spool>>,
    pub metrics: Arc<Metrics>,
    /// Bytes of batches kept in memory from their acknowledgement until they are sealed, at
    /// most; batches read back for one group count against a second allowance of the same
    /// size (and deferred duplicates, rare, against neither).
    pub memory_budget: usize,
    queue: Mutex<Queue>,
    wake: Notify,
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    /// Event bytes the queued entries hold.
    held: usize,
    /// Queued and in-flight batches, and the oldest `received_ms` among them.
    unsealed: std::collections::BTreeMap<(u64, Hash), usize>,
    draining: bool,
}

impl Sealer {
    pub fn new(
        origin: String,
        prefix: String,
        store: Arc<dyn ObjectStore>,
        signer: SignerClient<Channel>,
        spool: Option<Arc<Spool>>,
        metrics: Arc<Metrics>,
        memory_budget: usize,
    ) -> Self {
        Self {
            origin,
            prefix,
            store,
            signer,
            spool,
            metrics,
            memory_budget,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding it leaves a consistent queue (no step spans an await).
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an acknowledged batch.
    pub fn submit(&self, mut entry: Entry) {
        let mut q = self.lock();
        let size = held_bytes(&entry);
        if q.held + size > self.memory_budget {
            entry.batch = None;
        } else {
            q.held += size;
        }
        *q.unsealed
            .entry((entry.received_ms, entry.sha256))
            .or_default() += 1;
        q.entries.push_back(entry);
        self.publish(&q);
        drop(q);
        self.wake.notify_one();
    }

    fn publish(&self, q: &Queue) {
        let m = &self.metrics;
        m.pending_batches.set(q.unsealed.len() as i64);
        let oldest = q.unsealed.keys().next().map_or(0, |(ms, _)| *ms);
        m.oldest_unsealed_ms
            .store(oldest, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops waiting for new batches: [`Sealer::run`] returns once the queue is empty.
    pub fn drain(&self) {
        self.lock().draining = true;
        self.wake.notify_one();
    }

    /// The keys of batches not sealed (for the log at shutdown).
    pub fn unsealed_keys(&self) -> Vec<String> {
        let q = self.lock();
        q.entries.iter().map(|e| e.key.clone()).collect()
    }

    /// Seals queued batches until drained.
    pub async fn run(self: Arc<Self>) {
        let mut deferred: Vec<Entry> = Vec::new();
        loop {
            let (group, group_held) = {
                let mut q = self.lock();
                let mut group = std::mem::take(&mut deferred);
                // Batches read back from the spool or the store count against the memory
                // budget too, and a group holds at most MAX_GROUP_BYTES of batches (at
                // least one is taken, whatever its size): each becomes a segment in
                // memory while the group is sealed.
                let (mut loading, mut bytes, mut held) = (0u64, 0u64, 0usize);
                while group.len() < MAX_GROUP {
                    let Some(front) = q.entries.front() else {
                        break;
                    };
                    if !group.is_empty() && bytes + front.len > MAX_GROUP_BYTES {
                        break;
                    }
                    if front.batch.is_none() {
                        if !group.is_empty() && loading + front.len > self.memory_budget as u64 {
                            break;
                        }
                        loading += front.len;
                    }
                    let Some(e) = q.entries.pop_front() else {
                        break;
                    };
                    bytes += e.len;
                    held += held_bytes(&e);
                    group.push(e);
                }
                if group.is_empty() && q.draining {
                    return;
                }
                (group, held)
            };
            if group.is_empty() {
                self.wake.notified().await;
                continue;
            }
            let (now, later) = split_duplicates(self.load_all(group).await);
            deferred = later;
            let sealed = futures_util::future::join_all(now.into_iter().map(|(e, batch)| {
                let this = self.clone();
                async move {
                    this.seal_until_done(&e, &batch).await;
                    e
                }
            }))
            .await;
            // The group's events stay counted until they are sealed: the budget bounds what
            // is queued and what is being sealed together.
            self.lock().held -= group_held;
            self.done(&sealed.iter().collect::<Vec<_>>());
        }
    }

    fn done(&self, entries: &[&Entry]) {
        let mut q = self.lock();
        for e in entries {
            let k = (e.received_ms, e.sha256);
            if let Some(n) = q.unsealed.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    q.unsealed.remove(&k);
                }
            }
        }
        self.publish(&q);
    }

    /// The events of each entry (from memory, the spool or the store); a batch whose
    /// record is damaged is moved aside and dropped from sealing, loudly.
    async fn load_all(&self, group: Vec<Entry>) -> Vec<(Entry, Batch)> {
        let mut out = Vec::with_capacity(group.len());
        for mut e in group {
            let batch = match e.batch.take() {
                Some(batch) => batch,
                None => match self.load(&e).await {
                    Some(batch) => batch,
                    None => {
                        self.done(&[&e]);
                        continue;
                    }
                },
            };
            out.push((e, batch));
        }
        out
    }

    async fn load(&self, e: &Entry) -> Option<Batch> {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let read = match (&self.spool, &e.spool_name) {
                (Some(spool), Some(name)) => {
                    let (spool, name) = (spool.clone(), name.clone());
                    tokio::task::spawn_blocking(move || spool.read(&name))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                }
                _ => match self.store.get(&e.key).await {
                    Ok(b) => Ok((Sha256::digest(&b)[..] == e.sha256).then_some(b)),
                    Err(err) => Err(err.to_string()),
                },
            };
            match read {
                Ok(Some(bytes)) => match Batch::read_back(bytes) {
                    Ok(batch) => return Some(batch),
                    Err(err) => {
                        self.damaged(e, &err.to_string()).await;
                        return None;
                    }
                },
                Ok(None) => {
                    self.damaged(e, "content does not match its SHA-256").await;
                    return None;
                }
                Err(err) => {
                    tracing::warn!(batch = %e.key, error = %err, "cannot read a batch to seal; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn damaged(&self, e: &Entry, why: &str) {
        self.metrics.spool_damaged.inc();
        tracing::error!(batch = %e.key, spool_record = ?e.spool_name, why, "damaged batch: moved aside, not sealed");
        if let (Some(spool), Some(name)) = (self.spool.clone(), e.spool_name.clone()) {
            let moved = tokio::task::spawn_blocking(move || spool.quarantine(&name)).await;
            if !matches!(moved, Ok(Ok(()))) {
                tracing::error!(batch = %e.key, "could not move the damaged record aside");
            }
        }
    }

    /// Runs the steps of sealing one batch; a step that failed is retried until it
    /// succeeds, and a step that succeeded is never run again (above all the Append: a
    /// retried Append after the signer's dedupe window has moved on would append the
    /// events a second time). A batch that can never be sealed is set aside, loudly, so
    /// that it does not hold up the others.
    async fn seal_until_done(&self, e: &Entry, batch: &Batch) {
        let mut p = Progress {
            stored: e.stored,
            sha256: e.sha256,
            received_ms: e.received_ms,
            answer: None,
            segment: None,
        };
        let mut backoff = BACKOFF_FIRST;
        loop {
            match self.seal(e, batch, &mut p).await {
                Ok(()) => return,
                Err(Failure::Retry(stage, err)) => {
                    self.metrics.seal_error(stage);
                    tracing::warn!(batch = %e.key, stage, error = %err, "sealing failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(Failure::Permanent(stage, err)) => {
                    self.metrics.seal_error(stage);
                    self.damaged(e, &err).await;
                    return;
                }
            }
        }
    }

    async fn remove_record(&self, e: &Entry) -> Result<(), String> {
        let (Some(spool), Some(name)) = (self.spool.clone(), e.spool_name.clone()) else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || spool.remove(&name))
            .await
            .map_err(|x| x.to_string())?
            .map_err(|x| x.to_string())
    }

    async fn seal(&self, e: &Entry, batch: &Batch, p: &mut Progress) -> Result<(), Failure> {
        use Failure::{Permanent, Retry};
        if !p.stored {
            // Spooled while the store was away: the record's bytes, to the batch's key.
            match self.store.put_new_owned(&e.key, batch.bytes.clone()).await {
                Ok(_) => p.stored = true,
                // Another attempt of this batch stored it first (perhaps one that failed
                // after the write): seal the stored object.
                Err(StoreError::Conflict(_)) => {
                    (p.sha256, p.received_ms) =
                        adopt_stored(self.store.as_ref(), &e.key, &batch.leaves)
                            .await
                            .map_err(|x| Permanent("store", x))?;
                    p.stored = true;
                }
                Err(x) => return Err(Retry("store", x.to_string())),
            }
        }
        let leaves = &batch.leaves;
        if p.answer.is_none() {
            p.answer = Some(self.append(leaves).await?);
        }
        let Some(((first, cp), proofs)) = &p.answer else {
            return Err(Retry("answer", "no answer".into()));
        };
        let first = *first;
        if p.segment.is_none() {
            let sealed = segment::SealedFrom {
                batch: e.key.clone(),
                batch_sha256: p.sha256,
                received_ms: p.received_ms,
            };
            let bytes = segment::encode_lines(first, cp, Some(&sealed), &batch.events(), proofs)
                .map_err(|x| Permanent("encode", x.to_string()))?;
            let key = segment::object_key(&self.prefix, cp.checkpoint.time_ms, first, e.count);
            match self.store.put_new_owned(&key, bytes.into()).await {
                Ok(_) => {}
                Err(StoreError::Conflict(_)) => {
                    self.check_sealed_elsewhere(&key, first, leaves).await?
                }
                Err(x) => return Err(Retry("segment", x.to_string())),
            }
            p.segment = Some(key);
        }
        self.remove_record(e).await.map_err(|x| Retry("spool", x))?;
        let m = &self.metrics;
        m.sealed_batches.inc();
        m.events_sealed.inc_by(e.count);
        let now = crate::now_ms();
        m.seal_lag_seconds
            .observe(now.saturating_sub(e.received_ms) as f64 / 1000.0);
        tracing::debug!(batch = %e.key, segment = ?p.segment, first_index = first, "batch sealed");
        Ok(())
    }

    /// One Append of these leaves, its answer checked.
    async fn append(&self, leaves: &[Hash]) -> Result<Answer, Failure> {
        let started = std::time::Instant::now();
        let answer = self
            .signer
            .clone()
            .append(AppendRequest {
                leaf_hashes: sealtrail_proto::hash_fields(leaves),
            })
            .await;
        self.metrics
            .signer_rpc_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .signer_ok
            .store(answer.is_ok(), std::sync::atomic::Ordering::Relaxed);
        let answer = answer
            .map_err(|s| Failure::Retry("signer", format!("{} ({:?})", s.message(), s.code())))?
            .into_inner();
        check_answer(&self.origin, leaves, answer).map_err(|x| Failure::Retry("answer", x))
    }

    /// A segment already holds these indexes: the batch is a copy of one sealed before
    /// (an apiserver retry whose first answer was lost) if that segment holds exactly these
    /// leaves; anything else is an error that retrying will keep showing.
    async fn check_sealed_elsewhere(
        &self,
        key: &str,
        first: u64,
        leaves: &[Hash],
    ) -> Result<(), Failure> {
        let existing = self
            .store
            .get(key)
            .await
            .map_err(|x| Failure::Retry("segment", x.to_string()))?;
        let same = segment::parse_header(&existing)
            .ok()
            .is_some_and(|(h, body)| {
                h.first_index == first
                    && h.count == leaves.len() as u64
                    && segment::records(body)
                        .map(|(_, r)| r.map(|r| r.leaf_hash))
                        .zip(leaves)
                        .all(|(r, l)| r.as_ref().ok() == Some(l))
            });
        if !same {
            return Err(Failure::Permanent(
                "segment",
                format!("{key} exists with other events than the signer gave these indexes"),
            ));
        }
        self.metrics.duplicate_batches.inc();
        tracing::info!(
            segment = key,
            "batch already sealed from an identical batch (a retried request)"
        );
        Ok(())
    }
}

/// The pending object already under `key` (an earlier attempt of the same batch, received
/// earlier): its SHA-256 and `received_ms`, if it holds exactly these events. Anything else
/// under an events-named key was not written by an ingester; the error says so, and the
/// batch waits (and is alerted on) rather than being sealed against it.
pub async fn adopt_stored(
    store: &dyn ObjectStore,
    key: &str,
    leaves: &[Hash],
) -> Result<(Hash, u64), String> {
    let bytes = store.get(key).await.map_err(|e| e.to_string())?;
    let theirs =
        pending::parse(&bytes).map_err(|e| format!("{key} is not a valid pending batch: {e}"))?;
    let same = theirs.events.len() == leaves.len()
        && theirs
            .events
            .iter()
            .zip(leaves)
            .all(|(a, b)| a.leaf_hash == *b);
    if !same {
        return Err(format!(
            "{key} holds other events than the batch it is named for"
        ));
    }
    Ok((theirs.sha256, theirs.received_ms))
}

/// Puts a batch whose events an earlier member of the group also carries into the next
/// group.
fn split_duplicates(loaded: Vec<(Entry, Batch)>) -> (Vec<(Entry, Batch)>, Vec<Entry>) {
    let mut seen = HashSet::new();
    let (mut now, mut later) = (Vec::new(), Vec::new());
    for (mut e, batch) in loaded {
        if seen.insert(pending::events_digest(&batch.leaves)) {
            now.push((e, batch));
        } else {
            e.batch = Some(batch);
            later.push(e);
        }
    }
    (now, later)
}

/// Bytes an entry holds in memory.
fn held_bytes(e: &Entry) -> usize {
    e.batch.as_ref().map_or(0, |b| b.bytes.len())
}

type Answer = ((u64, SignedCheckpoint), Vec<Vec<Hash>>);

/// How far sealing one batch got.
struct Progress {
    stored: bool,
    sha256: Hash,
    received_ms: u64,
    answer: Option<Answer>,
    /// The segment key, once written.
    segment: Option<String>,
}

/// Why a sealing step did not succeed.
enum Failure {
    /// Transient (the signer or the store away): retried.
    Retry(&'static str, String),
    /// Will never succeed (the store holds something no ingester wrote under this
    /// batch's key, or the record no longer matches itself): set aside.
    Permanent(&'static str, String),
}

/// Checks the signer's answer before anything of it is stored: a bad answer is never made
/// evidence.
fn check_answer(
    origin: &str,
    leaves: &[Hash],
    answer: sealtrail_proto::v1::AppendResponse,
) -> Result<Answer, String> {
    let checkpoint =
        SignedCheckpoint::parse(&answer.checkpoint).map_err(|e| format!("checkpoint: {e}"))?;
    let cp = &checkpoint.checkpoint;
    if cp.origin != origin {
        return Err(format!(
            "checkpoint of log {:?}, this ingester writes {origin:?}",
            cp.origin
        ));
    }
    if answer.proofs.len() != leaves.len() {
        return Err(format!(
            "{} proofs for {} leaves",
            answer.proofs.len(),
            leaves.len()
        ));
    }
    let first = answer.first_index;
    let mut verifier = InclusionVerifier::new(cp.size, cp.root);
    let mut proofs = Vec::with_capacity(leaves.len());
    for (i, (leaf, proof)) in leaves.iter().zip(answer.proofs).enumerate() {
        let proof = proof
            .hashes
            .into_iter()
            .map(|h| <Hash>::try_from(&h[..]))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "proof hash of the wrong length".to_string())?;
        let index = first
            .checked_add(i as u64)
            .ok_or_else(|| "first index overflows".to_string())?;
        verifier
            .verify(index, leaf, &proof)
            .map_err(|e| format!("leaf {index}: {e}"))?;
        proofs.push(proof);
    }
    Ok(((first, checkpoint), proofs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch read back is the batch that was encoded: the same event lines, the same
    /// leaves, whether or not it stayed in memory.
    #[test]
    fn a_batch_read_back_equals_the_encoded_one() {
        let body = br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"auditID":"a","stage":"ResponseComplete","x":"\u00e9\n"},{"auditID":"b","stage":"RequestReceived"}]}"#;
        let events = sealtrail_core::event::parse_event_list(body)
            .unwrap()
            .events;
        let (bytes, _) = pending::encode(7, &events).unwrap();
        let encoded = Batch::encoded(bytes.clone().into(), &events);
        let back = Batch::read_back(bytes).unwrap();
        let want: Vec<&[u8]> = events.iter().map(|e| &e.canonical[..]).collect();
        assert_eq!(encoded.events(), want);
        assert_eq!(back.events(), want);
        let leaves: Vec<Hash> = events.iter().map(|e| e.leaf_hash).collect();
        assert_eq!(encoded.leaves, leaves);
        assert_eq!(back.leaves, leaves);
    }
}
