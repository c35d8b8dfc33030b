//! Stored hashes held in memory, so that the inclusion proofs of every appended leaf (about
//! `2 log2 n` hashes each) and the staging of new leaves read the hashes file only rarely.
//!
//! Two parts, both bounded whatever the log's size:
//! - the *tail*: the newest stored hashes, contiguous and ending where the hashes file
//!   ends. Proofs of recent leaves read their low levels from it.
//! - *old* hashes read once from the file: the roots of the large complete subtrees to the
//!   left, which every recent leaf's proof shares (at most `log2 n` of them per size).
//!   Stored hashes below the durable size never change, so these never go stale.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use sealtrail_core::merkle::Hash;

/// Stored hashes the tail keeps at least (2 MiB); it holds up to twice as many between
/// trims. 65,536 stored hashes cover the newest ~32,768 leaves.
pub const TAIL_HASHES: usize = 1 << 16;
/// Old hashes remembered at most before the memo starts over.
pub const MAX_OLD_HASHES: usize = 4096;

#[derive(Default)]
pub struct HashCache {
    /// Index of `tail[0]` in the stored-hash array.
    start: u64,
    tail: Vec<Hash>,
    old: Mutex<HashMap<u64, Hash, BuildHasherDefault<IndexHasher>>>,
}

/// Hashes a stored-hash index with one multiplication: the keys are our own integers, so
/// SipHash's protection against chosen keys buys nothing here, and it showed in profiles.
#[derive(Default)]
struct IndexHasher(u64);

impl Hasher for IndexHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl HashCache {
    /// A cache whose tail is `tail`, the stored hashes from index `start` on.
    pub fn new(start: u64, tail: Vec<Hash>) -> Self {
        Self {
            start,
            tail,
            old: Mutex::default(),
        }
    }

    /// The hash at stored index `i`, if held.
    pub fn get(&self, i: u64) -> Option<Hash> {
        if i >= self.start {
            return self.tail.get((i - self.start) as usize).copied();
        }
        self.memo().get(&i).copied()
    }

    /// Remembers an old hash read from the file (below the tail).
    pub fn remember(&self, i: u64, h: Hash) {
        if i >= self.start {
            return;
        }
        let mut memo = self.memo();
        if memo.len() >= MAX_OLD_HASHES {
            memo.clear();
        }
        memo.insert(i, h);
    }

    /// Hashes just written to the file at stored index `at` (its end).
    pub fn extend(&mut self, at: u64, hashes: &[Hash]) {
        if at != self.start + self.tail.len() as u64 {
            // Not contiguous (cannot happen while the file only grows at its end): start over.
            self.tail.clear();
            self.start = at;
        }
        self.tail.extend_from_slice(hashes);
        if self.tail.len() >= 2 * TAIL_HASHES {
            let cut = self.tail.len() - TAIL_HASHES;
            self.tail.drain(..cut);
            self.start += cut as u64;
        }
    }

    /// The file was cut to `n` stored hashes.
    pub fn truncate(&mut self, n: u64) {
        if n <= self.start {
            self.tail.clear();
            self.start = n;
            // Old entries at or past the cut (none, while the cut keeps every durable hash).
            self.memo().retain(|&i, _| i < n);
        } else {
            self.tail.truncate((n - self.start) as usize);
        }
    }

    fn memo(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, Hash, BuildHasherDefault<IndexHasher>>> {
        self.old.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u64) -> Hash {
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&i.to_le_bytes());
        h
    }

    #[test]
    fn the_tail_follows_the_end_and_stays_bounded() {
        let mut c = HashCache::new(10, (10..20).map(h).collect());
        assert_eq!(c.get(9), None);
        assert_eq!(c.get(10), Some(h(10)));
        assert_eq!(c.get(20), None);
        let more: Vec<Hash> = (20..20 + 2 * TAIL_HASHES as u64).map(h).collect();
        c.extend(20, &more);
        let end = 20 + 2 * TAIL_HASHES as u64;
        assert_eq!(c.get(end - 1), Some(h(end - 1)));
        assert_eq!(
            c.get(end - TAIL_HASHES as u64),
            Some(h(end - TAIL_HASHES as u64))
        );
        assert_eq!(c.get(10), None, "trimmed");
        assert!(c.tail.len() < 2 * TAIL_HASHES);
    }

    #[test]
    fn a_cut_forgets_what_it_removed() {
        let mut c = HashCache::new(0, (0..100).map(h).collect());
        c.truncate(50);
        assert_eq!(c.get(49), Some(h(49)));
        assert_eq!(c.get(50), None);
        c.extend(50, &[h(999)]);
        assert_eq!(c.get(50), Some(h(999)));
        // A gap starts the tail over rather than misplacing hashes.
        c.extend(60, &[h(60)]);
        assert_eq!(c.get(60), Some(h(60)));
        assert_eq!(c.get(50), None);
    }

    #[test]
    fn old_hashes_are_remembered_below_the_tail_only() {
        let c = HashCache::new(100_000, vec![h(100_000)]);
        c.remember(5, h(5));
        c.remember(100_000, h(7));
        assert_eq!(c.get(5), Some(h(5)));
        assert_eq!(c.get(100_000), Some(h(100_000)));
        for i in 0..MAX_OLD_HASHES as u64 + 1 {
            c.remember(10 + i, h(i));
        }
        assert!(c.memo().len() <= MAX_OLD_HASHES);
    }
}
