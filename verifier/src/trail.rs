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
    pub async fn layout(&self) -> Result<Layout, Error> {
        let mut layout = Layout::default();
        let segments = self.segments_prefix();
        let checkpoints = format!("{}{CHECKPOINTS_PREFIX}", self.prefix);
        let pending = format!("{}{PENDING_PREFIX}", self.prefix);
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
