//! The AWS KMS key backend against a real moto server (`SEALTRAIL_MOTO_SERVER`, see
//! `sealtrail_tests::moto`): key checks at start, signatures that our verifier and the
//! openssl CLI accept, a log signed through KMS, and a KMS outage that fails Appends cleanly
//! without consuming an index.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sealtrail_tests::signing::assert_low_s_der;
use sealtrail_tests::softhsm::openssl_verifies;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use sealtrail_core::checkpoint::Checkpoint;
use sealtrail_core::keys::PublicKey;
use sealtrail_core::merkle::{self, Hash};
use sealtrail_core::trust::{SignatureVerdict, Trust, TrustBundle, TrustedKey};
use sealtrail_signer::kms::{KmsConfig, KmsKey};
use sealtrail_signer::state::State;
use sealtrail_signer::{CommitConfig, Error, KeyBackend, Log};
use sealtrail_tests::moto::{MotoServer, kms_client};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const ORIGIN: &str = "sealtrail.test/kms";

struct NewKey {
    id: String,
    arn: String,
}

async fn create_key(client: &aws_sdk_kms::Client, spec: KeySpec, usage: KeyUsageType) -> NewKey {
    let out = client
        .create_key()
        .key_spec(spec)
        .key_usage(usage)
        .description("sealtrail test key")
        .send()
        .await
        .expect("moto CreateKey");
    let meta = out.key_metadata().unwrap();
    NewKey {
        id: meta.key_id().to_string(),
        arn: meta.arn().unwrap().to_string(),
    }
}

async fn p256_key(client: &aws_sdk_kms::Client) -> NewKey {
    create_key(client, KeySpec::EccNistP256, KeyUsageType::SignVerify).await
}

fn config(key: &str, endpoint: &str) -> KmsConfig {
    KmsConfig {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        ..KmsConfig::new(key)
    }
}

fn sample_checkpoint(size: u64) -> Checkpoint {
    sealtrail_tests::signing::sample_checkpoint(ORIGIN, size)
}

fn leaf(i: u64) -> Hash {
    merkle::leaf_hash(format!("kms test leaf {i}").as_bytes())
}

fn trust_for(key: &PublicKey) -> Trust {
    Trust::from_bundle(TrustBundle::new(
        ORIGIN,
        vec![TrustedKey::new(ORIGIN, key, 0)],
    ))
    .unwrap()
}

#[tokio::test]
async fn connect_by_id_arn_and_alias_and_sign() {
    let moto = MotoServer::start().unwrap();
    let client = kms_client(&moto.endpoint).await;
    let key = p256_key(&client).await;
    client
        .create_alias()
        .alias_name("alias/sealtrail-test")
        .target_key_id(&key.id)
        .send()
        .await
        .unwrap();

    let mut publics = Vec::new();
    for name in [key.id.as_str(), key.arn.as_str(), "alias/sealtrail-test"] {
        let kms = KmsKey::with_client(client.clone(), config(name, &moto.endpoint))
            .await
            .unwrap_or_else(|e| panic!("connect by {name}: {e}"));
        assert_eq!(kms.kind(), "aws-kms");
        // Real KMS names the key by ARN, moto by bare id: either way the key, not the alias.
        assert!(
            kms.key_arn() == key.arn || kms.key_arn() == key.id,
            "signs with the resolved key, not {}",
            kms.key_arn()
        );
        let text = sample_checkpoint(7).to_text();
        let sig = kms.sign(&text).await.unwrap();
        kms.public_key().verify(&text, &sig).unwrap();
        assert!(kms.public_key().verify(b"other text\n", &sig).is_err());
        assert_low_s_der(&sig);
        publics.push(kms.public_key().clone());
    }
    assert!(
        publics.windows(2).all(|w| w[0] == w[1]),
        "same key whatever its name"
    );

    // Many signatures: moto (like KMS) returns either S; every one must come out low-S.
    let kms = KmsKey::with_client(client.clone(), config(&key.id, &moto.endpoint))
        .await
        .unwrap();
    let n = 50;
    let started = Instant::now();
    for i in 0..n {
        let text = sample_checkpoint(i).to_text();
        let sig = kms.sign(&text).await.unwrap();
        kms.public_key().verify(&text, &sig).unwrap();
        assert_low_s_der(&sig);
    }
    let per_sign = started.elapsed() / n as u32;
    println!("moto KMS Sign latency (sequential, incl. local verify): {per_sign:?} per signature");

    // RAW messages are limited to 4096 bytes: refused before calling KMS.
    let big = vec![b'a'; 4097];
    match kms.sign(&big).await {
        Err(Error::Key(m)) => assert!(m.contains("4096"), "{m}"),
        other => panic!("expected a Key error, got {other:?}"),
    }
    let ok = vec![b'a'; 4096];
    let sig = kms.sign(&ok).await.unwrap();
    kms.public_key().verify(&ok, &sig).unwrap();
}

#[tokio::test]
async fn openssl_verifies_kms_signatures() {
    let moto = MotoServer::start().unwrap();
    let client = kms_client(&moto.endpoint).await;
    let key = p256_key(&client).await;
    let kms = KmsKey::with_client(client, config(&key.id, &moto.endpoint))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = sample_checkpoint(222).to_text();
    let sig = kms.sign(&text).await.unwrap();
    assert!(openssl_verifies(dir.path(), &text, &sig, kms.public_key()));
    // And openssl rejects it over another text (the check can fail).
    let other = sample_checkpoint(223).to_text();
    assert!(!openssl_verifies(
        dir.path(),
        &other,
        &sig,
        kms.public_key()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_signed_through_kms() {
    let moto = MotoServer::start().unwrap();
    let client = kms_client(&moto.endpoint).await;
    let key = p256_key(&client).await;
    let kms = KmsKey::with_client(client, config(&key.arn, &moto.endpoint))
        .await
        .unwrap();
    let public = kms.public_key().clone();
    let trust = trust_for(&public);
    let dir = tempfile::tempdir().unwrap();
    let state = State::open(dir.path()).unwrap();
    let log = Log::start(state, ORIGIN, Arc::new(kms), CommitConfig::default()).unwrap();

    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for r in 0..4u64 {
                let leaves: Vec<Hash> = (0..(1 + (t + r) % 5))
                    .map(|i| leaf(t * 1000 + r * 10 + i))
                    .collect();
                let appended = log.append(leaves.clone()).await.unwrap();
                results.push((leaves, appended));
            }
            results
        }));
    }
    let mut total = 0u64;
    let mut indexes = Vec::new();
    for task in tasks {
        for (leaves, appended) in task.await.unwrap() {
            let cp = &appended.checkpoint;
            assert_eq!(
                trust.verify(cp),
                SignatureVerdict::Trusted {
                    key_ids: vec![public.key_id(ORIGIN)]
                }
            );
            public
                .verify(cp.text(), &cp.signatures[0].signature)
                .unwrap();
            assert_low_s_der(&cp.signatures[0].signature);
            assert_eq!(appended.proofs.len(), leaves.len());
            for (i, (l, proof)) in leaves.iter().zip(&appended.proofs).enumerate() {
                let index = appended.first_index + i as u64;
                merkle::verify_inclusion(index, cp.checkpoint.size, l, proof, &cp.checkpoint.root)
                    .unwrap();
                indexes.push(index);
            }
            total += leaves.len() as u64;
        }
    }
    indexes.sort_unstable();
    assert_eq!(
        indexes,
        (0..total).collect::<Vec<_>>(),
        "every index once, none skipped"
    );
    let latest = log.latest().unwrap().unwrap();
    assert_eq!(latest.checkpoint.size, total);
    assert!(matches!(
        trust.verify(&latest),
        SignatureVerdict::Trusted { .. }
    ));
}

#[tokio::test]
async fn wrong_keys_are_refused_at_start() {
    let moto = MotoServer::start().unwrap();
    let client = kms_client(&moto.endpoint).await;
    let cases = [
        (KeySpec::Rsa2048, KeyUsageType::SignVerify, "RSA_2048"),
        (
            KeySpec::EccSecgP256K1,
            KeyUsageType::SignVerify,
            "ECC_SECG_P256K1",
        ),
        (
            KeySpec::EccNistP384,
            KeyUsageType::SignVerify,
            "ECC_NIST_P384",
        ),
        (
            KeySpec::SymmetricDefault,
            KeyUsageType::EncryptDecrypt,
            "SYMMETRIC_DEFAULT",
        ),
    ];
    for (spec, usage, name) in cases {
        let key = create_key(&client, spec, usage).await;
        match KmsKey::with_client(client.clone(), config(&key.id, &moto.endpoint)).await {
            Err(Error::Config(m)) => {
                println!("{name}: {m}");
                assert!(m.contains(name), "{m}");
                assert!(m.contains("ECC_NIST_P256"), "says what is needed: {m}");
            }
            Err(e) => panic!("{name}: expected a Config error, got {e}"),
            Ok(_) => panic!("{name}: accepted"),
        }
    }

    for missing in [
        "alias/no-such-alias",
        "00000000-1111-2222-3333-444444444444",
    ] {
        match KmsKey::with_client(client.clone(), config(missing, &moto.endpoint)).await {
            Err(Error::Key(m)) => {
                println!("{missing}: {m}");
                assert!(m.contains(missing) && m.contains("no such key"), "{m}");
            }
            Err(e) => panic!("{missing}: expected a Key error, got {e}"),
            Ok(_) => panic!("{missing}: accepted"),
        }
    }

    // moto signs with a disabled key (a deviation from KMS, which answers
    // DisabledException), so the disabled-key answer is tested against canned KMS errors in
    // `kms_error_answers_are_classified`.
}

/// A fake KMS endpoint that answers every request with one canned JSON-protocol error, and
/// counts the requests. It tests how real KMS error answers (which moto cannot produce:
/// it enforces neither IAM nor key state nor rate limits) map to the signer's errors.
async fn canned_kms_error(
    status: u16,
    error_type: &'static str,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: headers, then Content-Length bytes of body.
                    let head_end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let body_len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + body_len {
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + body_len);
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let body = format!(
                        "{{\"__type\":\"{error_type}\",\"message\":\"canned {error_type}\"}}"
                    );
                    let response = format!(
                        "HTTP/1.1 {status} Canned\r\ncontent-type: application/x-amz-json-1.1\r\n\
                         x-amzn-requestid: canned\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, count)
}

#[tokio::test]
async fn kms_error_answers_are_classified() {
    // (status, error type, transient?, text the error must contain)
    let cases: [(u16, &str, bool, &str); 7] = [
        (400, "ThrottlingException", true, "ThrottlingException"),
        (500, "KMSInternalException", true, "KMSInternalException"),
        (
            500,
            "KeyUnavailableException",
            true,
            "KeyUnavailableException",
        ),
        (400, "AccessDeniedException", false, "kms:Sign"),
        (400, "DisabledException", false, "disabled"),
        (400, "KMSInvalidStateException", false, "pending deletion"),
        (400, "NotFoundException", false, "no such key"),
    ];
    for (status, error_type, transient, text) in cases {
        let (endpoint, count) = canned_kms_error(status, error_type).await;
        let started = Instant::now();
        let result = KmsKey::with_client(
            kms_client(&endpoint).await,
            KmsConfig {
                timeout: Duration::from_secs(20),
                max_attempts: 3,
                ..config("alias/sealtrail", &endpoint)
            },
        )
        .await;
        let requests = count.load(std::sync::atomic::Ordering::SeqCst);
        let took = started.elapsed();
        println!(
            "{error_type}: {requests} requests in {took:?}: {:?}",
            result.as_ref().err()
        );
        match (transient, result) {
            (true, Err(Error::Unavailable(m))) => {
                assert!(m.contains(text), "{m}");
                assert_eq!(requests, 3, "{error_type} is retried up to max_attempts");
            }
            (false, Err(Error::Key(m))) => {
                assert!(m.contains(text), "{m}");
                assert_eq!(requests, 1, "{error_type} is not retried");
            }
            (_, other) => panic!("{error_type}: unexpected {other:?}"),
        }
    }
}

/// A TCP forwarder to moto that the test can switch between forwarding, refusing (accept
/// then close at once) and hanging (accept, read, never answer). Switching away from
/// forwarding cuts the connections in flight, so the SDK's pooled connections die too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Forward,
    Close,
    Hang,
}

struct Forwarder {
    endpoint: String,
    mode: watch::Sender<Mode>,
}

impl Forwarder {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (mode, rx) = watch::channel(Mode::Forward);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let mut rx = rx.clone();
                let current = *rx.borrow_and_update();
                tokio::spawn(async move {
                    match current {
                        Mode::Close => drop(inbound),
                        Mode::Hang => {
                            let mut buf = vec![0u8; 65536];
                            loop {
                                use tokio::io::AsyncReadExt as _;
                                match inbound.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(_) => {}
                                }
                            }
                        }
                        Mode::Forward => {
                            let Ok(mut outbound) = TcpStream::connect(target).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = rx.wait_for(|m| *m != Mode::Forward) => {}
                            }
                        }
                    }
                });
            }
        });
        Self { endpoint, mode }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_outage_fails_appends_cleanly_and_recovers() {
    let moto = MotoServer::start().unwrap();
    let admin = kms_client(&moto.endpoint).await;
    let key = p256_key(&admin).await;
    let target: SocketAddr = moto.endpoint.trim_start_matches("http://").parse().unwrap();
    let fwd = Forwarder::start(target).await;

    let timeout = Duration::from_millis(1500);
    let kms = KmsKey::with_client(
        kms_client(&fwd.endpoint).await,
        KmsConfig {
            timeout,
            max_attempts: 2,
            ..config(&key.id, &fwd.endpoint)
        },
    )
    .await
    .unwrap();
    let kms = Arc::new(kms);
    let public = kms.public_key().clone();
    let trust = trust_for(&public);
    let dir = tempfile::tempdir().unwrap();
    let state = State::open(dir.path()).unwrap();
    let log = Log::start(state, ORIGIN, kms.clone(), CommitConfig::default()).unwrap();

    let before = log.append(vec![leaf(0), leaf(1), leaf(2)]).await.unwrap();
    assert_eq!(before.first_index, 0);
    let cp_before = log.latest().unwrap().unwrap();
    assert_eq!(cp_before.checkpoint.size, 3);

    for mode in [Mode::Close, Mode::Hang] {
        fwd.set(mode);
        // The backend itself: Unavailable, in bounded time.
        let started = Instant::now();
        match kms.sign(&sample_checkpoint(1).to_text()).await {
            Err(Error::Unavailable(m)) => println!("{mode:?}: sign: {m}"),
            other => panic!("{mode:?}: expected Unavailable, got {other:?}"),
        }
        let took = started.elapsed();
        println!("{mode:?}: sign failed after {took:?}");
        assert!(
            took < timeout + Duration::from_secs(2),
            "{mode:?}: took {took:?}"
        );

        // Through the log: the append fails, nothing moves.
        let started = Instant::now();
        match log.append(vec![leaf(100), leaf(101)]).await {
            Err(Error::Unavailable(m)) => println!("{mode:?}: append: {m}"),
            other => panic!("{mode:?}: expected Unavailable, got {other:?}"),
        }
        let took = started.elapsed();
        println!("{mode:?}: append failed after {took:?}");
        assert!(
            took < timeout + Duration::from_secs(2),
            "{mode:?}: took {took:?}"
        );
        let latest = log.latest().unwrap().unwrap();
        assert_eq!(
            latest.to_bytes(),
            cp_before.to_bytes(),
            "latest checkpoint unchanged"
        );
    }

    // KMS reachable again: the same log signs again, and the failed appends left no gap.
    fwd.set(Mode::Forward);
    let after = log.append(vec![leaf(3), leaf(4)]).await.unwrap();
    assert_eq!(
        after.first_index, 3,
        "no index consumed by the failed appends"
    );
    let cp = &after.checkpoint;
    assert_eq!(cp.checkpoint.size, 5);
    assert_eq!(
        cp.checkpoint.prev,
        Some(cp_before.hash()),
        "chain continues"
    );
    assert!(matches!(trust.verify(cp), SignatureVerdict::Trusted { .. }));
    for (i, proof) in after.proofs.iter().enumerate() {
        merkle::verify_inclusion(
            3 + i as u64,
            5,
            &leaf(3 + i as u64),
            proof,
            &cp.checkpoint.root,
        )
        .unwrap();
    }
    let proof = log.consistency_proof(3, 5).unwrap();
    merkle::verify_consistency(
        3,
        5,
        &cp_before.checkpoint.root,
        &cp.checkpoint.root,
        &proof,
    )
    .unwrap();
}

/// `KmsKey::connect` with the default credential chain. The chain reads the environment,
/// which a test cannot change in-process without `unsafe`: the test re-runs itself as a
/// child process with AWS_* variables set.
#[tokio::test]
async fn connect_with_default_credential_chain() {
    const CHILD: &str = "SEALTRAIL_KMS_TEST_CHILD";
    if let Ok(spec) = std::env::var(CHILD) {
        let (endpoint, key) = spec.split_once(' ').unwrap();
        let kms = KmsKey::connect(KmsConfig {
            endpoint: Some(endpoint.to_string()),
            region: None, // from AWS_REGION
            ..KmsConfig::new(key)
        })
        .await
        .unwrap();
        let text = sample_checkpoint(1).to_text();
        let sig = kms.sign(&text).await.unwrap();
        kms.public_key().verify(&text, &sig).unwrap();
        return;
    }
    let moto = MotoServer::start().unwrap();
    let client = kms_client(&moto.endpoint).await;
    let key = p256_key(&client).await;
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "connect_with_default_credential_chain",
            "--nocapture",
        ])
        .env(CHILD, format!("{} {}", moto.endpoint, key.id))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/sealtrail/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/sealtrail/aws-credentials",
        )
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
