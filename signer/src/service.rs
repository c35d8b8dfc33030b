//! The `sealtrail.v1.Signer` gRPC service over mutual TLS.

use std::future::Future;
use std::sync::Arc;

use sealtrail_core::merkle::{HASH_LEN, Hash};
use sealtrail_core::trust::{TrustBundle, TrustedKey};
use sealtrail_ops::tls::ReloadingServer;
use sealtrail_proto::v1::signer_server::{Signer, SignerServer};
use sealtrail_proto::v1::{
    AppendRequest, AppendResponse, CheckpointResponse, ConsistencyProofRequest,
    ConsistencyProofResponse, InclusionProof, LatestCheckpointRequest, PublicKeysRequest,
    PublicKeysResponse,
};
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::authz::{Access, Identities};
use crate::log::{Log, MAX_APPEND_LEAVES};
use crate::metrics::Metrics;
use crate::{Error, KeyBackend};

/// Largest gRPC message accepted or sent: an Append of [`MAX_APPEND_LEAVES`] leaves with a
/// 64-hash proof each fits.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

struct SignerService {
    log: Log,
    key: Arc<dyn KeyBackend>,
    identities: Identities,
    metrics: Arc<Metrics>,
}

impl SignerService {
    /// The caller's identity if it may do `access`; PermissionDenied (logged) otherwise.
    fn authorize<T>(
        &self,
        request: &Request<T>,
        access: Access,
        method: &str,
    ) -> Result<String, Status> {
        let certs = request.peer_certs();
        let Some(cert) = certs.as_ref().and_then(|c| c.first()) else {
            // The TLS layer requires a certificate; this is only reachable without TLS.
            tracing::warn!(method, "refused: no client certificate");
            return Err(Status::permission_denied(
                "a client certificate is required",
            ));
        };
        self.identities.check(cert, access).map_err(|names| {
            tracing::warn!(method, identities = ?names, "refused: identity not allowed");
            Status::permission_denied(format!("{names:?} may not call {method}"))
        })
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidRequest(m) => Status::invalid_argument(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Key(m) => Status::unavailable(format!("key backend: {m}")),
            other => Status::internal(other.to_string()),
        }
    }
}

#[tonic::async_trait]
impl Signer for SignerService {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        self.authorize(&request, Access::Append, "Append")
            .inspect_err(|_| self.metrics.reject("unauthorized"))?;
        let req = request.into_inner();
        if req.leaf_hashes.is_empty() || req.leaf_hashes.len() > MAX_APPEND_LEAVES {
            self.metrics.reject("invalid");
            return Err(Status::invalid_argument(format!(
                "{} leaf hashes (1 to {MAX_APPEND_LEAVES} per append)",
                req.leaf_hashes.len()
            )));
        }
        let leaves = req
            .leaf_hashes
            .iter()
            .map(|h| <Hash>::try_from(&h[..]))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                self.metrics.reject("invalid");
                Status::invalid_argument(format!("every leaf hash must be {HASH_LEN} bytes"))
            })?;
        let appended = self.log.append(leaves).await.inspect_err(|e| {
            self.metrics.reject(match e {
                Error::InvalidRequest(_) => "invalid",
                Error::Unavailable(_) | Error::Key(_) => "unavailable",
                _ => "internal",
            })
        })?;
        Ok(Response::new(AppendResponse {
            first_index: appended.first_index,
            checkpoint: appended.checkpoint.to_bytes(),
            proofs: proofs_message(&appended.proofs),
        }))
    }

    async fn latest_checkpoint(
        &self,
        request: Request<LatestCheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        self.authorize(&request, Access::Read, "LatestCheckpoint")?;
        match self.log.latest()? {
            Some(cp) => Ok(Response::new(CheckpointResponse {
                checkpoint: cp.to_bytes(),
            })),
            None => Err(Status::not_found("the log is empty")),
        }
    }

    async fn consistency_proof(
        &self,
        request: Request<ConsistencyProofRequest>,
    ) -> Result<Response<ConsistencyProofResponse>, Status> {
        self.authorize(&request, Access::Read, "ConsistencyProof")?;
        let req = request.into_inner();
        let proof = self.log.consistency_proof(req.old_size, req.new_size)?;
        Ok(Response::new(ConsistencyProofResponse {
            hashes: proof.into_iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn public_keys(
        &self,
        request: Request<PublicKeysRequest>,
    ) -> Result<Response<PublicKeysResponse>, Status> {
        self.authorize(&request, Access::Read, "PublicKeys")?;
        let origin = self.log.origin();
        let bundle = self.log.key_history()?.unwrap_or_else(|| {
            TrustBundle::new(
                origin,
                vec![TrustedKey::new(origin, self.key.public_key(), 0)],
            )
        });
        Ok(Response::new(PublicKeysResponse {
            trust_bundle: bundle.to_json(),
        }))
    }
}

/// Serves until `shutdown`, then drains in-flight calls. Its certificate and client CA
/// follow their files ([`crate::tls`]).
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    log: Log,
    key: Arc<dyn KeyBackend>,
    identities: Identities,
    metrics: Arc<Metrics>,
    tls: ReloadingServer,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let service = SignerServer::new(SignerService {
        log,
        key,
        identities,
        metrics,
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // One signal for the accept loop and for the server's drain.
    let stop = sealtrail_ops::Shutdown::new(shutdown);
    let incoming = crate::tls::incoming(listener, tls, stop.wait());
    Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, stop.wait())
        .await
        .map_err(|e| Error::Unavailable(format!("gRPC server: {e}")))
}

/// The proofs of an Append as its message: every hash a slice of one buffer.
fn proofs_message(proofs: &[Vec<Hash>]) -> Vec<InclusionProof> {
    let mut all = sealtrail_proto::hash_fields(proofs.iter().flatten()).into_iter();
    proofs
        .iter()
        .map(|p| InclusionProof {
            hashes: all.by_ref().take(p.len()).collect(),
        })
        .collect()
}
