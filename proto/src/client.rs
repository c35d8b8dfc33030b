//! Dialing the signer: a lazily connected `Signer` client over mutual TLS, as the ingester
//! (appends) and the verifier (reads) do it with their own client identities.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

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
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| ClientConfigError(format!("{}: {e}", p.display())))
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&config.ca)?))
        .identity(Identity::from_pem(read(&config.cert)?, read(&config.key)?));
    if let Some(name) = &config.server_name {
        tls = tls.domain_name(name.clone());
    }
    let channel = Endpoint::from_shared(config.url.clone())
        .map_err(|e| ClientConfigError(format!("URL {}: {e}", config.url)))?
        .tls_config(tls)
        .map_err(|e| ClientConfigError(format!("TLS: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(config.timeout)
        .connect_lazy();
    Ok(SignerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}
