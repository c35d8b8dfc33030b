//! Webhook bodies: parsing never panics, every accepted event is stamped and canonical, and
//! canonicalizing items while parsing accepts exactly what the whole tree does, with the
//! same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtrail_core::event::{self, CanonicalEvent, MAX_EVENTS_PER_BATCH, SUPPORTED_API_VERSIONS};
use sealtrail_core::jcs::{self, Value};
use sealtrail_core::merkle;

/// The list parsed as a whole tree first, then checked and canonicalized item by item.
fn whole_tree(data: &[u8]) -> Option<Vec<CanonicalEvent>> {
    let Value::Object(mut list) = jcs::parse(data).ok()? else {
        return None;
    };
    if list.get("kind").and_then(Value::as_str) != Some("EventList") {
        return None;
    }
    let api = list.get("apiVersion").and_then(Value::as_str)?.to_string();
    if !SUPPORTED_API_VERSIONS.contains(&api.as_str()) {
        return None;
    }
    let items = match list.remove("items") {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(_) => return None,
    };
    if items.len() > MAX_EVENTS_PER_BATCH {
        return None;
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| event::canonical_event(item, &api, i).ok())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let parsed = event::parse_event_list(data);
    let reference = whole_tree(data);
    assert_eq!(parsed.is_ok(), reference.is_some(), "{parsed:?}");
    if let (Ok(batch), Some(want)) = (parsed, reference) {
        assert_eq!(batch.events, want);
        for e in batch.events {
            assert_eq!(jcs::canonicalize(&e.canonical).unwrap(), e.canonical);
            assert_eq!(merkle::leaf_hash(&e.canonical), e.leaf_hash);
            let v = jcs::parse(&e.canonical).unwrap();
            let o = v.as_object().unwrap();
            assert_eq!(o.get("kind").and_then(|k| k.as_str()), Some("Event"));
        }
    }
});
