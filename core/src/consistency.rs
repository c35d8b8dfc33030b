//! RFC 6962 consistency proofs computed while a log's leaves stream by from leaf 0, in
//! `O(log n)` memory plus the hashes the proofs need: how the verifier's `prove` computes
//! them from the stored leaves, never asking the signer. Pure: leaves in, hashes out.
//!
//! The tree is a [`Frontier`]; what this adds is the bookkeeping of which subtree hashes
//! the registered proofs need, kept as the frontier completes them.

use std::collections::{HashMap, HashSet};

use crate::Error;
use crate::merkle::{Frontier, Hash, node_hash};

/// The subtrees `[a, b)` whose hashes make the RFC 6962 consistency proof from size `m` to
/// size `n` (RFC 6962 §2.1.2, `SUBPROOF`), in proof order. Empty unless `0 < m < n`.
/// At most 2·63 entries: the recursion halves `n` at each step.
pub fn consistency_ranges(m: u64, n: u64) -> Vec<(u64, u64)> {
    fn subproof(m: u64, a: u64, b: u64, complete: bool, out: &mut Vec<(u64, u64)>) {
        let n = b - a;
        if m == n {
            if !complete {
                out.push((a, b));
            }
            return;
        }
        // n > m ≥ 1 here, so n ≥ 2: k is the largest power of two below n.
        let k = 1u64 << (63 - (n - 1).leading_zeros());
        if m <= k {
            subproof(m, a, a + k, complete, out);
            out.push((a + k, b));
        } else {
            subproof(m - k, a + k, b, false, out);
            out.push((a, a + k));
        }
    }
    let mut out = Vec::new();
    if 0 < m && m < n {
        subproof(m, 0, n, true, &mut out);
    }
    out
}

/// `(level, n)` of `[a, b)` if it is a perfect, aligned subtree (leaves `n << level` to
/// `(n + 1) << level`).
fn perfect_node(a: u64, b: u64) -> Option<(u32, u64)> {
    let len = b.checked_sub(a)?;
    (len.is_power_of_two() && a & (len - 1) == 0)
        .then(|| (len.trailing_zeros(), a >> len.trailing_zeros()))
}

/// The tree of a log's leaves, streamed from leaf 0, keeping the hashes of the subtrees
/// that the registered consistency proofs need.
///
/// A proof from `m` to the final size `n` is registered while the stream is at a size
/// `p ≤ m`. Its subtrees left of `p` are perfect subtrees of the old tree, which at `p` are
/// still whole on the frontier; those right of it are kept as they complete; those that
/// end at `n` and are not perfect are folded from the frontier at `n`.
#[derive(Debug, Default)]
pub struct ConsistencyStream {
    frontier: Frontier,
    /// Perfect subtrees, as `(level, n)`, to keep when they complete.
    wanted: HashSet<(u32, u64)>,
    kept: HashMap<(u32, u64), Hash>,
}

impl ConsistencyStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves pushed so far.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let (wanted, kept) = (&mut self.wanted, &mut self.kept);
        self.frontier.push_with(leaf, |level, n, h| {
            if wanted.remove(&(level, n)) {
                kept.insert((level, n), *h);
            }
        });
    }

    /// Root of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Registers the subtrees of the proof from `m` to `n`, at the current size `≤ m`.
    ///
    /// Errors: [`Error::Proof`] when the stream is already past `m` (a caller bug: the
    /// hashes left of the current size that the proof needs may be gone).
    pub fn register(&mut self, m: u64, n: u64) -> Result<(), Error> {
        let size = self.size();
        if m < size {
            return Err(Error::Proof(format!(
                "the proof from size {m} was registered after the stream passed it"
            )));
        }
        for (a, b) in consistency_ranges(m, n) {
            let Some(node) = perfect_node(a, b) else {
                continue; // Ends at n: folded from the frontier at n.
            };
            if self.kept.contains_key(&node) {
                continue;
            }
            if b <= size {
                let h = self.frontier_node(a, b).ok_or_else(|| {
                    Error::Proof(format!(
                        "subtree {a}..{b} is no longer on the frontier at size {size}"
                    ))
                })?;
                self.kept.insert(node, h);
            } else {
                self.wanted.insert(node);
            }
        }
        Ok(())
    }

    /// The proof from `m` to the current size, once the stream is there.
    ///
    /// Errors: [`Error::Proof`] when a hash it needs was not kept (the proof from `m` was
    /// not registered in time).
    pub fn proof(&self, m: u64) -> Result<Vec<Hash>, Error> {
        let size = self.size();
        consistency_ranges(m, size)
            .into_iter()
            .map(|(a, b)| {
                match perfect_node(a, b) {
                    Some(node) => self.kept.get(&node).copied(),
                    None => self.fold_from(a).filter(|_| b == size),
                }
                .ok_or_else(|| Error::Proof(format!("subtree {a}..{b} was not kept")))
            })
            .collect()
    }

    /// The hash of `[a, size)` if `a` starts a frontier subtree.
    fn fold_from(&self, a: u64) -> Option<Hash> {
        let mut parts = Vec::new();
        for (start, end, h) in self.frontier.subtrees() {
            if start >= a {
                parts.push(*h);
            } else if end > a {
                return None;
            }
        }
        let mut it = parts.into_iter().rev();
        let last = it.next()?;
        Some(it.fold(last, |acc, left| node_hash(&left, &acc)))
    }

    /// The frontier subtree that is exactly `[a, b)`.
    fn frontier_node(&self, a: u64, b: u64) -> Option<Hash> {
        self.frontier
            .subtrees()
            .find(|&(start, end, _)| start == a && end == b)
            .map(|(_, _, h)| *h)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;
    use crate::merkle::{self, MemoryLog, leaf_hash};

    fn leaf(i: u64) -> Hash {
        leaf_hash(&i.to_be_bytes())
    }

    fn log_of(n: u64) -> MemoryLog {
        let mut log = MemoryLog::new();
        for i in 0..n {
            log.append(leaf(i));
        }
        log
    }

    #[test]
    fn streamed_consistency_proofs_match_the_reference() {
        for n in 1..=40u64 {
            let log = log_of(n);
            for m in 1..=n {
                // Registered at every size the stream may be at when the checkpoint of
                // size m is first seen (a segment starting at p < m, or at m itself).
                for p in 0..m {
                    let mut s = ConsistencyStream::new();
                    for i in 0..p {
                        s.push(leaf(i));
                    }
                    s.register(m, n).unwrap();
                    for i in p..n {
                        s.push(leaf(i));
                    }
                    let proof = s.proof(m).unwrap();
                    assert_eq!(
                        proof,
                        log.consistency_proof(m, n).unwrap(),
                        "m={m} n={n} p={p}"
                    );
                    merkle::verify_consistency(m, n, &log.root_at(m).unwrap(), &s.root(), &proof)
                        .unwrap();
                }
            }
            let mut s = ConsistencyStream::new();
            for i in 0..n {
                s.push(leaf(i));
            }
            assert_eq!(s.root(), log.root());
        }
    }

    #[test]
    fn ranges_are_those_of_rfc_6962() {
        // RFC 6962 §2.1.3's example tree of 7 leaves.
        assert_eq!(consistency_ranges(3, 7), [(2, 3), (3, 4), (0, 2), (4, 7)]);
        assert_eq!(consistency_ranges(4, 7), [(4, 7)]);
        assert_eq!(consistency_ranges(6, 7), [(4, 6), (6, 7), (0, 4)]);
        assert!(consistency_ranges(0, 7).is_empty());
        assert!(consistency_ranges(7, 7).is_empty());
        assert!(consistency_ranges(8, 7).is_empty());
        assert_eq!(perfect_node(4, 6), Some((1, 2)));
        assert_eq!(perfect_node(4, 7), None);
        assert_eq!(perfect_node(2, 6), None, "not aligned");
    }

    #[test]
    fn misuse_is_an_error_not_a_panic() {
        let mut s = ConsistencyStream::new();
        for i in 0..5 {
            s.push(leaf(i));
        }
        assert!(
            matches!(s.register(3, 8), Err(Error::Proof(_))),
            "passed size 3"
        );
        // Never registered: the hashes left of the current size are gone.
        for i in 5..8 {
            s.push(leaf(i));
        }
        assert!(matches!(s.proof(5), Err(Error::Proof(_))));
        assert_eq!(
            s.proof(8).unwrap(),
            Vec::<Hash>::new(),
            "same size: empty proof"
        );
    }

    proptest! {
        /// Several proofs, each registered at some size up to its own (as `prove` does,
        /// segment by segment, in index order), all verify with core's RFC 9162 verifier
        /// from the root at `m` to the root at `n`, and equal the producing half's proofs.
        #[test]
        fn streamed_proofs_verify(
            n in 1u64..1500,
            picks in prop::collection::vec((any::<u64>(), any::<u64>()), 1..8),
        ) {
            let log = log_of(n);
            // (registered at p, proof from m), p ≤ m ≤ n, in the order the stream passes p.
            let mut wanted: Vec<(u64, u64)> = picks
                .iter()
                .map(|&(x, y)| {
                    let m = 1 + x % n;
                    (y % (m + 1), m)
                })
                .collect();
            wanted.sort_unstable();
            let mut s = ConsistencyStream::new();
            let mut next = wanted.iter().peekable();
            for i in 0..n {
                while let Some(&(_, m)) = next.next_if(|(p, _)| *p == i) {
                    s.register(m, n).unwrap();
                }
                s.push(leaf(i));
            }
            for &(_, m) in next {
                s.register(m, n).unwrap(); // p == m == n
            }
            prop_assert_eq!(s.root(), log.root());
            for &(_, m) in &wanted {
                let proof = s.proof(m).unwrap();
                prop_assert!(merkle::verify_consistency(
                    m, n, &log.root_at(m).unwrap(), &s.root(), &proof
                ).is_ok(), "m={} n={}", m, n);
                prop_assert_eq!(proof, log.consistency_proof(m, n).unwrap());
            }
        }
    }
}
