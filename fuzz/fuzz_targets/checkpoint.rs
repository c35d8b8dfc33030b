//! Signed checkpoint notes: parse never panics, and what parses re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtrail_core::checkpoint::{Checkpoint, SignedCheckpoint};

fuzz_target!(|data: &[u8]| {
    if let Ok(sc) = SignedCheckpoint::parse(data) {
        assert_eq!(sc.to_bytes(), data);
    }
    if let Ok(cp) = Checkpoint::from_text(data) {
        assert_eq!(cp.to_text(), data);
    }
});
