//! A log signed by a key in a real PKCS#11 token (SoftHSM2), end to end: the apiserver
//! emulator replays the real events through the ingester, the signer signs every checkpoint
//! in the token, and the verifier proves the stored trail intact with a trust bundle that
//! holds only the token's public key.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when the module is initialized, and a test cannot set an
//! environment variable in-process without `unsafe` (forbidden here): each test re-runs
//! itself as a child process of this binary with `SOFTHSM2_CONF` pointing at a fresh token
//! directory. Needs the Debian package `softhsm2` (scripts/test installs it and exports
//! SEALTRAIL_TEST_PKCS11_MODULE); without it these tests fail, they never skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use sealtrail_tests::softhsm::{init_token, softhsm_child};
use std::path::PathBuf;
use std::sync::Arc;

use common::{Harness, ORIGIN, event_lines, replay};
use sealtrail_core::keys::Algorithm;
use sealtrail_signer::KeyBackend;
use sealtrail_signer::pkcs11::{Pin, Pkcs11Config, Pkcs11Key};

const USER_PIN: &str = "pin-Sealtrail-2468";
const SO_PIN: &str = "so-pin-Sealtrail-1357";

async fn log_signed_in_the_token(module: PathBuf, algorithm: Algorithm) {
    let token = format!("sealtrail-e2e-{algorithm}");
    init_token(&token, USER_PIN, SO_PIN);
    let config = || {
        Pkcs11Config::new(
            &module,
            &token,
            "checkpoint-signing",
            Pin::new(USER_PIN).unwrap(),
        )
    };
    let public = Pkcs11Key::generate(&config(), algorithm).unwrap();
    let key = Pkcs11Key::open(config()).unwrap();
    assert_eq!(key.public_key(), &public);

    let h = Harness::start_custom(
        sealtrail_ingester::DEFAULT_MAX_BODY_BYTES,
        Some(Arc::new(key)),
    )
    .await;
    assert_eq!(h.key.kind(), "pkcs11");
    let lines = event_lines();
    assert_eq!(lines.len(), 222);
    let report = replay(&h, &lines, 400).await;
    assert_eq!(report.events_sent, 222);

    // The signer's newest checkpoint is signed by the token's key.
    let latest = h.latest_checkpoint().await.unwrap();
    assert_eq!(latest.checkpoint.size, 222);
    let sig = &latest.signatures[0];
    assert_eq!(sig.key_id, public.key_id(ORIGIN));
    public.verify(latest.text(), &sig.signature).unwrap();

    // The verifier, trusting only the token's public key, proves the trail intact.
    let verified = h.verify_dir(&h.store_dir).await;
    assert!(verified.intact(), "{}", verified.summary());
    assert_eq!(verified.events_verified, 222);
    assert_eq!(verified.events, 222);
    assert!(verified.roots_verified >= 1);
    println!("{algorithm}: {}", verified.summary());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_p256_signed_log_verifies_end_to_end() {
    if let Some(module) = softhsm_child("hsm_p256_signed_log_verifies_end_to_end", &[]) {
        log_signed_in_the_token(module, Algorithm::EcdsaP256Sha256).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_ed25519_signed_log_verifies_end_to_end() {
    if let Some(module) = softhsm_child("hsm_ed25519_signed_log_verifies_end_to_end", &[]) {
        log_signed_in_the_token(module, Algorithm::Ed25519).await;
    }
}
