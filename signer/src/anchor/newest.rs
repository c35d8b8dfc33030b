//! The newest checkpoint in the store: the one in the header of the segment with the
//! highest index range. Segments are partitioned by their checkpoint's hour, so after the
//! first search only the current and the previous hour's partitions are listed.

use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::segment;
use sealtrail_core::trust::{SignatureVerdict, Trust};
use sealtrail_store::{ObjectStore, StoreError};

/// Most bytes read of a segment to get its header line (a checkpoint note is at most
/// 16 KiB, the rest of the header a few hundred bytes).
const MAX_HEADER_READ: usize = 64 * 1024;
const HOUR_MS: u64 = 3_600_000;
/// Most segment headers read per search when the newest ones do not verify.
const MAX_CANDIDATES: usize = 4;

/// Finds the newest stored checkpoint, remembering the last one found.
#[derive(Debug)]
pub struct NewestCheckpoint {
    prefix: String,
    /// The segment key and checkpoint found last.
    last: Option<(String, u64, SignedCheckpoint)>,
}

impl NewestCheckpoint {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            last: None,
        }
    }

    /// The checkpoint of the newest segment whose checkpoint `trust` verifies; `None`
    /// while the store holds none. A segment whose checkpoint does not verify (planted,
    /// or damaged) is passed over: it is the verifier's finding, not something to anchor.
    ///
    /// Also returns how many newer segments were passed over.
    pub async fn find(
        &mut self,
        store: &dyn ObjectStore,
        trust: &Trust,
    ) -> Result<(Option<SignedCheckpoint>, u64), StoreError> {
        let now = super::now_ms();
        let mut found: Vec<(u64, String)> = Vec::new();
        for hour in [now.saturating_sub(HOUR_MS), now] {
            let part = format!("{}segments/{}/", self.prefix, segment::hour_partition(hour));
            self.collect(store.list(&part).await?, &mut found);
        }
        if found.is_empty() && self.last.is_none() {
            // Nothing in the last two hours and nothing known: the whole trail, once.
            let all = store.list(&format!("{}segments/", self.prefix)).await?;
            self.collect(all, &mut found);
        }
        found.sort_unstable_by(|a, b| b.cmp(a));
        let mut passed_over = 0;
        for (last, key) in found.into_iter().take(MAX_CANDIDATES) {
            if let Some((_, known, cp)) = &self.last
                && *known >= last
            {
                return Ok((Some(cp.clone()), passed_over));
            }
            let head = store.get_prefix(&key, MAX_HEADER_READ).await?;
            match segment::parse_header(&head) {
                // The key's range must be the header's, and under its checkpoint: a segment
                // planted under a key of a huge index, with a copy of a real old header,
                // would otherwise stand as the newest until the anchor restarts.
                Ok((header, _))
                    if Some((header.first_index, last))
                        == segment::parse_object_key(&self.prefix, &key)
                        && header.first_index.checked_add(header.count) == last.checked_add(1)
                        && header.checkpoint.checkpoint.size > last
                        && matches!(
                            trust.verify(&header.checkpoint),
                            SignatureVerdict::Trusted { .. }
                        ) =>
                {
                    self.last = Some((key, last, header.checkpoint.clone()));
                    return Ok((Some(header.checkpoint), passed_over));
                }
                Ok(_) => tracing::warn!(
                    key,
                    "anchor: a segment whose key is not its header's range, or whose checkpoint the trust bundle does not verify"
                ),
                Err(e) => tracing::warn!(key, error = %e, "anchor: unreadable segment header"),
            }
            passed_over += 1;
        }
        Ok((self.last.as_ref().map(|(_, _, cp)| cp.clone()), passed_over))
    }

    fn collect(&self, objects: Vec<sealtrail_store::ObjectInfo>, into: &mut Vec<(u64, String)>) {
        for o in objects.into_iter().filter(|o| o.irregular.is_none()) {
            if let Some((_, last)) = segment::parse_object_key(&self.prefix, &o.key) {
                into.push((last, o.key));
            }
        }
    }
}
