//! Throughput of the hot paths on the 222 real audit events: canonicalization + leaf hash
//! (what the ingester does per event) compared with plain SHA-256 over the same bytes (a
//! floor no implementation can beat), and segment reading (what the verifier does).
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sealtrail_core::event::{parse_event_line, parse_event_list};
use sha2::{Digest as _, Sha256};

/// The sample events, or the JSON Lines file `SEALTRAIL_BENCH_EVENTS` names (so that
/// `scripts/bench-load` measures its floor over exactly the events it sends).
fn events() -> Vec<Vec<u8>> {
    let path = std::env::var("SEALTRAIL_BENCH_EVENTS").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/k8s-audit/events.jsonl"
        )
        .to_string()
    });
    std::fs::read(path)
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn bench(c: &mut Criterion) {
    let lines = events();
    let bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
    let mut g = c.benchmark_group("events");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("sha256_raw", |b| {
        b.iter(|| {
            for l in &lines {
                std::hint::black_box(Sha256::digest(l));
            }
        })
    });
    g.bench_function("canonicalize_and_leaf_hash", |b| {
        b.iter(|| {
            for l in &lines {
                std::hint::black_box(parse_event_line(l).unwrap());
            }
        })
    });
    // A webhook body of all 222 events, as the ingester parses it.
    let mut body =
        br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#.to_vec();
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let mut v = sealtrail_core::jcs::parse(l).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("kind");
        o.remove("apiVersion");
        body.extend_from_slice(&v.to_canonical());
    }
    body.extend_from_slice(b"]}");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("parse_event_list_222", |b| {
        b.iter(|| std::hint::black_box(parse_event_list(&body).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
