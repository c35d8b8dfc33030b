//! How a peer is named across Sealtrail's mutual-TLS links: the subject CommonName and the
//! DNS and URI subject alternative names of its certificate. The signer authorizes callers
//! by these names, the ingester its webhook clients.

use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

/// Subject CN, DNS and URI SANs of a DER certificate (empty if it does not parse).
pub fn names_of(cert_der: &[u8]) -> Vec<String> {
    let Ok((_, x509)) = X509Certificate::from_der(cert_der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = x509
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => names.push((*d).to_string()),
                GeneralName::URI(u) => names.push((*u).to_string()),
                _ => {}
            }
        }
    }
    names
}
