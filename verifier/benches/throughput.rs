//! Verification throughput against raw SHA-256 over the same bytes (a bench binary, not a
//! timed test; run it by hand):
//!
//! ```text
//! cargo bench -p sealtrail-verifier --bench throughput [-- EVENTS]
//! ```
//!
//! Builds a local store of `EVENTS` (default 40,000, about 220 MB) real audit events — the
//! 222 samples of testdata/k8s-audit, repeated with rewritten auditIDs — in
//! segments of 400 events, each under its own signed checkpoint (as one group commit per
//! apiserver batch), exactly as the ingester writes them. Then, in the same run, times
//! `sha256sum` over every segment's bytes (`find | xargs cat | sha256sum`: the physical floor
//! of "reading and hashing it all once") and `verify_store` over the store, and prints the
//! ratio (verify MB/s ÷ sha256sum MB/s). Best of three of each, to damp a noisy machine.
//! Then `search` over the same store (a selective query, and every event printed), with
//! its ratio to verify's throughput (issue: ≥ 0.8). `-- 180000` makes about 1 GB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ed25519_dalek::Signer as _;
use sealtrail_core::checkpoint::{Checkpoint, NoteSignature, SignedCheckpoint};
use sealtrail_core::event::{CanonicalEvent, parse_event_line};
use sealtrail_core::keys::PublicKey;
use sealtrail_core::merkle::{Hash, MemoryLog};
use sealtrail_core::query::Query;
use sealtrail_core::segment;
use sealtrail_core::trust::{Trust, TrustBundle, TrustedKey};
use sealtrail_store::{LocalDirStore, ObjectStore as _};
use sealtrail_verifier::search::{SearchOptions, search};
use sealtrail_verifier::{Options, verify_store};

const ORIGIN: &str = "sealtrail.bench/verify";
const BATCH: usize = 400;

fn sample_events() -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/k8s-audit/events.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `n`-th event of the run: a sample with an auditID of its own.
fn event(samples: &[serde_json::Value], n: usize) -> CanonicalEvent {
    let mut v = samples[n % samples.len()].clone();
    let id = format!("{:08x}-bench-{n:012}", n as u32);
    v["auditID"] = serde_json::Value::String(id);
    parse_event_line(v.to_string().as_bytes()).unwrap()
}

async fn build_store(dir: &Path, events: usize) -> (Trust, u64) {
    let samples = sample_events();
    let sk = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let public = PublicKey::from_ed25519_bytes(sk.verifying_key().as_bytes()).unwrap();
    let key_id = public.key_id(ORIGIN);
    let store = LocalDirStore::open(dir).unwrap();
    let mut log = MemoryLog::new();
    let mut prev: Option<Hash> = None;
    let mut time_ms = 1_764_221_736_123u64;
    let mut bytes = 0u64;
    let mut n = 0;
    while n < events {
        let batch: Vec<CanonicalEvent> = (n..events.min(n + BATCH))
            .map(|i| event(&samples, i))
            .collect();
        let first = log.size();
        for e in &batch {
            log.append(e.leaf_hash);
        }
        let size = log.size();
        let cp = Checkpoint {
            origin: ORIGIN.into(),
            size,
            root: log.root(),
            time_ms,
            prev,
            new_key: None,
        };
        let signature = sk.sign(&cp.to_text()).to_bytes().to_vec();
        let signed = SignedCheckpoint::new(
            cp,
            vec![NoteSignature {
                name: ORIGIN.into(),
                key_id,
                signature,
            }],
        )
        .unwrap();
        prev = Some(signed.hash());
        let proofs: Vec<Vec<Hash>> = (first..size)
            .map(|i| log.inclusion_proof(i, size).unwrap())
            .collect();
        let object = segment::encode(first, &signed, &batch, &proofs).unwrap();
        bytes += object.len() as u64;
        let key = segment::object_key("", time_ms, first, batch.len() as u64);
        store.put_new(&key, &object).await.unwrap();
        time_ms += 50;
        n += batch.len();
    }
    let trust = Trust::from_bundle(TrustBundle::new(
        ORIGIN,
        vec![TrustedKey::new(ORIGIN, &public, 0)],
    ))
    .unwrap();
    (trust, bytes)
}

fn sha256sum_seconds(dir: &Path) -> f64 {
    let started = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg("find \"$1\" -name '*.jsonl' -print0 | xargs -0 cat | sha256sum")
        .arg("sh")
        .arg(dir.join("segments"))
        .output()
        .expect("sh, find, xargs, cat, sha256sum");
    assert!(out.status.success());
    started.elapsed().as_secs_f64()
}

fn best_of<F: FnMut() -> f64>(runs: usize, mut f: F) -> f64 {
    (0..runs).map(|_| f()).fold(f64::INFINITY, f64::min)
}

fn main() {
    let events: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(40_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-verify");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let dir = tempfile::tempdir_in(&root).unwrap();
    let started = Instant::now();
    let (trust, bytes) = rt.block_on(build_store(dir.path(), events));
    eprintln!(
        "built {events} events, {:.1} MB of segments in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let store = LocalDirStore::open(dir.path()).unwrap();
    let verify = |options: &Options| {
        let started = Instant::now();
        let report = rt.block_on(verify_store(&store, &trust, options)).unwrap();
        assert!(report.intact(), "{}", report.summary());
        assert_eq!(report.events_verified, events as u64);
        started.elapsed().as_secs_f64()
    };
    // As the CLI runs without --state (what bench-load timed), then with everything on.
    let lean = Options {
        check_duplicates: false,
        late_after: None,
        no_object_hashes: true,
        ..Options::default()
    };
    // (Late-event checks are off in both: the samples' times span years.)
    let full = Options {
        check_duplicates: true,
        late_after: None,
        ..Options::default()
    };
    sha256sum_seconds(dir.path()); // warm the page cache
    let sha = best_of(3, || sha256sum_seconds(dir.path()));
    let lean_s = best_of(3, || verify(&lean));
    let full_s = best_of(3, || verify(&full));
    let mbs = |s: f64| bytes as f64 / s / 1e6;
    println!(
        "events {events}, segments {}, bytes {bytes}",
        events.div_ceil(BATCH)
    );
    println!("sha256sum                       {:>8.1} MB/s", mbs(sha));
    println!(
        "verify (no dup check, no state) {:>8.1} MB/s   ratio {:.2}",
        mbs(lean_s),
        sha / lean_s
    );
    println!(
        "verify (dup check, state hashes) {:>8.1} MB/s   ratio {:.2}",
        mbs(full_s),
        sha / full_s
    );
    // `search` over the same bytes: a selective query (what an investigation asks), and
    // every event written out as JSON Lines (the heaviest output), against verify as the
    // CLI runs it.
    let run_search = |query: &Query| {
        let started = Instant::now();
        let mut out = std::io::sink();
        let mut matched = 0u64;
        let report = rt
            .block_on(search(
                &store,
                &trust,
                query,
                &SearchOptions::default(),
                &mut |hit| {
                    use std::io::Write as _;
                    matched += 1;
                    out.write_all(&hit.canonical)?;
                    out.write_all(b"\n")
                },
            ))
            .unwrap();
        assert!(report.intact());
        assert_eq!(report.events_scanned, events as u64);
        assert_eq!(report.events_matched, matched);
        started.elapsed().as_secs_f64()
    };
    let selective = Query {
        user: vec!["system:admin".into()],
        verb: vec!["get".into()],
        ..Query::default()
    };
    let sel_s = best_of(3, || run_search(&selective));
    let all_s = best_of(3, || run_search(&Query::default()));
    println!(
        "search --user system:admin --verb get {:>8.1} MB/s   ratio {:.2}, vs verify {:.2}",
        mbs(sel_s),
        sha / sel_s,
        lean_s / sel_s
    );
    println!(
        "search, every event as JSON Lines {:>8.1} MB/s   ratio {:.2}, vs verify {:.2}",
        mbs(all_s),
        sha / all_s,
        lean_s / all_s
    );
}
