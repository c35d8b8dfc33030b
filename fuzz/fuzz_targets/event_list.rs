//! Webhook bodies: parsing never panics, and every accepted event is stamped and canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtrail_core::{event, jcs, merkle};

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = event::parse_event_list(data) {
        for e in batch.events {
            assert_eq!(jcs::canonicalize(&e.canonical).unwrap(), e.canonical);
            assert_eq!(merkle::leaf_hash(&e.canonical), e.leaf_hash);
            let v = jcs::parse(&e.canonical).unwrap();
            let o = v.as_object().unwrap();
            assert_eq!(o.get("kind").and_then(|k| k.as_str()), Some("Event"));
        }
    }
});
