//! Sealtrail's end-to-end test harness and kube-apiserver emulator. This crate is test
//! and tooling code, not product code: nothing here runs in a deployment.
//!
//! - [`pki`]: a throw-away development PKI (CA, server and client certificates for every
//!   Sealtrail identity, plus an unrelated CA for negative tests) and rustls configurations
//!   built from it. Binary: `sealtrail-devpki`.
//! - [`emulator`]: reproduces the kube-apiserver's batching audit webhook client (batches,
//!   Go-style JSON encoding, throttling, per-attempt timeout, retries with backoff, drops)
//!   so that the ingester can be tested against its real caller's behaviour. Binary:
//!   `sealtrail-emulator`.
//!
//! - [`proxy`]: a switchable TCP forwarder, to make a real server unreachable for a while.
//! - [`secret_volume`]: a directory updated the way the kubelet updates a mounted Secret.
//! - [`softhsm`]: SoftHSM2 tokens in per-test directories, and `openssl` signature checks.
//! - [`signing`]: what the key-backend tests share (a sample checkpoint, the signature form).
//! - [`tsa`]: a real RFC 3161 timestamp authority (`openssl ts -reply`) on loopback.
//!
//! The end-to-end tests themselves live in `tests/tests/`.

pub mod emulator;
pub mod moto;
pub mod pki;
pub mod proxy;
pub mod secret_volume;
pub mod signing;
pub mod softhsm;
pub mod tsa;
