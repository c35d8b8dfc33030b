//! The CloudWatch source's cursor steps (docs/FORMAT.md §4.10): parsing never panics, and
//! rebuilding a cursor from a snapshot and the intents after it loses no event: each one an
//! intent names is either counted as sent or in a batch to send again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtrail_cloudwatch::cursor::{parse_step, resumed};

fuzz_target!(|data: &[u8]| {
    // One step per line, numbered from 1.
    let mut steps = Vec::new();
    for (n, line) in data.split(|&b| b == b'\n').enumerate() {
        match parse_step(line, n as u64 + 1) {
            Ok(step) => steps.push(step),
            Err(_) => return,
        }
    }
    let mut steps = steps.into_iter();
    let Some(snapshot) = steps.next() else {
        return;
    };
    let intents: Vec<_> = steps.collect();
    let newest = intents.last().map_or(snapshot.seq, |i| i.seq);
    let named: Vec<_> = std::iter::once(&snapshot)
        .chain(&intents)
        .flat_map(|s| s.sending.clone())
        .collect();
    let cursor = resumed(snapshot, intents, newest);
    assert_eq!(cursor.seq, newest);
    for seen in named {
        assert!(
            cursor.recent.contains(&seen) || cursor.in_flight.iter().any(|b| b.contains(&seen)),
            "{seen:?} lost"
        );
    }
});
