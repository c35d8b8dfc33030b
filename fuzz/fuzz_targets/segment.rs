//! Stored segments as the verifier reads them: header and every line, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealtrail_core::segment;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, body)) = segment::parse_header(data) {
        let _ = header.checkpoint.to_bytes();
        for (_, record) in segment::records(body) {
            if let Ok(r) = record {
                assert!(r.proof.len() <= sealtrail_core::merkle::MAX_PROOF_HASHES);
            }
        }
    }
    let _ = segment::parse_object_key("", &String::from_utf8_lossy(data));
});
