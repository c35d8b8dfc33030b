//! Pending batches and their seals, end to end on the local write-once store: tampering
//! with them is named by the verifier; a batch left unsealed is reported once it is older
//! than the grace period; a spool record with one flipped byte is reported and never
//! sealed; a full spool answers 503 and leaves nothing behind; a one-event request is
//! answered without waiting for a signature.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use sealtrail_core::event::parse_event_list;
use sealtrail_core::{pending, segment};
use sealtrail_store::{LocalDirStore, ObjectStore};
use sealtrail_tests::emulator;
use sealtrail_verifier::{FindingKind, Options, Report, verify_store};

fn kinds(r: &Report) -> Vec<FindingKind> {
    let mut k: Vec<_> = r.findings.iter().map(|f| f.kind).collect();
    k.dedup();
    k
}

/// The report names only `kind`, first at `object`.
fn only(r: &Report, kind: FindingKind, object: &str) {
    assert_eq!(kinds(r), vec![kind], "{}", r.summary());
    assert_eq!(
        r.findings[0].object.as_deref(),
        Some(object),
        "{}",
        r.summary()
    );
}

async fn verify(h: &Harness, dir: &Path, grace: Option<Duration>) -> Report {
    let store = LocalDirStore::open(dir).unwrap();
    verify_store(
        &store,
        &h.trust,
        &Options {
            seal_grace: grace,
            ..Options::default()
        },
    )
    .await
    .unwrap()
}

fn pending_files(dir: &Path) -> Vec<PathBuf> {
    let d = dir.join("pending");
    if d.exists() { walk(&d) } else { Vec::new() }
}

/// Rewrites a v2 segment's header member `name` to `value` (a JSON literal), keeping the
/// line canonical (members stay in order).
fn set_header(file: &Path, name: &str, value: &str) {
    let bytes = std::fs::read(file).unwrap();
    let end = bytes.iter().position(|b| *b == b'\n').unwrap();
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[..end]).unwrap();
    header.insert(name.into(), serde_json::from_str(value).unwrap());
    let json = serde_json::to_vec(&header).unwrap();
    let mut out = sealtrail_core::jcs::canonicalize(&json).unwrap();
    out.extend_from_slice(&bytes[end..]);
    std::fs::write(file, out).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_pending_batches_and_seals_is_named() {
    let h = Harness::start().await;
    replay(&h, &event_lines(), 40).await;
    let root = h.store_dir.clone();
    let intact = verify(&h, &root, None).await;
    assert!(intact.intact(), "{}", intact.summary());
    let segs = segments(&root);
    assert_eq!(intact.sealing.batches as usize, segs.len());
    assert_eq!(intact.sealing.batches_sealed as usize, segs.len());
    let case = |name: &str| {
        let dir = h.dir.path().join(format!("tampered-{name}"));
        copy_store(&root, &dir);
        dir
    };
    let batch_of = |seg: &Path| -> String {
        let bytes = std::fs::read(seg).unwrap();
        segment::parse_header(&bytes)
            .unwrap()
            .0
            .sealed
            .unwrap()
            .batch
    };
    let seg_key = key_of(&root, &segs[3]);
    let batch = batch_of(&segs[3]);

    // A pending batch altered: one event's verb changed (still valid, canonical JSON).
    let dir = case("altered");
    let file = dir.join(&batch);
    let text = std::fs::read_to_string(&file).unwrap();
    let altered = text.replacen("\"verb\":\"", "\"verb\":\"x", 1);
    assert_ne!(altered, text);
    std::fs::write(&file, altered).unwrap();
    let r = verify(&h, &dir, None).await;
    assert_eq!(
        kinds(&r),
        vec![FindingKind::BadPendingBatch, FindingKind::SealMismatch],
        "{}",
        r.summary()
    );
    assert!(
        r.findings
            .iter()
            .any(|f| f.object.as_deref() == Some(&batch))
    );
    assert!(
        r.findings
            .iter()
            .any(|f| f.object.as_deref() == Some(&seg_key))
    );

    // Its receipt time changed: the events still match the key, the bytes not the seal.
    let dir = case("received");
    let file = dir.join(&batch);
    let text = std::fs::read_to_string(&file).unwrap();
    let (head, rest) = text.split_once('\n').unwrap();
    let mut header: serde_json::Value = serde_json::from_str(head).unwrap();
    let ms = header["received_ms"].as_u64().unwrap();
    header["received_ms"] = (ms - 1).into();
    let head = sealtrail_core::jcs::canonicalize(header.to_string().as_bytes()).unwrap();
    std::fs::write(&file, [&head[..], b"\n", rest.as_bytes()].concat()).unwrap();
    let r = verify(&h, &dir, None).await;
    only(&r, FindingKind::SealMismatch, &seg_key);

    // A pending batch deleted.
    let dir = case("deleted");
    std::fs::remove_file(dir.join(&batch)).unwrap();
    let r = verify(&h, &dir, None).await;
    only(&r, FindingKind::SealBatchMissing, &seg_key);

    // A pending batch duplicated under another hour partition.
    let dir = case("duplicated");
    let (hour, name) = batch.rsplit_once('/').unwrap();
    let other_hour = if hour.ends_with("/23") { "22" } else { "23" };
    let moved = format!("{}/{other_hour}/{name}", &hour[..hour.len() - 3]);
    std::fs::create_dir_all(dir.join(&moved).parent().unwrap()).unwrap();
    std::fs::copy(dir.join(&batch), dir.join(&moved)).unwrap();
    let r = verify(&h, &dir, None).await;
    only(&r, FindingKind::BadPendingBatch, &moved);

    // A seal pointing at another batch.
    let dir = case("repointed");
    let other = batch_of(&segs[4]);
    let file = dir.join(&seg_key);
    set_header(&file, "batch", &format!("\"{other}\""));
    let r = verify(&h, &dir, None).await;
    only(&r, FindingKind::SealMismatch, &seg_key);
    // Its own batch is now without a seal: pending, then a finding past the grace.
    assert_eq!(r.sealing.batches_pending, 1);

    // A seal's proof altered: the line is named; its seal claim is not relied on.
    let dir = case("proof");
    let file = dir.join(&seg_key);
    let bytes = std::fs::read(&file).unwrap();
    let at = bytes
        .windows(10)
        .position(|w| w == b"\"proof\":[\"")
        .unwrap()
        + 10;
    let mut bytes = bytes;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&file, bytes).unwrap();
    let r = verify(&h, &dir, None).await;
    assert_eq!(
        kinds(&r),
        vec![FindingKind::LeafMismatch],
        "{}",
        r.summary()
    );

    // A seal's receipt time moved (to hide a late event): it no longer matches the batch.
    let dir = case("seal-received");
    let file = dir.join(&seg_key);
    set_header(&file, "received_ms", "1");
    let r = verify(&h, &dir, None).await;
    assert_eq!(
        kinds(&r),
        vec![FindingKind::SealMismatch],
        "{}",
        r.summary()
    );

    // A segment deleted whose batch is past the grace period: missing events, and an
    // acknowledged batch not in the log.
    let dir = case("unsealed");
    std::fs::remove_file(dir.join(&seg_key)).unwrap();
    let r = verify(&h, &dir, None).await;
    assert_eq!(
        kinds(&r),
        vec![FindingKind::MissingEvents],
        "{}",
        r.summary()
    );
    assert_eq!(
        r.sealing.batches_pending, 1,
        "within the grace: counted, not a finding"
    );
    let r = verify(&h, &dir, Some(Duration::ZERO)).await;
    let mut k = kinds(&r);
    k.sort();
    assert_eq!(
        k,
        vec![FindingKind::MissingEvents, FindingKind::UnsealedBatch],
        "{}",
        r.summary()
    );
    assert!(
        r.findings
            .iter()
            .any(|f| f.kind == FindingKind::UnsealedBatch && f.object.as_deref() == Some(&batch))
    );
    h.shutdown().await;
}

/// The signer stays away while batches are acknowledged into the spool; the ingester stops
/// (graceful shutdown cannot seal them); one spool record gets a flipped byte. At the next
/// start the damaged record is moved aside, counted and never sealed; the others are sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_spool_record_is_reported_and_not_sealed() {
    let mut h = Harness::start().await;
    h.stop_signer().await;
    let lines = event_lines();
    let mut cfg = h.emulator_config(40);
    cfg.retry.max_attempts = 1;
    let report = emulator::run(&cfg, &lines).await.unwrap();
    assert_eq!(report.batches_dropped, 0, "acknowledged without the signer");
    h.stop_ingester().await;
    let spool = h.spool_dir.clone().unwrap();
    let mut records: Vec<PathBuf> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    records.sort();
    assert_eq!(records.len() as u64, report.batches_ok);
    let victim = records[1].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x01;
    std::fs::write(&victim, &bytes).unwrap();
    let damaged_events = (bytes.iter().filter(|b| **b == b'\n').count() - 1) as u64;

    h.start_signer().await;
    h.start_ingester().await;
    h.wait_sealed().await;
    let (_, text) = http_get(h.ingester_metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(
        metric(&text, "sealtrail_ingester_spool_damaged_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        h.tree_size().await,
        222 - damaged_events,
        "the damaged batch is not sealed"
    );
    let name = victim.file_name().unwrap();
    assert!(spool.join("damaged").join(name).exists(), "kept aside");
    assert!(!victim.exists());
    h.shutdown().await;
}

/// A spool with no room: 503 with Retry-After, no spool record, no pending object, no leaf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_with_503_and_changes_nothing() {
    let mut h = Harness::start().await;
    h.stop_ingester().await;
    let limited = h.dir.path().join("small-spool");
    h.spool_dir = Some(limited.clone());
    // A spool of 1 KiB cannot hold a batch of three real events.
    h.spool_max_bytes = 1024;
    h.start_ingester().await;
    let client = emulator::client(&h.emulator_config(1)).unwrap();
    let body = emulator::build_batches(&v1_lines()[..3], 3)
        .unwrap()
        .remove(0);
    let resp = client.post(&h.webhook_url(), body.into()).await.unwrap();
    assert_eq!(resp.status, 503, "{}", String::from_utf8_lossy(&resp.body));
    assert!(resp.retry_after.is_some());
    let leftovers: Vec<_> = walk(&limited)
        .into_iter()
        .filter(|p| !p.starts_with(limited.join("damaged")))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(pending_files(&h.store_dir).is_empty());
    let (_, text) = http_get(h.ingester_metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(
        metric(&text, "sealtrail_ingester_spool_full_total"),
        Some(1.0)
    );
    assert_eq!(h.tree_size().await, 0);
    h.shutdown().await;
}

/// Unmounts a test file system even when the test fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// The disk under the spool full (a 1 MiB tmpfs; needs root, which CI has): the write fails
/// with ENOSPC, the request gets 503, and no half-written record is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_disk_that_is_full_gives_503_and_nothing_half_written() {
    let mut h = Harness::start().await;
    let mnt = h.dir.path().join("tmpfs-spool");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mount tmpfs (the test suite runs as root)"
    );
    let _unmount = Unmount(mnt.clone());
    // Leave less room than one batch needs (aside, where the spool never looks for records).
    std::fs::create_dir_all(mnt.join("damaged")).unwrap();
    let filler = mnt.join("damaged").join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4096", "count=1000"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    assert!(std::fs::metadata(&filler).unwrap().len() > 900 * 1024);
    h.stop_ingester().await;
    h.spool_dir = Some(mnt.clone());
    h.start_ingester().await;
    wait_listening(h.ingester_addr()).await;
    let client = emulator::client(&h.emulator_config(400)).unwrap();
    let body = emulator::build_batches(&v1_lines(), 400).unwrap().remove(0);
    assert!(body.len() > 64 * 1024);
    let resp = client.post(&h.webhook_url(), body.into()).await.unwrap();
    assert_eq!(resp.status, 503, "{}", String::from_utf8_lossy(&resp.body));
    let tmp: Vec<_> = walk(&mnt.join(".tmp"));
    assert!(tmp.is_empty(), "half-written record left: {tmp:?}");
    let records: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(records.is_empty(), "{records:?}");
    assert!(pending_files(&h.store_dir).is_empty());
    assert_eq!(h.tree_size().await, 0);
    h.shutdown().await;
}

/// The pending batch bytes the ingester stored are exactly the format's encoding of the
/// events it received, under the key the events give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_pending_batches_are_the_formats_bytes() {
    let h = Harness::start().await;
    let body = emulator::build_batches(&v1_lines()[..5], 5)
        .unwrap()
        .remove(0);
    let client = emulator::client(&h.emulator_config(5)).unwrap();
    let resp = client
        .post(&h.webhook_url(), body.clone().into())
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let answer: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    let key = answer["batch"].as_str().unwrap().to_string();
    let stored = h.store().get(&key).await.unwrap();
    let parsed = pending::parse(&stored).unwrap();
    let events = parse_event_list(&body).unwrap().events;
    assert_eq!(parsed.events, events);
    assert_eq!(
        pending::encode(parsed.received_ms, &events).unwrap().0,
        stored
    );
    assert_eq!(key, pending::object_key("", &events, parsed.received_ms));
    // The apiserver re-sends it (its answer lost): same key, nothing new, sealed once.
    let again = client.post(&h.webhook_url(), body.into()).await.unwrap();
    assert_eq!(again.status, 200);
    let second: serde_json::Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(second["batch"], answer["batch"]);
    assert_eq!(h.tree_size().await, 5);
    assert_eq!(pending_files(&h.store_dir).len(), 1);
    let r = verify(&h, &h.store_dir, None).await;
    assert!(r.intact(), "{}", r.summary());
    h.shutdown().await;
}
