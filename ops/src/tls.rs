//! TLS material that follows its files: a certificate, its key and a CA bundle (PEM),
//! re-read every few seconds and swapped in when they change, for the services' servers
//! and for their clients.
//!
//! New handshakes take the configuration current at the time ([`Reloading::config`]);
//! established connections keep the one they were made with, so nothing is dropped. New
//! material is taken only whole: the certificate chain, the key and the CA bundle must all
//! parse and the key must match the certificate; otherwise the old material stays, and
//! the refusal is logged and counted (`sealtrail_tls_reload_failures_total`). The
//! certificate being presented is exported as `sealtrail_tls_cert_not_after_seconds`.
//!
//! Why polling and not file notifications: Kubernetes updates a Secret volume by writing a
//! new `..<timestamp>` directory and renaming a new `..data` symlink over the old one, so
//! the files a service was given (`tls.crt -> ..data/tls.crt`) never change in place; an
//! inotify watch on them sees nothing, and one on the directory sees symlink churn. Reading
//! the paths (following the symlinks) and comparing a hash of their content sees every kind
//! of update (symlink swap, rename, in-place write) for the price of reading three small
//! files every few seconds, without a file-watching dependency.
//!
//! What it does not: no OCSP, no CRLs, no choice among several certificates.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use sha2::{Digest as _, Sha256};

/// How often the files are looked at. The kubelet itself refreshes Secret volumes only
/// every minute or so, and cert-manager renews weeks before expiry.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The three PEM files of one TLS identity.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle: of the peers' client certificates (servers) or of the server (clients).
    pub ca: PathBuf,
}

/// Why TLS material was not (re)loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("{}: the private key does not match the certificate in {}: {reason}", key.display(), cert.display())]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// What the presented certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, lower-case hex.
    pub serial: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    pub subject: String,
}

impl CertInfo {
    /// The description of a DER certificate.
    pub fn of(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        Ok(Self {
            serial: cert
                .tbs_certificate
                .raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            not_after: cert.validity().not_after.timestamp(),
            subject: cert.subject().to_string(),
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabel {
    component: String,
}

/// The TLS metrics of one process, shown on its `/metrics` ([`crate::Health::with_tls`]).
#[derive(Clone)]
pub struct TlsMetrics {
    inner: Arc<MetricsInner>,
}

struct MetricsInner {
    registry: Registry,
    not_after: Family<ComponentLabel, Gauge>,
    failures: Family<ComponentLabel, Counter>,
}

impl Default for TlsMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let not_after = Family::<ComponentLabel, Gauge>::default();
        let failures = Family::<ComponentLabel, Counter>::default();
        registry.register(
            "sealtrail_tls_cert_not_after_seconds",
            "notAfter (Unix seconds) of the certificate new TLS handshakes present",
            not_after.clone(),
        );
        registry.register(
            "sealtrail_tls_reload_failures",
            "Changed TLS files refused (unparsable, or key and certificate do not match)",
            failures.clone(),
        );
        Self {
            inner: Arc::new(MetricsInner {
                registry,
                not_after,
                failures,
            }),
        }
    }
}

impl std::fmt::Debug for TlsMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMetrics")
    }
}

impl TlsMetrics {
    /// Appends these metrics to the OpenMetrics text of another registry (moving its
    /// `# EOF` to the end).
    pub fn append_to(&self, text: &mut String) {
        if text.ends_with("# EOF\n") {
            text.truncate(text.len() - "# EOF\n".len());
        }
        let _ = prometheus_client::encoding::text::encode_registry(text, &self.inner.registry);
        let _ = prometheus_client::encoding::text::encode_eof(text);
    }

    fn label(component: &str) -> ComponentLabel {
        ComponentLabel {
            component: component.to_string(),
        }
    }
}

/// Parsed, matching material.
struct Material {
    key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    info: CertInfo,
}

type Digest = [u8; 32];

/// A TLS configuration rebuilt from its files when they change. Cheap to clone.
pub struct Reloading<C> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for Reloading<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C> std::fmt::Debug for Reloading<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("component", &self.shared.component)
            .field("files", &self.shared.files)
            .finish()
    }
}

/// A server configuration requiring client certificates from the CA bundle.
pub type ReloadingServer = Reloading<rustls::ServerConfig>;
/// A client configuration presenting its certificate and trusting the CA bundle.
pub type ReloadingClient = Reloading<rustls::ClientConfig>;

struct Shared<C> {
    files: TlsFiles,
    component: String,
    metrics: TlsMetrics,
    alpn: Vec<Vec<u8>>,
    build: fn(&Material, &[Vec<u8>]) -> Result<C, TlsError>,
    state: Mutex<State<C>>,
}

struct State<C> {
    config: Arc<C>,
    served: CertInfo,
    /// Content last taken or last refused: not looked at again until it changes.
    seen: Digest,
    /// Content refused once: refused for good (and counted) if still there next time, so
    /// that a file caught half-written is not reported.
    suspect: Option<Digest>,
}

/// What one look at the files found.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    /// New material taken; new handshakes present this certificate.
    Reloaded(CertInfo),
    /// Bad content seen for the first time: looked at again next time before refusing.
    Pending(TlsError),
    /// Bad content that stayed: the old material is kept, the failure logged and counted.
    Refused(TlsError),
}

impl Reloading<rustls::ServerConfig> {
    /// Loads the files (failing if they are not usable now) for a server offering `alpn`.
    pub fn server(
        files: TlsFiles,
        alpn: Vec<Vec<u8>>,
        component: &str,
        metrics: &TlsMetrics,
    ) -> Result<Self, TlsError> {
        Self::load(files, alpn, component, metrics, server_config)
    }
}

impl Reloading<rustls::ClientConfig> {
    /// Loads the files (failing if they are not usable now) for a client offering `alpn`.
    pub fn client(
        files: TlsFiles,
        alpn: Vec<Vec<u8>>,
        component: &str,
        metrics: &TlsMetrics,
    ) -> Result<Self, TlsError> {
        Self::load(files, alpn, component, metrics, client_config)
    }
}

impl<C: Send + Sync + 'static> Reloading<C> {
    fn load(
        files: TlsFiles,
        alpn: Vec<Vec<u8>>,
        component: &str,
        metrics: &TlsMetrics,
        build: fn(&Material, &[Vec<u8>]) -> Result<C, TlsError>,
    ) -> Result<Self, TlsError> {
        let (seen, raw) = read_files(&files);
        let material = parse(&files, &raw?)?;
        let config = build(&material, &alpn)?;
        let label = TlsMetrics::label(component);
        metrics
            .inner
            .not_after
            .get_or_create(&label)
            .set(material.info.not_after);
        // Present from the start, so that alerts on its increase see the first one.
        let _ = metrics.inner.failures.get_or_create(&label);
        tracing::info!(
            component,
            serial = %material.info.serial,
            not_after = material.info.not_after,
            subject = %material.info.subject,
            "TLS certificate loaded"
        );
        Ok(Self {
            shared: Arc::new(Shared {
                files,
                component: component.to_string(),
                metrics: metrics.clone(),
                alpn,
                build,
                state: Mutex::new(State {
                    config: Arc::new(config),
                    served: material.info,
                    seen,
                    suspect: None,
                }),
            }),
        })
    }

    /// The configuration for a new handshake.
    pub fn config(&self) -> Arc<C> {
        self.shared.lock().config.clone()
    }

    /// The certificate new handshakes present.
    pub fn served(&self) -> CertInfo {
        self.shared.lock().served.clone()
    }

    /// Looks at the files once, and takes their content if it changed and is usable.
    pub fn reload_if_changed(&self) -> Reload {
        self.shared.reload_if_changed()
    }

    /// Looks at the files every `every` from now on, in a task that ends when the last
    /// clone of this is dropped. Without a Tokio runtime (a one-shot CLI) it does nothing.
    pub fn watch(&self, every: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Shared<C>> = Arc::downgrade(&self.shared);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // immediate: the files were just read
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                // Reading files blocks: a stalled volume must not stall a runtime worker.
                let looked = tokio::task::spawn_blocking(move || {
                    shared.reload_if_changed();
                });
                if looked.await.is_err() {
                    return;
                }
            }
        });
    }
}

impl<C> Shared<C> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<C>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reload_if_changed(&self) -> Reload {
        let (digest, raw) = read_files(&self.files);
        if self.lock().seen == digest {
            return Reload::Unchanged;
        }
        let built = raw
            .and_then(|raw| parse(&self.files, &raw))
            .and_then(|m| Ok(((self.build)(&m, &self.alpn)?, m.info)));
        let label = TlsMetrics::label(&self.component);
        let mut state = self.lock();
        match built {
            Ok((config, info)) => {
                tracing::info!(
                    component = %self.component,
                    serial = %info.serial,
                    not_after = info.not_after,
                    subject = %info.subject,
                    previous_serial = %state.served.serial,
                    "TLS certificate reloaded"
                );
                self.metrics
                    .inner
                    .not_after
                    .get_or_create(&label)
                    .set(info.not_after);
                *state = State {
                    config: Arc::new(config),
                    served: info.clone(),
                    seen: digest,
                    suspect: None,
                };
                Reload::Reloaded(info)
            }
            Err(e) if state.suspect != Some(digest) => {
                tracing::debug!(component = %self.component, error = %e, "TLS files not usable yet");
                state.suspect = Some(digest);
                Reload::Pending(e)
            }
            Err(e) => {
                tracing::error!(
                    component = %self.component,
                    error = %e,
                    serial = %state.served.serial,
                    "changed TLS files refused; still presenting the previous certificate"
                );
                self.metrics.inner.failures.get_or_create(&label).inc();
                state.seen = digest;
                state.suspect = None;
                Reload::Refused(e)
            }
        }
    }
}

/// The files' bytes (cert, key, CA), and a digest of what was read, errors included.
fn read_files(files: &TlsFiles) -> (Digest, Result<[Vec<u8>; 3], TlsError>) {
    let mut hash = Sha256::new();
    let read = [&files.cert, &files.key, &files.ca].map(|path| {
        let bytes = std::fs::read(path);
        match &bytes {
            Ok(b) => {
                hash.update((b.len() as u64).to_be_bytes());
                hash.update(b);
            }
            Err(e) => {
                hash.update(u64::MAX.to_be_bytes());
                hash.update(e.kind().to_string());
            }
        }
        bytes.map_err(|e| file_error(path, e))
    });
    let [cert, key, ca] = read;
    let raw = (|| Ok([cert?, key?, ca?]))();
    (hash.finalize().into(), raw)
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn parse(files: &TlsFiles, [cert, key, ca]: &[Vec<u8>; 3]) -> Result<Material, TlsError> {
    let certs = |path: &Path, pem: &[u8]| {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(path, e))?;
        if certs.is_empty() {
            return Err(file_error(path, "no certificate"));
        }
        Ok(certs)
    };
    let chain = certs(&files.cert, cert)?;
    let info = CertInfo::of(chain[0].as_ref()).map_err(|e| file_error(&files.cert, e))?;
    let key_der = PrivateKeyDer::from_pem_slice(key).map_err(|e| file_error(&files.key, e))?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| file_error(&files.key, e))?;
    let certified = CertifiedKey::new(chain, signing_key);
    // Strict: a key whose public half cannot be compared is refused too.
    certified.keys_match().map_err(|e| TlsError::KeyMismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })?;
    let mut roots = RootCertStore::empty();
    for ca in certs(&files.ca, ca)? {
        roots.add(ca).map_err(|e| file_error(&files.ca, e))?;
    }
    Ok(Material {
        key: Arc::new(certified),
        roots: Arc::new(roots),
        info,
    })
}

fn server_config(m: &Material, alpn: &[Vec<u8>]) -> Result<rustls::ServerConfig, TlsError> {
    let config = |e: &dyn std::fmt::Display| TlsError::Config(e.to_string());
    let verifier = WebPkiClientVerifier::builder_with_provider(m.roots.clone(), provider())
        .build()
        .map_err(|e| config(&e))?;
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config(&e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(m.key.clone())));
    c.alpn_protocols = alpn.to_vec();
    Ok(c)
}

fn client_config(m: &Material, alpn: &[Vec<u8>]) -> Result<rustls::ClientConfig, TlsError> {
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(m.roots.clone())
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(m.key.clone())));
    c.alpn_protocols = alpn.to_vec();
    Ok(c)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use rcgen::{CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    struct Pki {
        ca: CertifiedIssuer<'static, KeyPair>,
        dir: tempfile::TempDir,
    }

    impl Pki {
        fn new() -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            Self {
                ca,
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn files(&self) -> TlsFiles {
            let p = |n: &str| self.dir.path().join(n);
            TlsFiles {
                cert: p("tls.crt"),
                key: p("tls.key"),
                ca: p("ca.crt"),
            }
        }

        /// A new leaf (PEM cert, PEM key) and its serial.
        fn leaf(&self) -> (String, String, String) {
            let key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            let cert = params.signed_by(&key, &*self.ca).unwrap();
            let serial = CertInfo::of(cert.der()).unwrap().serial;
            (cert.pem(), key.serialize_pem(), serial)
        }

        /// Writes a file as a new inode renamed over the old one.
        fn put(&self, path: &Path, text: &str) {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }

        fn put_leaf(&self, (cert, key, _): &(String, String, String)) {
            let f = self.files();
            self.put(&f.cert, cert);
            self.put(&f.key, key);
            self.put(&f.ca, &self.ca.pem());
        }
    }

    fn failures(metrics: &TlsMetrics) -> String {
        let mut text = String::new();
        metrics.append_to(&mut text);
        text.lines()
            .find(|l| l.starts_with("sealtrail_tls_reload_failures_total{"))
            .unwrap()
            .to_string()
    }

    #[test]
    fn takes_changed_files_and_keeps_the_old_ones_when_refused() {
        let pki = Pki::new();
        let first = pki.leaf();
        pki.put_leaf(&first);
        let metrics = TlsMetrics::default();
        let tls = Reloading::server(pki.files(), vec![], "test", &metrics).unwrap();
        assert_eq!(tls.served().serial, first.2);
        assert!(matches!(tls.reload_if_changed(), Reload::Unchanged));
        assert_eq!(
            failures(&metrics),
            r#"sealtrail_tls_reload_failures_total{component="test"} 0"#
        );

        let second = pki.leaf();
        pki.put_leaf(&second);
        assert!(matches!(tls.reload_if_changed(), Reload::Reloaded(i) if i.serial == second.2));
        assert_eq!(tls.served().serial, second.2);
        let config = tls.config();

        // A corrupt key: refused only once it stayed, counted once, old material kept.
        pki.put(&pki.files().key, "-----BEGIN PRIVATE KEY-----\nAAAA\n");
        assert!(matches!(tls.reload_if_changed(), Reload::Pending(_)));
        assert!(matches!(tls.reload_if_changed(), Reload::Refused(_)));
        assert!(matches!(tls.reload_if_changed(), Reload::Unchanged));
        assert_eq!(
            failures(&metrics),
            r#"sealtrail_tls_reload_failures_total{component="test"} 1"#
        );
        assert_eq!(tls.served().serial, second.2);
        assert!(Arc::ptr_eq(&config, &tls.config()));

        // A well-formed key of another certificate.
        let third = pki.leaf();
        pki.put(&pki.files().cert, &third.0);
        pki.put(&pki.files().key, &second.1);
        assert!(matches!(tls.reload_if_changed(), Reload::Pending(_)));
        let Reload::Refused(e) = tls.reload_if_changed() else {
            panic!("a mismatched key was not refused");
        };
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        assert_eq!(
            failures(&metrics),
            r#"sealtrail_tls_reload_failures_total{component="test"} 2"#
        );
        assert_eq!(tls.served().serial, second.2);

        // A missing file, then the matching key at last.
        std::fs::remove_file(pki.files().key).unwrap();
        assert!(matches!(tls.reload_if_changed(), Reload::Pending(_)));
        pki.put(&pki.files().key, &third.1);
        assert!(matches!(tls.reload_if_changed(), Reload::Reloaded(i) if i.serial == third.2));
    }

    #[test]
    fn a_half_written_file_that_is_then_completed_is_not_counted() {
        let pki = Pki::new();
        pki.put_leaf(&pki.leaf());
        let metrics = TlsMetrics::default();
        let tls = Reloading::client(pki.files(), vec![], "client", &metrics).unwrap();
        let next = pki.leaf();
        // The certificate first (its key does not match yet), then the key.
        pki.put(&pki.files().cert, &next.0);
        assert!(matches!(tls.reload_if_changed(), Reload::Pending(_)));
        pki.put(&pki.files().key, &next.1);
        assert!(matches!(tls.reload_if_changed(), Reload::Reloaded(i) if i.serial == next.2));
        assert_eq!(
            failures(&metrics),
            r#"sealtrail_tls_reload_failures_total{component="client"} 0"#
        );
    }

    #[test]
    fn unusable_files_at_start_are_an_error() {
        let pki = Pki::new();
        let leaf = pki.leaf();
        pki.put_leaf(&leaf);
        let metrics = TlsMetrics::default();
        pki.put(&pki.files().ca, "not PEM");
        assert!(Reloading::server(pki.files(), vec![], "x", &metrics).is_err());
        pki.put(&pki.files().ca, &pki.ca.pem());
        pki.put(&pki.files().key, &pki.leaf().1);
        let err = Reloading::server(pki.files(), vec![], "x", &metrics).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn metrics_follow_the_service_text_with_one_eof() {
        let pki = Pki::new();
        pki.put_leaf(&pki.leaf());
        let metrics = TlsMetrics::default();
        let tls = Reloading::server(pki.files(), vec![], "ingester", &metrics).unwrap();
        let mut text = "# TYPE a gauge\na 1\n# EOF\n".to_string();
        metrics.append_to(&mut text);
        assert!(text.starts_with("# TYPE a gauge\na 1\n"), "{text}");
        assert!(
            text.ends_with("# EOF\n") && text.matches("# EOF").count() == 1,
            "{text}"
        );
        let gauge = format!(
            "sealtrail_tls_cert_not_after_seconds{{component=\"ingester\"}} {}",
            tls.served().not_after
        );
        assert!(text.lines().any(|l| l == gauge), "{text}");
        assert!(
            text.contains("# TYPE sealtrail_tls_cert_not_after_seconds gauge"),
            "{text}"
        );
    }
}
