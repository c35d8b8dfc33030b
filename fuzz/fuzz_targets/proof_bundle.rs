//! Proof bundles as `check-bundle` reads them: the parser of `sealtrail_core::bundle` never
//! panics, what parses re-encodes to the same bytes, and checking it against the example
//! trust bundle never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sealtrail_core::bundle::Bundle;
use sealtrail_core::trust::Trust;
use sealtrail_verifier::prove::check_bundle;

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
