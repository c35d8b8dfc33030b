//! The signer binary's refusals: no dev key without the explicit insecure flag, and no
//! second signer on a state directory already in use.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sealtrail-signer");

/// The signer binary with no key backend chosen through the environment.
fn signer() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("SEALTRAIL_PKCS11_MODULE")
        .env_remove("SEALTRAIL_KMS_KEY")
        .env_remove("SEALTRAIL_DEV_KEY");
    c
}

fn keygen(dir: &std::path::Path) -> std::path::PathBuf {
    let key = dir.join("dev.key");
    let out = signer()
        .args(["dev-keygen", "--algorithm", "ecdsa-p256", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    key
}

#[test]
fn dev_key_needs_the_insecure_flag() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let out = signer()
        .args(["export-trust", "--origin", "example.com/log", "--dev-key"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--insecure-dev-key"), "{stderr}");

    let out = signer()
        .args([
            "export-trust",
            "--origin",
            "example.com/log",
            "--insecure-dev-key",
            "--dev-key",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = sealtrail_core::trust::Trust::parse(&out.stdout).unwrap();
    assert_eq!(bundle.origin(), "example.com/log");
}

#[test]
fn second_signer_on_the_same_state_dir_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    // TLS files are read after the state is opened, so dummy paths do not matter for
    // the second signer: it must stop at the lock. The first one needs real ones; it is
    // enough that it holds the lock, which it takes before reading TLS material, and
    // then fails: so hold the lock from this process instead, as a running signer would.
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state.join("signer.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let start = Instant::now();
    let out = signer()
        .args([
            "serve",
            "--origin",
            "example.com/log",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--state-dir")
        .arg(&state)
        .args([
            "--tls-cert",
            "/nonexistent",
            "--tls-key",
            "/nonexistent",
            "--client-ca",
            "/nonexistent",
        ])
        .arg("--dev-key")
        .arg(&key)
        .arg("--insecure-dev-key")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(start.elapsed() < Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another signer"), "{stderr}");
}

/// `keygen` then `export-trust` against a SoftHSM2 token, as an operator would run them:
/// the PIN only from a file, the key found by token and key label.
#[test]
fn pkcs11_keygen_and_export_trust() {
    let module = std::env::var_os("SEALTRAIL_TEST_PKCS11_MODULE").map_or_else(
        || "/usr/lib/softhsm/libsofthsm2.so".into(),
        std::path::PathBuf::from,
    );
    assert!(
        module.is_file(),
        "SoftHSM2 missing: run scripts/test or apt-get install softhsm2"
    );
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            "cli-token",
            "--pin",
            "4321",
            "--so-pin",
            "8765",
        ])
        .output()
        .expect("softhsm2-util: run scripts/test or apt-get install softhsm2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "4321\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = |args: &[&str]| {
        signer()
            .env("SOFTHSM2_CONF", &conf)
            .env_remove("SEALTRAIL_PKCS11_PIN")
            .args(args)
            .arg("--pkcs11-module")
            .arg(&module)
            .args([
                "--pkcs11-token-label",
                "cli-token",
                "--pkcs11-key-label",
                "checkpoints",
            ])
            .arg("--pkcs11-pin-file")
            .arg(&pin)
            .output()
            .unwrap()
    };
    let out = run(&["keygen", "--algorithm", "ecdsa-p256"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["keygen", "--algorithm", "ecdsa-p256"]);
    assert!(
        !out.status.success(),
        "a second key under the same label is refused"
    );
    let out = run(&["export-trust", "--origin", "example.com/log"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trust = sealtrail_core::trust::Trust::parse(&out.stdout).unwrap();
    assert_eq!(
        trust.bundle().keys[0].algorithm,
        sealtrail_core::keys::Algorithm::EcdsaP256Sha256
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("4321"),
        "the PIN is never printed"
    );
}
