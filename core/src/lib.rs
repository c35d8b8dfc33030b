//! Sealtrail's formats, shared by the signer, the ingester and the verifier so that the
//! producers and the verifier agree by construction.
//!
//! What it does:
//! - [`jcs`]: strict JSON parsing and RFC 8785 canonical bytes, with exact big integers;
//! - [`event`]: the apiserver's `EventList` batches and the canonical form of each event;
//! - [`merkle`]: RFC 6962 leaf and node hashing, tree roots, inclusion and consistency proofs;
//!   [`consistency`]: consistency proofs computed while the leaves stream by;
//! - [`keys`], [`checkpoint`]: C2SP signed-note checkpoints chained by hash, their
//!   signatures (Ed25519, ECDSA P-256) and key ids;
//! - [`pending`]: batches stored when acknowledged, before they are sealed into the log;
//! - [`segment`]: the stored objects (JSON Lines of events with their proofs and checkpoint)
//!   and their object keys;
//! - [`trust`]: the pinned trust bundle of signer public keys and timestamp authorities;
//! - [`timestamp`]: RFC 3161 tokens on checkpoints: the request, the answer's checks, the
//!   stored token's key and its verification against pinned TSA roots;
//! - [`bundle`]: proof bundles, offline evidence that chosen events are in the log;
//! - [`query`]: the filters of an investigation (`search`) and the event members they match.
//!
//! What it does not: no network, no async runtime, no storage, no private keys held
//! anywhere but the caller's. Every byte these modules hash, sign or store is described in
//! `docs/FORMAT.md`.

pub mod bundle;
pub mod checkpoint;
pub mod consistency;
pub mod error;
pub mod event;
pub mod jcs;
pub mod keys;
pub mod merkle;
pub mod pending;
pub mod query;
pub mod segment;
pub mod source;
pub mod timestamp;
pub mod trust;

pub use error::{Error, JsonErrorKind};
pub use merkle::Hash;
