//! SoftHSM2 tokens for tests, and independent signature checks with the `openssl` CLI.
//!
//! SoftHSM2 reads its configuration (`SOFTHSM2_CONF`) once per process, and the edition
//! 2024 `set_var` is unsafe (forbidden here), so a test that needs a fresh token directory
//! re-runs itself as a child process with that variable set: [`softhsm_child`].

use std::path::{Path, PathBuf};
use std::process::Command;

use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::keys::{Algorithm, PublicKey};

/// Set in the child process that runs a test body.
const CHILD: &str = "SEALTRAIL_SOFTHSM_TEST_CHILD";

/// Where the SoftHSM2 module should be: `SEALTRAIL_TEST_PKCS11_MODULE`, else the Debian
/// path.
pub fn configured_module_path() -> PathBuf {
    std::env::var_os("SEALTRAIL_TEST_PKCS11_MODULE").map_or_else(
        || PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
        PathBuf::from,
    )
}

/// The SoftHSM2 module at [`configured_module_path`]. Panics (the tests fail, never skip)
/// when it is missing.
pub fn module_path() -> PathBuf {
    let path = configured_module_path();
    assert!(
        path.is_file(),
        "the SoftHSM2 PKCS#11 module is not at {} (SEALTRAIL_TEST_PKCS11_MODULE or the Debian \
         default): run scripts/test, which installs it, or `apt-get install softhsm2`",
        path.display()
    );
    path
}

/// In the parent process: runs the test `name` of the current test binary again in a child
/// process whose `SOFTHSM2_CONF` points at a fresh token directory (with `env` added),
/// asserts that it passed, and returns `None`. In that child: returns the module path, for
/// the test body to run.
pub fn softhsm_child(name: &str, env: &[(&str, &str)]) -> Option<PathBuf> {
    let module = module_path();
    if std::env::var_os(CHILD).is_some() {
        assert!(std::env::var_os("SOFTHSM2_CONF").is_some());
        return Some(module);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = write_softhsm_conf(dir.path());
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("SOFTHSM2_CONF", &conf)
        .env("SEALTRAIL_TEST_PKCS11_MODULE", &module);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Shown with --nocapture (the signature rate of the timing test, for one).
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child test {name} failed:\n{stdout}\n{stderr}"
    );
    None
}

/// Writes `dir/softhsm2.conf` for an empty token directory `dir/tokens`, and returns its
/// path (for `SOFTHSM2_CONF`).
pub fn write_softhsm_conf(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir(&tokens).expect("token dir");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .expect("softhsm2.conf");
    conf
}

/// Initializes a token labelled `label` in the child's token directory.
pub fn init_token(label: &str, user_pin: &str, so_pin: &str) {
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label])
        .args(["--pin", user_pin, "--so-pin", so_pin])
        .output()
        .expect("softhsm2-util (Debian package softhsm2): run scripts/test");
    assert!(
        out.status.success(),
        "softhsm2-util --init-token: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the `openssl` CLI accepts `sig` over `text` from `key`, following
/// docs/FORMAT.md §3.2 (ECDSA: `dgst -sha256 -verify` of a DER signature; Ed25519:
/// `pkeyutl -verify -rawin`). Files go to `dir`.
pub fn openssl_verifies(dir: &Path, text: &[u8], sig: &[u8], key: &PublicKey) -> bool {
    let (text_path, sig_path, pem) = (dir.join("text"), dir.join("sig"), dir.join("pub.pem"));
    std::fs::write(&text_path, text).expect("write text");
    std::fs::write(&sig_path, sig).expect("write signature");
    std::fs::write(&pem, key.to_pem()).expect("write key");
    let mut cmd = Command::new("openssl");
    match key.algorithm() {
        Algorithm::EcdsaP256Sha256 => {
            cmd.args(["dgst", "-sha256", "-verify"])
                .arg(&pem)
                .arg("-signature")
                .arg(&sig_path)
                .arg(&text_path);
        }
        Algorithm::Ed25519 => {
            cmd.args(["pkeyutl", "-verify", "-pubin", "-inkey"])
                .arg(&pem)
                .arg("-rawin")
                .arg("-in")
                .arg(&text_path)
                .arg("-sigfile")
                .arg(&sig_path);
        }
    }
    let out = cmd.output().expect("openssl CLI (Debian package openssl)");
    out.status.success()
}

/// [`openssl_verifies`] for the signature line of `key` in a checkpoint note (false if
/// it has none).
pub fn openssl_verifies_note(dir: &Path, note: &SignedCheckpoint, key: &PublicKey) -> bool {
    note.signatures
        .iter()
        .find(|s| s.key_id == key.key_id(&s.name))
        .is_some_and(|s| openssl_verifies(dir, note.text(), &s.signature, key))
}
