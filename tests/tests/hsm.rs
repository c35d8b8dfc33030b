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

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use common::{Harness, ORIGIN, event_lines, replay};
use sealtrail_core::keys::Algorithm;
use sealtrail_signer::KeyBackend;
use sealtrail_signer::pkcs11::{Pin, Pkcs11Config, Pkcs11Key};

const USER_PIN: &str = "pin-Sealtrail-2468";
const SO_PIN: &str = "so-pin-Sealtrail-1357";
const CHILD: &str = "SEALTRAIL_SOFTHSM_TEST_CHILD";

/// The SoftHSM2 module: SEALTRAIL_TEST_PKCS11_MODULE, else the Debian path. Fails (never skips)
/// when it is missing.
fn module_path() -> PathBuf {
    let path = std::env::var_os("SEALTRAIL_TEST_PKCS11_MODULE").map_or_else(
        || PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "the SoftHSM2 PKCS#11 module is not at {} (SEALTRAIL_TEST_PKCS11_MODULE or the Debian \
         default): run scripts/test, which installs it, or `apt-get install softhsm2`",
        path.display()
    );
    path
}

/// In the parent process: runs test `name` again in a child process whose SOFTHSM2_CONF
/// points at a fresh token directory, asserts that it passed, and returns `None`. In that
/// child: returns the module path.
fn softhsm_child(name: &str) -> Option<PathBuf> {
    let module = module_path();
    if std::env::var_os(CHILD).is_some() {
        assert!(std::env::var_os("SOFTHSM2_CONF").is_some());
        return Some(module);
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("SOFTHSM2_CONF", &conf)
        .env("SEALTRAIL_TEST_PKCS11_MODULE", &module)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child test {name} failed:\n{stdout}\n{stderr}"
    );
    None
}

fn init_token(label: &str) {
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label])
        .args(["--pin", USER_PIN, "--so-pin", SO_PIN])
        .output()
        .expect("softhsm2-util (Debian package softhsm2): run scripts/test");
    assert!(
        out.status.success(),
        "softhsm2-util --init-token: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn log_signed_in_the_token(module: PathBuf, algorithm: Algorithm) {
    let token = format!("sealtrail-e2e-{algorithm}");
    init_token(&token);
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
    if let Some(module) = softhsm_child("hsm_p256_signed_log_verifies_end_to_end") {
        log_signed_in_the_token(module, Algorithm::EcdsaP256Sha256).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_ed25519_signed_log_verifies_end_to_end() {
    if let Some(module) = softhsm_child("hsm_ed25519_signed_log_verifies_end_to_end") {
        log_signed_in_the_token(module, Algorithm::Ed25519).await;
    }
}
