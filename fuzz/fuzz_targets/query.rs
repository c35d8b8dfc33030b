//! Queries as a bundle's `search` selection spells them (docs/FORMAT.md §8.5): the parser
//! never panics, what parses re-encodes to a value that parses to the same query, and
//! matching it against an event never panics (globs included: no pathological blow-up is
//! reachable within the pattern limits).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sealtrail_core::jcs::{self, Value};
use sealtrail_core::query::{Facts, Query};

fn event() -> &'static Value {
    static EVENT: OnceLock<Value> = OnceLock::new();
    EVENT.get_or_init(|| {
        jcs::parse(include_bytes!("../../core/testdata/vectors/query-event.json"))
            .expect("the example event")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(v) = jcs::parse(data) else { return };
    if let Ok(q) = Query::from_value(&v) {
        assert_eq!(Query::from_value(&q.to_value()).as_ref(), Ok(&q));
        let _ = q.matches(&Facts::of(event()));
    }
});
