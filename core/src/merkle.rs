//! RFC 6962 / RFC 9162 Merkle tree hashing for the Sealtrail log: leaf and node hashes,
//! tree roots, inclusion and consistency proofs, and their verification.
//!
//! Two halves, on purpose written differently:
//!
//! - **Producing** (signer, tools): the log is kept as the Go `sumdb/tlog` "stored hashes"
//!   array, in which the hash of every complete subtree `(level, n)` lives at
//!   [`stored_hash_index`]`(level, n)`, append-only. Roots and proofs for any size are read
//!   from it through a [`HashReader`] in `O(log n)` reads, so a restarted signer needs no
//!   rebuild. The index arithmetic and the proof construction are delegated to the
//!   `tlog_tiles` crate (a port of the Go code), which the tests check against the RFC 6962
//!   vectors of `transparency-dev/merkle`, a naive RFC 6962 implementation and exhaustive
//!   checks.
//! - **Verifying** (auditors, the ingester): [`verify_inclusion`] and [`verify_consistency`]
//!   are self-contained transcriptions of RFC 9162 §2.1.3.2 and §2.1.4.2 that share no code
//!   with the producing half (only SHA-256), check the exact proof length first and refuse
//!   proofs longer than [`MAX_PROOF_HASHES`] before doing any work. [`Frontier`] gives a
//!   streaming verifier the root at every size with `O(log n)` memory.
//!
//! Note that, as in RFC 6962 itself, a tree root does not commit to the tree size: callers
//! must take the size and the root from the same signed checkpoint.

use std::cell::RefCell;

use sha2::{Digest, Sha256};

use crate::Error;

/// Length in bytes of every hash in the tree (SHA-256).
pub const HASH_LEN: usize = 32;

/// A leaf, node or root hash.
pub type Hash = [u8; HASH_LEN];

/// Longest proof accepted by the verifiers. Proofs for trees of fewer than 2^64 leaves
/// never have more hashes than this; longer input is refused before any hashing.
pub const MAX_PROOF_HASHES: usize = 64;

/// Largest tree size the producing functions accept (root, proofs, appends), so that
/// stored-hash indexes (about twice the size) cannot overflow `u64`.
pub const MAX_TREE_SIZE: u64 = 1 << 62;

/// RFC 6962 leaf hash: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// RFC 6962 interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the empty tree: SHA-256("").
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Reads stored hashes (Go tlog layout) by stored-hash index. Implemented by the signer's
/// file store and by [`MemoryLog`].
pub trait HashReader {
    /// Returns the hashes at `indexes`, in the same order and exactly as many. The functions
    /// of this module ask for increasing indexes.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Error>;
}

/// Position in the stored-hash array of the hash of the complete subtree with `2^level`
/// leaves starting at leaf `n << level`.
pub fn stored_hash_index(level: u8, n: u64) -> u64 {
    tlog_tiles::stored_hash_index(level, n)
}

/// Number of stored hashes for a tree of n leaves (`2n - popcount(n)`).
///
/// Meaningful for `n <= MAX_TREE_SIZE`.
pub fn stored_hash_count(n: u64) -> u64 {
    tlog_tiles::stored_hash_count(n)
}

/// The stored hashes to append (in order) when leaf `index` (== current size) with hash
/// `leaf` is added: the leaf hash, then one hash per subtree the leaf completes.
pub fn stored_hashes_for_leaf<R: HashReader + ?Sized>(
    index: u64,
    leaf: &Hash,
    r: &R,
) -> Result<Vec<Hash>, Error> {
    if index >= MAX_TREE_SIZE {
        return Err(Error::Limit(format!(
            "tree size {} exceeds the maximum {MAX_TREE_SIZE}",
            u128::from(index) + 1
        )));
    }
    let a = Adapter::new(r);
    let res = tlog_tiles::stored_hashes_for_record_hash(index, tlog_tiles::Hash(*leaf), &a);
    a.finish(res).map(unwrap_hashes)
}

/// Root of the tree made of the first `size` leaves (one read of at most `1 + log2 size`
/// hashes).
pub fn tree_root<R: HashReader + ?Sized>(size: u64, r: &R) -> Result<Hash, Error> {
    check_size(size)?;
    let a = Adapter::new(r);
    let res = tlog_tiles::tree_hash(size, &a);
    a.finish(res).map(|h| h.0)
}

/// RFC 6962 audit path for leaf `index` in the tree of the first `size` leaves.
///
/// The reader must hold at least `size` leaves; this is not checked separately (a read of
/// a missing hash fails, but a proof for the last leaf reads only hashes left of it).
pub fn inclusion_proof<R: HashReader + ?Sized>(
    index: u64,
    size: u64,
    r: &R,
) -> Result<Vec<Hash>, Error> {
    if index >= size {
        return Err(Error::Proof(format!(
            "cannot prove leaf {index} in a tree of size {size}"
        )));
    }
    check_size(size)?;
    let a = Adapter::new(r);
    let res = tlog_tiles::prove_record(size, index, &a);
    a.finish(res).map(unwrap_hashes)
}

/// RFC 6962 consistency proof from the tree of `old_size` leaves to the tree of
/// `new_size` leaves. Empty when `old_size` is 0 or equal to `new_size`.
///
/// The reader must hold at least `new_size` leaves (see [`inclusion_proof`]).
pub fn consistency_proof<R: HashReader + ?Sized>(
    old_size: u64,
    new_size: u64,
    r: &R,
) -> Result<Vec<Hash>, Error> {
    if old_size > new_size {
        return Err(Error::Proof(format!(
            "cannot prove consistency from size {old_size} to smaller size {new_size}"
        )));
    }
    check_size(new_size)?;
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    let a = Adapter::new(r);
    let res = tlog_tiles::prove_tree(new_size, old_size, &a);
    a.finish(res).map(unwrap_hashes)
}

fn check_size(size: u64) -> Result<(), Error> {
    if size > MAX_TREE_SIZE {
        return Err(Error::Limit(format!(
            "tree size {size} exceeds the maximum {MAX_TREE_SIZE}"
        )));
    }
    Ok(())
}

fn unwrap_hashes(v: Vec<tlog_tiles::Hash>) -> Vec<Hash> {
    v.into_iter().map(|h| h.0).collect()
}

/// Presents one of our readers to `tlog_tiles`, keeping the reader's own error (tlog's
/// error type cannot carry it) and refusing short or long answers instead of letting
/// `tlog_tiles` panic on them.
struct Adapter<'a, R: HashReader + ?Sized> {
    inner: &'a R,
    err: RefCell<Option<Error>>,
}

impl<'a, R: HashReader + ?Sized> Adapter<'a, R> {
    fn new(inner: &'a R) -> Self {
        Self {
            inner,
            err: RefCell::new(None),
        }
    }

    fn finish<T>(&self, res: Result<T, tlog_tiles::Error>) -> Result<T, Error> {
        res.map_err(|e| {
            self.err
                .borrow_mut()
                .take()
                .unwrap_or_else(|| Error::Proof(e.to_string()))
        })
    }
}

impl<R: HashReader + ?Sized> tlog_tiles::HashReader for Adapter<'_, R> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        if indexes.is_empty() {
            return Ok(Vec::new());
        }
        let res = match self.inner.read_hashes(indexes) {
            Ok(v) if v.len() == indexes.len() => {
                return Ok(v.into_iter().map(tlog_tiles::Hash).collect());
            }
            Ok(v) => Error::Proof(format!(
                "hash reader returned {} hashes for {} indexes",
                v.len(),
                indexes.len()
            )),
            Err(e) => e,
        };
        *self.err.borrow_mut() = Some(res);
        Err(tlog_tiles::Error::IndexesNotInTree)
    }
}

// ---------------------------------------------------------------------------------------
// Verification: RFC 9162, independent of the producing code above.
// ---------------------------------------------------------------------------------------

fn fail(reason: String) -> Error {
    Error::Proof(reason)
}

fn check_proof_len_limit(len: usize) -> Result<(), Error> {
    if len > MAX_PROOF_HASHES {
        return Err(Error::Limit(format!(
            "proof has {len} hashes, more than the maximum {MAX_PROOF_HASHES}"
        )));
    }
    Ok(())
}

/// Number of bits needed to write `x` (0 for 0).
fn bit_len(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// Exact length of the inclusion proof for `index < size`: the levels below the point
/// where the path to `index` leaves the right edge of the tree ("inner"), plus one
/// left sibling per set bit of `index` above it ("border").
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let inner = bit_len(index ^ (size - 1));
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Exact length of the consistency proof for `0 < old < new`.
fn consistency_proof_len(old: u64, new: u64) -> usize {
    let shift = old.trailing_zeros();
    let inner = bit_len((old - 1) ^ (new - 1));
    let border = (old - 1).checked_shr(inner).unwrap_or(0).count_ones();
    // inner > shift whenever old < new.
    let seed = u32::from(!old.is_power_of_two());
    (inner.saturating_sub(shift) + border + seed) as usize
}

/// Root implied by an inclusion proof (RFC 9162 §2.1.3.2 steps 1-5, without the final
/// comparison). Checks the proof length first.
pub fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, Error> {
    match walk_inclusion(index, size, leaf, proof, |_, _| false)? {
        Walk::Root(r) => Ok(r),
        Walk::Stopped => Err(fail("inclusion walk stopped early".into())),
    }
}

/// How [`walk_inclusion`] ended.
enum Walk {
    /// The proof was consumed: the root it implies.
    Root(Hash),
    /// `stop` asked to stop after some step.
    Stopped,
}

/// RFC 9162 §2.1.3.2 steps 1-5 (first half). After step `t`, `stop(t, (f_n, s_n, r))` sees
/// the loop's state and may end the walk.
fn walk_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    mut stop: impl FnMut(usize, (u64, u64, Hash)) -> bool,
) -> Result<Walk, Error> {
    check_proof_len_limit(proof.len())?;
    if size == 0 {
        return Err(fail("the empty tree contains no leaves".into()));
    }
    if index >= size {
        return Err(fail(format!(
            "leaf index {index} is not below tree size {size}"
        )));
    }
    let want = inclusion_proof_len(index, size);
    if proof.len() != want {
        return Err(fail(format!(
            "inclusion proof for leaf {index} in size {size} has {} hashes, expected {want}",
            proof.len()
        )));
    }
    // Step 2-3.
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf;
    // Step 4.
    for (t, p) in proof.iter().enumerate() {
        if s_n == 0 {
            return Err(fail("inclusion proof is too long".into()));
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
        if stop(t, (f_n, s_n, r)) {
            return Ok(Walk::Stopped);
        }
    }
    // Step 5 (first half).
    if s_n != 0 {
        return Err(fail("inclusion proof is too short".into()));
    }
    Ok(Walk::Root(r))
}

/// Verifies that `leaf` is the leaf hash at `index` in the tree of `size` leaves whose root
/// is `root` (RFC 9162 §2.1.3.2).
///
/// Errors: [`Error::Limit`] for a proof of more than [`MAX_PROOF_HASHES`] hashes,
/// [`Error::Proof`] with the reason for anything else that does not verify.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), Error> {
    let computed = root_from_inclusion_proof(index, size, leaf, proof)?;
    if computed != *root {
        return Err(fail(format!(
            "inclusion proof for leaf {index} does not lead to the root of size {size}"
        )));
    }
    Ok(())
}

/// Verifies many inclusion proofs into one tree, as [`verify_inclusion`] does, but reuses
/// the upper part of the last path it verified: neighbouring leaves share all their
/// ancestors but the lowest few, so a run of consecutive leaves costs about two node hashes
/// each instead of `log2(size)`.
///
/// Why it is exact: the RFC 9162 loop's state after step `t` is `(f_n, s_n, r)`, and the
/// steps after it depend only on that state and on the proof hashes after `t`. When a new
/// path reaches, after step `t`, the very state the last verified path had after its step
/// `t`, and its remaining proof hashes are byte-identical, the rest of its computation is the
/// verified one: it ends at the root. Any difference falls back to the full computation.
#[derive(Debug, Clone)]
pub struct InclusionVerifier {
    size: u64,
    root: Hash,
    /// `(f_n, s_n, r)` after each step of the last verified path.
    steps: Vec<(u64, u64, Hash)>,
    /// Its proof.
    proof: Vec<Hash>,
}

impl InclusionVerifier {
    /// A verifier for the tree of `size` leaves with root `root`.
    pub fn new(size: u64, root: Hash) -> Self {
        Self {
            size,
            root,
            steps: Vec::new(),
            proof: Vec::new(),
        }
    }

    /// [`verify_inclusion`]`(index, self.size, leaf, proof, self.root)`, with the same errors.
    pub fn verify(&mut self, index: u64, leaf: &Hash, proof: &[Hash]) -> Result<(), Error> {
        let mut steps = Vec::with_capacity(proof.len());
        let walk = walk_inclusion(index, self.size, leaf, proof, |t, state| {
            if self.steps.get(t) == Some(&state) && self.proof[t + 1..] == proof[t + 1..] {
                return true;
            }
            steps.push(state);
            false
        })?;
        match walk {
            Walk::Stopped => Ok(()),
            Walk::Root(r) if r == self.root => {
                self.steps = steps;
                self.proof = proof.to_vec();
                Ok(())
            }
            Walk::Root(_) => Err(fail(format!(
                "inclusion proof for leaf {index} does not lead to the root of size {}",
                self.size
            ))),
        }
    }
}

/// Verifies that the tree of `old_size` leaves with root `old_root` is a prefix of the tree
/// of `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2).
///
/// Equal sizes need an empty proof and equal roots; `old_size == 0` needs an empty proof
/// and `old_root` equal to [`empty_root`].
///
/// Errors: [`Error::Limit`] for a proof of more than [`MAX_PROOF_HASHES`] hashes,
/// [`Error::Proof`] with the reason for anything else that does not verify.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), Error> {
    check_proof_len_limit(proof.len())?;
    if old_size > new_size {
        return Err(fail(format!(
            "old size {old_size} is larger than new size {new_size}"
        )));
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(fail(
                "consistency proof between equal sizes must be empty".into(),
            ));
        }
        if old_root != new_root {
            return Err(fail(format!(
                "different roots for the same size {old_size}"
            )));
        }
        if old_size == 0 && *old_root != empty_root() {
            return Err(fail("root of the empty tree is not SHA-256(\"\")".into()));
        }
        return Ok(());
    }
    if old_size == 0 {
        if !proof.is_empty() {
            return Err(fail(
                "consistency proof from the empty tree must be empty".into(),
            ));
        }
        if *old_root != empty_root() {
            return Err(fail("root of the empty tree is not SHA-256(\"\")".into()));
        }
        return Ok(());
    }
    // Now 0 < old_size < new_size. Step 1 and the exact length.
    let want = consistency_proof_len(old_size, new_size);
    if proof.len() != want {
        return Err(fail(format!(
            "consistency proof from size {old_size} to {new_size} has {} hashes, expected {want}",
            proof.len()
        )));
    }
    // Step 2: a power-of-two old tree is itself a node of the new tree; its root is the
    // implicit first element of the path.
    let mut path = proof.iter();
    let first = if old_size.is_power_of_two() {
        *old_root
    } else {
        match path.next() {
            Some(h) => *h,
            None => return Err(fail("empty consistency proof".into())),
        }
    };
    // Steps 3-4.
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 5.
    let mut f_r = first;
    let mut s_r = first;
    // Step 6.
    for c in path {
        if s_n == 0 {
            return Err(fail("consistency proof is too long".into()));
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 7.
    if s_n != 0 {
        return Err(fail("consistency proof is too short".into()));
    }
    if f_r != *old_root {
        return Err(fail(format!(
            "consistency proof does not lead to the root of old size {old_size}"
        )));
    }
    if s_r != *new_root {
        return Err(fail(format!(
            "consistency proof does not lead to the root of new size {new_size}"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// In-memory log and frontier.
// ---------------------------------------------------------------------------------------

/// In-memory stored-hash log (tests, verifier, small tools).
#[derive(Debug, Clone, Default)]
pub struct MemoryLog {
    size: u64,
    hashes: Vec<Hash>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; returns its index.
    ///
    /// # Panics
    ///
    /// Only past [`MAX_TREE_SIZE`] leaves, which memory cannot hold.
    pub fn append(&mut self, leaf: Hash) -> u64 {
        let index = self.size;
        let new = stored_hashes_for_leaf(index, &leaf, self)
            .expect("a memory log holds every hash an append reads");
        self.hashes.extend(new);
        self.size += 1;
        index
    }

    /// Root of the whole log.
    pub fn root(&self) -> Hash {
        tree_root(self.size, self).expect("a memory log holds every hash of its root")
    }

    /// Root of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, Error> {
        self.check_within(size)?;
        tree_root(size, self)
    }

    /// Inclusion proof of leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, Error> {
        self.check_within(size)?;
        inclusion_proof(index, size, self)
    }

    /// Consistency proof from size `old` to size `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, Error> {
        self.check_within(new)?;
        consistency_proof(old, new, self)
    }

    fn check_within(&self, size: u64) -> Result<(), Error> {
        if size > self.size {
            return Err(Error::Proof(format!(
                "tree size {size} is beyond the log size {}",
                self.size
            )));
        }
        Ok(())
    }
}

impl HashReader for MemoryLog {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Error> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.hashes.get(i))
                    .copied()
                    .ok_or_else(|| {
                        Error::Proof(format!(
                            "no stored hash {i} in a log of {} stored hashes",
                            self.hashes.len()
                        ))
                    })
            })
            .collect()
    }
}

/// Compact range of a tree from leaf 0 (the "frontier"): the roots of the perfect subtrees
/// that make up the first `size` leaves, largest (leftmost) first, one per set bit of
/// `size`. `O(log n)` hashes; push a leaf, get the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves pushed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.push_with(leaf, |_, _, _| {});
    }

    /// Appends a leaf hash and calls `completed(level, n, hash)` for each perfect subtree
    /// that now exists and did not before, smallest first: the leaf itself (level 0), then
    /// each subtree it completes, the one of `2^level` leaves starting at leaf
    /// `n << level`. Lets a caller keep the few inner nodes it needs (for example for
    /// consistency proofs) without storing the tree.
    pub fn push_with(&mut self, leaf: Hash, mut completed: impl FnMut(u32, u64, &Hash)) {
        let mut h = leaf;
        let mut s = self.size;
        let mut level = 0u32;
        completed(level, s, &h);
        // Each trailing 1 bit of the old size is a perfect subtree the new leaf completes.
        while s & 1 == 1 {
            let Some(left) = self.hashes.pop() else {
                // Unreachable: hashes.len() == size.count_ones() is an invariant.
                break;
            };
            h = node_hash(&left, &h);
            s >>= 1;
            level += 1;
            completed(level, s, &h);
        }
        self.hashes.push(h);
        self.size += 1;
    }

    /// The perfect subtrees of the frontier as `(start, end, hash)`: leaves `start..end`,
    /// largest (leftmost) first, together exactly `0..size`.
    pub fn subtrees(&self) -> impl Iterator<Item = (u64, u64, &Hash)> + '_ {
        // One subtree per set bit of size, from the top bit down.
        let levels = (0..u64::BITS).rev().filter(|l| self.size >> l & 1 == 1);
        let mut start = 0u64;
        levels.zip(&self.hashes).map(move |(level, h)| {
            let a = start;
            start += 1u64 << level;
            (a, start, h)
        })
    }

    /// Root of the tree of the leaves pushed so far ([`empty_root`] when none).
    pub fn root(&self) -> Hash {
        let mut it = self.hashes.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// The subtree roots, largest first (as accepted by [`Frontier::from_parts`]).
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Rebuilds a frontier from `size` and the hashes produced by [`Frontier::hashes`],
    /// checking that there is one hash per set bit of `size`.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Self, Error> {
        let want = size.count_ones() as usize;
        if hashes.len() != want {
            return Err(Error::Proof(format!(
                "a frontier of size {size} has {want} hashes, got {}",
                hashes.len()
            )));
        }
        Ok(Self { size, hashes })
    }

    /// Reads the frontier of the first `size` leaves from a stored-hash log (one read of
    /// `popcount(size)` hashes), e.g. to resume streaming after a restart.
    pub fn from_reader<R: HashReader + ?Sized>(size: u64, r: &R) -> Result<Self, Error> {
        check_size(size)?;
        let mut indexes = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        // Largest perfect subtrees first: one per set bit of size, from the top bit down.
        for level in (0..u64::BITS).rev() {
            if size >> level & 1 == 1 {
                indexes.push(stored_hash_index(level as u8, start >> level));
                start += 1 << level;
            }
        }
        let hashes = r.read_hashes(&indexes)?;
        if hashes.len() != indexes.len() {
            return Err(Error::Proof(format!(
                "hash reader returned {} hashes for {} indexes",
                hashes.len(),
                indexes.len()
            )));
        }
        Self::from_parts(size, hashes)
    }
}
