//! Dialing the signer: a lazily connected `Signer` client over mutual TLS, as the ingester
//! (appends) and the verifier (reads) do it with their own client identities.
//!
//! The TLS files are re-read when they change (`sealtrail_ops::tls`): each new connection
//! presents the client certificate current at the time, so a long-running ingester follows
//! certificate renewals; the open connection is kept.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use sealtrail_ops::tls::{ReloadingClient, TlsFiles, TlsMetrics};
use tonic::codegen::Service;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::v1::signer_client::SignerClient;

/// Largest signer answer accepted (10,000 leaves with their proofs fit).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Time to establish a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the signer is and how to prove who we are.
#[derive(Debug, Clone)]
pub struct SignerClientConfig {
    /// `https://host:port`.
    pub url: String,
    /// CA of the signer's server certificate (PEM).
    pub ca: PathBuf,
    /// This client's certificate and key (PEM): its identity decides what it may call.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Name to expect in the signer's certificate, if not the URL's host.
    pub server_name: Option<String>,
    /// Deadline of one call.
    pub timeout: Duration,
}

/// A client whose configuration could not be used (files, URL, TLS material).
#[derive(Debug, thiserror::Error)]
#[error("signer client: {0}")]
pub struct ClientConfigError(pub String);

/// A lazily connected client: the signer may be down when the caller starts.
pub fn connect(config: &SignerClientConfig) -> Result<SignerClient<Channel>, ClientConfigError> {
    connect_with(config, &TlsMetrics::default(), "signer-client")
}

/// [`connect`], exporting the client certificate's expiry (and reload failures) in
/// `metrics` with the label `component`.
pub fn connect_with(
    config: &SignerClientConfig,
    metrics: &TlsMetrics,
    component: &str,
) -> Result<SignerClient<Channel>, ClientConfigError> {
    let url: Uri = config
        .url
        .parse()
        .map_err(|e| ClientConfigError(format!("URL {}: {e}", config.url)))?;
    let (Some("https"), Some(authority)) = (url.scheme_str(), url.authority()) else {
        return Err(ClientConfigError(format!(
            "URL {}: expected https://host:port",
            config.url
        )));
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = config.server_name.as_deref().unwrap_or(host).to_string();
    let server_name =
        ServerName::try_from(name).map_err(|e| ClientConfigError(format!("server name: {e}")))?;
    let files = TlsFiles {
        cert: config.cert.clone(),
        key: config.key.clone(),
        ca: config.ca.clone(),
    };
    let tls = ReloadingClient::client(files, vec![b"h2".to_vec()], component, metrics)
        .map_err(|e| ClientConfigError(e.to_string()))?;
    tls.watch(sealtrail_ops::tls::RELOAD_INTERVAL);
    // The connector does TLS itself (tonic's own TLS takes fixed material), so the channel
    // dials `http://`; requests still carry the `https` origin.
    let channel = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| ClientConfigError(format!("URL {}: {e}", config.url)))?
        .origin(url)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(config.timeout)
        .connect_with_connector_lazy(TlsConnector { tls, server_name });
    Ok(SignerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// TCP, then TLS with the client configuration current at connection time.
#[derive(Clone)]
struct TlsConnector {
    tls: ReloadingClient,
    server_name: ServerName<'static>,
}

type Io = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl Service<Uri> for TlsConnector {
    type Response = Io;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Io, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.tls.config());
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri.host().ok_or_else(|| invalid("no host in the URL"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host, port)).await?;
            // gRPC calls are small request/response exchanges: do not wait to fill segments.
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
