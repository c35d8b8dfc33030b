//! Proof bundles as `check-bundle` reads them: parse never panics, what parses re-encodes
//! to the same bytes, and checking it against the example trust bundle never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sealtrail_core::trust::Trust;
use sealtrail_verifier::prove::{Bundle, check_bundle};

fn trust() -> &'static Trust {
    static TRUST: OnceLock<Trust> = OnceLock::new();
    TRUST.get_or_init(|| {
        Trust::parse(include_bytes!(
            "../../verifier/testdata/proof-bundle/trust.json"
        ))
        .expect("the example trust bundle")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = Bundle::parse(data) {
        assert_eq!(bundle.encode(), data);
        let _ = check_bundle(&bundle, trust()).summary();
    }
});
