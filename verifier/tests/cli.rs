//! `sealtrail-verify canonicalize` reproduces the worked examples of docs/FORMAT.md and
//! refuses invalid input with a non-zero exit.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sealtrail-verify");

fn canonicalize(input: &[u8]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .arg("canonicalize")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn canonicalize_matches_the_format_vectors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/testdata/vectors");
    let out = canonicalize(&std::fs::read(dir.join("eventlist.json")).unwrap());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let leaves = std::fs::read_to_string(dir.join("leaves.txt")).unwrap();
    let canonical = std::fs::read_to_string(dir.join("canonical.jsonl")).unwrap();
    let want: Vec<String> = leaves
        .lines()
        .zip(canonical.lines())
        .map(|(l, c)| format!("{l} {c}"))
        .collect();
    let got = String::from_utf8(out.stdout).unwrap();
    assert_eq!(got.lines().collect::<Vec<_>>(), want);

    // The same events as log-file lines (one per line) give the same digests.
    let lines: String = canonical.lines().map(|l| format!("{l}\n")).collect();
    let out = canonicalize(lines.as_bytes());
    assert!(out.status.success());
    let got = String::from_utf8(out.stdout).unwrap();
    assert_eq!(got.lines().collect::<Vec<_>>(), want);
}

#[test]
fn canonicalize_refuses_invalid_input() {
    for bad in [
        &b"{\"auditID\":\"a\",\"stage\":\"x\",\"stage\":\"y\"}\n"[..],
        b"not json\n",
        b"{\"auditID\":\"a\",\"stage\":\"x\",\"n\":1e999}\n",
        b"{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v2\",\"items\":[]}",
    ] {
        let out = canonicalize(bad);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(bad)
        );
        assert!(!out.stderr.is_empty());
        assert!(out.stdout.is_empty());
    }
}
