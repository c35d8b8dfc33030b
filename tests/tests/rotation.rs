//! Key rotation end to end, on each key backend: half the real events signed by the old
//! key, a rotation checkpoint signed by both keys, the other half signed by the new key.
//! A verifier that pins only the old key proves the whole trail intact through the
//! published rotation checkpoint, as does one pinning the exported key history. Forgeries
//! around a rotation are each reported with their own kind: a rotation signed by one key
//! only, a missing rotation (the new key is then unlisted), the retired key signing after
//! the rotation. The old key cannot restart the log after the rotation.
//!
//! Backends: dev key files (through the `sealtrail-signer rotate` and `export-trust`
//! binaries), SoftHSM2 over PKCS#11 (two keys in one token) and AWS KMS on moto (two keys).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use sealtrail_core::checkpoint::{self, NoteSignature, SignedCheckpoint};
use sealtrail_core::keys::{Algorithm, PublicKey};
use sealtrail_core::segment;
use sealtrail_core::trust::{Trust, TrustBundle, TrustedKey};
use sealtrail_signer::state::State;
use sealtrail_signer::{DevKeyFile, KeyBackend, rotation};
use sealtrail_store::{LocalDirStore, ObjectStore as _};
use sealtrail_verifier::{FindingKind, Report};

async fn verify(dir: &Path, trust: &Trust) -> Report {
    let store = LocalDirStore::open(dir).unwrap();
    sealtrail_verifier::verify_store(&store, trust, &Default::default())
        .await
        .unwrap()
}

fn only_key(key: &PublicKey) -> Trust {
    Trust::from_bundle(TrustBundle::new(
        ORIGIN,
        vec![TrustedKey::new(ORIGIN, key, 0)],
    ))
    .unwrap()
}

/// The rotation checkpoint object in a store directory.
fn rotation_object(dir: &Path) -> std::path::PathBuf {
    let found: Vec<_> = walk(&dir.join("checkpoints"));
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// Rewrites a note file keeping only the signature by `keep`.
fn keep_signature(file: &Path, keep: u32) {
    let sc = SignedCheckpoint::parse(&std::fs::read(file).unwrap()).unwrap();
    let sigs: Vec<NoteSignature> = sc
        .signatures
        .iter()
        .filter(|s| s.key_id == keep)
        .cloned()
        .collect();
    assert_eq!(sigs.len(), 1);
    let one = SignedCheckpoint::new(sc.checkpoint.clone(), sigs).unwrap();
    std::fs::write(file, one.to_bytes()).unwrap();
}

/// The key ids that signed each segment's checkpoint, by first index.
fn signers_by_segment(dir: &Path) -> Vec<(u64, Vec<u32>)> {
    segments(dir)
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            let (h, _) = segment::parse_header(&bytes).unwrap();
            (
                h.first_index,
                h.checkpoint.signatures.iter().map(|s| s.key_id).collect(),
            )
        })
        .collect()
}

/// Re-signs the checkpoint in `file`'s header with `key` alone.
async fn resign_segment(file: &Path, key: &dyn KeyBackend) {
    let text = String::from_utf8(std::fs::read(file).unwrap()).unwrap();
    let (header, rest) = text.split_once('\n').unwrap();
    let mut v: serde_json::Value = serde_json::from_str(header).unwrap();
    let sc = SignedCheckpoint::parse(v["checkpoint"].as_str().unwrap().as_bytes()).unwrap();
    let signature = key.sign(sc.text()).await.unwrap();
    let forged = SignedCheckpoint::new(
        sc.checkpoint.clone(),
        vec![NoteSignature {
            name: ORIGIN.into(),
            key_id: key.public_key().key_id(ORIGIN),
            signature,
        }],
    )
    .unwrap();
    v["checkpoint"] = String::from_utf8(forged.to_bytes()).unwrap().into();
    let header = sealtrail_core::jcs::canonicalize(v.to_string().as_bytes()).unwrap();
    std::fs::write(
        file,
        format!("{}\n{rest}", String::from_utf8(header).unwrap()),
    )
    .unwrap();
}

/// Stops the harness's signer, rotates its state to `new` with the library (or lets
/// `cli` do it), publishes the rotation checkpoint into the store, restarts with `new`.
async fn rotate_in_process(h: &mut Harness, new: Arc<dyn KeyBackend>) -> SignedCheckpoint {
    h.stop_signer().await;
    let state = State::open_uncut(&h.state_dir).unwrap();
    let r = rotation::rotate(state, ORIGIN, h.key.as_ref(), new.as_ref(), None)
        .await
        .unwrap();
    h.store()
        .put_new(&checkpoint::object_key("", &r), &r.to_bytes())
        .await
        .unwrap();
    h.key = new;
    h.start_signer().await;
    wait_listening(h.signer_addr()).await;
    r
}

/// The checks common to every backend, after `rotation` split the 222 events in halves.
async fn check_rotated_trail(
    h: &Harness,
    old: &PublicKey,
    new: &PublicKey,
    rotation: &SignedCheckpoint,
) {
    let (old_id, new_id) = (old.key_id(ORIGIN), new.key_id(ORIGIN));
    let n = rotation.checkpoint.size;
    assert_eq!(n, 111);
    assert!(rotation.signed_by(ORIGIN, old) && rotation.signed_by(ORIGIN, new));

    // Events before the rotation are under old-key checkpoints, after it under new-key ones.
    for (first, ids) in signers_by_segment(&h.store_dir) {
        let want = if first < n { old_id } else { new_id };
        assert_eq!(ids, vec![want], "segment from index {first}");
    }

    // Pinning only the old key: the published rotation carries trust to the new key.
    let r = verify(&h.store_dir, &only_key(old)).await;
    assert!(r.intact(), "{}", r.summary());
    assert_eq!(r.events_verified, 222);

    // The key history the signer keeps (what export-trust writes) verifies it too.
    let history = rotation::read_key_history(&h.state_dir).unwrap().unwrap();
    assert_eq!(history.keys.len(), 2);
    assert_eq!(
        (
            history.keys[0].valid_from_size,
            history.keys[0].valid_to_size
        ),
        (0, Some(n))
    );
    assert_eq!(
        (
            history.keys[1].valid_from_size,
            history.keys[1].valid_to_size
        ),
        (n, None)
    );
    let bundle_trust = Trust::from_bundle(history).unwrap();
    let r = verify(&h.store_dir, &bundle_trust).await;
    assert!(r.intact(), "{}", r.summary());

    // Forgeries, each on a copy of the store.
    let work = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let d = work.path().join(name);
        copy_store(&h.store_dir, &d);
        d
    };
    let rot_key = checkpoint::object_key("", rotation);

    // A rotation signed by one key only (either one) is refused, where it is, and that
    // is the only finding: what the refused key signed is not trusted, not re-reported.
    for (case, keep) in [("new-only", new_id), ("old-only", old_id)] {
        let d = fresh(case);
        keep_signature(&rotation_object(&d), keep);
        let r = verify(&d, &only_key(old)).await;
        assert_eq!(r.findings.len(), 1, "{case}: {}", r.summary());
        assert_eq!(r.findings[0].kind, FindingKind::BadRotation, "{case}");
        assert_eq!(r.findings[0].object.as_deref(), Some(rot_key.as_str()));
        assert_eq!(r.findings[0].index, Some(n - 1));
    }

    // Without the rotation, the new key is not listed anywhere: its checkpoints are
    // untrusted (and the chain misses the rotation checkpoint).
    let d = fresh("no-rotation");
    std::fs::remove_file(rotation_object(&d)).unwrap();
    let r = verify(&d, &only_key(old)).await;
    assert!(
        r.findings
            .iter()
            .any(|f| f.kind == FindingKind::UntrustedKey && f.index.is_some_and(|i| i >= n)),
        "{}",
        r.summary()
    );
    assert!(
        r.findings
            .iter()
            .all(|f| matches!(f.kind, FindingKind::UntrustedKey | FindingKind::ChainBreak)),
        "{}",
        r.summary()
    );
    // Nor does a bundle of the new key alone accept the old half.
    let r = verify(&h.store_dir, &only_key(new)).await;
    assert!(!r.intact());
}

async fn replay_half(h: &Harness, second: bool) {
    let lines = event_lines();
    let half = if second { &lines[111..] } else { &lines[..111] };
    let report = replay(h, half, 400).await;
    assert_eq!(report.events_sent, 111);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_keys_rotate_through_the_cli() {
    let mut h = Harness::start().await;
    replay_half(&h, false).await;
    // An incremental verifier's state from before the rotation.
    let before = verify(&h.store_dir, &h.trust).await;
    assert!(before.intact(), "{}", before.summary());
    let state_before = before.state.clone().unwrap();
    let old_path = h.key_path.clone();
    let old = h.key.public_key().clone();
    let new_path = h.dir.path().join("signer-new.key");
    let new = DevKeyFile::generate(&new_path, Algorithm::Ed25519).unwrap();
    h.stop_signer().await;

    let (state_dir, store_dir) = (h.state_dir.clone(), h.store_dir.clone());
    let signer = |args: &[&str]| {
        let mut c = signer_command();
        c.args(args)
            .arg("--origin")
            .arg(ORIGIN)
            .arg("--state-dir")
            .arg(&state_dir);
        c
    };
    let rotate = |to: &Path| {
        signer(&["rotate", "--insecure-dev-key"])
            .arg("--dev-key")
            .arg(&old_path)
            .arg("--to")
            .arg(format!("dev:{}", to.display()))
            .arg("--publish")
            .arg(&store_dir)
            .output()
            .unwrap()
    };
    // Rotating to the current key is refused, and changes nothing.
    let same = rotate(&old_path);
    assert!(!same.status.success());
    assert!(
        walk(&h.store_dir)
            .iter()
            .all(|p| !p.starts_with(h.store_dir.join("checkpoints")))
    );
    let out = rotate(&new_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Run again (as after an interruption): the same rotation, published once.
    let again = rotate(&new_path);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let rotation =
        SignedCheckpoint::parse(&std::fs::read(rotation_object(&h.store_dir)).unwrap()).unwrap();
    assert!(rotation.is_rotation());

    // The retired key can no longer start the log.
    let refused = signer(&["serve", "--insecure-dev-key", "--listen", "127.0.0.1:0"])
        .arg("--dev-key")
        .arg(&old_path)
        .args(signer_tls(&h))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("only the new key may sign"), "{stderr}");

    // export-trust from the state directory: the key history with both ranges.
    let export = signer(&["export-trust"]).output().unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let exported = Trust::parse(&export.stdout).unwrap();
    assert_eq!(exported.bundle().keys.len(), 2);

    h.key = Arc::new(DevKeyFile::load(&new_path, true).unwrap());
    h.key_path = new_path;
    h.start_signer().await;
    wait_listening(h.signer_addr()).await;
    replay_half(&h, true).await;
    check_rotated_trail(&h, &old, &new, &rotation).await;

    // Re-run after the new key has signed more (to publish again): the same rotation.
    h.stop_signer().await;
    let again = rotate(&h.key_path);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(walk(&h.store_dir.join("checkpoints")).len(), 1);

    // Incremental: from the state saved before the rotation, only the new objects are
    // read, the rotation is learned and remembered, and the next run needs no new key.
    let store = LocalDirStore::open(&h.store_dir).unwrap();
    let incremental = |state| sealtrail_verifier::Options {
        state: Some(state),
        ..Default::default()
    };
    let r = sealtrail_verifier::verify_store(&store, &only_key(&old), &incremental(state_before))
        .await
        .unwrap();
    assert!(r.intact(), "{}", r.summary());
    assert!(r.segments_skipped > 0);
    let state_after = r.state.clone().unwrap();
    assert_eq!(state_after.rotations.len(), 1);
    let r = sealtrail_verifier::verify_store(&store, &only_key(&old), &incremental(state_after))
        .await
        .unwrap();
    assert!(r.intact(), "{}", r.summary());
    assert_eq!(r.segments_read, 0);
    assert_eq!(r.state.unwrap().rotations.len(), 1);

    // A holder of the retired key forges a second rotation at the same size, to a key of
    // theirs: refused (the retired key is not the current one), and it breaks the chain.
    let work = tempfile::tempdir().unwrap();
    copy_store(&h.store_dir, work.path());
    let old_key = DevKeyFile::load(&old_path, true).unwrap();
    let thief_path = h.dir.path().join("thief.key");
    let thief_public = DevKeyFile::generate(&thief_path, Algorithm::Ed25519).unwrap();
    let thief = DevKeyFile::load(&thief_path, true).unwrap();
    let forged = sealtrail_core::checkpoint::Checkpoint {
        time_ms: rotation.checkpoint.time_ms + 1,
        prev: Some(rotation.hash()),
        new_key: Some(thief_public),
        ..rotation.checkpoint.clone()
    };
    let text = forged.to_text();
    let mut signatures = Vec::new();
    for k in [&old_key as &dyn KeyBackend, &thief] {
        signatures.push(NoteSignature {
            name: ORIGIN.into(),
            key_id: k.public_key().key_id(ORIGIN),
            signature: k.sign(&text).await.unwrap(),
        });
    }
    let forged = SignedCheckpoint::new(forged, signatures).unwrap();
    let forged_key = checkpoint::object_key("", &forged);
    std::fs::write(work.path().join(&forged_key), forged.to_bytes()).unwrap();
    let r = verify(work.path(), &only_key(&old)).await;
    assert!(
        r.findings.iter().any(|f| f.kind == FindingKind::BadRotation
            && f.object.as_deref() == Some(forged_key.as_str())),
        "{}",
        r.summary()
    );
    assert!(
        r.findings
            .iter()
            .all(|f| matches!(f.kind, FindingKind::BadRotation | FindingKind::ChainBreak)),
        "{}",
        r.summary()
    );

    // The retired key signing past the rotation: a segment of the new half whose
    // checkpoint is re-signed by the old key alone.
    let work = tempfile::tempdir().unwrap();
    copy_store(&h.store_dir, work.path());
    let late = segments(work.path())
        .into_iter()
        .find(|p| {
            let (hd, _) = segment::parse_header(&std::fs::read(p).unwrap()).unwrap();
            hd.first_index >= rotation.checkpoint.size
        })
        .unwrap();
    let old_key = DevKeyFile::load(&old_path, true).unwrap();
    resign_segment(&late, &old_key).await;
    let r = verify(work.path(), &only_key(&old)).await;
    assert_eq!(r.findings.len(), 1, "{}", r.summary());
    assert_eq!(r.findings[0].kind, FindingKind::KeyOutOfRange);
    assert_eq!(
        r.findings[0].object.as_deref(),
        Some(key_of(work.path(), &late).as_str())
    );
    assert!(r.findings[0].detail.contains("retired by the rotation"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_keys_rotate_in_the_token() {
    use sealtrail_signer::pkcs11::{Pin, Pkcs11Config, Pkcs11Key};
    use sealtrail_tests::softhsm::{init_token, openssl_verifies_note, softhsm_child};
    const PIN: &str = "pin-Rotation-1234";
    let Some(module) = softhsm_child("pkcs11_keys_rotate_in_the_token", &[]) else {
        return;
    };
    init_token("sealtrail-rotation", PIN, "so-pin-Rotation-5678");
    let config = |label: &str| {
        Pkcs11Config::new(&module, "sealtrail-rotation", label, Pin::new(PIN).unwrap())
    };
    let old = Pkcs11Key::generate(&config("signing-2026"), Algorithm::EcdsaP256Sha256).unwrap();
    let new = Pkcs11Key::generate(&config("signing-2027"), Algorithm::EcdsaP256Sha256).unwrap();
    let mut h = Harness::start_custom(
        sealtrail_ingester::DEFAULT_MAX_BODY_BYTES,
        Some(Arc::new(Pkcs11Key::open(config("signing-2026")).unwrap())),
    )
    .await;
    replay_half(&h, false).await;
    let rotation = rotate_in_process(
        &mut h,
        Arc::new(Pkcs11Key::open(config("signing-2027")).unwrap()),
    )
    .await;
    replay_half(&h, true).await;
    check_rotated_trail(&h, &old, &new, &rotation).await;
    // Both signatures of the rotation also verify with openssl.
    let dir = tempfile::tempdir().unwrap();
    assert!(openssl_verifies_note(dir.path(), &rotation, &old));
    assert!(openssl_verifies_note(dir.path(), &rotation, &new));
    h.shutdown().await;
}

/// Two P-256 signing keys in the KMS of the moto server at `endpoint`.
async fn two_kms_keys(endpoint: &str) -> Vec<Arc<sealtrail_signer::kms::KmsKey>> {
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    use sealtrail_signer::kms::{KmsConfig, KmsKey};
    let client = sealtrail_tests::moto::kms_client(endpoint).await;
    let mut keys = Vec::new();
    for _ in 0..2 {
        let out = client
            .create_key()
            .key_spec(KeySpec::EccNistP256)
            .key_usage(KeyUsageType::SignVerify)
            .send()
            .await
            .unwrap();
        let config = KmsConfig {
            endpoint: Some(endpoint.to_string()),
            region: Some("us-east-1".into()),
            ..KmsConfig::new(out.key_metadata().unwrap().key_id())
        };
        keys.push(Arc::new(
            KmsKey::with_client(client.clone(), config).await.unwrap(),
        ));
    }
    keys
}

/// KMS on moto and the trail in an S3 Object Lock bucket on moto: the rotation is published
/// into the bucket, the verifier reads only the bucket; a rotation object overwritten (a new
/// version on top of the locked one) with one signature only is a `bad_rotation`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_keys_rotate_with_the_trail_in_s3() {
    use sealtrail_store::s3::{S3Config, S3Store};
    use sealtrail_tests::moto::{MotoServer, create_lock_bucket, s3_client};
    const PREFIX: &str = "cluster-1/";
    let moto = MotoServer::start().unwrap();
    let keys = two_kms_keys(&moto.endpoint).await;
    let (old, new) = (keys[0].public_key().clone(), keys[1].public_key().clone());
    let s3 = s3_client(&moto.endpoint).await;
    create_lock_bucket(&s3, "audit-trail", None).await.unwrap();
    let mut cfg = S3Config::new("audit-trail", std::time::Duration::from_secs(86_400));
    cfg.endpoint = Some(moto.endpoint.clone());
    cfg.force_path_style = true;
    let store = Arc::new(S3Store::with_client(s3.clone(), cfg));
    let mut h = Harness::start_full(
        sealtrail_ingester::DEFAULT_MAX_BODY_BYTES,
        Some(keys[0].clone()),
        Some((store.clone(), PREFIX.into())),
    )
    .await;
    replay_half(&h, false).await;
    h.stop_signer().await;
    let state = State::open_uncut(&h.state_dir).unwrap();
    let rotation = rotation::rotate(state, ORIGIN, keys[0].as_ref(), keys[1].as_ref(), None)
        .await
        .unwrap();
    let rot_key = checkpoint::object_key(PREFIX, &rotation);
    store.put_new(&rot_key, &rotation.to_bytes()).await.unwrap();
    h.key = keys[1].clone();
    h.start_signer().await;
    wait_listening(h.signer_addr()).await;
    replay_half(&h, true).await;
    assert!(rotation.signed_by(ORIGIN, &old) && rotation.signed_by(ORIGIN, &new));

    let options = sealtrail_verifier::Options {
        prefix: PREFIX.into(),
        ..Default::default()
    };
    let r = sealtrail_verifier::verify_store(store.as_ref(), &only_key(&old), &options)
        .await
        .unwrap();
    assert!(r.intact(), "{}", r.summary());
    assert_eq!(r.events_verified, 222);
    let history = rotation::read_key_history(&h.state_dir).unwrap().unwrap();
    let r = sealtrail_verifier::verify_store(
        store.as_ref(),
        &Trust::from_bundle(history).unwrap(),
        &options,
    )
    .await
    .unwrap();
    assert!(r.intact(), "{}", r.summary());

    // The rotation object replaced by a version signed by the new key alone.
    let forged = SignedCheckpoint::new(
        rotation.checkpoint.clone(),
        rotation
            .signatures
            .iter()
            .filter(|s| s.key_id == new.key_id(ORIGIN))
            .cloned()
            .collect(),
    )
    .unwrap();
    s3.put_object()
        .bucket("audit-trail")
        .key(&rot_key)
        .body(forged.to_bytes().into())
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap();
    let r = sealtrail_verifier::verify_store(store.as_ref(), &only_key(&old), &options)
        .await
        .unwrap();
    assert_eq!(r.findings.len(), 1, "{}", r.summary());
    assert_eq!(r.findings[0].kind, FindingKind::BadRotation);
    assert_eq!(r.findings[0].object.as_deref(), Some(rot_key.as_str()));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_keys_rotate() {
    use sealtrail_tests::moto::MotoServer;
    let moto = MotoServer::start().unwrap();
    let keys = two_kms_keys(&moto.endpoint).await;
    let (old, new) = (keys[0].public_key().clone(), keys[1].public_key().clone());
    let mut h = Harness::start_custom(
        sealtrail_ingester::DEFAULT_MAX_BODY_BYTES,
        Some(keys[0].clone()),
    )
    .await;
    replay_half(&h, false).await;
    let rotation = rotate_in_process(&mut h, keys[1].clone()).await;
    replay_half(&h, true).await;
    check_rotated_trail(&h, &old, &new, &rotation).await;
    h.shutdown().await;
}

/// The signer is stopped for a rotation while the apiserver keeps sending (its real retry
/// policy, live timestamps): every batch is acknowledged during the rotation, none is
/// dropped, and after the signer returns with the new key every event is in the log once,
/// under old-key checkpoints before the rotation and new-key ones after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_while_events_arrive_loses_nothing() {
    use sealtrail_tests::emulator::{self, RetryPolicy};
    let mut h = Harness::start().await;
    let old = h.key.public_key().clone();
    let new_path = h.dir.path().join("new.key");
    DevKeyFile::generate(&new_path, Algorithm::Ed25519).unwrap();
    let new: Arc<dyn KeyBackend> = Arc::new(DevKeyFile::load(&new_path, true).unwrap());
    let lines = emulator::repeat_events(&event_lines(), 2).unwrap();
    let mut cfg = h.emulator_config(20);
    cfg.qps = Some(4.0);
    cfg.burst = 1;
    cfg.retry = RetryPolicy::default();
    cfg.restamp = true;
    let replay = tokio::spawn(async move { emulator::run(&cfg, &lines).await.unwrap() });
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let rotation = rotate_in_process(&mut h, new.clone()).await;
    let report = replay.await.unwrap();
    assert_eq!(report.batches_dropped, 0, "{}", report.summary());
    assert_eq!(
        report.status_counts.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "{}",
        report.summary()
    );
    assert_eq!(h.tree_size().await, 444);
    let n = rotation.checkpoint.size;
    assert!(n > 0 && n < 444, "rotated mid-stream at {n}");
    let (old_id, new_id) = (old.key_id(ORIGIN), new.public_key().key_id(ORIGIN));
    for (first, ids) in signers_by_segment(&h.store_dir) {
        let want = if first < n { old_id } else { new_id };
        assert_eq!(ids, vec![want], "segment from index {first}");
    }
    let r = verify(&h.store_dir, &only_key(&old)).await;
    assert!(r.intact(), "{}", r.summary());
    assert_eq!(r.events_verified, 444);
    h.shutdown().await;
}
