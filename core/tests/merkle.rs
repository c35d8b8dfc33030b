//! Tests of `sealtrail_core::merkle`: the RFC 6962 vectors of transparency-dev/merkle
//! (`core/testdata/merkle/`), exhaustive checks on every tree up to 300 leaves against a
//! naive RFC 6962 implementation written here, huge trees through a virtual log, and a
//! cross-check of our RFC 9162 verifiers against `tlog_tiles`' `check_record`/`check_tree`.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns too

use std::path::PathBuf;

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use sealtrail_core::Error;
use sealtrail_core::merkle::{
    self, Frontier, HASH_LEN, Hash, HashReader, MAX_PROOF_HASHES, MAX_TREE_SIZE, MemoryLog,
    empty_root, leaf_hash, node_hash, verify_consistency, verify_inclusion,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/merkle")
}

fn hex32(s: &str) -> Hash {
    let v = hex::decode(s).unwrap();
    v.try_into().unwrap()
}

fn hex_list(v: &Value) -> Vec<Hash> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| hex32(h.as_str().unwrap()))
        .collect()
}

fn vectors() -> Value {
    let text = std::fs::read_to_string(testdata().join("rfc6962_vectors.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// splitmix64: small deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn hash(&mut self) -> Hash {
        let mut h = [0u8; HASH_LEN];
        for c in h.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        h
    }
}

fn flip_bit(proof: &[Hash], j: usize, bit: u64) -> Vec<Hash> {
    let mut p = proof.to_vec();
    p[j][(bit / 8) as usize] ^= 1 << (bit % 8);
    p
}

fn is_proof_err<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    match r {
        Err(Error::Proof(_)) => true,
        Err(e) => panic!("expected Error::Proof, got {e:?}"),
        Ok(v) => panic!("expected Error::Proof, got Ok({v:?})"),
    }
}

fn tl(h: &Hash) -> tlog_tiles::Hash {
    tlog_tiles::Hash(*h)
}

fn tl_vec(p: &[Hash]) -> Vec<tlog_tiles::Hash> {
    p.iter().map(tl).collect()
}

/// tlog_tiles' verdict on an inclusion proof (it refuses `index >= size` itself).
fn tlog_inclusion_ok(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    tlog_tiles::check_record(&tl_vec(proof), size, tl(root), index, tl(leaf)).is_ok()
}

/// tlog_tiles' verdict on a consistency proof. tlog refuses size 0 outright; the empty tree
/// is handled here as RFC 9162 does (empty proof), with our stricter root check.
fn tlog_consistency_ok(old: u64, new: u64, old_root: &Hash, new_root: &Hash, p: &[Hash]) -> bool {
    if old == 0 {
        return new >= old && p.is_empty() && *old_root == empty_root();
    }
    tlog_tiles::check_tree(&tl_vec(p), new, tl(new_root), old, tl(old_root)).is_ok()
}

// ---------------------------------------------------------------------------------------
// Naive RFC 6962 (§2.1, §2.1.1, §2.1.2), independent of the crate: own SHA-256 calls,
// recursion on ranges exactly as the RFC writes it.
// ---------------------------------------------------------------------------------------

fn ref_leaf(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

fn ref_node(l: &Hash, r: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// Largest power of two strictly less than `n` (n >= 2).
fn split_point(n: u64) -> u64 {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// A tree whose perfect subtrees can be asked for by (level, index).
trait Tree {
    /// Hash of the perfect subtree of 2^level leaves starting at leaf `k << level`.
    fn perfect(&self, level: u32, k: u64) -> Hash;

    /// MTH(D[lo:hi]).
    fn mth(&self, lo: u64, hi: u64) -> Hash {
        let n = hi - lo;
        if n == 0 {
            return Sha256::digest([]).into();
        }
        if n.is_power_of_two() && lo & (n - 1) == 0 {
            return self.perfect(n.trailing_zeros(), lo / n);
        }
        let k = split_point(n);
        ref_node(&self.mth(lo, lo + k), &self.mth(lo + k, hi))
    }

    /// PATH(m, D[lo:hi]) of RFC 6962 §2.1.1 (m relative to lo).
    fn path(&self, m: u64, lo: u64, hi: u64) -> Vec<Hash> {
        let n = hi - lo;
        if n == 1 {
            return vec![];
        }
        let k = split_point(n);
        if m < k {
            let mut p = self.path(m, lo, lo + k);
            p.push(self.mth(lo + k, hi));
            p
        } else {
            let mut p = self.path(m - k, lo + k, hi);
            p.push(self.mth(lo, lo + k));
            p
        }
    }

    /// SUBPROOF(m, D[lo:hi], b) of RFC 6962 §2.1.2.
    fn subproof(&self, m: u64, lo: u64, hi: u64, b: bool) -> Vec<Hash> {
        let n = hi - lo;
        if m == n {
            return if b { vec![] } else { vec![self.mth(lo, hi)] };
        }
        let k = split_point(n);
        if m <= k {
            let mut p = self.subproof(m, lo, lo + k, b);
            p.push(self.mth(lo + k, hi));
            p
        } else {
            let mut p = self.subproof(m - k, lo + k, hi, false);
            p.push(self.mth(lo, lo + k));
            p
        }
    }

    /// PROOF(m, D[n]).
    fn consistency(&self, m: u64, n: u64) -> Vec<Hash> {
        if m == 0 || m == n {
            return vec![];
        }
        self.subproof(m, 0, n, true)
    }
}

/// Concrete leaves, with every perfect subtree precomputed level by level.
struct LeafTree {
    levels: Vec<Vec<Hash>>,
}

impl LeafTree {
    fn new(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while levels.last().unwrap().len() > 1 {
            let up = levels
                .last()
                .unwrap()
                .chunks_exact(2)
                .map(|c| ref_node(&c[0], &c[1]))
                .collect();
            levels.push(up);
        }
        Self { levels }
    }
    fn leaf(&self, i: u64) -> Hash {
        self.levels[0][i as usize]
    }
}

impl Tree for LeafTree {
    fn perfect(&self, level: u32, k: u64) -> Hash {
        self.levels[level as usize][k as usize]
    }
}

/// A virtual log of up to 2^63 leaves: leaf j is `tm[popcount(j) % 2]` (Thue-Morse), so
/// every perfect subtree is one of two hashes per level, and siblings always differ.
/// Serves stored hashes of any index, so the producing functions work on huge sizes.
struct ThueMorse {
    nodes: Vec<[Hash; 2]>,
}

impl ThueMorse {
    fn new() -> Self {
        let mut nodes = vec![[ref_leaf(b"thue"), ref_leaf(b"morse")]];
        for l in 1..64 {
            let [a, b] = nodes[l - 1];
            nodes.push([ref_node(&a, &b), ref_node(&b, &a)]);
        }
        Self { nodes }
    }
}

impl Tree for ThueMorse {
    fn perfect(&self, level: u32, k: u64) -> Hash {
        self.nodes[level as usize][(k.count_ones() % 2) as usize]
    }
}

impl HashReader for ThueMorse {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Error> {
        Ok(indexes
            .iter()
            .map(|&i| {
                let (level, k) = tlog_tiles::split_stored_hash_index(i);
                self.perfect(u32::from(level), k)
            })
            .collect())
    }
}

fn log_of(n: u64, seed: &str) -> (MemoryLog, LeafTree) {
    let mut log = MemoryLog::new();
    let mut leaves = Vec::new();
    for i in 0..n {
        let h = leaf_hash(format!("{seed} {i}").as_bytes());
        assert_eq!(log.append(h), i);
        leaves.push(h);
    }
    (log, LeafTree::new(leaves))
}

// ---------------------------------------------------------------------------------------
// 1. RFC 6962 vectors
// ---------------------------------------------------------------------------------------

struct VectorTree {
    log: MemoryLog,
    leaves: Vec<Hash>,
    roots: Vec<Hash>, // roots[s] for s in 0..=8
}

fn vector_tree() -> VectorTree {
    let v = vectors();
    let mut log = MemoryLog::new();
    let mut leaves = Vec::new();
    for d in v["leaves"].as_array().unwrap() {
        let h = leaf_hash(&hex::decode(d.as_str().unwrap()).unwrap());
        log.append(h);
        leaves.push(h);
    }
    let mut roots = vec![hex32(v["empty_root"].as_str().unwrap())];
    roots.extend(hex_list(&v["roots"]));
    assert_eq!(leaves.len(), 8);
    assert_eq!(roots.len(), 9);
    VectorTree { log, leaves, roots }
}

#[test]
fn vectors_hashes() {
    let v = vectors();
    assert_eq!(empty_root(), hex32(v["empty_root"].as_str().unwrap()));
    let cases = v["leaf_hash_vectors"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for c in cases {
        let data = hex::decode(c["data"].as_str().unwrap()).unwrap();
        assert_eq!(leaf_hash(&data), hex32(c["hash"].as_str().unwrap()));
        assert_eq!(leaf_hash(&data), tlog_tiles::record_hash(&data).0);
    }
    // The empty leaf is not the empty tree.
    assert_ne!(leaf_hash(b""), empty_root());
    let mut rng = Rng(1);
    for _ in 0..100 {
        let (a, b) = (rng.hash(), rng.hash());
        assert_eq!(node_hash(&a, &b), ref_node(&a, &b));
        assert_eq!(node_hash(&a, &b), tlog_tiles::node_hash(tl(&a), tl(&b)).0);
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    }
    assert_eq!(tlog_tiles::EMPTY_HASH.0, empty_root());
}

#[test]
fn vectors_roots() {
    let t = vector_tree();
    let naive = LeafTree::new(t.leaves.clone());
    let mut f = Frontier::new();
    for s in 0..=8u64 {
        let want = t.roots[s as usize];
        assert_eq!(t.log.root_at(s).unwrap(), want, "MemoryLog root_at({s})");
        assert_eq!(
            merkle::tree_root(s, &t.log).unwrap(),
            want,
            "tree_root({s})"
        );
        assert_eq!(f.root(), want, "Frontier root at {s}");
        assert_eq!(naive.mth(0, s), want, "naive MTH at {s}");
        if s < 8 {
            f.push(t.leaves[s as usize]);
        }
    }
    assert_eq!(t.log.root(), t.roots[8]);
    assert!(t.log.root_at(9).is_err());
}

/// Upstream's `corruptInclusionProof`, with its empty "garbage" hash as 32 zero bytes.
fn inclusion_probes(
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
    leaf: &Hash,
) -> Vec<(String, u64, u64, Hash, Hash, Vec<Hash>)> {
    let some = hex32("abacaba000000000000000000000000000000000000000000060061e00123456");
    let garbage = [0u8; HASH_LEN];
    let p = proof.to_vec();
    let with = |mut v: Vec<Hash>, h: Hash, front: bool| {
        if front {
            v.insert(0, h);
        } else {
            v.push(h);
        }
        v
    };
    let mut r = vec![
        (
            "index - 1".into(),
            index.wrapping_sub(1),
            size,
            *root,
            *leaf,
            p.clone(),
        ),
        ("index + 1".into(), index + 1, size, *root, *leaf, p.clone()),
        ("index ^ 2".into(), index ^ 2, size, *root, *leaf, p.clone()),
        ("size * 2".into(), index, size * 2, *root, *leaf, p.clone()),
        ("size / 2".into(), index, size / 2, *root, *leaf, p.clone()),
        (
            "wrong leaf".into(),
            index,
            size,
            *root,
            leaf_hash(b"WrongLeaf"),
            p.clone(),
        ),
        (
            "empty root".into(),
            index,
            size,
            empty_root(),
            *leaf,
            p.clone(),
        ),
        ("random root".into(), index, size, some, *leaf, p.clone()),
        (
            "trailing garbage".into(),
            index,
            size,
            *root,
            *leaf,
            with(p.clone(), garbage, false),
        ),
        (
            "trailing root".into(),
            index,
            size,
            *root,
            *leaf,
            with(p.clone(), *root, false),
        ),
        (
            "preceding garbage".into(),
            index,
            size,
            *root,
            *leaf,
            with(p.clone(), garbage, true),
        ),
        (
            "preceding root".into(),
            index,
            size,
            *root,
            *leaf,
            with(p.clone(), *root, true),
        ),
    ];
    for i in 0..p.len() {
        let desc = format!("modified proof[{i}] bit 3");
        r.push((desc, index, size, *root, *leaf, flip_bit(&p, i, 3)));
    }
    if !p.is_empty() {
        let desc = "removed component".to_string();
        r.push((desc, index, size, *root, *leaf, p[..p.len() - 1].to_vec()));
    }
    if p.len() > 1 {
        let mut w = vec![p[0], some];
        w.extend_from_slice(&p[1..]);
        r.push(("inserted component".into(), index, size, *root, *leaf, w));
    }
    r
}

#[test]
fn vectors_inclusion() {
    let t = vector_tree();
    let naive = LeafTree::new(t.leaves.clone());
    let cases = vectors()["inclusion"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 5);
    let mut probes = 0;
    for c in &cases {
        let index = c["index"].as_u64().unwrap();
        let size = c["size"].as_u64().unwrap();
        let proof = hex_list(&c["proof"]);
        let leaf = t.leaves[index as usize];
        let root = t.roots[size as usize];
        verify_inclusion(index, size, &leaf, &proof, &root).unwrap();
        assert_eq!(
            merkle::root_from_inclusion_proof(index, size, &leaf, &proof).unwrap(),
            root
        );
        assert!(tlog_inclusion_ok(index, size, &leaf, &proof, &root));
        assert_eq!(
            t.log.inclusion_proof(index, size).unwrap(),
            proof,
            "{index}/{size}"
        );
        assert_eq!(naive.path(index, 0, size), proof);
        for (desc, i, s, r, l, p) in inclusion_probes(index, size, &proof, &root, &leaf) {
            assert!(
                verify_inclusion(i, s, &l, &p, &r).is_err(),
                "accepted {desc} for {index}/{size}"
            );
            assert!(!tlog_inclusion_ok(i, s, &l, &p, &r), "tlog accepted {desc}");
            probes += 1;
        }
    }
    assert_eq!(probes, 77);
}

/// Upstream's `corruptConsistencyProof`, with its empty "garbage" hash as 32 zero bytes
/// and "WrongRoot" as a leaf hash of those bytes.
fn consistency_probes(
    s1: u64,
    s2: u64,
    r1: &Hash,
    r2: &Hash,
    proof: &[Hash],
) -> Vec<(String, u64, u64, Hash, Hash, Vec<Hash>)> {
    let garbage = [0u8; HASH_LEN];
    let wrong = leaf_hash(b"WrongRoot");
    let p = proof.to_vec();
    let ext = |h: Hash| {
        let mut v = p.clone();
        v.push(h);
        v
    };
    let pre = |h: Hash| {
        let mut v = vec![h];
        v.extend_from_slice(&p);
        v
    };
    let mut r = vec![
        ("size1 - 1".into(), s1 - 1, s2, *r1, *r2, p.clone()),
        ("size1 + 1".into(), s1 + 1, s2, *r1, *r2, p.clone()),
        ("size1 ^ 2".into(), s1 ^ 2, s2, *r1, *r2, p.clone()),
        ("size2 * 2".into(), s1, s2 * 2, *r1, *r2, p.clone()),
        ("size2 / 2".into(), s1, s2 / 2, *r1, *r2, p.clone()),
        ("wrong root1".into(), s1, s2, wrong, *r2, p.clone()),
        ("wrong root2".into(), s1, s2, *r1, wrong, p.clone()),
        ("swapped roots".into(), s1, s2, *r2, *r1, p.clone()),
        ("empty proof".into(), s1, s2, *r1, *r2, vec![]),
        ("trailing garbage".into(), s1, s2, *r1, *r2, ext(garbage)),
        ("trailing root1".into(), s1, s2, *r1, *r2, ext(*r1)),
        ("trailing root2".into(), s1, s2, *r1, *r2, ext(*r2)),
        ("preceding garbage".into(), s1, s2, *r1, *r2, pre(garbage)),
        ("preceding root1".into(), s1, s2, *r1, *r2, pre(*r1)),
        ("preceding root2".into(), s1, s2, *r1, *r2, pre(*r2)),
        ("preceding proof[0]".into(), s1, s2, *r1, *r2, pre(p[0])),
        (
            "truncated proof".into(),
            s1,
            s2,
            *r1,
            *r2,
            p[..p.len() - 1].to_vec(),
        ),
    ];
    for i in 0..p.len() {
        let desc = format!("modified proof[{i}] bit 4");
        r.push((desc, s1, s2, *r1, *r2, flip_bit(&p, i, 4)));
    }
    r
}

#[test]
fn vectors_consistency() {
    let t = vector_tree();
    let naive = LeafTree::new(t.leaves.clone());
    let cases = vectors()["consistency"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 5);
    let mut probes = 0;
    for c in &cases {
        let s1 = c["size1"].as_u64().unwrap();
        let s2 = c["size2"].as_u64().unwrap();
        let proof = hex_list(&c["proof"]);
        let (r1, r2) = (t.roots[s1 as usize], t.roots[s2 as usize]);
        verify_consistency(s1, s2, &r1, &r2, &proof).unwrap();
        assert!(tlog_consistency_ok(s1, s2, &r1, &r2, &proof));
        assert_eq!(
            t.log.consistency_proof(s1, s2).unwrap(),
            proof,
            "{s1}->{s2}"
        );
        assert_eq!(naive.consistency(s1, s2), proof);
        // Like upstream, corrupt only non-trivial proofs.
        if proof.is_empty() {
            continue;
        }
        for (desc, a, b, ra, rb, p) in consistency_probes(s1, s2, &r1, &r2, &proof) {
            assert!(
                verify_consistency(a, b, &ra, &rb, &p).is_err(),
                "accepted {desc} for {s1}->{s2}"
            );
            assert!(
                !tlog_consistency_ok(a, b, &ra, &rb, &p),
                "tlog accepted {desc}"
            );
            probes += 1;
        }
    }
    assert_eq!(probes, 79);
}

#[test]
fn vectors_upstream_json_files() {
    let b64 = |v: &Value| -> Hash {
        BASE64_STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    let mut seen = (0, 0);
    for entry in std::fs::read_dir(testdata().join("upstream")).unwrap() {
        let path = entry.unwrap().path();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let want_err = v["wantErr"].as_bool().unwrap();
        let proof: Vec<Hash> = v["proof"].as_array().unwrap().iter().map(b64).collect();
        let (ours, theirs) = if v.get("leafIdx").is_some() {
            let (i, s) = (
                v["leafIdx"].as_u64().unwrap(),
                v["treeSize"].as_u64().unwrap(),
            );
            let (root, leaf) = (b64(&v["root"]), b64(&v["leafHash"]));
            (
                verify_inclusion(i, s, &leaf, &proof, &root).is_ok(),
                tlog_inclusion_ok(i, s, &leaf, &proof, &root),
            )
        } else {
            let (s1, s2) = (v["size1"].as_u64().unwrap(), v["size2"].as_u64().unwrap());
            let (r1, r2) = (b64(&v["root1"]), b64(&v["root2"]));
            (
                verify_consistency(s1, s2, &r1, &r2, &proof).is_ok(),
                tlog_consistency_ok(s1, s2, &r1, &r2, &proof),
            )
        };
        assert_eq!(ours, !want_err, "{}", path.display());
        assert_eq!(theirs, !want_err, "tlog on {}", path.display());
        if want_err {
            seen.1 += 1;
        } else {
            seen.0 += 1;
        }
    }
    assert_eq!(seen, (4, 6));
}

/// Upstream's `TestVerifyInclusion` / `TestVerifyConsistency` edge cases.
#[test]
fn verify_edge_cases() {
    let some = hex32("abacaba000000000000000000000000000000000000000000060061e00123456");
    let e = empty_root();
    for (i, s) in [(0, 0), (0, 1), (1, 0), (2, 1)] {
        assert!(verify_inclusion(i, s, &some, &[], &e).is_err(), "{i}/{s}");
    }
    // Single entry: root == leaf hash, empty proof.
    let h = leaf_hash(b"data");
    verify_inclusion(0, 1, &h, &[], &h).unwrap();
    assert!(verify_inclusion(0, 1, &h, &[], &e).is_err());
    assert!(verify_inclusion(0, 1, &e, &[], &h).is_err());
    assert!(verify_inclusion(0, 1, &h, &[h], &h).is_err());

    let (r1, r2) = (leaf_hash(b"don't care 1"), leaf_hash(b"don't care 2"));
    let ok = |a, b, x: &Hash, y: &Hash, p: &[Hash]| verify_consistency(a, b, x, y, p).is_ok();
    assert!(!ok(0, 0, &r1, &r2, &[]));
    assert!(!ok(1, 1, &r1, &r2, &[]));
    assert!(ok(1, 1, &r2, &r2, &[]));
    assert!(ok(0, 0, &e, &e, &[]));
    assert!(ok(0, 1, &e, &r2, &[]));
    assert!(ok(0, 5, &e, &r2, &[]));
    // Stricter than upstream, which accepts any root for size 0.
    assert!(!ok(0, 0, &r1, &r1, &[]));
    assert!(!ok(0, 1, &r1, &r2, &[]));
    // Time travel to the past.
    assert!(!ok(1, 0, &r1, &r2, &[]));
    assert!(!ok(2, 1, &r1, &r2, &[]));
    // Empty proof.
    assert!(!ok(1, 2, &r1, &r2, &[]));
    // Roots don't match.
    assert!(!ok(0, 0, &e, &r2, &[]));
    assert!(!ok(1, 1, &e, &r2, &[]));
    // Roots match but the proof is not empty.
    assert!(!ok(0, 0, &e, &e, &[e]));
    assert!(!ok(0, 1, &e, &e, &[e]));
    assert!(!ok(1, 1, &e, &e, &[e]));
}

#[test]
fn limits_and_argument_errors() {
    let (log, _) = log_of(10, "limits");
    let h = leaf_hash(b"x");
    let long = vec![h; MAX_PROOF_HASHES + 1];
    assert!(matches!(
        verify_inclusion(0, 10, &h, &long, &h),
        Err(Error::Limit(_))
    ));
    assert!(matches!(
        verify_consistency(3, 10, &h, &h, &long),
        Err(Error::Limit(_))
    ));
    // Limit checked before anything else (even for nonsense sizes).
    assert!(matches!(
        verify_consistency(10, 3, &h, &h, &long),
        Err(Error::Limit(_))
    ));
    assert!(matches!(
        merkle::tree_root(MAX_TREE_SIZE + 1, &log),
        Err(Error::Limit(_))
    ));
    assert!(matches!(
        merkle::inclusion_proof(0, u64::MAX, &log),
        Err(Error::Limit(_))
    ));
    assert!(matches!(
        merkle::consistency_proof(1, u64::MAX, &log),
        Err(Error::Limit(_))
    ));
    assert!(matches!(
        merkle::stored_hashes_for_leaf(u64::MAX, &h, &log),
        Err(Error::Limit(_))
    ));
    assert!(matches!(
        Frontier::from_reader(u64::MAX, &log),
        Err(Error::Limit(_))
    ));
    assert!(is_proof_err(log.inclusion_proof(10, 10)));
    assert!(is_proof_err(log.inclusion_proof(0, 0)));
    assert!(is_proof_err(log.inclusion_proof(0, 11)));
    assert!(is_proof_err(log.consistency_proof(5, 4)));
    assert!(is_proof_err(log.consistency_proof(5, 11)));
    assert!(is_proof_err(log.root_at(11)));
    assert_eq!(log.consistency_proof(0, 10).unwrap(), Vec::<Hash>::new());
    assert_eq!(log.consistency_proof(10, 10).unwrap(), Vec::<Hash>::new());
    // The free functions read past the end and get the reader's error.
    assert!(is_proof_err(merkle::tree_root(11, &log)));
    assert!(is_proof_err(merkle::inclusion_proof(0, 12, &log)));

    // Extreme sizes never panic in the verifiers, and random proofs of every length fail.
    let mut rng = Rng(7);
    for (i, s) in [(u64::MAX - 1, u64::MAX), (0, u64::MAX), (1 << 63, u64::MAX)] {
        for len in 0..=MAX_PROOF_HASHES {
            let p: Vec<Hash> = (0..len).map(|_| rng.hash()).collect();
            assert!(verify_inclusion(i, s, &h, &p, &h).is_err());
        }
    }
    for (a, b) in [
        (u64::MAX - 1, u64::MAX),
        (1, u64::MAX),
        (1 << 63, u64::MAX),
        (3, 1 << 63),
    ] {
        for len in 0..=MAX_PROOF_HASHES {
            let p: Vec<Hash> = (0..len).map(|_| rng.hash()).collect();
            assert!(verify_consistency(a, b, &h, &h, &p).is_err());
        }
    }
}

/// A reader that misbehaves must produce an error, never a panic inside tlog_tiles.
#[test]
fn bad_readers() {
    struct Short;
    impl HashReader for Short {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Error> {
            Ok(vec![[0; HASH_LEN]; indexes.len().saturating_sub(1)])
        }
    }
    struct Failing;
    impl HashReader for Failing {
        fn read_hashes(&self, _: &[u64]) -> Result<Vec<Hash>, Error> {
            Err(Error::Limit("disk on fire".into()))
        }
    }
    let h = leaf_hash(b"x");
    assert!(is_proof_err(merkle::tree_root(5, &Short)));
    assert!(is_proof_err(merkle::inclusion_proof(1, 5, &Short)));
    assert!(is_proof_err(merkle::consistency_proof(3, 5, &Short)));
    assert!(is_proof_err(merkle::stored_hashes_for_leaf(3, &h, &Short)));
    assert!(is_proof_err(Frontier::from_reader(5, &Short)));
    let fire = Error::Limit("disk on fire".into());
    assert_eq!(merkle::tree_root(5, &Failing).unwrap_err(), fire);
    assert_eq!(merkle::inclusion_proof(1, 5, &Failing).unwrap_err(), fire);
    assert_eq!(merkle::consistency_proof(3, 5, &Failing).unwrap_err(), fire);
    assert_eq!(
        merkle::stored_hashes_for_leaf(3, &h, &Failing).unwrap_err(),
        fire
    );
    assert_eq!(Frontier::from_reader(5, &Failing).unwrap_err(), fire);
    // Reading nothing needs no reader: size 0 root, leaf 0 append.
    assert_eq!(merkle::tree_root(0, &Failing).unwrap(), empty_root());
    assert_eq!(
        merkle::stored_hashes_for_leaf(0, &h, &Failing).unwrap(),
        vec![h]
    );
}

// ---------------------------------------------------------------------------------------
// 2. Exhaustive and property tests up to 300 leaves
// ---------------------------------------------------------------------------------------

const N: u64 = 300;

#[test]
fn stored_hash_layout() {
    let (log, naive) = log_of(N, "layout");
    // stored_hash_count is 2n - popcount(n), the number of perfect subtrees.
    for n in 0..=5000u64 {
        assert_eq!(
            merkle::stored_hash_count(n),
            2 * n - u64::from(n.count_ones())
        );
    }
    let n = MAX_TREE_SIZE - 1;
    assert_eq!(
        merkle::stored_hash_count(n),
        2 * n - u64::from(n.count_ones())
    );
    // Every perfect subtree sits at stored_hash_index(level, k), and nothing else is stored.
    let mut seen = 0;
    for (level, nodes) in naive.levels.iter().enumerate() {
        for (k, want) in nodes.iter().enumerate() {
            let i = merkle::stored_hash_index(level as u8, k as u64);
            assert_eq!(log.read_hashes(&[i]).unwrap(), vec![*want], "({level},{k})");
            seen += 1;
        }
    }
    assert_eq!(seen, merkle::stored_hash_count(N));
    assert!(log.read_hashes(&[merkle::stored_hash_count(N)]).is_err());
}

#[test]
fn frontier_every_size() {
    let (log, naive) = log_of(N, "frontier");
    let mut f = Frontier::new();
    assert_eq!(f.root(), empty_root());
    for s in 0..=N {
        assert_eq!(f.size(), s);
        let root = f.root();
        assert_eq!(root, naive.mth(0, s), "naive at {s}");
        assert_eq!(root, log.root_at(s).unwrap(), "MemoryLog at {s}");
        assert_eq!(f.hashes().len(), s.count_ones() as usize);
        let back = Frontier::from_parts(s, f.hashes().to_vec()).unwrap();
        assert_eq!(back, f);
        assert_eq!(
            Frontier::from_reader(s, &log).unwrap(),
            f,
            "from_reader({s})"
        );
        let mut more = f.hashes().to_vec();
        more.push(root);
        assert!(is_proof_err(Frontier::from_parts(s, more)));
        if s > 0 {
            assert!(is_proof_err(Frontier::from_parts(
                s,
                f.hashes()[1..].to_vec()
            )));
        }
        if s < N {
            f.push(naive.leaf(s));
        }
    }
    // A resumed frontier continues identically.
    let mut g = Frontier::from_parts(
        150,
        Frontier::from_reader(150, &log).unwrap().hashes().to_vec(),
    )
    .unwrap();
    for s in 150..N {
        g.push(naive.leaf(s));
    }
    assert_eq!(g, f);
}

#[test]
fn inclusion_every_index_and_size() {
    let (log, naive) = log_of(N, "inclusion");
    let roots: Vec<Hash> = (0..=N).map(|s| log.root_at(s).unwrap()).collect();
    let mut rng = Rng(2);
    let mut checked = 0u64;
    let mut negatives = 0u64;
    for size in 1..=N {
        assert_eq!(roots[size as usize], naive.mth(0, size));
        for index in 0..size {
            let leaf = naive.leaf(index);
            let proof = log.inclusion_proof(index, size).unwrap();
            assert_eq!(proof, naive.path(index, 0, size), "{index}/{size}");
            assert!(proof.len() <= MAX_PROOF_HASHES);
            verify_inclusion(index, size, &leaf, &proof, &roots[size as usize]).unwrap();
            assert!(tlog_inclusion_ok(
                index,
                size,
                &leaf,
                &proof,
                &roots[size as usize]
            ));
            checked += 1;
            if rng.below(16) != 0 {
                continue;
            }
            // Sampled negatives.
            let root = &roots[size as usize];
            for j in 0..proof.len() {
                let p = flip_bit(&proof, j, rng.below(256));
                assert!(is_proof_err(verify_inclusion(index, size, &leaf, &p, root)));
                negatives += 1;
            }
            let mut bad_leaf = leaf;
            bad_leaf[rng.below(32) as usize] ^= 1 << rng.below(8);
            assert!(is_proof_err(verify_inclusion(
                index, size, &bad_leaf, &proof, root
            )));
            let mut bad_root = *root;
            bad_root[rng.below(32) as usize] ^= 1 << rng.below(8);
            assert!(is_proof_err(verify_inclusion(
                index, size, &leaf, &proof, &bad_root
            )));
            if !proof.is_empty() {
                let p = &proof[..proof.len() - 1];
                assert!(is_proof_err(verify_inclusion(index, size, &leaf, p, root)));
            }
            let mut p = proof.clone();
            p.push(rng.hash());
            assert!(is_proof_err(verify_inclusion(index, size, &leaf, &p, root)));
            // Wrong index: the proof never verifies for another position (all of them
            // for small trees, a sample for the others).
            let others: Vec<u64> = if size <= 64 {
                (0..size).collect()
            } else {
                (0..16).map(|_| rng.below(size)).collect()
            };
            for &other in &others {
                if other != index {
                    assert!(verify_inclusion(other, size, &leaf, &proof, root).is_err());
                    negatives += 1;
                }
            }
            // Wrong size, with that size's real root: fails unless it is the same proof.
            for other in [size - 1, size + 1, size * 2, size / 2] {
                if other > index && other <= N && other != size {
                    let r = &roots[other as usize];
                    let accepted = verify_inclusion(index, other, &leaf, &proof, r).is_ok();
                    let same = log.inclusion_proof(index, other).unwrap() == proof;
                    assert_eq!(accepted, same, "{index}/{size} as size {other}");
                    negatives += 1;
                }
            }
            negatives += 4;
        }
    }
    assert_eq!(checked, N * (N + 1) / 2);
    assert!(negatives > 10_000, "{negatives}");
}

/// The path-reusing verifier agrees with `verify_inclusion` on every proof of every tree up
/// to 160 leaves, in order and in random order, and on tampered proofs, leaves and indexes
/// checked right after the genuine neighbouring paths (when its cache is warm).
#[test]
fn inclusion_verifier_agrees_with_verify_inclusion() {
    const M: u64 = 160;
    let (log, naive) = log_of(M, "cached");
    let mut rng = Rng(7);
    let mut shortcuts_tested = 0u64;
    for size in 1..=M {
        let root = log.root_at(size).unwrap();
        let mut v = merkle::InclusionVerifier::new(size, root);
        let mut order: Vec<u64> = (0..size).collect();
        if size % 2 == 0 {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        for &index in &order {
            let leaf = naive.leaf(index);
            let proof = log.inclusion_proof(index, size).unwrap();
            v.verify(index, &leaf, &proof).unwrap();
            // Tampered right after a genuine neighbour: must still fail, as uncached.
            let mut cases: Vec<(u64, Hash, Vec<Hash>)> = Vec::new();
            for j in 0..proof.len() {
                cases.push((index, leaf, flip_bit(&proof, j, rng.below(256))));
            }
            let mut bad_leaf = leaf;
            bad_leaf[rng.below(32) as usize] ^= 1 << rng.below(8);
            cases.push((index, bad_leaf, proof.clone()));
            if index + 1 < size {
                // Our proof under the neighbour's index, and the neighbour's leaf with ours.
                cases.push((index + 1, leaf, proof.clone()));
                cases.push((index, naive.leaf(index + 1), proof.clone()));
            }
            if let Some(last) = proof.len().checked_sub(1) {
                cases.push((index, leaf, proof[..last].to_vec()));
            }
            for (i, l, p) in cases {
                let uncached = verify_inclusion(i, size, &l, &p, &root).is_ok();
                let mut warm = v.clone();
                assert_eq!(warm.verify(i, &l, &p).is_ok(), uncached, "{i}/{size}");
                shortcuts_tested += 1;
            }
        }
    }
    // A verifier for another root accepts nothing.
    let mut other = merkle::InclusionVerifier::new(9, log.root_at(8).unwrap());
    let proof = log.inclusion_proof(3, 9).unwrap();
    assert!(other.verify(3, &naive.leaf(3), &proof).is_err());
    assert!(shortcuts_tested > 50_000, "{shortcuts_tested}");
}

#[test]
fn consistency_every_pair() {
    let (log, naive) = log_of(N, "consistency");
    let roots: Vec<Hash> = (0..=N).map(|s| log.root_at(s).unwrap()).collect();
    let mut rng = Rng(3);
    let mut checked = 0u64;
    let mut negatives = 0u64;
    for new in 1..=N {
        for old in 0..=new {
            let (r1, r2) = (&roots[old as usize], &roots[new as usize]);
            let proof = log.consistency_proof(old, new).unwrap();
            assert_eq!(proof, naive.consistency(old, new), "{old}->{new}");
            assert!(proof.len() <= MAX_PROOF_HASHES);
            verify_consistency(old, new, r1, r2, &proof).unwrap();
            if rng.below(8) == 0 {
                assert!(tlog_consistency_ok(old, new, r1, r2, &proof));
            }
            checked += 1;
            if old == 0 || old == new || rng.below(16) != 0 {
                continue;
            }
            for j in 0..proof.len() {
                let p = flip_bit(&proof, j, rng.below(256));
                assert!(is_proof_err(verify_consistency(old, new, r1, r2, &p)));
                negatives += 1;
            }
            assert!(is_proof_err(verify_consistency(old, new, r2, r1, &proof)));
            let p = &proof[..proof.len() - 1];
            assert!(is_proof_err(verify_consistency(old, new, r1, r2, p)));
            let mut p = proof.clone();
            p.push(rng.hash());
            assert!(is_proof_err(verify_consistency(old, new, r1, r2, &p)));
            // Other sizes with their real roots: fail unless it is the very same proof.
            for (a, b) in [
                (old - 1, new),
                (old + 1, new),
                (old ^ 2, new),
                (old, new + 1),
                (old, new - 1),
                (old, new * 2),
                (old, new / 2),
            ] {
                if (a, b) != (old, new) && a <= b && b <= N && a > 0 {
                    let (ra, rb) = (&roots[a as usize], &roots[b as usize]);
                    let accepted = verify_consistency(a, b, ra, rb, &proof).is_ok();
                    let same = log.consistency_proof(a, b).unwrap() == proof;
                    assert_eq!(accepted, same, "{old}->{new} as {a}->{b}");
                    negatives += 1;
                }
            }
            negatives += 3;
        }
    }
    assert_eq!(checked, N * (N + 1) / 2 + N);
    assert!(negatives > 10_000, "{negatives}");
}

/// RFC 6962 roots do not commit to the tree size: the proof of leaf 0 in the tree of 3
/// also "verifies" leaf 0 at size 4 against the size-3 root (the verifier reads leaf 2 as
/// the hash of leaves 2-3). Both implementations behave so; callers must take size and
/// root from one signed checkpoint. This test pins the behaviour so it is not mistaken
/// for a bug.
#[test]
fn root_does_not_commit_to_size() {
    let (log, naive) = log_of(4, "size");
    let p3 = log.inclusion_proof(0, 3).unwrap();
    let r3 = log.root_at(3).unwrap();
    let l0 = naive.leaf(0);
    verify_inclusion(0, 3, &l0, &p3, &r3).unwrap();
    verify_inclusion(0, 4, &l0, &p3, &r3).unwrap();
    assert!(tlog_inclusion_ok(0, 4, &l0, &p3, &r3));
    // With the real size-4 root it fails.
    assert!(verify_inclusion(0, 4, &l0, &p3, &log.root_at(4).unwrap()).is_err());
}

// ---------------------------------------------------------------------------------------
// Huge trees (virtual Thue-Morse log)
// ---------------------------------------------------------------------------------------

#[test]
fn huge_trees() {
    let tm = ThueMorse::new();
    let mut rng = Rng(4);
    let mut sizes = vec![MAX_TREE_SIZE, MAX_TREE_SIZE - 1, (1 << 40) + 12345, 1 << 33];
    for _ in 0..60 {
        sizes.push(1 + rng.below(MAX_TREE_SIZE));
    }
    let mut longest = (0, 0);
    for &size in &sizes {
        let root = merkle::tree_root(size, &tm).unwrap();
        assert_eq!(root, tm.mth(0, size), "root at {size}");
        assert_eq!(Frontier::from_reader(size, &tm).unwrap().root(), root);
        for index in [0, size - 1, size / 2, rng.below(size)] {
            let leaf = tm.perfect(0, index);
            let proof = merkle::inclusion_proof(index, size, &tm).unwrap();
            assert_eq!(proof, tm.path(index, 0, size));
            longest.0 = longest.0.max(proof.len());
            verify_inclusion(index, size, &leaf, &proof, &root).unwrap();
            assert!(tlog_inclusion_ok(index, size, &leaf, &proof, &root));
            let j = rng.below(proof.len() as u64) as usize;
            let p = flip_bit(&proof, j, rng.below(256));
            assert!(verify_inclusion(index, size, &leaf, &p, &root).is_err());
            assert!(!tlog_inclusion_ok(index, size, &leaf, &p, &root));
        }
        for old in [1, size - 1, size / 2, 1 + rng.below(size), 1 << 20] {
            if old == 0 || old >= size {
                continue;
            }
            let r1 = tm.mth(0, old);
            let proof = merkle::consistency_proof(old, size, &tm).unwrap();
            assert_eq!(proof, tm.consistency(old, size));
            longest.1 = longest.1.max(proof.len());
            verify_consistency(old, size, &r1, &root, &proof).unwrap();
            assert!(tlog_consistency_ok(old, size, &r1, &root, &proof));
            let j = rng.below(proof.len() as u64) as usize;
            let p = flip_bit(&proof, j, rng.below(256));
            assert!(verify_consistency(old, size, &r1, &root, &p).is_err());
            assert!(!tlog_consistency_ok(old, size, &r1, &root, &p));
        }
    }
    assert!(
        longest.0 >= 62 && longest.0 <= MAX_PROOF_HASHES,
        "{longest:?}"
    );
    assert!(
        longest.1 >= 40 && longest.1 <= MAX_PROOF_HASHES,
        "{longest:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Cross-check against tlog_tiles' verifiers on random cases
// ---------------------------------------------------------------------------------------

#[test]
fn tlog_tiles_cross_check() {
    let (log, naive) = log_of(N, "cross");
    let roots: Vec<Hash> = (0..=N).map(|s| log.root_at(s).unwrap()).collect();
    let mut rng = Rng(5);
    let mut agree = [0u64; 2];
    for _ in 0..20_000 {
        // A genuine case, then one random mutation (or none).
        let size = 1 + rng.below(N);
        let index = rng.below(size);
        let mut proof = log.inclusion_proof(index, size).unwrap();
        let (mut i, mut s) = (index, size);
        let mut leaf = naive.leaf(index);
        let mut root = roots[size as usize];
        match rng.below(8) {
            0 => {}
            1 if !proof.is_empty() => {
                let j = rng.below(proof.len() as u64) as usize;
                proof = flip_bit(&proof, j, rng.below(256));
            }
            2 => i = rng.below(N + 2),
            3 => s = rng.below(N + 2),
            4 => proof.truncate(rng.below(proof.len() as u64 + 1) as usize),
            5 => proof.insert(rng.below(proof.len() as u64 + 1) as usize, rng.hash()),
            6 => leaf = naive.leaf(rng.below(N)),
            _ => root = roots[rng.below(N + 1) as usize],
        }
        let ours = verify_inclusion(i, s, &leaf, &proof, &root).is_ok();
        assert_eq!(
            ours,
            tlog_inclusion_ok(i, s, &leaf, &proof, &root),
            "inclusion {i}/{s} (from {index}/{size})"
        );
        agree[usize::from(ours)] += 1;
    }
    assert!(agree[0] > 5_000 && agree[1] > 2_500, "{agree:?}");

    let mut agree = [0u64; 2];
    for _ in 0..20_000 {
        let new = 1 + rng.below(N);
        let old = 1 + rng.below(new);
        let mut proof = log.consistency_proof(old, new).unwrap();
        let (mut a, mut b) = (old, new);
        let (mut r1, mut r2) = (roots[old as usize], roots[new as usize]);
        match rng.below(8) {
            0 => {}
            1 if !proof.is_empty() => {
                let j = rng.below(proof.len() as u64) as usize;
                proof = flip_bit(&proof, j, rng.below(256));
            }
            2 => a = 1 + rng.below(N),
            3 => b = 1 + rng.below(N),
            4 => proof.truncate(rng.below(proof.len() as u64 + 1) as usize),
            5 => proof.insert(rng.below(proof.len() as u64 + 1) as usize, rng.hash()),
            6 => r1 = roots[rng.below(N + 1) as usize],
            _ => r2 = roots[rng.below(N + 1) as usize],
        }
        let ours = verify_consistency(a, b, &r1, &r2, &proof).is_ok();
        assert_eq!(
            ours,
            tlog_consistency_ok(a, b, &r1, &r2, &proof),
            "consistency {a}->{b} (from {old}->{new})"
        );
        agree[usize::from(ours)] += 1;
    }
    assert!(agree[0] > 5_000 && agree[1] > 2_500, "{agree:?}");
}
