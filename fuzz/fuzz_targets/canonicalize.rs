//! Arbitrary bytes through the strict JSON parser and the RFC 8785 serializer: no panic,
//! errors point inside the input, and canonical output is a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtrail_core::Error;
use sealtrail_core::jcs;

fuzz_target!(|data: &[u8]| {
    match jcs::canonicalize(data) {
        Ok(canonical) => match jcs::canonicalize(&canonical) {
            Ok(again) => assert_eq!(again, canonical, "canonical form is not a fixed point"),
            Err(e) => panic!("canonical output does not parse: {e}"),
        },
        Err(Error::Json { offset, .. }) => assert!(offset <= data.len(), "offset out of range"),
        Err(e) => panic!("unexpected error kind: {e}"),
    }
});
