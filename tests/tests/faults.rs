//! Faults during a replay, with the apiserver's retry behaviour (backoff scaled down so a
//! test takes seconds, not minutes): object storage unreachable, the signer SIGKILLed, the
//! ingester SIGKILLed mid-request. Afterwards every event is stored exactly once and the
//! trail verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use sealtrail_tests::emulator::{self, RetryPolicy};

fn patient(h: &Harness, max_batch: usize) -> emulator::EmulatorConfig {
    let mut cfg = h.emulator_config(max_batch);
    cfg.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(500),
        factor: 1.5,
        max_attempts: 8,
    };
    cfg.timeout = Duration::from_secs(10);
    cfg
}

/// Every event once: the tree holds exactly the replayed events and the store verifies.
async fn assert_exactly_once(h: &Harness, store: &dyn sealtrail_store::ObjectStore, prefix: &str) {
    assert_eq!(h.tree_size().await, 222, "leaves appended more than once");
    let report = sealtrail_verifier::verify_store(
        store,
        &h.trust,
        &sealtrail_verifier::Options {
            prefix: prefix.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(report.intact(), "{}", report.summary());
    assert_eq!(report.events_verified, 222);
}

/// A replay during which the object store is unreachable for 3 s (a TCP proxy in front of
/// moto switched off); returns the emulator's report and the metrics text seen mid-outage.
async fn storage_outage(spool: bool) -> (emulator::EmulatorReport, String) {
    let ProxiedS3 {
        moto: _moto,
        proxy,
        mut h,
        reader,
    } = ProxiedS3::start().await;
    if !spool {
        h.stop_ingester().await;
        h.spool_dir = None;
        h.start_ingester().await;
    }

    let replay = {
        let cfg = patient(&h, 40);
        tokio::spawn(async move { emulator::run(&cfg, &event_lines()).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.off();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, mid_outage) = http_get(h.ingester_metrics_addr.unwrap(), "/metrics").await;
    proxy.on();
    let report = replay.await.unwrap();
    assert_eq!(report.batches_dropped, 0, "{report:?}");
    assert_exactly_once(&h, &reader, PROXIED_PREFIX).await;
    h.shutdown().await;
    (report, mid_outage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_without_a_spool_gives_503_then_everything_lands_once() {
    let (report, _) = storage_outage(false).await;
    assert!(
        report.status_counts.get(&503).copied().unwrap_or(0) > 0,
        "the outage was not seen: {:?}",
        report.status_counts
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_with_a_spool_is_acknowledged_from_it_and_lands_once() {
    let (report, mid_outage) = storage_outage(true).await;
    assert_eq!(
        report.status_counts.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "every request acknowledged: {:?}",
        report.status_counts
    );
    let spooled = metric(&mid_outage, "sealtrail_ingester_spool_records").unwrap();
    assert!(
        spooled > 0.0,
        "nothing was spooled during the outage:\n{mid_outage}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signer_sigkilled_during_a_replay() {
    let mut h = Harness::start().await;
    h.stop_signer().await;
    let mut child = spawn_signer(&h);
    wait_signer(&h).await;

    let replay = {
        let cfg = patient(&h, 20);
        tokio::spawn(async move { emulator::run(&cfg, &event_lines()).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(80)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut child = spawn_signer(&h);
    let report = replay.await.unwrap();
    assert_eq!(report.batches_dropped, 0, "{report:?}");
    assert_exactly_once(&h, &h.store(), "").await;
    child.kill().unwrap();
    child.wait().unwrap();
    h.shutdown().await;
}

fn spawn_ingester(h: &Harness, addr: std::net::SocketAddr, metrics: std::net::SocketAddr) -> Child {
    Command::new(binary("sealtrail-ingester"))
        .args(["--origin", ORIGIN, "--listen", &addr.to_string()])
        .arg("--tls-cert")
        .arg(&h.pki.ingester_server_cert)
        .arg("--tls-key")
        .arg(&h.pki.ingester_server_key)
        .arg("--client-ca")
        .arg(&h.pki.ca_cert)
        .arg("--store")
        .arg(&h.store_dir)
        .args(["--signer-url", &format!("https://{}", h.signer_addr())])
        .arg("--signer-ca")
        .arg(&h.pki.ca_cert)
        .arg("--signer-cert")
        .arg(&h.pki.ingester_client_cert)
        .arg("--signer-key")
        .arg(&h.pki.ingester_client_key)
        .args([
            "--signer-server-name",
            "localhost",
            "--allow-client",
            "kube-apiserver",
        ])
        .arg("--spool-dir")
        .arg(h.dir.path().join("process-spool"))
        .args(["--metrics-listen", &metrics.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingester_sigkilled_mid_request() {
    let mut h = Harness::start().await;
    let mut cfg = patient(&h, 20);
    // The in-process ingester is replaced by a real process on a fixed address.
    h.stop_ingester().await;
    let port = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (addr, metrics) = (port(), port());
    let mut child = spawn_ingester(&h, addr, metrics);
    wait_listening(addr).await;
    cfg.url = format!("https://{addr}{}", sealtrail_ingester::WEBHOOK_PATH);

    let replay = tokio::spawn(async move { emulator::run(&cfg, &event_lines()).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(80)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Acknowledged batches were in its spool: the new process seals them.
    let mut child = spawn_ingester(&h, addr, metrics);
    let report = replay.await.unwrap();
    assert_eq!(report.batches_dropped, 0, "{report:?}");
    wait_listening(metrics).await;
    wait_sealed_at(metrics).await;
    assert_exactly_once(&h, &h.store(), "").await;
    child.kill().unwrap();
    child.wait().unwrap();
    h.shutdown().await;
}

/// Readiness follows the store by itself: without a spool, an unreachable store makes the
/// ingester unready (it cannot make a batch durable), and it is ready again once the store
/// answers, with no restart and no request needed to bring it back; with a spool it stays
/// ready through the outage (the spool takes the batches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_recovers_by_itself_after_a_store_outage() {
    async fn ready_within(addr: std::net::SocketAddr, want: bool, secs: u64) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let (status, _) = http_get(addr, "/readyz").await;
            if (status == 200) == want {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let ProxiedS3 {
        moto: _moto,
        proxy,
        mut h,
        reader: _,
    } = ProxiedS3::start().await;
    let with_spool = h.ingester_metrics_addr.unwrap();
    assert!(ready_within(with_spool, true, 10).await, "ready at start");
    proxy.off();
    tokio::time::sleep(sealtrail_ingester::PROBE_INTERVAL * 2).await;
    assert!(
        ready_within(with_spool, true, 1).await,
        "a spool keeps it ready"
    );
    proxy.on();

    h.stop_ingester().await;
    h.spool_dir = None;
    h.start_ingester().await;
    let addr = h.ingester_metrics_addr.unwrap();
    assert!(ready_within(addr, true, 10).await, "ready at start");
    proxy.off();
    assert!(
        ready_within(addr, false, 15).await,
        "unready while the store is away and there is no spool"
    );
    proxy.on();
    assert!(
        ready_within(addr, true, 15).await,
        "ready again after the outage, by itself"
    );
    h.shutdown().await;
}
