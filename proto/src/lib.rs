//! The gRPC contract between Sealtrail's ingester, verifier and signer (`Signer` service),
//! generated from `proto/sealtrail/v1/signer.proto` with tonic and prost.
//!
//! [`identity`] says how peers are named on these mutual-TLS links, [`client`] how callers
//! dial the signer.
//!
//! What it does not: no validation (sizes of hashes and batches are checked by the signer,
//! against the limits it names), no server set-up.

/// Version 1 of the contract (generated code).
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("sealtrail.v1");
}

pub mod client;
pub mod identity;

/// Size in bytes of every hash on this wire.
pub const HASH_LEN: usize = 32;

/// Hashes as the `bytes` fields of a message: slices of one buffer, so that the thousands
/// of hashes of an Append (its leaves, or about 20 per inclusion proof) cost one
/// allocation, not one each.
pub fn hash_fields<'a>(hashes: impl IntoIterator<Item = &'a [u8; HASH_LEN]>) -> Vec<bytes::Bytes> {
    let mut buf = Vec::new();
    for h in hashes {
        buf.extend_from_slice(h);
    }
    let all = bytes::Bytes::from(buf);
    (0..all.len() / HASH_LEN)
        .map(|i| all.slice(i * HASH_LEN..(i + 1) * HASH_LEN))
        .collect()
}
