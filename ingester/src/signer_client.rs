//! The gRPC client to the signer (mutual TLS).

use std::path::PathBuf;
use std::time::Duration;

use sealtrail_proto::v1::signer_client::SignerClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::Error;

/// Largest signer answer accepted (10,000 leaves with their proofs fit).
pub const MAX_SIGNER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Where the signer is and how to prove who we are.
#[derive(Debug, Clone)]
pub struct SignerClientConfig {
    /// `https://host:port`.
    pub url: String,
    /// CA of the signer's server certificate.
    pub ca: PathBuf,
    /// This client's certificate and key (the ingester identity).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Name to expect in the signer's certificate, if not the URL's host.
    pub server_name: Option<String>,
    /// Deadline of one Append.
    pub timeout: Duration,
}

/// A lazily connected client: the signer may be down when the ingester starts.
pub fn connect(config: &SignerClientConfig) -> Result<SignerClient<Channel>, Error> {
    let read =
        |p: &PathBuf| std::fs::read(p).map_err(|e| Error::Config(format!("{}: {e}", p.display())));
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&config.ca)?))
        .identity(Identity::from_pem(read(&config.cert)?, read(&config.key)?));
    if let Some(name) = &config.server_name {
        tls = tls.domain_name(name.clone());
    }
    let channel = Endpoint::from_shared(config.url.clone())
        .map_err(|e| Error::Config(format!("signer URL {}: {e}", config.url)))?
        .tls_config(tls)
        .map_err(|e| Error::Config(format!("signer TLS: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(config.timeout)
        .connect_lazy();
    Ok(SignerClient::new(channel)
        .max_decoding_message_size(MAX_SIGNER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_SIGNER_MESSAGE_BYTES))
}
