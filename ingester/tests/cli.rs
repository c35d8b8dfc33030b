//! The ingester binary parses its configuration and refuses an incomplete one.
#![allow(clippy::unwrap_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sealtrail-ingester");

#[test]
fn help_lists_the_flags_and_missing_ones_are_refused() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--store",
        "--signer-url",
        "--allow-client",
        "--max-in-flight-requests",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    let out = Command::new(BIN)
        .args(["--origin", "x/y"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
