//! Who may talk to the signer: only ingester identities may Append; verifier identities
//! may read; a client without a certificate, or with one from another CA, gets nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::*;
use sealtrail_ingester::signer_client::connect;
use sealtrail_proto::v1::signer_client::SignerClient;
use sealtrail_proto::v1::{AppendRequest, LatestCheckpointRequest, PublicKeysRequest};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

fn append_one() -> AppendRequest {
    AppendRequest {
        leaf_hashes: vec![vec![7u8; 32].into()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_ingesters_append_and_strangers_get_nothing() {
    let h = Harness::start().await;
    let as_identity = |cert: &PathBuf, key: &PathBuf| {
        let mut cfg = h.signer_client_config();
        cfg.cert = cert.clone();
        cfg.key = key.clone();
        connect(&cfg).unwrap()
    };

    // The ingester identity appends.
    let mut ingester = as_identity(&h.pki.ingester_client_cert, &h.pki.ingester_client_key);
    ingester.append(append_one()).await.unwrap();
    assert_eq!(h.tree_size().await, 1);

    // A verifier identity reads, but may not append.
    let mut verifier = as_identity(&h.pki.verifier_client_cert, &h.pki.verifier_client_key);
    verifier
        .latest_checkpoint(LatestCheckpointRequest {})
        .await
        .unwrap();
    verifier.public_keys(PublicKeysRequest {}).await.unwrap();
    let err = verifier.append(append_one()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // Neither may the apiserver's or the admin's certificate (same CA, other identities).
    for (cert, key) in [
        (&h.pki.apiserver_client_cert, &h.pki.apiserver_client_key),
        (&h.pki.admin_client_cert, &h.pki.admin_client_key),
    ] {
        let err = as_identity(cert, key)
            .append(append_one())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    }

    // A certificate from another CA: the TLS handshake fails.
    let err = as_identity(&h.pki.other_client_cert, &h.pki.other_client_key)
        .append(append_one())
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    assert_ne!(
        err.code(),
        Code::PermissionDenied,
        "refused before any RPC: {err}"
    );

    // No client certificate at all: the same.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(&h.pki.ca_cert).unwrap(),
        ))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", h.signer_addr()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy();
    let err = SignerClient::new(channel)
        .append(append_one())
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);

    assert_eq!(h.tree_size().await, 1, "no refused call added a leaf");

    // The refusals and the log are visible in the metrics.
    let m = h.signer_metrics_addr.unwrap();
    let (status, body) = http_get(m, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("sealtrail_signer_tree_size 1\n"), "{body}");
    assert!(
        body.contains("sealtrail_signer_checkpoints_signed_total 1\n"),
        "{body}"
    );
    assert!(
        body.contains(r#"sealtrail_signer_appends_rejected_total{reason="unauthorized"} 3"#),
        "{body}"
    );
    assert!(
        body.contains("sealtrail_signer_current_key{key_id="),
        "{body}"
    );
    assert!(
        body.contains("sealtrail_signer_sign_seconds_count 1\n"),
        "{body}"
    );
    assert_eq!(http_get(m, "/healthz").await.0, 200);
    assert_eq!(http_get(m, "/readyz").await.0, 200);
    h.shutdown().await;
}
