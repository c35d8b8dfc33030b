//! A signer and an ingester on loopback (real mTLS, real files), for the end-to-end tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sealtrail_core::checkpoint::{Checkpoint, NoteSignature, SignedCheckpoint};
use sealtrail_core::event::CanonicalEvent;
use sealtrail_core::keys::Algorithm;
use sealtrail_core::merkle::MemoryLog;
use sealtrail_core::segment;
use sealtrail_core::trust::{Trust, TrustBundle, TrustedKey};
use sealtrail_ingester::signer_client::SignerClientConfig;
use sealtrail_proto::v1::LatestCheckpointRequest;
use sealtrail_signer::{CommitConfig, DevKeyFile, KeyBackend, TlsFiles};
use sealtrail_store::s3::{S3Config, S3Store};
use sealtrail_store::{LocalDirStore, ObjectStore};
use sealtrail_tests::emulator::{self, EmulatorConfig, RetryPolicy};
use sealtrail_tests::moto::create_lock_bucket;
use sealtrail_tests::pki::{self, PkiOptions, PkiPaths};
use sealtrail_verifier::{GrpcSigner, SignerConfig, SignerSource};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ORIGIN: &str = "sealtrail.test/cluster-1";

pub fn events_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/k8s-audit/events.jsonl")
}

pub fn event_lines() -> Vec<Vec<u8>> {
    std::fs::read(events_path())
        .expect("the sample events (testdata/k8s-audit/events.jsonl)")
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The sample events of apiVersion `audit.k8s.io/v1` (175 of 222): the apiserver batches
/// events of one version together, so these make full batches.
pub fn v1_lines() -> Vec<Vec<u8>> {
    event_lines()
        .into_iter()
        .filter(|l| {
            l.windows(30)
                .any(|w| w == br#""apiVersion":"audit.k8s.io/v1""#)
        })
        .collect()
}

struct Service {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Service {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub pki: PkiPaths,
    /// The dev key file (used unless another backend was given).
    pub key_path: PathBuf,
    /// The signing key the signer uses.
    pub key: Arc<dyn KeyBackend>,
    pub state_dir: PathBuf,
    pub store_dir: PathBuf,
    pub trust: Trust,
    pub max_body_bytes: usize,
    signer: Option<Service>,
    ingester: Option<Service>,
    signer_addr: Option<SocketAddr>,
    /// The signer's /metrics, /healthz, /readyz address (plain HTTP).
    pub signer_metrics_addr: Option<SocketAddr>,
    /// The ingester's.
    pub ingester_metrics_addr: Option<SocketAddr>,
    /// Ingester's client allowlist (empty: any certificate from the CA).
    pub allowed_clients: Vec<String>,
    /// Ingester limits, applied at its next start.
    pub max_in_flight_requests: usize,
    pub body_timeout: Duration,
    pub bearer_token: Option<String>,
    /// The ingester's store and prefix, if not the local directory.
    pub store_override: Option<(Arc<dyn ObjectStore>, String)>,
    /// The ingester's spool (on by default, as deployed) and its bound.
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: u64,
}

impl Harness {
    /// Both services up, with a fresh dev key and an empty log.
    pub async fn start() -> Self {
        Self::start_with(sealtrail_ingester::DEFAULT_MAX_BODY_BYTES).await
    }

    pub async fn start_with(max_body_bytes: usize) -> Self {
        Self::start_custom(max_body_bytes, None).await
    }

    /// Both services up, the signer signing with `key` (a fresh dev key if `None`), and a
    /// trust bundle of that key.
    pub async fn start_custom(max_body_bytes: usize, key: Option<Arc<dyn KeyBackend>>) -> Self {
        Self::start_full(max_body_bytes, key, None).await
    }

    /// Both services up, the ingester writing to `store` (under its prefix) instead of the
    /// local directory.
    pub async fn start_full(
        max_body_bytes: usize,
        key: Option<Arc<dyn KeyBackend>>,
        store: Option<(Arc<dyn ObjectStore>, String)>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki::generate(&dir.path().join("pki"), &PkiOptions::default()).unwrap();
        let key_path = dir.path().join("signer-dev.key");
        let key = match key {
            Some(k) => k,
            None => {
                DevKeyFile::generate(&key_path, Algorithm::EcdsaP256Sha256).unwrap();
                Arc::new(DevKeyFile::load(&key_path, true).unwrap())
            }
        };
        let trust = Trust::from_bundle(TrustBundle::new(
            ORIGIN,
            vec![TrustedKey::new(ORIGIN, key.public_key(), 0)],
        ))
        .unwrap();
        let mut h = Self {
            state_dir: dir.path().join("signer-state"),
            store_dir: dir.path().join("store"),
            dir,
            pki,
            key_path,
            key,
            trust,
            max_body_bytes,
            signer: None,
            ingester: None,
            signer_addr: None,
            signer_metrics_addr: None,
            ingester_metrics_addr: None,
            allowed_clients: vec!["kube-apiserver".into()],
            max_in_flight_requests: sealtrail_ingester::DEFAULT_MAX_IN_FLIGHT_REQUESTS,
            body_timeout: sealtrail_ingester::DEFAULT_BODY_TIMEOUT,
            bearer_token: None,
            store_override: store,
            spool_dir: None,
            spool_max_bytes: sealtrail_ingester::DEFAULT_SPOOL_MAX_BYTES,
        };
        h.spool_dir = Some(h.dir.path().join("spool"));
        h.start_signer().await;
        h.start_ingester().await;
        h
    }

    pub async fn start_signer(&mut self) {
        let listener = match self.signer_addr {
            // Same address after a restart: the ingester keeps its configuration.
            Some(addr) => bind_retry(addr).await,
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let addr = listener.local_addr().unwrap();
        self.signer_addr = Some(addr);
        let key = self.key.clone();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.signer_metrics_addr = Some(metrics.local_addr().unwrap());
        let config = sealtrail_signer::Config {
            origin: ORIGIN.into(),
            state_dir: self.state_dir.clone(),
            key,
            tls: TlsFiles {
                cert: self.pki.signer_cert.clone(),
                key: self.pki.signer_key.clone(),
                client_ca: self.pki.ca_cert.clone(),
            },
            commit: CommitConfig::default(),
            identities: Default::default(),
            metrics_listener: Some(metrics),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            sealtrail_signer::run(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("signer");
        });
        self.signer = Some(Service {
            addr,
            stop: Some(stop),
            task,
        });
    }

    pub async fn stop_signer(&mut self) {
        if let Some(s) = self.signer.take() {
            s.stop().await;
        }
    }

    pub fn signer_addr(&self) -> SocketAddr {
        self.signer_addr.unwrap()
    }

    pub async fn start_ingester(&mut self) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.ingester_metrics_addr = Some(metrics.local_addr().unwrap());
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match &self.store_override {
            Some((s, p)) => (s.clone(), p.clone()),
            None => (
                Arc::new(LocalDirStore::open(&self.store_dir).unwrap()),
                String::new(),
            ),
        };
        let mut config = sealtrail_ingester::Config::new(
            ORIGIN.into(),
            store,
            self.signer_client_config(),
            sealtrail_ingester::ServerTls {
                cert: self.pki.ingester_server_cert.clone(),
                key: self.pki.ingester_server_key.clone(),
                client_ca: self.pki.ca_cert.clone(),
            },
        );
        config.max_body_bytes = self.max_body_bytes;
        config.prefix = prefix;
        config.metrics_listener = Some(metrics);
        config.allowed_clients = self.allowed_clients.clone();
        config.max_in_flight_requests = self.max_in_flight_requests;
        config.body_timeout = self.body_timeout;
        config.bearer_token = self.bearer_token.clone();
        config.spool_dir = self.spool_dir.clone();
        config.spool_max_bytes = self.spool_max_bytes;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            sealtrail_ingester::run(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("ingester");
        });
        self.ingester = Some(Service {
            addr,
            stop: Some(stop),
            task,
        });
    }

    pub async fn stop_ingester(&mut self) {
        if let Some(s) = self.ingester.take() {
            s.stop().await;
        }
    }

    /// Signals the ingester to shut down and returns at once; the handle ends when it has
    /// drained its in-flight requests.
    pub fn signal_ingester_stop(&mut self) -> JoinHandle<()> {
        let mut s = self.ingester.take().expect("ingester running");
        if let Some(stop) = s.stop.take() {
            let _ = stop.send(());
        }
        s.task
    }

    pub fn ingester_addr(&self) -> SocketAddr {
        self.ingester.as_ref().unwrap().addr
    }

    pub fn signer_client_config(&self) -> SignerClientConfig {
        SignerClientConfig {
            url: format!("https://{}", self.signer_addr()),
            ca: self.pki.ca_cert.clone(),
            cert: self.pki.ingester_client_cert.clone(),
            key: self.pki.ingester_client_key.clone(),
            server_name: Some("localhost".into()),
            timeout: Duration::from_secs(10),
        }
    }

    pub fn webhook_url(&self) -> String {
        format!(
            "https://{}{}",
            self.ingester.as_ref().unwrap().addr,
            sealtrail_ingester::WEBHOOK_PATH
        )
    }

    pub fn store(&self) -> LocalDirStore {
        LocalDirStore::open(&self.store_dir).unwrap()
    }

    /// The apiserver emulator, with the apiserver's behaviour but short backoffs.
    pub fn emulator_config(&self, max_batch: usize) -> EmulatorConfig {
        EmulatorConfig {
            url: self.webhook_url(),
            ca: self.pki.ca_cert.clone(),
            cert: self.pki.apiserver_client_cert.clone(),
            key: self.pki.apiserver_client_key.clone(),
            max_batch,
            qps: None,
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(200),
                factor: 1.5,
                max_attempts: 5,
            },
            ..EmulatorConfig::default()
        }
    }

    /// The signer's newest checkpoint (as a verifier identity would ask for it).
    pub async fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        let mut cfg = self.signer_client_config();
        cfg.cert = self.pki.verifier_client_cert.clone();
        cfg.key = self.pki.verifier_client_key.clone();
        let mut client = sealtrail_ingester::signer_client::connect(&cfg).unwrap();
        match client.latest_checkpoint(LatestCheckpointRequest {}).await {
            Ok(r) => Some(SignedCheckpoint::parse(&r.into_inner().checkpoint).unwrap()),
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => panic!("LatestCheckpoint: {s}"),
        }
    }

    /// Waits until the ingester has sealed every batch it acknowledged.
    pub async fn wait_sealed(&self) {
        if self.ingester.is_some() {
            wait_sealed_at(self.ingester_metrics_addr.expect("ingester metrics")).await;
        }
    }

    /// The signer's tree size once the running ingester has sealed what it acknowledged.
    pub async fn tree_size(&self) -> u64 {
        self.wait_sealed().await;
        self.latest_checkpoint()
            .await
            .map_or(0, |c| c.checkpoint.size)
    }

    pub async fn object_count(&self) -> usize {
        self.store().list("").await.unwrap().len()
    }

    pub async fn verify_dir(&self, dir: &Path) -> sealtrail_verifier::Report {
        let store = LocalDirStore::open(dir).unwrap();
        sealtrail_verifier::verify_store(&store, &self.trust, &Default::default())
            .await
            .unwrap()
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.ingester.take() {
            s.stop().await;
        }
        self.stop_signer().await;
    }
}

/// The harness's signer as the verifier's `--signer` reaches it.
pub fn signer_of(h: &Harness) -> Arc<dyn SignerSource> {
    Arc::new(
        GrpcSigner::connect(&SignerConfig {
            url: format!("https://{}", h.signer_addr()),
            ca: h.pki.ca_cert.clone(),
            cert: h.pki.verifier_client_cert.clone(),
            key: h.pki.verifier_client_key.clone(),
            server_name: Some("localhost".into()),
            timeout: Duration::from_secs(10),
        })
        .unwrap(),
    )
}

/// A new Object Lock bucket on the moto server at `endpoint`, and a store on it that writes
/// as the ingester does (create-new, COMPLIANCE for `retention`).
pub async fn lock_bucket_store(
    client: &aws_sdk_s3::Client,
    endpoint: &str,
    bucket: &str,
    retention: Duration,
) -> Arc<S3Store> {
    create_lock_bucket(client, bucket, None).await.unwrap();
    let mut cfg = S3Config::new(bucket, retention);
    cfg.endpoint = Some(endpoint.to_string());
    cfg.force_path_style = true;
    Arc::new(S3Store::with_client(client.clone(), cfg))
}

async fn bind_retry(addr: SocketAddr) -> tokio::net::TcpListener {
    for _ in 0..100 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not bind {addr} again");
}

/// Replays events through the emulator and asserts every batch was acknowledged.
pub async fn replay(h: &Harness, lines: &[Vec<u8>], max_batch: usize) -> emulator::EmulatorReport {
    let report = emulator::run(&h.emulator_config(max_batch), lines)
        .await
        .unwrap();
    assert_eq!(report.batches_dropped, 0, "{report:?}");
    h.wait_sealed().await;
    report
}

/// A harness whose ingester writes to an Object Lock bucket on moto through a TCP proxy
/// (switch it off for a store outage; a restarted moto would lose its state), and a reader
/// of the same bucket that bypasses the proxy.
pub struct ProxiedS3 {
    pub moto: sealtrail_tests::moto::MotoServer,
    pub proxy: sealtrail_tests::proxy::Proxy,
    pub h: Harness,
    pub reader: S3Store,
}

pub const PROXIED_PREFIX: &str = "c1/";

impl ProxiedS3 {
    pub async fn start() -> Self {
        use sealtrail_store::s3::S3ClientOptions;
        use sealtrail_tests::moto::{MotoServer, s3_client};
        let moto = MotoServer::start().unwrap();
        let direct = s3_client(&moto.endpoint).await;
        create_lock_bucket(&direct, "trail", None).await.unwrap();
        let upstream = format!("127.0.0.1:{}", moto.port).parse().unwrap();
        let proxy = sealtrail_tests::proxy::Proxy::start(upstream)
            .await
            .unwrap();
        let mut cfg = S3Config::new("trail", Duration::from_secs(86_400));
        cfg.endpoint = Some(format!("http://{}", proxy.addr));
        cfg.force_path_style = true;
        cfg.region = Some("us-east-1".into());
        let via_proxy = s3_client(&format!("http://{}", proxy.addr)).await;
        let opts = S3ClientOptions {
            operation_timeout: Duration::from_secs(2),
            max_attempts: 2,
            ..S3ClientOptions::default()
        };
        let via_proxy =
            aws_sdk_s3::Client::from_conf(opts.apply(via_proxy.config().to_builder()).build());
        let store = Arc::new(S3Store::with_client(via_proxy, cfg.clone()));
        let h = Harness::start_full(
            sealtrail_ingester::DEFAULT_MAX_BODY_BYTES,
            None,
            Some((store, PROXIED_PREFIX.into())),
        )
        .await;
        let reader = S3Store::with_client(direct, cfg);
        Self {
            moto,
            proxy,
            h,
            reader,
        }
    }
}

/// Waits until the ingester whose metrics listen at `addr` has sealed every batch it
/// acknowledged (120 s at most).
pub async fn wait_sealed_at(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = http_get(addr, "/metrics").await;
        if metric(&body, "sealtrail_ingester_pending_batches") == Some(0.0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "batches still unsealed after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A metric's value in Prometheus text (the first sample of that name without labels).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A writable copy of a store directory, to tamper with.
pub fn copy_store(from: &Path, to: &Path) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &dest).unwrap();
        let mut perms = std::fs::metadata(&dest).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&dest, perms).unwrap();
    }
}

/// Every file under `dir`, sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Segment files of a store directory, in key order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    walk(&dir.join("segments"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect()
}

/// The key of a segment file relative to the store root.
pub fn key_of(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

/// A plain HTTP/1.1 GET; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A workspace binary built next to this test (`cargo test --workspace` builds the
/// binaries of every crate that has integration tests).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        bin.exists(),
        "{} not built: run cargo test --workspace",
        bin.display()
    );
    bin
}

/// The `sealtrail-signer` binary, without the backend choices of the environment (they
/// would clash with the key a test gives).
pub fn signer_command() -> std::process::Command {
    let mut c = std::process::Command::new(binary("sealtrail-signer"));
    c.env_remove("SEALTRAIL_PKCS11_MODULE")
        .env_remove("SEALTRAIL_KMS_KEY")
        .env_remove("SEALTRAIL_DEV_KEY");
    c
}

/// `--tls-cert`, `--tls-key` and `--client-ca` of the harness's signer.
pub fn signer_tls(h: &Harness) -> Vec<std::ffi::OsString> {
    let mut args = Vec::new();
    for (flag, path) in [
        ("--tls-cert", &h.pki.signer_cert),
        ("--tls-key", &h.pki.signer_key),
        ("--client-ca", &h.pki.ca_cert),
    ] {
        args.push(flag.into());
        args.push(path.into());
    }
    args
}

/// The signer as a real process on the harness's signer address and state directory.
pub fn spawn_signer(h: &Harness) -> std::process::Child {
    signer_command()
        .args([
            "serve",
            "--origin",
            ORIGIN,
            "--listen",
            &h.signer_addr().to_string(),
        ])
        .arg("--state-dir")
        .arg(&h.state_dir)
        .args(signer_tls(h))
        .arg("--dev-key")
        .arg(&h.key_path)
        .arg("--insecure-dev-key")
        .args(["--min-commit-interval-ms", "1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(signer_log(h))
        .spawn()
        .unwrap()
}

/// The signer processes' standard error, appended to `signer.log` in the harness directory
/// (shown by [`wait_signer`] when a signer does not come up).
fn signer_log(h: &Harness) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(h.dir.path().join("signer.log"))
        .unwrap()
}

/// [`wait_listening`] for the harness's signer, showing its log if it does not come up.
pub async fn wait_signer(h: &Harness) {
    let addr = h.signer_addr();
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let log = std::fs::read_to_string(h.dir.path().join("signer.log")).unwrap_or_default();
    panic!("the signer did not come up on {addr}; its log:\n{log}");
}

/// Waits until something accepts connections on `addr`.
pub async fn wait_listening(addr: SocketAddr) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {addr}");
}

/// Appends `events` to `log`, signs the checkpoint over it (chained to `prev`, which it
/// then names) with `key` at `time_ms`, and stores their segment, as the signer and the
/// ingester would: for trails a test writes with times of its choosing.
#[allow(clippy::too_many_arguments)]
pub async fn store_segment(
    store: &dyn ObjectStore,
    prefix: &str,
    origin: &str,
    key: &dyn KeyBackend,
    log: &mut MemoryLog,
    prev: &mut Option<sealtrail_core::merkle::Hash>,
    events: &[CanonicalEvent],
    time_ms: u64,
) -> (SignedCheckpoint, String) {
    let first = log.size();
    for e in events {
        log.append(e.leaf_hash);
    }
    let cp = Checkpoint {
        origin: origin.into(),
        size: log.size(),
        root: log.root_at(log.size()).unwrap(),
        time_ms,
        prev: *prev,
        new_key: None,
    };
    let sig = NoteSignature {
        name: origin.into(),
        key_id: key.public_key().key_id(origin),
        signature: key.sign(&cp.to_text()).await.unwrap(),
    };
    let signed = SignedCheckpoint::new(cp, vec![sig]).unwrap();
    *prev = Some(signed.hash());
    let proofs: Vec<_> = (first..log.size())
        .map(|i| log.inclusion_proof(i, log.size()).unwrap())
        .collect();
    let bytes = segment::encode(first, &signed, events, &proofs).unwrap();
    let k = segment::object_key(prefix, time_ms, first, events.len() as u64);
    store.put_new(&k, &bytes).await.unwrap();
    (signed, k)
}
