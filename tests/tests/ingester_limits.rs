//! The ingester's guards: client allowlist, bearer token, bounded requests in flight (429
//! with Retry-After), body read timeout (408), and its metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use sealtrail_tests::emulator::{self, EmulatorConfig};
use sealtrail_tests::pki;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::TlsConnector;

/// One webhook body of `n` real events (all audit.k8s.io/v1, so one batch).
fn batch(n: usize) -> Vec<u8> {
    let v1: Vec<Vec<u8>> = event_lines()
        .into_iter()
        .filter(|l| {
            let pat = br#""apiVersion":"audit.k8s.io/v1","#;
            l.windows(pat.len()).any(|w| w == pat)
        })
        .take(n)
        .collect();
    let mut batches = emulator::build_batches(&v1, 400).unwrap();
    assert_eq!(batches.len(), 1);
    batches.remove(0)
}

/// Opens a TLS connection as the apiserver and sends headers announcing `len` body bytes
/// but only `sent` of them; the connection is returned open.
async fn stalled_request(
    h: &Harness,
    len: usize,
    sent: usize,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let cfg = pki::client_config(
        &h.pki.ca_cert,
        &h.pki.apiserver_client_cert,
        &h.pki.apiserver_client_key,
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(h.ingester_addr())
        .await
        .unwrap();
    let mut tls = TlsConnector::from(Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/audit HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAuthorization: Bearer s3cret\r\nContent-Length: {len}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&vec![b' '; sent]).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

async fn status_of(cfg: &EmulatorConfig, url: &str, body: Vec<u8>) -> emulator::Response {
    let client = emulator::client(cfg).unwrap();
    client.post(url, body.into()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_token_backpressure_timeout_and_metrics() {
    let mut h = Harness::start().await;
    let url = h.webhook_url();

    // A certificate of the right CA but another identity is refused (403), nothing stored.
    let mut other = h.emulator_config(400);
    other.cert = h.pki.verifier_client_cert.clone();
    other.key = h.pki.verifier_client_key.clone();
    assert_eq!(status_of(&other, &url, batch(3)).await.status, 403);
    assert_eq!(h.tree_size().await, 0);

    // With a bearer token configured, a request without it gets 401.
    h.stop_ingester().await;
    h.bearer_token = Some("s3cret".into());
    h.max_in_flight_requests = 1;
    h.body_timeout = Duration::from_secs(1);
    h.start_ingester().await;
    let url = h.webhook_url();
    let cfg = h.emulator_config(400);
    assert_eq!(status_of(&cfg, &url, batch(3)).await.status, 401);
    let client = emulator::client(&cfg).unwrap();
    let wrong = client
        .post_with_headers(&url, batch(3).into(), &[("Authorization", "Bearer s3creT")])
        .await
        .unwrap();
    assert_eq!(wrong.status, 401, "a wrong bearer token was accepted");
    let resp = client
        .post_with_headers(&url, batch(3).into(), &[("Authorization", "Bearer s3cret")])
        .await
        .unwrap();
    assert_eq!(
        resp.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(h.tree_size().await, 3);

    // One request in flight at most: while a slow client holds the slot, the next gets
    // 429 with Retry-After, and nothing is consumed.
    let mut slow = stalled_request(&h, 1000, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = client
        .post_with_headers(&url, batch(3).into(), &[("Authorization", "Bearer s3cret")])
        .await
        .unwrap();
    assert_eq!(resp.status, 429);
    assert!(resp.retry_after.is_some());
    assert_eq!(h.tree_size().await, 3);

    // The slow client never finishes its body: after the body timeout it gets 408 and the
    // slot is free again.
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let resp = client
        .post_with_headers(&url, batch(5).into(), &[("Authorization", "Bearer s3cret")])
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(h.tree_size().await, 8);

    // Metrics under the names alert rules use.
    let (status, body) = http_get(h.ingester_metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("audit_last_event_timestamp "), "{body}");
    assert!(!body.contains("audit_last_event_timestamp 0.0"), "{body}");
    assert!(body.contains("audit_storage_errors_total 0"), "{body}");
    assert!(
        body.contains("sealtrail_ingester_events_stored_total 8"),
        "{body}"
    );
    assert!(
        body.contains(r#"sealtrail_ingester_events_rejected_total{reason="busy"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"sealtrail_ingester_events_rejected_total{reason="unauthorized"} 2"#),
        "{body}"
    );
    assert_eq!(
        http_get(h.ingester_metrics_addr.unwrap(), "/readyz")
            .await
            .0,
        200
    );
    h.shutdown().await;
}

/// Shutdown drains: a request whose body is still arriving when the ingester is told to
/// stop is completed and answered; new connections are refused meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests() {
    let mut h = Harness::start().await;
    let addr = h.ingester_addr();
    let body = batch(20);
    let half = body.len() / 2;
    let cfg = pki::client_config(
        &h.pki.ca_cert,
        &h.pki.apiserver_client_cert,
        &h.pki.apiserver_client_key,
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let head = format!(
        "POST /v1/audit HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body[..half]).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stopped = h.signal_ingester_stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "a stopping ingester still accepts connections"
    );
    tls.write_all(&body[half..]).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.tree_size().await, 20);
    h.shutdown().await;
}
