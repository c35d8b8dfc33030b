//! Certificate rotation without restarts: the files change the way the kubelet changes a
//! mounted Secret (new directory, atomic `..data` swap) while requests keep flowing.
//!
//! - Under load (apiserver emulator posting to the in-process ingester, fresh verifier
//!   connections to the real `sealtrail-signer` binary), the ingester's webhook
//!   certificate, the signer's certificate and the ingester's client certificate are all
//!   renewed: no request fails, new handshakes present the new certificates, the expiry
//!   metrics move, and a signer that accepts only the renewed client identity still gets
//!   the ingester's appends. A corrupt key is then refused: the old certificate stays, the
//!   failure is counted.
//! - The signer client keeps its open connection across a renewal and presents the new
//!   certificate on the next one; the signer's client CA bundle follows its file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Harness, ORIGIN, event_lines, http_get, signer_command, signer_tls, wait_signer};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use sealtrail_ingester::signer_client::{self, SignerClientConfig};
use sealtrail_ops::tls::{CertInfo, TlsMetrics};
use sealtrail_proto::v1::{AppendRequest, LatestCheckpointRequest};
use sealtrail_tests::emulator::{self, EmulatorReport};
use sealtrail_tests::pki::{self, Leaf, PkiOptions};
use sealtrail_tests::secret_volume::SecretVolume;

const NOT_AFTER: &str = "sealtrail_tls_cert_not_after_seconds";
const FAILURES: &str = "sealtrail_tls_reload_failures_total";
/// Longer than the 5 s poll, with room for a loaded machine.
const RELOAD_WAIT: Duration = Duration::from_secs(40);
/// The CN of the renewed ingester client certificate: a signer allowing only it proves the
/// renewed certificate is the one presented.
const RENEWED_INGESTER_CN: &str = "sealtrail-ingester-renewed";

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// A Secret volume with `tls.crt`, `tls.key` and `ca.crt`.
fn tls_volume(dir: &Path, cert: &[u8], key: &[u8], ca: &[u8]) -> SecretVolume {
    SecretVolume::create(dir, &files(cert, key, ca)).unwrap()
}

fn files<'a>(cert: &'a [u8], key: &'a [u8], ca: &'a [u8]) -> [(&'static str, &'a [u8]); 3] {
    [("tls.crt", cert), ("tls.key", key), ("ca.crt", ca)]
}

fn info(cert_pem: &[u8]) -> CertInfo {
    CertInfo::of(CertificateDer::from_pem_slice(cert_pem).unwrap().as_ref()).unwrap()
}

/// The certificate a new TLS handshake with `addr` presents.
async fn served(addr: SocketAddr, client: rustls::ClientConfig) -> CertInfo {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    CertInfo::of(cert.as_ref()).unwrap()
}

/// The value of `name{component="<component>"}` in Prometheus text.
fn sample(text: &str, name: &str, component: &str) -> Option<f64> {
    let prefix = format!("{name}{{component=\"{component}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

async fn scrape(addr: SocketAddr, name: &str, component: &str) -> Option<f64> {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    sample(&body, name, component)
}

/// Waits until `name{component}` on `addr` is `want`.
async fn wait_metric(addr: SocketAddr, name: &str, component: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + RELOAD_WAIT;
    loop {
        let got = scrape(addr, name, component).await;
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{{component={component:?}}} is {got:?}, not {want} after {RELOAD_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `sealtrail-signer` binary on the harness's address, allowing `ingesters` to append.
struct SignerProcess(std::process::Child);

impl SignerProcess {
    fn spawn(h: &Harness, metrics: SocketAddr, ingesters: &[&str]) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(h.dir.path().join("signer.log"))
            .unwrap();
        let mut cmd = signer_command();
        cmd.args(["serve", "--origin", ORIGIN, "--listen"])
            .arg(h.signer_addr().to_string())
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .arg("--state-dir")
            .arg(&h.state_dir)
            .args(signer_tls(h))
            .arg("--dev-key")
            .arg(&h.key_path)
            .arg("--insecure-dev-key");
        for i in ingesters {
            cmd.args(["--ingester-identity", i]);
        }
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Drop for SignerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn wait_tree_size(h: &Harness, want: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let size = h.tree_size().await;
        if size == want {
            return;
        }
        assert!(size < want, "tree size {size} > {want}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "tree size {size}, not {want}, after 90 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Webhook rounds until `stop`: each round is a fresh emulator (two apiservers, so new
/// connections and handshakes every round) posting the next 20 events in batches of 5.
fn webhook_load(
    h: &Harness,
    rounds: Vec<Vec<Vec<u8>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<EmulatorReport>> {
    let mut cfg = h.emulator_config(5);
    cfg.apiservers = 2;
    tokio::spawn(async move {
        let mut reports = Vec::new();
        for round in rounds {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            reports.push(emulator::run(&cfg, &round).await.unwrap());
        }
        reports
    })
}

/// Reads from the signer on a new connection each time until `stop`; returns the failures.
fn signer_load(
    cfg: SignerClientConfig,
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut failures = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let mut client = signer_client::connect(&cfg).unwrap();
            match client.latest_checkpoint(LatestCheckpointRequest {}).await {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => failures.push(s.to_string()),
            }
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        failures
    })
}

fn assert_all_ok(reports: &[EmulatorReport]) {
    for r in reports {
        assert_eq!(
            (r.batches_dropped, r.retries, r.transport_errors),
            (0, 0, 0),
            "{r:?}"
        );
        assert!(r.status_counts.keys().all(|s| *s == 200), "{r:?}");
    }
}

/// The harness's TLS files moved into Secret volumes.
struct Volumes {
    ca: Vec<u8>,
    ingester_tls: SecretVolume,
    signer_tls: SecretVolume,
    client_tls: SecretVolume,
}

impl Volumes {
    /// Moves the ingester's webhook and client certificates and the signer's certificate
    /// into volumes and points the harness at them (the CA file stays: it does not change).
    fn take_over(h: &mut Harness) -> Self {
        let vols = h.dir.path().join("volumes");
        let ca = read(&h.pki.ca_cert);
        let p = &mut h.pki;
        let volume = |name: &str, cert: &mut PathBuf, key: &mut PathBuf| {
            let v = tls_volume(&vols.join(name), &read(cert), &read(key), &ca);
            (*cert, *key) = (v.path("tls.crt"), v.path("tls.key"));
            v
        };
        let ingester_tls = volume(
            "ingester-tls",
            &mut p.ingester_server_cert,
            &mut p.ingester_server_key,
        );
        let signer_tls = volume("signer-tls", &mut p.signer_cert, &mut p.signer_key);
        let client_tls = volume(
            "ingester-signer-client",
            &mut p.ingester_client_cert,
            &mut p.ingester_client_key,
        );
        Self {
            ca,
            ingester_tls,
            signer_tls,
            client_tls,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_every_certificate_under_load_fails_no_request() {
    let mut h = Harness::start().await;
    h.stop_ingester().await;
    h.stop_signer().await;
    let p = h.pki.clone();
    let Volumes {
        ca,
        mut ingester_tls,
        mut signer_tls,
        mut client_tls,
    } = Volumes::take_over(&mut h);

    let signer_metrics = free_addr();
    let both = ["sealtrail-ingester", RENEWED_INGESTER_CN];
    let signer = SignerProcess::spawn(&h, signer_metrics, &both);
    wait_signer(&h).await;
    h.start_ingester().await;
    let ingester_metrics = h.ingester_metrics_addr.unwrap();
    let to_ingester = || {
        pki::client_config(
            &p.ca_cert,
            &p.apiserver_client_cert,
            &p.apiserver_client_key,
        )
        .unwrap()
    };
    let to_signer =
        || pki::client_config(&p.ca_cert, &p.verifier_client_cert, &p.verifier_client_key).unwrap();
    let old = [
        info(&read(&p.ingester_server_cert)),
        info(&read(&p.signer_cert)),
        info(&read(&p.ingester_client_cert)),
    ];
    assert_eq!(served(h.ingester_addr(), to_ingester()).await, old[0]);
    assert_eq!(served(h.signer_addr(), to_signer()).await, old[1]);
    let components = [
        (ingester_metrics, "ingester"),
        (signer_metrics, "signer"),
        (ingester_metrics, "ingester-signer-client"),
    ];
    for ((addr, component), old) in components.iter().zip(&old) {
        wait_metric(*addr, NOT_AFTER, component, old.not_after as f64).await;
    }

    // Load: webhook rounds and fresh signer connections.
    let lines: Vec<Vec<u8>> = event_lines().into_iter().take(20).collect();
    let all = emulator::repeat_events(&lines, 400).unwrap();
    let rounds: Vec<Vec<Vec<u8>>> = all.chunks(20).map(<[_]>::to_vec).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let load = webhook_load(&h, rounds, stop.clone());
    let mut verifier = h.signer_client_config();
    (verifier.cert, verifier.key) = (
        p.verifier_client_cert.clone(),
        p.verifier_client_key.clone(),
    );
    let reads = signer_load(verifier, stop.clone(), calls.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Renewal, as cert-manager and the kubelet do it: same CA, new keys, new volume data.
    let renewed = [
        pki::reissue(&p, Leaf::Server(&[], "sealtrail-ingester-webhook"), 90).unwrap(),
        pki::reissue(&p, Leaf::Server(&[], "sealtrail-signer"), 91).unwrap(),
        pki::reissue(&p, Leaf::Client(RENEWED_INGESTER_CN), 92).unwrap(),
    ];
    let new: Vec<CertInfo> = renewed.iter().map(|(c, _)| info(c.as_bytes())).collect();
    for (vol, (cert, key)) in [&mut ingester_tls, &mut signer_tls, &mut client_tls]
        .into_iter()
        .zip(&renewed)
    {
        vol.update(&files(cert.as_bytes(), key.as_bytes(), &ca))
            .unwrap();
    }
    for ((addr, component), new) in components.iter().zip(&new) {
        wait_metric(*addr, NOT_AFTER, component, new.not_after as f64).await;
    }
    // More rounds and reads after the reload, on new connections.
    let (calls_at_reload, deadline) = (
        calls.load(Ordering::SeqCst),
        tokio::time::Instant::now() + Duration::from_secs(60),
    );
    while calls.load(Ordering::SeqCst) < calls_at_reload + 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "signer reads stalled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let reports = load.await.unwrap();
    let failures = reads.await.unwrap();
    assert!(failures.is_empty(), "signer reads failed: {failures:?}");
    assert!(reports.len() >= 4, "only {} webhook rounds", reports.len());
    assert_all_ok(&reports);
    let events: u64 = reports.iter().map(|r| r.events_ok).sum();
    assert_eq!(events, 20 * reports.len() as u64);

    // New handshakes present the renewed certificates.
    assert_eq!(served(h.ingester_addr(), to_ingester()).await, new[0]);
    assert_eq!(served(h.signer_addr(), to_signer()).await, new[1]);
    wait_tree_size(&h, events).await;

    // A signer that accepts only the renewed client identity: the ingester's reconnection
    // presents the renewed certificate, so its appends still go through.
    drop(signer);
    let _signer = SignerProcess::spawn(&h, signer_metrics, &[RENEWED_INGESTER_CN]);
    wait_signer(&h).await;
    let more = all[20 * reports.len()..20 * (reports.len() + 1)].to_vec();
    let report = emulator::run(&h.emulator_config(5), &more).await.unwrap();
    // (Not a rotation: a post may have met the killed signer, and was retried.)
    assert_eq!(report.batches_dropped, 0, "{report:?}");
    wait_tree_size(&h, events + 20).await;

    // A corrupt key next to a new certificate: refused, counted, the old pair kept.
    assert_eq!(
        scrape(ingester_metrics, FAILURES, "ingester").await,
        Some(0.0)
    );
    let (cert, _) = pki::reissue(&p, Leaf::Server(&[], "sealtrail-ingester-webhook"), 30).unwrap();
    let corrupt = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
    ingester_tls
        .update(&files(cert.as_bytes(), corrupt, &ca))
        .unwrap();
    wait_metric(ingester_metrics, FAILURES, "ingester", 1.0).await;
    assert_eq!(served(h.ingester_addr(), to_ingester()).await, new[0]);
    assert_eq!(
        scrape(ingester_metrics, NOT_AFTER, "ingester").await,
        Some(new[0].not_after as f64)
    );
    let more = all[20 * (reports.len() + 1)..20 * (reports.len() + 2)].to_vec();
    let report = emulator::run(&h.emulator_config(5), &more).await.unwrap();
    assert_all_ok(&[report]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signer_client_and_client_ca_follow_their_files() {
    let mut h = Harness::start().await;
    h.stop_ingester().await;
    h.stop_signer().await;
    let p = h.pki.clone();
    let ca = read(&p.ca_cert);
    let vols = h.dir.path().join("volumes");
    let mut signer_vol = tls_volume(
        &vols.join("signer-tls"),
        &read(&p.signer_cert),
        &read(&p.signer_key),
        &ca,
    );
    h.pki.signer_cert = signer_vol.path("tls.crt");
    h.pki.signer_key = signer_vol.path("tls.key");
    h.pki.ca_cert = signer_vol.path("ca.crt");
    h.start_signer().await;
    let proxy = sealtrail_tests::proxy::Proxy::start(h.signer_addr())
        .await
        .unwrap();

    // A client holding the verifier's identity, which may read but not append.
    let mut client_vol = tls_volume(
        &vols.join("client"),
        &read(&p.verifier_client_cert),
        &read(&p.verifier_client_key),
        &ca,
    );
    let cfg = SignerClientConfig {
        url: format!("https://{}", proxy.addr),
        ca: client_vol.path("ca.crt"),
        cert: client_vol.path("tls.crt"),
        key: client_vol.path("tls.key"),
        server_name: Some("localhost".into()),
        timeout: Duration::from_secs(10),
    };
    let metrics = TlsMetrics::default();
    let mut client = signer_client::connect_with(&cfg, &metrics, "test-client").unwrap();
    let append = AppendRequest {
        leaf_hashes: vec![vec![7u8; 32].into()],
    };
    let refused = client.append(append.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    assert!(
        refused.message().contains("sealtrail-verifier"),
        "{refused}"
    );

    // Renewed into the ingester's identity. The open connection keeps the old one.
    let (cert, key) = pki::reissue(&p, Leaf::Client("sealtrail-ingester"), 90).unwrap();
    client_vol
        .update(&files(cert.as_bytes(), key.as_bytes(), &ca))
        .unwrap();
    wait_reload(&metrics, "test-client", info(cert.as_bytes()).not_after).await;
    let kept = client.append(append.clone()).await.unwrap_err();
    assert!(kept.message().contains("sealtrail-verifier"), "{kept}");
    // A new connection presents the renewed certificate.
    cut(&proxy).await;
    append_eventually(&mut client, &append).await;

    // A certificate from a CA the signer does not trust yet: refused on a new connection...
    let other = pki::generate(&h.dir.path().join("other-pki"), &PkiOptions::default()).unwrap();
    let other_cert = read(&other.ingester_client_cert);
    client_vol
        .update(&files(&other_cert, &read(&other.ingester_client_key), &ca))
        .unwrap();
    wait_reload(&metrics, "test-client", info(&other_cert).not_after).await;
    cut(&proxy).await;
    for _ in 0..3 {
        assert!(client.append(append.clone()).await.is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...until the signer's client CA bundle holds it too.
    let bundle = [ca.clone(), read(&other.ca_cert)].concat();
    signer_vol
        .update(&files(&read(&p.signer_cert), &read(&p.signer_key), &bundle))
        .unwrap();
    append_eventually(&mut client, &append).await;
    h.shutdown().await;
}

/// Cuts the client's open connection (new ones are forwarded again).
async fn cut(proxy: &sealtrail_tests::proxy::Proxy) {
    proxy.off();
    // Let the forwarders drop their sockets before anything new is sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.on();
}

/// Waits until the client certificate in `metrics` has `not_after`.
async fn wait_reload(metrics: &TlsMetrics, component: &str, not_after: i64) {
    let deadline = tokio::time::Instant::now() + RELOAD_WAIT;
    loop {
        let mut text = String::new();
        metrics.append_to(&mut text);
        if sample(&text, NOT_AFTER, component) == Some(not_after as f64) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload after {RELOAD_WAIT:?}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Appends until it works (a cut connection fails a call or two); a PermissionDenied means
/// the old identity was presented.
async fn append_eventually(
    client: &mut sealtrail_proto::v1::signer_client::SignerClient<tonic::transport::Channel>,
    append: &AppendRequest,
) {
    let deadline = tokio::time::Instant::now() + RELOAD_WAIT;
    loop {
        match client.append(append.clone()).await {
            Ok(_) => return,
            Err(s) if s.code() == tonic::Code::PermissionDenied => {
                panic!("the signer saw the old identity: {s}")
            }
            Err(s) => assert!(
                tokio::time::Instant::now() < deadline,
                "append still failing: {s}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
