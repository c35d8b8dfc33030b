//! The trail reader: the one place that knows how a log is laid out in its store
//! (docs/FORMAT.md §9.5) and how much of an object may be read.
//!
//! Under the log's prefix: `segments/` (signed segments), `checkpoints/` (rotation
//! checkpoints), `pending/` (acknowledged batches waiting for their seal) and `fence/` (the
//! signer's fencing records). Every reader of the store — the audit, the sealing checks,
//! the prover — lists and reads through here, with the same size limits.

use sealtrail_core::checkpoint::{CHECKPOINTS_PREFIX, MAX_NOTE_LEN, SignedCheckpoint};
use sealtrail_core::pending::PENDING_PREFIX;
use sealtrail_core::segment::{self, SegmentHeader};
use sealtrail_core::timestamp::TIMESTAMPS_PREFIX;
use sealtrail_store::{ObjectInfo, ObjectStore};

use crate::Error;

/// Where segments are stored, under the log's prefix.
pub const SEGMENTS_PREFIX: &str = "segments/";

/// Bytes read to find a segment's header line: the note limit, JSON-escaped, plus the rest.
pub const HEADER_READ_LEN: usize = 2 * MAX_NOTE_LEN + 1024;

/// A checkpoint object read under `checkpoints/`, or why it is not one.
pub enum CheckpointObject {
    Checkpoint(Box<SignedCheckpoint>),
    /// Not a signed checkpoint (too large, or does not parse): the reason.
    Unreadable(String),
}

/// Everything listed under a log's prefix, by where the layout puts it.
#[derive(Debug, Default)]
pub struct Layout {
    pub segments: Vec<ObjectInfo>,
    pub checkpoints: Vec<ObjectInfo>,
    pub pending: Vec<ObjectInfo>,
    /// RFC 3161 tokens (`timestamps/`).
    pub timestamps: Vec<ObjectInfo>,
    /// Entries the store lists but cannot read (a symbolic link, a special file, a name
    /// that is not UTF-8 or that no store writes), wherever they are under the prefix.
    pub irregular: Vec<ObjectInfo>,
}

impl Layout {
    /// Whether nothing of a log is there: no segment, no rotation, no pending batch.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.checkpoints.is_empty() && self.pending.is_empty()
    }
}

/// One log in one store.
#[derive(Clone, Copy)]
pub struct Trail<'a> {
    pub store: &'a dyn ObjectStore,
    /// The log's key prefix (`""` or ending in `/`).
    pub prefix: &'a str,
}

impl<'a> Trail<'a> {
    pub fn new(store: &'a dyn ObjectStore, prefix: &'a str) -> Self {
        Self { store, prefix }
    }

    /// The key prefix of the log's segments.
    pub fn segments_prefix(&self) -> String {
        format!("{}{SEGMENTS_PREFIX}", self.prefix)
    }

    /// One listing of the whole prefix, sorted into the layout's parts. Objects elsewhere
    /// under the prefix (`fence/`, anything else) are not the log's and are left out;
    /// irregular entries are kept wherever they are.
    ///
    /// Tokens are listed first, on their own: a token exists only once its checkpoint's
    /// segment is stored, so every token listed names a segment the main listing (made
    /// after) holds. Taken from one long listing, a token stamped while its pages were
    /// read could name a segment stored after `segments/` was listed: a false
    /// `bad_timestamp`.
    pub async fn layout(&self) -> Result<Layout, Error> {
        let mut layout = Layout::default();
        let segments = self.segments_prefix();
        let checkpoints = format!("{}{CHECKPOINTS_PREFIX}", self.prefix);
        let pending = format!("{}{PENDING_PREFIX}", self.prefix);
        let timestamps = format!("{}{TIMESTAMPS_PREFIX}", self.prefix);
        layout.timestamps = self.objects(&timestamps).await?;
        for obj in self.store.list(self.prefix).await? {
            if obj.irregular.is_some() {
                layout.irregular.push(obj);
            } else if obj.key.starts_with(&segments) {
                layout.segments.push(obj);
            } else if obj.key.starts_with(&checkpoints) {
                layout.checkpoints.push(obj);
            } else if obj.key.starts_with(&pending) {
                layout.pending.push(obj);
            }
        }
        Ok(layout)
    }

    /// Every object under `segments/` (irregular entries left out: the audit reports them).
    pub async fn segments(&self) -> Result<Vec<ObjectInfo>, Error> {
        self.objects(&self.segments_prefix()).await
    }

    /// The segments under one hour partition (`YYYY/MM/DD/HH`).
    pub async fn segments_in(&self, partition: &str) -> Result<Vec<ObjectInfo>, Error> {
        let prefix = format!("{}{partition}/", self.segments_prefix());
        self.objects(&prefix).await
    }

    /// The segments in the hour partitions from `lo` to `hi` (hours since the epoch, both
    /// included; `None`: unbounded): one listing per partition when there are few, else one
    /// listing of every segment, filtered by the partition in its key.
    pub async fn segments_within(
        &self,
        lo: Option<i64>,
        hi: Option<i64>,
    ) -> Result<Vec<ObjectInfo>, Error> {
        if let (Some(lo), Some(hi)) = (lo, hi)
            && hi - lo < MAX_PARTITION_LISTS
        {
            let mut objects = Vec::new();
            for hour in lo..=hi {
                let Some(p) = partition(hour) else { continue };
                objects.extend(self.segments_in(&p).await?);
            }
            return Ok(objects);
        }
        let mut objects = self.segments().await?;
        if lo.is_none() && hi.is_none() {
            return Ok(objects);
        }
        let (lo_s, hi_s) = (lo.and_then(partition), hi.and_then(partition));
        let seg_prefix = self.segments_prefix();
        objects.retain(|o| {
            o.key
                .strip_prefix(seg_prefix.as_str())
                .and_then(|r| r.get(..PARTITION_LEN))
                .is_some_and(|p| {
                    lo_s.as_deref().is_none_or(|lo| lo <= p)
                        && hi_s.as_deref().is_none_or(|hi| p <= hi)
                })
        });
        Ok(objects)
    }

    /// Every object under `checkpoints/`.
    pub async fn checkpoint_objects(&self) -> Result<Vec<ObjectInfo>, Error> {
        self.objects(&format!("{}{CHECKPOINTS_PREFIX}", self.prefix))
            .await
    }

    async fn objects(&self, prefix: &str) -> Result<Vec<ObjectInfo>, Error> {
        let mut listed = self.store.list(prefix).await?;
        listed.retain(|o| o.irregular.is_none());
        Ok(listed)
    }

    /// The index range a segment key names, if it is a segment key of this log.
    pub fn segment_range(&self, key: &str) -> Option<(u64, u64)> {
        segment::parse_object_key(self.prefix, key)
    }

    /// Reads a checkpoint object, refusing one larger than a checkpoint may be before
    /// reading it.
    pub async fn read_checkpoint(&self, obj: &ObjectInfo) -> Result<CheckpointObject, Error> {
        if obj.size > MAX_NOTE_LEN as u64 {
            return Ok(CheckpointObject::Unreadable(format!(
                "{} bytes: larger than a checkpoint may be",
                obj.size
            )));
        }
        let bytes = self.store.get(&obj.key).await?;
        Ok(match SignedCheckpoint::parse(&bytes) {
            Ok(sc) => CheckpointObject::Checkpoint(Box::new(sc)),
            Err(e) => CheckpointObject::Unreadable(format!("not a signed checkpoint: {e}")),
        })
    }

    /// Reads only as much of a segment as its header may take, and parses the header.
    pub async fn read_header(
        &self,
        key: &str,
    ) -> Result<Result<SegmentHeader, sealtrail_core::Error>, Error> {
        let head = self.store.get_prefix(key, HEADER_READ_LEN).await?;
        Ok(segment::parse_header(&head).map(|(h, _)| h))
    }

    /// A whole object.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, Error> {
        Ok(self.store.get(key).await?)
    }
}

/// Above this many hour partitions, a time range lists the whole segments prefix and
/// filters, rather than listing each partition.
const MAX_PARTITION_LISTS: i64 = 7 * 24;
/// `YYYY/MM/DD/HH`.
const PARTITION_LEN: usize = 13;

/// Hours since the epoch up to the end of year 9999 (a partition has four year digits).
const MAX_HOUR: i64 = 253_402_300_799 / 3600;

/// The hour partition (`YYYY/MM/DD/HH`, as in segment keys) of an hour since the epoch
/// from 1970 to 9999.
pub fn partition(hour: i64) -> Option<String> {
    let ms = u64::try_from(hour.min(MAX_HOUR + 1))
        .ok()?
        .checked_mul(3_600_000)?;
    (hour <= MAX_HOUR).then(|| segment::hour_partition(ms))
}

/// The hours (since the epoch) whose partitions may hold the segments of events with
/// `from ≤ stageTimestamp < to` (Unix microseconds; `None`: unbounded), when an event is
/// stored at most `margin` after (or, by clock skew, before) its stageTimestamp.
pub fn hour_span(
    from: Option<i64>,
    to: Option<i64>,
    margin: std::time::Duration,
) -> (Option<i64>, Option<i64>) {
    let margin = i64::try_from(margin.as_secs()).unwrap_or(i64::MAX);
    let lo = from.map(|f| {
        f.div_euclid(1_000_000)
            .saturating_sub(margin)
            .div_euclid(3600)
    });
    // `to` is excluded: its last included microsecond is `to - 1`.
    let hi = to.map(|t| {
        (t.saturating_sub(1))
            .div_euclid(1_000_000)
            .saturating_add(margin)
            .div_euclid(3600)
    });
    (lo, hi)
}

/// Why a segment object is refused before it is read: more than a segment may hold (one
/// huge object must not exhaust the verifier).
pub fn oversized_segment(size: u64) -> Option<String> {
    (size > segment::MAX_SEGMENT_LEN as u64).then(|| {
        format!(
            "{size} bytes, more than a segment may hold ({})",
            segment::MAX_SEGMENT_LEN
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn partitions_are_key_partitions() {
        assert_eq!(partition(1_764_221_736 / 3600).unwrap(), "2025/11/27/05");
        let at = |s: i64| Some(s * 1_000_000);
        let h = 1_764_219_600 / 3600; // 2025-11-27T05:00:00Z
        let zero = std::time::Duration::ZERO;
        assert_eq!(
            hour_span(at(h * 3600), at((h + 1) * 3600), zero),
            (Some(h), Some(h))
        );
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(
            hour_span(at(h * 3600), at((h + 1) * 3600), hour),
            (Some(h - 1), Some(h + 1))
        );
        assert_eq!(hour_span(None, at(h * 3600 + 1), zero), (None, Some(h)));
    }
}
