//! The signer as an outside reference: its newest checkpoint and consistency proofs, over
//! mutual TLS with a read-only (verifier) identity.
//!
//! A hash chain cannot show that its own tail was cut; the signer, which signed every
//! checkpoint, can. The verifier asks for its latest checkpoint and for a consistency proof
//! from the newest stored checkpoint to it.

use sealtrail_core::merkle::Hash;
use sealtrail_proto::v1::signer_client::SignerClient;
use sealtrail_proto::v1::{ConsistencyProofRequest, LatestCheckpointRequest};
use sealtrail_store::BoxFuture;
use tonic::transport::Channel;

/// Why the signer could not serve as the reference: a peer error (it answered with an error
/// status, or with something unusable), or a configuration error on this side.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The client could not be set up (certificates, URL).
    #[error("signer client: {0}")]
    Config(String),
    /// The call failed: unreachable, refused, or answered with an error status.
    #[error("signer {call}: {status}")]
    Call {
        call: String,
        status: Box<tonic::Status>,
    },
    /// The signer answered something no signer sends (a hash of the wrong length, a note
    /// that does not parse, a checkpoint that does not verify).
    #[error("signer: {0}")]
    Unusable(String),
}

/// What the verifier needs from the signer. Implemented by [`GrpcSigner`]; tests may
/// provide their own.
pub trait SignerSource: Send + Sync + std::fmt::Debug {
    /// The newest signed note, or `None` while the log is empty.
    fn latest_checkpoint(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, SignerError>>;
    /// The RFC 9162 consistency proof from `old_size` to `new_size`.
    fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> BoxFuture<'_, Result<Vec<Hash>, SignerError>>;
    /// Where the signer is, for reports.
    fn describe(&self) -> String;
}

/// Where the signer is and the verifier's client identity.
pub use sealtrail_proto::client::SignerClientConfig as SignerConfig;

/// The signer's gRPC API.
#[derive(Debug, Clone)]
pub struct GrpcSigner {
    client: SignerClient<Channel>,
    url: String,
}

impl GrpcSigner {
    /// A lazily connected client (errors here are configuration errors only).
    pub fn connect(config: &SignerConfig) -> Result<Self, SignerError> {
        Ok(Self {
            client: sealtrail_proto::client::connect(config)
                .map_err(|e| SignerError::Config(e.to_string()))?,
            url: config.url.clone(),
        })
    }
}

impl SignerSource for GrpcSigner {
    fn latest_checkpoint(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, SignerError>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            match client.latest_checkpoint(LatestCheckpointRequest {}).await {
                Ok(r) => Ok(Some(r.into_inner().checkpoint)),
                Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
                Err(s) => Err(SignerError::Call {
                    call: "LatestCheckpoint".into(),
                    status: Box::new(s),
                }),
            }
        })
    }

    fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> BoxFuture<'_, Result<Vec<Hash>, SignerError>> {
        let mut client = self.client.clone();
        Box::pin(async move {
            let r = client
                .consistency_proof(ConsistencyProofRequest { old_size, new_size })
                .await
                .map_err(|s| SignerError::Call {
                    call: format!("ConsistencyProof({old_size} → {new_size})"),
                    status: Box::new(s),
                })?;
            r.into_inner()
                .hashes
                .into_iter()
                .map(|h| {
                    Hash::try_from(h.as_slice()).map_err(|_| {
                        SignerError::Unusable(format!(
                            "ConsistencyProof: a hash of {} bytes",
                            h.len()
                        ))
                    })
                })
                .collect()
        })
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}
