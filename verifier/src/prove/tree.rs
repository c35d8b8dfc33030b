//! The stored leaves streamed from leaf 0 to the head, for the consistency proofs: which
//! segments continue the sequence, which checkpoints need a proof, and the roots the
//! stored leaves must reproduce on the way.

use std::collections::{BTreeMap, HashSet};

use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::consistency::ConsistencyStream;
use sealtrail_core::merkle::Hash;
use sealtrail_core::segment::Record;

use crate::Error;

use super::run::Seg;
use super::{internal, needs_whole_log, reason};

/// The tree of the stored leaves up to the head.
pub(super) struct HeadTree {
    head_size: u64,
    stream: ConsistencyStream,
    /// Size → (root, what) that the stream must reproduce there.
    roots: BTreeMap<u64, Vec<(Hash, String)>>,
    /// Text hashes of the checkpoints whose proofs are registered.
    registered: HashSet<Hash>,
}

impl HeadTree {
    pub(super) fn new(head: &SignedCheckpoint) -> Self {
        let mut roots: BTreeMap<u64, Vec<(Hash, String)>> = BTreeMap::new();
        roots
            .entry(head.checkpoint.size)
            .or_default()
            .push((head.checkpoint.root, "the head checkpoint".into()));
        Self {
            head_size: head.checkpoint.size,
            stream: ConsistencyStream::new(),
            roots,
            registered: HashSet::new(),
        }
    }

    /// Leaves streamed so far.
    pub(super) fn size(&self) -> u64 {
        self.stream.size()
    }

    /// Whether `seg` is to be read: it must start where the stream is. A copy of indexes
    /// already read, or a segment beyond the head, is passed over (a warning); an overlap
    /// or a gap stops the export.
    pub(super) fn admit(&self, seg: &Seg, warnings: &mut Vec<String>) -> Result<bool, Error> {
        let (size, n) = (self.stream.size(), self.head_size);
        if seg.last < size {
            warnings.push(format!(
                "{}: indexes already read from another segment (a copy?), passed over",
                seg.key
            ));
            return Ok(false);
        }
        if seg.first >= n {
            warnings.push(format!(
                "{}: beyond the head (size {n}), passed over",
                seg.key
            ));
            return Ok(false);
        }
        if seg.first < size {
            return Err(needs_whole_log(format!(
                "{} overlaps indexes {}..={} read from another segment (run `sealtrail-verify verify`)",
                seg.key,
                seg.first,
                size - 1
            )));
        }
        if seg.first > size {
            return Err(needs_whole_log(format!(
                "the store holds no segment for indexes {}..={} before {} (run `sealtrail-verify verify`)",
                size,
                seg.first - 1,
                seg.key
            )));
        }
        Ok(true)
    }

    /// Registers the proof from the checkpoint of segment `key` (once per checkpoint),
    /// while the stream is at the segment's first index, and the root it must reproduce.
    pub(super) fn register(&mut self, key: &str, cp: &SignedCheckpoint) -> Result<(), Error> {
        if !self.registered.insert(cp.hash()) {
            return Ok(());
        }
        let (m, n) = (cp.checkpoint.size, self.head_size);
        if m > n {
            return Err(needs_whole_log(format!(
                "{key}: its checkpoint (size {m}) is newer than the head (size {n})"
            )));
        }
        self.stream
            .register(m, n)
            .map_err(|e| internal(reason(e)))?;
        self.roots
            .entry(m)
            .or_default()
            .push((cp.checkpoint.root, format!("the checkpoint of {key}")));
        Ok(())
    }

    /// Streams a segment's leaves, up to the head. A root the leaves do not reproduce is a
    /// failure, listed with the events that fail (an altered leaf is named there).
    pub(super) fn push(&mut self, records: &[(usize, Record)], failures: &mut Vec<String>) {
        for (_, r) in records {
            if self.stream.size() >= self.head_size {
                break;
            }
            self.stream.push(r.leaf_hash);
            let size = self.stream.size();
            let Some(want) = self.roots.get(&size) else {
                continue;
            };
            let root = self.stream.root();
            for (_, what) in want.iter().filter(|(r, _)| *r != root) {
                failures.push(format!(
                    "the stored leaves 0..{size} do not give the root of {what}: no consistency proof can be computed (run `sealtrail-verify verify`; --no-consistency exports without them)"
                ));
            }
        }
    }

    /// The consistency proof from size `m` to the head, once every leaf is streamed.
    pub(super) fn proof(&self, m: u64) -> Result<Vec<Hash>, Error> {
        self.stream.proof(m).map_err(|e| internal(reason(e)))
    }
}
