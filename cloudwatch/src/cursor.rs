//! Where the source has read up to, kept in the log's own store (docs/FORMAT.md §4.10).
//!
//! Each step is a new object, `<prefix>sources/cloudwatch/<group id>/<seq, 20 digits>.json`,
//! written create-new: the store's own create-new check is the fence. A second replica (or
//! a stale one after a partition) that tries to write a sequence number already taken gets
//! a conflict and stops, so two writers can never both advance one cursor.
//!
//! Two kinds of step: before each batch is sent, an *intent* naming only that batch
//! (`sending`, small); after a pass, a *snapshot* (`through_ms` and every event sent within
//! the overlap, `recent`). The cursor is the newest snapshot with the intents after it: their
//! events were sent (an intent is written only once the batch before it is stored), but the
//! last one's batch may be in flight, so a restart sends it again, the same events in the
//! same order, which the ingester stores once (a batch's pending key is the digest of its
//! events). Intents keep a batch's cost independent of how many events the overlap holds.

use std::collections::BTreeSet;
use std::sync::Arc;

use sealtrail_store::{ObjectStore, PutOutcome, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// `format` of a cursor object.
pub const CURSOR_FORMAT: &str = "sealtrail-cloudwatch-cursor/v1";

/// Where cursors live under the log's prefix.
pub const CURSORS_PREFIX: &str = "sources/cloudwatch/";

/// Largest cursor object read (a cursor holds at most the ids of one overlap window).
pub const MAX_CURSOR_LEN: usize = 64 * 1024 * 1024;

/// One event already sent, remembered while a later window can still return it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Seen {
    pub timestamp_ms: i64,
    pub event_id: String,
}

/// The state of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    pub format: String,
    pub log_group: String,
    pub seq: u64,
    /// Every event with a timestamp up to here was read (the window ends here).
    pub through_ms: i64,
    /// Events sent whose timestamp is within the overlap before `through_ms`: a window that
    /// returns them again does not send them twice.
    pub recent: BTreeSet<Seen>,
    /// The batch being sent when this cursor was written, in order (empty: none). A
    /// restart sends exactly these again before anything else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sending: Vec<Seen>,
    /// An intent: only `sending` (and `seq`, `log_group`) count; `through_ms` and `recent`
    /// are the snapshot's before it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub intent: bool,
}

impl Cursor {
    /// A source that has read nothing yet, from `start_ms` on.
    pub fn new(log_group: &str, start_ms: i64) -> Self {
        Self {
            format: CURSOR_FORMAT.into(),
            log_group: log_group.into(),
            seq: 0,
            through_ms: start_ms,
            recent: BTreeSet::new(),
            sending: Vec::new(),
            intent: false,
        }
    }

    /// Whether the event was already sent.
    pub fn was_sent(&self, timestamp_ms: i64, event_id: &str) -> bool {
        self.recent.contains(&Seen {
            timestamp_ms,
            event_id: event_id.to_string(),
        })
    }

    /// Forgets sent events older than `keep_from_ms`: no window reaches back to them.
    pub fn prune(&mut self, keep_from_ms: i64) {
        self.recent = self.recent.split_off(&Seen {
            timestamp_ms: keep_from_ms,
            event_id: String::new(),
        });
    }
}

/// The cursors of one log group in one store.
pub struct CursorStore {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>sources/cloudwatch/<group id>/`.
    dir: String,
}

impl CursorStore {
    /// The group id is the first 16 hex digits of SHA-256(log group name): log group names
    /// hold `/`, which a key part may not.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, log_group: &str) -> Self {
        let id = hex::encode(&Sha256::digest(log_group.as_bytes())[..8]);
        Self {
            store,
            dir: format!("{prefix}{CURSORS_PREFIX}{id}/"),
        }
    }

    fn key(&self, seq: u64) -> String {
        format!("{}{seq:020}.json", self.dir)
    }

    /// The cursor: the newest snapshot and the intents after it (see the module docs), or
    /// `None` before the first step.
    pub async fn latest(&self) -> Result<Option<Cursor>, Error> {
        let listed = self.store.list(&self.dir).await?;
        let mut seqs: Vec<u64> = listed
            .iter()
            .filter(|o| o.irregular.is_none())
            .filter_map(|o| {
                let name = o.key.strip_prefix(&self.dir)?.strip_suffix(".json")?;
                (name.len() == 20).then(|| name.parse::<u64>().ok())?
            })
            .collect();
        seqs.sort_unstable();
        let Some(&newest) = seqs.last() else {
            return Ok(None);
        };
        // Newest first, back to a snapshot.
        let mut intents = Vec::new();
        for &seq in seqs.iter().rev() {
            let step = self.read(seq).await?;
            if step.intent {
                intents.push(step);
                continue;
            }
            let mut cursor = step;
            for (i, intent) in intents.iter().rev().enumerate() {
                if i + 1 == intents.len() {
                    // The newest intent: its batch may not have been stored.
                    cursor.sending = intent.sending.clone();
                } else {
                    cursor.recent.extend(intent.sending.iter().cloned());
                }
            }
            cursor.seq = newest;
            cursor.intent = false;
            return Ok(Some(cursor));
        }
        Err(Error::Cursor(format!(
            "{}: intents without a snapshot before them",
            self.dir
        )))
    }

    async fn read(&self, seq: u64) -> Result<Cursor, Error> {
        let key = self.key(seq);
        let bytes = self.store.get_prefix(&key, MAX_CURSOR_LEN + 1).await?;
        if bytes.len() > MAX_CURSOR_LEN {
            return Err(Error::Cursor(format!("{key}: larger than a cursor may be")));
        }
        let step: Cursor =
            serde_json::from_slice(&bytes).map_err(|e| Error::Cursor(format!("{key}: {e}")))?;
        if step.format != CURSOR_FORMAT || step.seq != seq {
            return Err(Error::Cursor(format!(
                "{key}: format {:?}, seq {} (expected {CURSOR_FORMAT:?}, {seq})",
                step.format, step.seq
            )));
        }
        Ok(step)
    }

    /// Writes an intent naming `cursor.sending` as the next step.
    pub async fn intend(&self, cursor: &mut Cursor) -> Result<(), Error> {
        let step = Cursor {
            format: CURSOR_FORMAT.into(),
            log_group: cursor.log_group.clone(),
            seq: cursor.seq,
            through_ms: cursor.through_ms,
            recent: BTreeSet::new(),
            sending: cursor.sending.clone(),
            intent: true,
        };
        self.put(cursor, step).await
    }

    /// Writes a snapshot of `cursor` as the next step (its `seq` is set here). A conflict
    /// means another writer took this sequence number: this one is fenced and must stop.
    pub async fn advance(&self, cursor: &mut Cursor) -> Result<(), Error> {
        let step = cursor.clone();
        self.put(cursor, step).await
    }

    /// Writes `step` under `cursor.seq + 1`, which `cursor` then takes.
    async fn put(&self, cursor: &mut Cursor, mut step: Cursor) -> Result<(), Error> {
        cursor.seq += 1;
        step.seq = cursor.seq;
        let bytes = serde_json::to_vec(&step).map_err(|e| Error::Cursor(e.to_string()))?;
        let key = self.key(cursor.seq);
        match self.store.put_new(&key, &bytes).await {
            Ok(PutOutcome::Created) => Ok(()),
            // The same bytes: our own write, retried after a lost answer.
            Ok(PutOutcome::AlreadyStored) => Ok(()),
            Err(StoreError::Conflict(_)) => Err(Error::Fenced(key)),
            Err(e) => {
                // Not written (or not known to be): the next attempt must reuse the number.
                cursor.seq -= 1;
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use sealtrail_store::LocalDirStore;

    #[tokio::test]
    async fn cursors_advance_and_a_second_writer_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::open(dir.path()).unwrap());
        let a = CursorStore::new(store.clone(), "p/", "/aws/eks/demo/cluster");
        assert!(a.latest().await.unwrap().is_none());
        let mut c = Cursor::new("/aws/eks/demo/cluster", 1_000);
        c.recent.insert(Seen {
            timestamp_ms: 990,
            event_id: "x".into(),
        });
        a.advance(&mut c).await.unwrap();
        a.advance(&mut c).await.unwrap();
        assert_eq!(a.latest().await.unwrap().unwrap(), c);

        // A second replica that read the same cursor and advances it too.
        let b = CursorStore::new(store, "p/", "/aws/eks/demo/cluster");
        let mut stale = b.latest().await.unwrap().unwrap();
        stale.through_ms = 5_000;
        a.advance(&mut c).await.unwrap();
        assert!(matches!(b.advance(&mut stale).await, Err(Error::Fenced(_))));

        c.prune(995);
        assert!(c.recent.is_empty());
        assert!(!c.was_sent(990, "x"));
    }

    /// Intents after the newest snapshot: all but the last were sent, the last is in flight.
    #[tokio::test]
    async fn intents_after_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::open(dir.path()).unwrap());
        let cs = CursorStore::new(store, "", "g");
        let seen = |id: &str| Seen {
            timestamp_ms: 5,
            event_id: id.into(),
        };
        let mut c = Cursor::new("g", 0);
        cs.advance(&mut c).await.unwrap();
        c.sending = vec![seen("a"), seen("b")];
        cs.intend(&mut c).await.unwrap();
        c.recent.extend(c.sending.drain(..));
        c.sending = vec![seen("c")];
        cs.intend(&mut c).await.unwrap();
        let back = cs.latest().await.unwrap().unwrap();
        assert_eq!(back.seq, 3);
        assert!(back.was_sent(5, "a") && back.was_sent(5, "b") && !back.was_sent(5, "c"));
        assert_eq!(back.sending, vec![seen("c")]);
        assert!(!back.intent);
        // Only intents, no snapshot: refused, not guessed.
        let dir2 = tempfile::tempdir().unwrap();
        let store2: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::open(dir2.path()).unwrap());
        let cs2 = CursorStore::new(store2, "", "g");
        let mut d = Cursor::new("g", 0);
        d.sending = vec![seen("z")];
        cs2.intend(&mut d).await.unwrap();
        assert!(matches!(cs2.latest().await, Err(Error::Cursor(_))));
    }
}
