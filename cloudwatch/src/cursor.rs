//! Where the source has read up to, kept in the log's own store (docs/FORMAT.md §4.10).
//!
//! Each step is a new object, `<prefix>sources/cloudwatch/<group id>/<seq, 20 digits>.json`,
//! written create-new: the store's own create-new check is the fence. A second replica (or
//! a stale one after a partition) that tries to write a sequence number already taken gets
//! a conflict and stops, so two writers can never both advance one cursor.
//!
//! Two kinds of step: before each batch is sent, an *intent* naming only that batch
//! (`sending`, small) and how many batches may be in flight with it (`window`, w); after
//! passes, now and then, a *snapshot* (`through_ms` and every event sent within the
//! overlap, `recent`). The writer keeps one rule: the intent of sequence number s is written only once the batches of
//! every intent up to s − w are stored. So the cursor is the newest snapshot with the intents
//! after it, split at m, the largest s − w among them: the batches of intents up to m were
//! stored, the others may be in flight, and a restart sends each of those again, the same
//! events in the same order, which the ingester stores once (a batch's pending key is the
//! digest of its events, the signer's dedupe answers a repeated batch with its first
//! indexes). Intents keep a batch's cost independent of how many events the overlap holds.

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
    /// An intent's batch, in order (empty on a snapshot). A restart that finds it possibly
    /// in flight sends exactly these events again before anything else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sending: Vec<Seen>,
    /// An intent's in-flight bound w: written once the batches of the intents up to
    /// `seq − w` were stored. Absent means 1 (the previous intent's batch was stored).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub window: u64,
    /// An intent: only `sending` and `window` (and `seq`, `log_group`) count; `through_ms`
    /// and `recent` are the snapshot's before it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub intent: bool,
    /// Not stored: the batches that may have been in flight at the last stop, oldest first
    /// (filled by [`CursorStore::latest`], emptied once they are sent again).
    #[serde(skip)]
    pub in_flight: Vec<Vec<Seen>>,
}

fn one() -> u64 {
    1
}

fn is_one(w: &u64) -> bool {
    *w == 1
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
            window: 1,
            intent: false,
            in_flight: Vec::new(),
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
        let Some(newest) = self.newest().await? else {
            return Ok(None);
        };
        // Newest first, back to a snapshot (at most some 10 s of passes away).
        let mut intents = Vec::new();
        for seq in (1..=newest).rev() {
            let step = match self.read(seq).await {
                Err(Error::Store(StoreError::NotFound(key))) => {
                    return Err(Error::Cursor(format!(
                        "{key} is missing between the newest step {newest} and a snapshot"
                    )));
                }
                r => r?,
            };
            if step.intent {
                intents.push(step);
                continue;
            }
            intents.reverse();
            return Ok(Some(resumed(step, intents, newest)));
        }
        Err(Error::Cursor(format!(
            "{}: intents without a snapshot before them",
            self.dir
        )))
    }

    /// The newest sequence number, found without listing: steps are numbered 1, 2, ... with
    /// no gap (a number is reused only when its write failed), so whether step n exists is
    /// monotone in n and 2·log2(n) reads find the last one, where a listing would page
    /// through every step ever written. Listed only when step 1 is gone (the store's
    /// lifecycle expired it) or was never written.
    async fn newest(&self) -> Result<Option<u64>, Error> {
        if !self.exists(1).await? {
            return self.newest_listed().await;
        }
        let (mut lo, mut hi) = (1u64, 2u64);
        while self.exists(hi).await? {
            lo = hi;
            hi = hi.saturating_mul(2);
        }
        // `lo` exists, `hi` does not.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.exists(mid).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(Some(lo))
    }

    async fn exists(&self, seq: u64) -> Result<bool, Error> {
        match self.store.get_prefix(&self.key(seq), 1).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn newest_listed(&self) -> Result<Option<u64>, Error> {
        let listed = self.store.list(&self.dir).await?;
        Ok(listed
            .iter()
            .filter(|o| o.irregular.is_none())
            .filter_map(|o| {
                let name = o.key.strip_prefix(&self.dir)?.strip_suffix(".json")?;
                (name.len() == 20).then(|| name.parse::<u64>().ok())?
            })
            .max())
    }

    async fn read(&self, seq: u64) -> Result<Cursor, Error> {
        let key = self.key(seq);
        let bytes = self.store.get_prefix(&key, MAX_CURSOR_LEN + 1).await?;
        if bytes.len() > MAX_CURSOR_LEN {
            return Err(Error::Cursor(format!("{key}: larger than a cursor may be")));
        }
        parse_step(&bytes, seq).map_err(|e| Error::Cursor(format!("{key}: {e}")))
    }

    /// Writes an intent naming `batch` as the next step, to be sent with at most
    /// `window − 1` earlier batches still in flight (the caller keeps that promise).
    pub async fn intend(
        &self,
        cursor: &mut Cursor,
        batch: &[Seen],
        window: u64,
    ) -> Result<(), Error> {
        let step = Cursor {
            format: CURSOR_FORMAT.into(),
            log_group: cursor.log_group.clone(),
            seq: cursor.seq,
            through_ms: cursor.through_ms,
            recent: BTreeSet::new(),
            sending: batch.to_vec(),
            window: window.max(1),
            intent: true,
            in_flight: Vec::new(),
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

/// One stored step, which must be of this format and have sequence number `seq` (unknown
/// and duplicate members are errors).
pub fn parse_step(bytes: &[u8], seq: u64) -> Result<Cursor, String> {
    if bytes.len() > MAX_CURSOR_LEN {
        return Err("larger than a cursor may be".into());
    }
    let step: Cursor = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if step.format != CURSOR_FORMAT || step.seq != seq {
        return Err(format!(
            "format {:?}, seq {} (expected {CURSOR_FORMAT:?}, {seq})",
            step.format, step.seq
        ));
    }
    Ok(step)
}

/// The cursor from its newest `snapshot` and the `intents` after it (oldest first): an
/// intent at or below m = max(seq − window) was stored, the later ones may be in flight.
pub fn resumed(mut cursor: Cursor, intents: Vec<Cursor>, newest: u64) -> Cursor {
    let stored_through = intents
        .iter()
        .map(|i| i.seq.saturating_sub(i.window.max(1)))
        .max()
        .unwrap_or(0);
    // A snapshot of the first format could name a batch of its own; later intents say
    // whether it was stored, like any intent's.
    let own = std::mem::take(&mut cursor.sending);
    let batches =
        std::iter::once((cursor.seq, own)).chain(intents.into_iter().map(|i| (i.seq, i.sending)));
    for (seq, batch) in batches {
        if batch.is_empty() {
            continue;
        }
        if seq <= stored_through {
            cursor.recent.extend(batch);
        } else {
            cursor.in_flight.push(batch);
        }
    }
    cursor.seq = newest;
    cursor.intent = false;
    cursor.window = 1;
    cursor
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
        let mut c = Cursor::new("g", 0);
        cs.advance(&mut c).await.unwrap();
        cs.intend(&mut c, &[seen("a"), seen("b")], 1).await.unwrap();
        cs.intend(&mut c, &[seen("c")], 1).await.unwrap();
        let back = cs.latest().await.unwrap().unwrap();
        assert_eq!(back.seq, 3);
        assert!(back.was_sent(5, "a") && back.was_sent(5, "b") && !back.was_sent(5, "c"));
        assert_eq!(back.in_flight, vec![vec![seen("c")]]);
        assert!(!back.intent && back.sending.is_empty());
        // Only intents, no snapshot: refused, not guessed.
        let dir2 = tempfile::tempdir().unwrap();
        let store2: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::open(dir2.path()).unwrap());
        let cs2 = CursorStore::new(store2, "", "g");
        let mut d = Cursor::new("g", 0);
        cs2.intend(&mut d, &[seen("z")], 1).await.unwrap();
        assert!(matches!(cs2.latest().await, Err(Error::Cursor(_))));
    }

    fn seen(id: &str) -> Seen {
        Seen {
            timestamp_ms: 5,
            event_id: id.into(),
        }
    }

    /// With a window of 3, an intent's batch counts as stored only once an intent 3 steps
    /// later was written; the last 2 (or fewer) may be in flight.
    #[tokio::test]
    async fn a_window_of_intents_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::open(dir.path()).unwrap());
        let cs = CursorStore::new(store, "", "g");
        let mut c = Cursor::new("g", 0);
        cs.advance(&mut c).await.unwrap(); // seq 1
        for id in ["a", "b", "c", "d", "e"] {
            cs.intend(&mut c, &[seen(id)], 3).await.unwrap(); // seqs 2..=6
        }
        let back = cs.latest().await.unwrap().unwrap();
        // m = 6 − 3 = 3: a (2) and b (3) were stored; c, d, e may be in flight, in order.
        assert!(back.was_sent(5, "a") && back.was_sent(5, "b") && !back.was_sent(5, "c"));
        assert_eq!(
            back.in_flight,
            vec![vec![seen("c")], vec![seen("d")], vec![seen("e")]]
        );
        // An intent of the first format (no window: 1) after them: all before it stored.
        cs.intend(&mut c, &[seen("f")], 1).await.unwrap();
        let back = cs.latest().await.unwrap().unwrap();
        assert!(back.was_sent(5, "e") && !back.was_sent(5, "f"));
        assert_eq!(back.in_flight, vec![vec![seen("f")]]);
        // A window stored as absent when it is 1, and read back as 1.
        let step: Cursor = serde_json::from_slice(
            br#"{"format":"sealtrail-cloudwatch-cursor/v1","log_group":"g","seq":9,"through_ms":0,"recent":[],"sending":[{"timestamp_ms":5,"event_id":"x"}],"intent":true}"#,
        )
        .unwrap();
        assert_eq!(step.window, 1);
    }

    /// The newest step is found by probing, at any count; with the first steps expired,
    /// by listing.
    #[tokio::test]
    async fn the_newest_step_without_listing_and_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::open(dir.path()).unwrap());
        let cs = CursorStore::new(store.clone(), "", "g");
        let mut c = Cursor::new("g", 0);
        for n in 1..=37u64 {
            if n % 5 == 1 {
                cs.advance(&mut c).await.unwrap();
            } else {
                cs.intend(&mut c, &[seen(&n.to_string())], 2).await.unwrap();
            }
            assert_eq!(cs.newest().await.unwrap(), Some(n));
        }
        let back = cs.latest().await.unwrap().unwrap();
        assert_eq!(back.seq, 37);
        // Snapshot 36; intent 37 (window 2) may be in flight.
        assert_eq!(back.in_flight, vec![vec![seen("37")]]);
        // The lifecycle expired steps 1..=10: found by listing.
        let files = dir.path().join(cs.dir.trim_end_matches('/'));
        for n in 1..=10u64 {
            let f = files.join(format!("{n:020}.json"));
            let mut perm = std::fs::metadata(&files).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)] // a test undoing write-once
            perm.set_readonly(false);
            std::fs::set_permissions(&files, perm).unwrap();
            std::fs::remove_file(f).unwrap();
        }
        assert_eq!(cs.latest().await.unwrap().unwrap(), back);
    }
}
