//! `S3Store` against a real moto server (S3 with Object Lock).
//!
//! One moto server is shared by the tests of this binary (distinct bucket per test); the
//! outage test starts its own, since it stops it. moto deviations found here are listed
//! in the docs of `sealtrail_store::s3`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::error::ProvideErrorMetadata as _;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sealtrail_store::s3::{LockMode, S3ClientOptions, S3Config, S3Store};
use sealtrail_store::{ObjectStore, PutOutcome, RetentionMode, StoreError};
use sealtrail_tests::moto::{self, MotoServer};
use sha2::Digest as _;

const DAY: Duration = Duration::from_secs(86_400);

fn moto_server() -> &'static MotoServer {
    static MOTO: OnceLock<MotoServer> = OnceLock::new();
    MOTO.get_or_init(|| MotoServer::start().expect("starting moto (run scripts/test)"))
}

fn config(bucket: &str, endpoint: &str) -> S3Config {
    S3Config {
        bucket: bucket.to_string(),
        endpoint: Some(endpoint.to_string()),
        force_path_style: true,
        region: Some(moto::TEST_REGION.to_string()),
        lock_mode: LockMode::Compliance,
        retention: DAY,
    }
}

async fn lock_store(bucket: &str) -> (S3Store, aws_sdk_s3::Client) {
    let endpoint = &moto_server().endpoint;
    let client = moto::s3_client(endpoint).await;
    moto::create_lock_bucket(&client, bucket, None)
        .await
        .unwrap();
    let store = S3Store::with_client(client.clone(), config(bucket, endpoint));
    (store, client)
}

fn secs_between(a: SystemTime, b: SystemTime) -> u64 {
    a.duration_since(b)
        .unwrap_or_else(|e| e.duration())
        .as_secs()
}

#[tokio::test]
async fn create_new_lock_and_refused_changes() {
    let bucket = "st-create-new";
    let (store, client) = lock_store(bucket).await;
    store.check_object_lock().await.unwrap();
    let key = "audit/segments/2026/11/27/05/0-9.jsonl";
    let one = b"{\"a\":1}\n".to_vec();

    let before = SystemTime::now();
    assert_eq!(store.put_new(key, &one).await.unwrap(), PutOutcome::Created);
    let r = store.retention(key).await.unwrap();
    assert_eq!(r.mode, RetentionMode::Compliance);
    let until = r.retain_until.expect("retain-until set");
    assert!(
        secs_between(until, before + DAY) < 60,
        "retain-until {until:?} not within a minute of now + 1 day"
    );
    let version = r
        .version_id
        .clone()
        .expect("versioned bucket gives a version id");
    // The SDK sent a SHA-256 checksum with the PUT (Object Lock uploads require one).
    let head = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    let want = STANDARD.encode(sha2::Sha256::digest(&one));
    assert_eq!(head.checksum_sha256(), Some(want.as_str()), "{head:?}");
    assert_eq!(head.content_type(), Some("application/x-ndjson"));

    // A retried write with the same bytes; a different write.
    assert_eq!(
        store.put_new(key, &one).await.unwrap(),
        PutOutcome::AlreadyStored
    );
    match store.put_new(key, b"{\"a\":2}\n").await {
        Err(StoreError::Conflict(k)) => assert_eq!(k, key),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get(key).await.unwrap(), one);
    // Neither attempt created a version.
    let versions = client
        .list_object_versions()
        .bucket(bucket)
        .prefix(key)
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions().len(), 1, "{versions:?}");
    assert_eq!(
        store.retention(key).await.unwrap().version_id,
        Some(version.clone())
    );

    // moto honours If-None-Match: * on PutObject (412), as S3 does.
    let raw = client
        .put_object()
        .bucket(bucket)
        .key(key)
        .if_none_match("*")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from_static(b"other"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(raw.raw_response().map(|r| r.status().as_u16()), Some(412));
    assert_eq!(raw.code(), Some("PreconditionFailed"));

    // Deleting the locked version is refused.
    let del = client
        .delete_object()
        .bucket(bucket)
        .key(key)
        .version_id(&version)
        .send()
        .await
        .unwrap_err();
    assert_eq!(del.code(), Some("AccessDenied"), "{del:?}");
    // Even claiming the governance bypass (COMPLIANCE has none).
    let del = client
        .delete_object()
        .bucket(bucket)
        .key(key)
        .version_id(&version)
        .bypass_governance_retention(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(del.code(), Some("AccessDenied"), "{del:?}");
    assert_eq!(store.get(key).await.unwrap(), one);
}

/// What Object Lock alone does NOT prevent, in S3 and in moto alike: a writer that skips
/// `If-None-Match` creates a new current version (the locked one stays, readable by
/// version id), and a DELETE without a version id adds a delete marker. The store never
/// does either; the verifier reads the current version and reports the change or the
/// missing object. The IAM policy for the writer should allow only conditional PUTs
/// (`s3:if-none-match`) and no `s3:DeleteObject`.
#[tokio::test]
async fn object_lock_alone_allows_new_versions_and_delete_markers() {
    let bucket = "st-versions";
    let (store, client) = lock_store(bucket).await;
    let key = "k/seg.jsonl";
    store.put_new(key, b"original\n").await.unwrap();
    let v1 = store.retention(key).await.unwrap().version_id.unwrap();

    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from_static(b"replaced\n"))
        .send()
        .await
        .expect("a PUT without If-None-Match creates a new version");
    assert_eq!(store.get(key).await.unwrap(), b"replaced\n");
    let old = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .version_id(&v1)
        .send()
        .await
        .unwrap();
    let old = old.body.collect().await.unwrap().into_bytes();
    assert_eq!(&old[..], b"original\n", "the locked version is kept");
    // Now the store's retried write sees different bytes: Conflict, never an overwrite.
    assert!(matches!(
        store.put_new(key, b"original\n").await,
        Err(StoreError::Conflict(_))
    ));

    client
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("a DELETE without version id adds a delete marker");
    assert!(matches!(store.get(key).await, Err(StoreError::NotFound(_))));
    let versions = client
        .list_object_versions()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions().len(), 2);
    assert_eq!(versions.delete_markers().len(), 1);
}

#[tokio::test]
async fn get_prefix_and_list() {
    let bucket = "st-list";
    let (store, client) = lock_store(bucket).await;
    let key = "a/b/seg-1.jsonl";
    store.put_new(key, b"0123456789").await.unwrap();
    // moto honours Range (so get_prefix does not download whole segments).
    let ranged = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .range("bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.content_range(), Some("bytes 0-3/10"));
    assert_eq!(ranged.content_length(), Some(4));
    assert_eq!(store.get_prefix(key, 4).await.unwrap(), b"0123");
    assert_eq!(store.get_prefix(key, 1).await.unwrap(), b"0");
    assert_eq!(store.get_prefix(key, 10).await.unwrap(), b"0123456789");
    assert_eq!(store.get_prefix(key, 1000).await.unwrap(), b"0123456789");
    assert_eq!(store.get_prefix(key, 0).await.unwrap(), b"");
    store.put_new("a/b/empty", b"").await.unwrap();
    assert_eq!(store.get("a/b/empty").await.unwrap(), b"");
    assert_eq!(store.get_prefix("a/b/empty", 8).await.unwrap(), b"");
    for missing in ["a/b/nope", "z"] {
        assert!(matches!(
            store.get(missing).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.get_prefix(missing, 4).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.get_prefix(missing, 0).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.retention(missing).await,
            Err(StoreError::NotFound(_))
        ));
    }
    assert!(matches!(
        store.put_new("../x", b"x").await,
        Err(StoreError::InvalidKey(_))
    ));
    assert!(matches!(
        store.get("a//b").await,
        Err(StoreError::InvalidKey(_))
    ));

    let listed = store.list("a/").await.unwrap();
    let keys: Vec<_> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["a/b/empty", key]);
    assert_eq!(listed[1].size, 10);
    assert!(store.list("nothing/").await.unwrap().is_empty());
}

/// ListObjectsV2 pagination: 1,100 keys with S3's page size (1,000), written concurrently.
#[tokio::test]
async fn list_paginates() {
    let bucket = "st-paginate";
    let (store, _client) = lock_store(bucket).await;
    const N: usize = 1_100;
    let started = Instant::now();
    let store = std::sync::Arc::new(store);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            for i in (w..N).step_by(8) {
                let key = format!("p/{:02}/{i:05}.jsonl", i % 7);
                store.put_new(&key, i.to_string().as_bytes()).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    store.put_new("q/outside", b"x").await.unwrap();
    let wrote = started.elapsed();

    let listed = store.list("p/").await.unwrap();
    assert_eq!(listed.len(), N);
    assert!(listed.windows(2).all(|w| w[0].key < w[1].key), "sorted");
    let mut expected: Vec<String> = (0..N)
        .map(|i| format!("p/{:02}/{i:05}.jsonl", i % 7))
        .collect();
    expected.sort();
    let got: Vec<String> = listed.into_iter().map(|o| o.key).collect();
    assert_eq!(got, expected);

    // Small pages too (many continuation tokens).
    let small = S3Store::with_client(store.client().clone(), store.config().clone())
        .with_list_page_size(97);
    assert_eq!(
        small.list("p/03/").await.unwrap().len(),
        (0..N).filter(|i| i % 7 == 3).count()
    );
    assert_eq!(small.list("").await.unwrap().len(), N + 1);
    eprintln!(
        "list_paginates: wrote {N} objects in {wrote:?}, listed in {:?}",
        started.elapsed() - wrote
    );
}

#[tokio::test]
async fn check_object_lock_refuses_a_bucket_without_it() {
    let endpoint = &moto_server().endpoint;
    let client = moto::s3_client(endpoint).await;

    moto::create_plain_bucket(&client, "st-plain")
        .await
        .unwrap();
    let plain = S3Store::with_client(client.clone(), config("st-plain", endpoint));
    match plain.check_object_lock().await {
        Err(StoreError::Io(msg)) => {
            eprintln!("plain bucket: {msg}");
            assert!(msg.contains("does not have Object Lock enabled"), "{msg}");
        }
        other => panic!("expected an error, got {other:?}"),
    }

    let missing = S3Store::with_client(client.clone(), config("st-missing", endpoint));
    match missing.check_object_lock().await {
        Err(StoreError::Io(msg)) => {
            eprintln!("missing bucket: {msg}");
            assert!(msg.contains("does not exist"), "{msg}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(matches!(
        missing.put_new("k", b"x").await,
        Err(StoreError::Io(_))
    ));

    moto::create_lock_bucket(&client, "st-locked", Some(1))
        .await
        .unwrap();
    let locked = S3Store::with_client(client.clone(), config("st-locked", endpoint));
    locked.check_object_lock().await.unwrap();

    // GOVERNANCE works (with a warning) and is what the object gets.
    let mut gov_cfg = config("st-locked", endpoint);
    gov_cfg.lock_mode = LockMode::Governance;
    let gov = S3Store::with_client(client.clone(), gov_cfg);
    gov.check_object_lock().await.unwrap();
    gov.put_new("g/1", b"x").await.unwrap();
    assert_eq!(
        gov.retention("g/1").await.unwrap().mode,
        RetentionMode::Governance
    );

    let mut zero = config("st-locked", endpoint);
    zero.retention = Duration::ZERO;
    assert!(
        S3Store::with_client(client, zero)
            .check_object_lock()
            .await
            .is_err()
    );
}

/// `connect` builds a client from the default chain with the endpoint override; the
/// configuration is applied (no request is needed: credentials are resolved lazily).
#[tokio::test]
async fn connect_applies_the_config() {
    let endpoint = &moto_server().endpoint;
    let store = S3Store::connect(config("st-connect", endpoint))
        .await
        .unwrap();
    let conf = store.client().config();
    assert_eq!(conf.region().map(|r| r.as_ref()), Some(moto::TEST_REGION));
    let timeouts = conf.timeout_config().unwrap();
    assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(10)));
    assert_eq!(conf.retry_config().unwrap().max_attempts(), 3);
    assert!(
        store.describe().contains("s3://st-connect"),
        "{}",
        store.describe()
    );
}

#[tokio::test]
async fn unavailable_when_the_server_is_down() {
    // Its own server: this test stops it.
    let mut server = MotoServer::start().unwrap();
    let client = moto::s3_client(&server.endpoint).await;
    moto::create_lock_bucket(&client, "st-outage", None)
        .await
        .unwrap();
    // Short timeouts and few retries so that the outage is seen quickly.
    let short = S3ClientOptions {
        operation_timeout: Duration::from_secs(3),
        attempt_timeout: None,
        connect_timeout: Duration::from_millis(500),
        max_attempts: 2,
    };
    let short_client =
        aws_sdk_s3::Client::from_conf(short.apply(client.config().to_builder()).build());
    let store = S3Store::with_client(short_client, config("st-outage", &server.endpoint));
    // The product defaults (3 attempts with backoff, 10 s operation timeout).
    let default_client = aws_sdk_s3::Client::from_conf(
        S3ClientOptions::default()
            .apply(client.config().to_builder())
            .build(),
    );
    let default_store = S3Store::with_client(default_client, config("st-outage", &server.endpoint));
    store.put_new("o/1", b"one").await.unwrap();

    server.stop();
    let t = Instant::now();
    match store.put_new("o/2", b"two").await {
        Err(StoreError::Unavailable(msg)) => eprintln!("outage: {msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        store.get("o/1").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.list("o/").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let t = Instant::now();
    match default_store.put_new("o/2", b"two").await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    eprintln!(
        "outage: default options gave Unavailable after {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(12), "{:?}", t.elapsed());

    // A server that accepts connections and never answers: the operation timeout.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_endpoint = format!("http://{}", hung.local_addr().unwrap());
    let hung_client = aws_sdk_s3::Client::from_conf(
        short
            .apply(client.config().to_builder())
            .endpoint_url(&hung_endpoint)
            .build(),
    );
    let hung_store = S3Store::with_client(hung_client, config("st-outage", &hung_endpoint));
    let t = Instant::now();
    match hung_store.put_new("o/3", b"three").await {
        Err(StoreError::Unavailable(msg)) => {
            eprintln!("hung server: {msg} after {:?}", t.elapsed())
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    drop(hung);

    // Back on the same port, but moto keeps its state in memory: the bucket is gone, which
    // is a configuration error, not a transient one.
    server.restart_same_port().unwrap();
    match store.put_new("o/2", b"two").await {
        Err(StoreError::Io(msg)) => assert!(msg.contains("does not exist"), "{msg}"),
        other => panic!("expected Io (no such bucket), got {other:?}"),
    }
}

/// The store contract's answer (`ObjectStore::retention`, as the verifier asks it through
/// `dyn ObjectStore`) is what HeadObject reports: the lock the store put, and no lock for
/// an object written around the store without one.
#[tokio::test]
async fn retention_through_the_store_contract() {
    let bucket = "st-retention-contract";
    let (store, client) = lock_store(bucket).await;
    let store: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(store);
    let before = SystemTime::now();
    store.put_new("c/locked", b"x").await.unwrap();
    let r = store.retention("c/locked").await.unwrap();
    assert_eq!(r.mode, RetentionMode::Compliance);
    assert!(secs_between(r.retain_until.unwrap(), before + DAY) < 60);
    assert!(r.version_id.is_some());

    // A PUT without lock headers (the bucket has no default retention): not locked.
    client
        .put_object()
        .bucket(bucket)
        .key("c/unlocked")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .body(ByteStream::from_static(b"y"))
        .send()
        .await
        .unwrap();
    let r = store.retention("c/unlocked").await.unwrap();
    assert_eq!(r.mode, RetentionMode::None);
    assert_eq!(r.retain_until, None);
    assert!(matches!(
        store.retention("c/missing").await,
        Err(StoreError::NotFound(_))
    ));
}
