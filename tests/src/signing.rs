//! What the key-backend tests share: a checkpoint to sign, and the form every ECDSA
//! checkpoint signature must have (docs/FORMAT.md §3.2).

use sealtrail_core::checkpoint::Checkpoint;

/// A checkpoint of `size` leaves (fixed root, time and `prev`) of the log `origin`.
pub fn sample_checkpoint(origin: &str, size: u64) -> Checkpoint {
    Checkpoint {
        origin: origin.into(),
        size,
        root: [0x5a; 32],
        time_ms: 1_764_221_736_123,
        prev: Some([0x11; 32]),
        new_key: None,
    }
}

/// Panics unless `sig` is a canonical DER ECDSA signature with a low S.
pub fn assert_low_s_der(sig: &[u8]) {
    let parsed = p256::ecdsa::Signature::from_der(sig).expect("a DER ECDSA signature");
    assert!(parsed.normalize_s().is_none(), "high-S signature");
    assert_eq!(parsed.to_der().as_bytes(), sig, "not canonical DER");
}
