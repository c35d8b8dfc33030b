//! Trust bundles: parse never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtrail_core::trust::Trust;

fuzz_target!(|data: &[u8]| {
    let _ = Trust::parse(data);
});
