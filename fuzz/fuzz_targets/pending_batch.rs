//! Pending batches as the verifier and the spool read them: never a panic, and one batch
//! has one spelling (what parses re-encodes to the very bytes, docs/FORMAT.md §4.4). The
//! sealer's light reading of its own batches (`split_lines`) never panics either, and on
//! every valid batch finds exactly its events' canonical lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtrail_core::{merkle, pending};

fuzz_target!(|data: &[u8]| {
    let lines = pending::split_lines(data);
    if let Ok(batch) = pending::parse(data) {
        let (ms, lines) = lines.unwrap();
        assert_eq!(ms, batch.received_ms);
        let got: Vec<&[u8]> = lines.iter().map(|l| &data[l.clone()]).collect();
        let want: Vec<&[u8]> = batch.events.iter().map(|e| &e.canonical[..]).collect();
        assert_eq!(got, want);
        let (bytes, sha) = pending::encode(batch.received_ms, &batch.events).unwrap();
        assert_eq!(bytes, data);
        assert_eq!(sha, batch.sha256);
        for e in &batch.events {
            assert_eq!(merkle::leaf_hash(&e.canonical), e.leaf_hash);
        }
        let key = pending::object_key("p/", &batch.events, batch.received_ms);
        let (hour, digest) = pending::parse_object_key("p/", &key).unwrap();
        assert_eq!(
            digest,
            pending::events_digest(batch.events.iter().map(|e| &e.leaf_hash))
        );
        assert_eq!(hour.len(), 13);
    }
    // Keys: whatever parses names an hour and a digest that re-spell the key.
    let text = String::from_utf8_lossy(data);
    if let Some((hour, digest)) = pending::parse_object_key("", &text) {
        assert_eq!(
            text,
            format!("pending/{hour}/{}.jsonl", hex::encode(digest))
        );
    }
});
