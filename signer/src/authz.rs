//! Who may call what, by client-certificate identity.
//!
//! The TLS layer already refuses clients without a certificate from the configured CA.
//! Here the certificate's identities (its subject CommonName and its DNS and URI subject
//! alternative names) are matched against the configured lists: only ingesters may
//! Append; ingesters, verifiers and admins may read. Everything else is PermissionDenied,
//! and logged with the identity it came from.

use rustls_pki_types::CertificateDer;

/// The identities allowed in each role.
#[derive(Debug, Clone)]
pub struct Identities {
    pub ingesters: Vec<String>,
    pub verifiers: Vec<String>,
    pub admins: Vec<String>,
}

impl Default for Identities {
    /// The names the development PKI and the deployment's cert-manager Certificates use.
    fn default() -> Self {
        Self {
            ingesters: vec!["sealtrail-ingester".into()],
            verifiers: vec!["sealtrail-verifier".into()],
            admins: vec!["sealtrail-admin".into()],
        }
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Extend the log.
    Append,
    /// Read checkpoints, proofs and keys.
    Read,
}

impl Identities {
    /// The first identity of `cert` allowed `access`, or all its identities if none is.
    pub fn check(&self, cert: &CertificateDer<'_>, access: Access) -> Result<String, Vec<String>> {
        let names = sealtrail_proto::identity::names_of(cert.as_ref());
        let allowed = |list: &[String]| names.iter().find(|n| list.contains(n)).cloned();
        let found = match access {
            Access::Append => allowed(&self.ingesters),
            Access::Read => allowed(&self.ingesters)
                .or_else(|| allowed(&self.verifiers))
                .or_else(|| allowed(&self.admins)),
        };
        found.ok_or(names)
    }
}
