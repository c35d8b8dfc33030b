//! The binary's arguments: what it refuses before it reads or writes anything.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sealtrail-cloudwatch"))
}

#[test]
fn help_and_refused_arguments() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--log-group",
        "--ingester-url",
        "--settle-seconds",
        "--overlap-seconds",
        "--store",
    ] {
        assert!(help.contains(flag), "{flag}");
    }
    // Missing required flags: a usage error, nothing started.
    let out = bin()
        .arg("--log-group=/aws/eks/x/cluster")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A start time that is not RFC 3339.
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "--log-group=/aws/eks/x/cluster",
            "--ingester-url=https://127.0.0.1:1/v1/audit",
        ])
        .args([
            "--ingester-ca=/nonexistent",
            "--client-cert=/nonexistent",
            "--client-key=/nonexistent",
        ])
        .arg(format!("--store={}", dir.path().display()))
        .arg("--start=yesterday")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--start"));
}
