//! A development PKI for tests and local runs: one CA, server certificates for the signer
//! and the ingester's webhook, client certificates for every identity that talks to them,
//! and a second, unrelated CA with a client certificate for "wrong CA" tests.
//!
//! All keys are ECDSA P-256 (rcgen's aws-lc-rs backend), written as PKCS#8 PEM with mode
//! 0600. Certificates are valid from one hour ago for 825 days; [`reissue`] renews one from
//! the same CA (as cert-manager would), for certificate-rotation tests. Never use these
//! outside tests and development.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// Common name of the ingester's client certificate (towards the signer).
pub const INGESTER_CLIENT_CN: &str = "sealtrail-ingester";
/// Common name of the verifier's client certificate (towards the signer).
pub const VERIFIER_CLIENT_CN: &str = "sealtrail-verifier";
/// Common name of the administrator's client certificate.
pub const ADMIN_CLIENT_CN: &str = "sealtrail-admin";
/// Common name of the apiserver's client certificate (towards the ingester's webhook).
pub const APISERVER_CLIENT_CN: &str = "kube-apiserver";
/// Common name of the client certificate issued by the unrelated CA.
pub const OTHER_CLIENT_CN: &str = "kube-apiserver";

/// What to generate beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct PkiOptions {
    /// Subject alternative names added to both server certificates (DNS names or IP
    /// addresses), on top of `localhost`, `127.0.0.1` and `::1`.
    pub extra_sans: Vec<String>,
}

/// Every file [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiPaths {
    pub dir: PathBuf,
    /// `ca.pem` / `ca.key`: the CA every Sealtrail component trusts.
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// `signer.pem` / `signer.key`: the signer's gRPC server certificate.
    pub signer_cert: PathBuf,
    pub signer_key: PathBuf,
    /// `ingester-server.pem` / `.key`: the webhook's HTTPS server certificate.
    pub ingester_server_cert: PathBuf,
    pub ingester_server_key: PathBuf,
    /// `ingester-client.pem` / `.key`: CN `sealtrail-ingester`, towards the signer.
    pub ingester_client_cert: PathBuf,
    pub ingester_client_key: PathBuf,
    /// `verifier-client.pem` / `.key`: CN `sealtrail-verifier`.
    pub verifier_client_cert: PathBuf,
    pub verifier_client_key: PathBuf,
    /// `admin-client.pem` / `.key`: CN `sealtrail-admin`.
    pub admin_client_cert: PathBuf,
    pub admin_client_key: PathBuf,
    /// `apiserver-client.pem` / `.key`: CN `kube-apiserver`, towards the webhook.
    pub apiserver_client_cert: PathBuf,
    pub apiserver_client_key: PathBuf,
    /// `other-ca.pem` / `.key`: an unrelated CA that nobody trusts.
    pub other_ca_cert: PathBuf,
    pub other_ca_key: PathBuf,
    /// `other-client.pem` / `.key`: CN `kube-apiserver`, but issued by the other CA.
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

impl PkiPaths {
    /// Every (description, path) pair, certificates before keys, in generation order.
    pub fn files(&self) -> Vec<(&'static str, &Path)> {
        vec![
            ("CA certificate", &self.ca_cert),
            ("CA key", &self.ca_key),
            ("signer server certificate", &self.signer_cert),
            ("signer server key", &self.signer_key),
            (
                "ingester webhook server certificate",
                &self.ingester_server_cert,
            ),
            ("ingester webhook server key", &self.ingester_server_key),
            (
                "ingester client certificate (CN sealtrail-ingester)",
                &self.ingester_client_cert,
            ),
            ("ingester client key", &self.ingester_client_key),
            (
                "verifier client certificate (CN sealtrail-verifier)",
                &self.verifier_client_cert,
            ),
            ("verifier client key", &self.verifier_client_key),
            (
                "admin client certificate (CN sealtrail-admin)",
                &self.admin_client_cert,
            ),
            ("admin client key", &self.admin_client_key),
            (
                "apiserver client certificate (CN kube-apiserver)",
                &self.apiserver_client_cert,
            ),
            ("apiserver client key", &self.apiserver_client_key),
            ("unrelated CA certificate", &self.other_ca_cert),
            ("unrelated CA key", &self.other_ca_key),
            (
                "client certificate from the unrelated CA",
                &self.other_client_cert,
            ),
            ("client key from the unrelated CA", &self.other_client_key),
        ]
    }
}

type Ca = CertifiedIssuer<'static, KeyPair>;

/// Common name of the development CA.
const CA_CN: &str = "Sealtrail development CA";
/// Default validity of the certificates [`generate`] writes.
const DEFAULT_DAYS: i64 = 825;

/// Generates the whole development PKI into `dir` (created if missing; existing files are
/// overwritten).
pub fn generate(dir: &Path, opts: &PkiOptions) -> anyhow::Result<PkiPaths> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let p = |name: &str| dir.join(name);
    let paths = PkiPaths {
        dir: dir.to_path_buf(),
        ca_cert: p("ca.pem"),
        ca_key: p("ca.key"),
        signer_cert: p("signer.pem"),
        signer_key: p("signer.key"),
        ingester_server_cert: p("ingester-server.pem"),
        ingester_server_key: p("ingester-server.key"),
        ingester_client_cert: p("ingester-client.pem"),
        ingester_client_key: p("ingester-client.key"),
        verifier_client_cert: p("verifier-client.pem"),
        verifier_client_key: p("verifier-client.key"),
        admin_client_cert: p("admin-client.pem"),
        admin_client_key: p("admin-client.key"),
        apiserver_client_cert: p("apiserver-client.pem"),
        apiserver_client_key: p("apiserver-client.key"),
        other_ca_cert: p("other-ca.pem"),
        other_ca_key: p("other-ca.key"),
        other_client_cert: p("other-client.pem"),
        other_client_key: p("other-client.key"),
    };

    let mut sans = default_sans();
    for san in &opts.extra_sans {
        if !sans.contains(san) {
            sans.push(san.clone());
        }
    }

    let ca = new_ca(CA_CN)?;
    write_ca(&ca, &paths.ca_cert, &paths.ca_key)?;
    leaf(
        &ca,
        Leaf::Server(&sans, "sealtrail-signer"),
        &paths.signer_cert,
        &paths.signer_key,
    )?;
    leaf(
        &ca,
        Leaf::Server(&sans, "sealtrail-ingester-webhook"),
        &paths.ingester_server_cert,
        &paths.ingester_server_key,
    )?;
    for (cn, cert, key) in [
        (
            INGESTER_CLIENT_CN,
            &paths.ingester_client_cert,
            &paths.ingester_client_key,
        ),
        (
            VERIFIER_CLIENT_CN,
            &paths.verifier_client_cert,
            &paths.verifier_client_key,
        ),
        (
            ADMIN_CLIENT_CN,
            &paths.admin_client_cert,
            &paths.admin_client_key,
        ),
        (
            APISERVER_CLIENT_CN,
            &paths.apiserver_client_cert,
            &paths.apiserver_client_key,
        ),
    ] {
        leaf(&ca, Leaf::Client(cn), cert, key)?;
    }

    let other = new_ca("Unrelated development CA (untrusted)")?;
    write_ca(&other, &paths.other_ca_cert, &paths.other_ca_key)?;
    leaf(
        &other,
        Leaf::Client(OTHER_CLIENT_CN),
        &paths.other_client_cert,
        &paths.other_client_key,
    )?;
    Ok(paths)
}

fn default_sans() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

/// A leaf certificate: a server's (SANs and CN) or a client's (CN).
#[derive(Debug, Clone, Copy)]
pub enum Leaf<'a> {
    Server(&'a [String], &'a str),
    Client(&'a str),
}

/// A renewal: a new key and certificate (PEM, `(cert, key)`) for `leaf`, issued by the CA
/// of `paths` (`ca.pem`, `ca.key`) and valid from an hour ago for `days`. A `Leaf::Server`
/// with no SANs gets `localhost`, `127.0.0.1` and `::1`.
pub fn reissue(paths: &PkiPaths, leaf: Leaf<'_>, days: i64) -> anyhow::Result<(String, String)> {
    let key_pem = fs::read_to_string(&paths.ca_key)
        .with_context(|| format!("reading {}", paths.ca_key.display()))?;
    // The same name and key identify the same CA: its certificate need not be parsed.
    let ca = Issuer::new(ca_params(CA_CN)?, KeyPair::from_pem(&key_pem)?);
    let sans = default_sans();
    let leaf = match leaf {
        Leaf::Server([], cn) => Leaf::Server(&sans, cn),
        other => other,
    };
    let (cert, key) = issue(&ca, leaf, days)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

fn new_ca(cn: &str) -> anyhow::Result<Ca> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    Ok(CertifiedIssuer::self_signed(ca_params(cn)?, key)?)
}

fn ca_params(cn: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Sealtrail development");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, DEFAULT_DAYS);
    Ok(params)
}

fn write_ca(ca: &Ca, cert: &Path, key: &Path) -> anyhow::Result<()> {
    write_file(cert, ca.pem().as_bytes(), false)?;
    write_file(key, ca.key().serialize_pem().as_bytes(), true)
}

fn leaf(ca: &Ca, kind: Leaf<'_>, cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    let (cert, key) = issue(ca, kind, DEFAULT_DAYS)?;
    write_file(cert_path, cert.pem().as_bytes(), false)?;
    write_file(key_path, key.serialize_pem().as_bytes(), true)
}

fn issue(
    ca: &Issuer<'_, KeyPair>,
    kind: Leaf<'_>,
    days: i64,
) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let (mut params, cn, eku) = match kind {
        Leaf::Server(sans, cn) => (
            CertificateParams::new(sans.to_vec())?,
            cn,
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        Leaf::Client(cn) => (
            CertificateParams::new(Vec::<String>::new())?,
            cn,
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    };
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Sealtrail development");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert, key))
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> anyhow::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mode = if secret { 0o600 } else { 0o644 };
        opts.mode(mode);
        // `mode` only applies to new files: fix up a file that already existed.
        if path.exists() {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .with_context(|| format!("chmod {}", path.display()))?;
        }
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("reading the private key in {}", path.display()))
}

fn roots(ca: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("CA certificate in {}", ca.display()))?;
    }
    Ok(roots)
}

/// The crypto provider every configuration here uses (aws-lc-rs, never ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS client configuration trusting only `ca` and presenting `cert`/`key`.
/// No ALPN protocols are set (HTTP/1.1).
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<ClientConfig> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
        .context("client certificate and key")
}

/// A TLS server configuration presenting `cert`/`key` and requiring a client certificate
/// issued by `client_ca`. No ALPN protocols are set.
pub fn server_config(cert: &Path, key: &Path, client_ca: &Path) -> anyhow::Result<ServerConfig> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(client_ca)?), provider())
            .build()
            .context("client certificate verifier")?;
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .context("server certificate and key")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn generates_every_file_with_private_keys_0600() {
        let dir = tempfile::tempdir().unwrap();
        let paths = generate(
            dir.path(),
            &PkiOptions {
                extra_sans: vec!["ingester.sealtrail.svc".into(), "10.0.0.7".into()],
            },
        )
        .unwrap();
        assert_eq!(paths.files().len(), 18);
        for (what, path) in paths.files() {
            let text = fs::read_to_string(path).unwrap();
            if path.extension().unwrap() == "key" {
                assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{what}");
                load_key(path).unwrap();
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
                    assert_eq!(mode, 0o600, "{what}");
                }
            } else {
                assert_eq!(load_certs(path).unwrap().len(), 1, "{what}");
            }
        }
        // Configurations build from every pairing the components use.
        client_config(
            &paths.ca_cert,
            &paths.apiserver_client_cert,
            &paths.apiserver_client_key,
        )
        .unwrap();
        client_config(
            &paths.ca_cert,
            &paths.ingester_client_cert,
            &paths.ingester_client_key,
        )
        .unwrap();
        server_config(&paths.signer_cert, &paths.signer_key, &paths.ca_cert).unwrap();
        server_config(
            &paths.ingester_server_cert,
            &paths.ingester_server_key,
            &paths.ca_cert,
        )
        .unwrap();
        // Regenerating over the same directory works.
        generate(dir.path(), &PkiOptions::default()).unwrap();
    }
}
