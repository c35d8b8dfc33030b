//! RFC 3161 responses and tokens (docs/FORMAT.md §10): taking a token out of a TSA's
//! response and verifying one against the vector's pinned root never panic, and a token
//! that verifies says what the vector's says: its TSTInfo is under the signature.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sealtrail_core::timestamp::{parse_object_key, token_from_response, verify_token};
use sealtrail_core::trust::TrustedTsa;

const TOKEN: &[u8] = include_bytes!("../../core/testdata/vectors/timestamp/token.tsr");

fn tsa() -> &'static TrustedTsa {
    static TSA: OnceLock<TrustedTsa> = OnceLock::new();
    TSA.get_or_init(|| {
        let root = include_bytes!("../../core/testdata/vectors/timestamp/root.der");
        TrustedTsa::new("test-tsa", &[root.to_vec()], &[])
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = token_from_response(data) {
        let _ = verify_token(&token, tsa());
    }
    if let Ok(info) = verify_token(data, tsa()) {
        let expected = verify_token(TOKEN, tsa()).expect("the vector verifies");
        assert_eq!((info.imprint, info.gen_time_ms), (expected.imprint, expected.gen_time_ms));
    }
    if let Ok(key) = std::str::from_utf8(data) {
        let _ = parse_object_key("", key);
    }
});
