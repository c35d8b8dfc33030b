//! Where the source has read up to, kept in the log's own store (docs/FORMAT.md §4.10).
//!
//! Each state of the cursor is a new object, `<prefix>sources/cloudwatch/<group id>/
//! <seq, 20 digits>.json`, written create-new: the store's own create-new check is the
//! fence. A second replica (or a stale one after a partition) that tries to write a
//! sequence number already taken gets a conflict and stops, so two writers can never both
//! advance one cursor. A cursor is written *before* each batch is sent, naming the batch
//! (`sending`): after a crash the same events are sent again in the same order, which the
//! ingester stores once (a batch's pending key is the digest of its events).

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

    /// The newest cursor, or `None` before the first.
    pub async fn latest(&self) -> Result<Option<Cursor>, Error> {
        let listed = self.store.list(&self.dir).await?;
        let Some(newest) = listed
            .iter()
            .filter(|o| o.irregular.is_none())
            .filter_map(|o| {
                let name = o.key.strip_prefix(&self.dir)?.strip_suffix(".json")?;
                (name.len() == 20).then(|| name.parse::<u64>().ok())?
            })
            .max()
        else {
            return Ok(None);
        };
        let key = self.key(newest);
        let bytes = self.store.get_prefix(&key, MAX_CURSOR_LEN + 1).await?;
        if bytes.len() > MAX_CURSOR_LEN {
            return Err(Error::Cursor(format!("{key}: larger than a cursor may be")));
        }
        let cursor: Cursor =
            serde_json::from_slice(&bytes).map_err(|e| Error::Cursor(format!("{key}: {e}")))?;
        if cursor.format != CURSOR_FORMAT || cursor.seq != newest {
            return Err(Error::Cursor(format!(
                "{key}: format {:?}, seq {} (expected {CURSOR_FORMAT:?}, {newest})",
                cursor.format, cursor.seq
            )));
        }
        Ok(Some(cursor))
    }

    /// Writes `cursor` as the next state (its `seq` is set here). A conflict means another
    /// writer took this sequence number: this one is fenced and must stop.
    pub async fn advance(&self, cursor: &mut Cursor) -> Result<(), Error> {
        cursor.seq += 1;
        let bytes = serde_json::to_vec(cursor).map_err(|e| Error::Cursor(e.to_string()))?;
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
}
