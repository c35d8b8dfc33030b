//! A real RFC 3161 timestamp authority for tests: OpenSSL's own TSA (`openssl ts -reply`)
//! behind a small HTTP endpoint on loopback (RFC 3161 §3.4: POST
//! `application/timestamp-query`, answer `application/timestamp-reply`), with a test PKI
//! made by `openssl` (a root, and a TSA certificate whose extended key usage is critical
//! `id-kp-timeStamping`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sealtrail_core::trust::TrustedTsa;

const EXT: &str = "[tsa]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=critical,timeStamping
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
";

const TS_CNF: &str = "[tsa]
default_tsa = tsa1
[tsa1]
serial = ./serial
crypto_device = builtin
signer_cert = ./tsa.pem
signer_key = ./tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
other_policies = 1.3.6.1.4.1.99999.2
digests = sha256
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
";

/// A running test TSA.
#[derive(Debug)]
pub struct TestTsa {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    pub addr: SocketAddr,
    /// Numbers each `openssl ts -reply`, one at a time (it keeps its serial in a file).
    seq: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("run openssl")?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl TestTsa {
    /// A fresh PKI and a TSA listening on `127.0.0.1:0`. `cn` names its root.
    pub async fn start(cn: &str) -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("ext.cnf"), EXT)?;
        std::fs::write(dir.join("ts.cnf"), TS_CNF)?;
        std::fs::write(dir.join("serial"), "01\n")?;
        let subj = format!("/CN={cn} root");
        for args in [
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "root.key",
            ][..],
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "root.key",
                "-subj",
                &subj,
                "-days",
                "3650",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                "root.pem",
            ],
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "tsa.key",
            ],
            &[
                "req",
                "-new",
                "-key",
                "tsa.key",
                "-subj",
                &format!("/CN={cn}"),
                "-out",
                "tsa.csr",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "tsa.csr",
                "-CA",
                "root.pem",
                "-CAkey",
                "root.key",
                "-CAcreateserial",
                "-days",
                "3650",
                "-extfile",
                "ext.cnf",
                "-extensions",
                "tsa",
                "-out",
                "tsa.pem",
            ],
            &[
                "x509", "-in", "root.pem", "-outform", "DER", "-out", "root.der",
            ],
        ] {
            openssl(&dir, args)?;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seq = Arc::new(Mutex::new(0u64));
        let (d, sq) = (dir.clone(), seq.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (d, sq) = (d.clone(), sq.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (d, sq) = (d.clone(), sq.clone());
                        async move { Ok::<_, std::convert::Infallible>(answer(req, d, sq).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            _dir: tmp,
            dir,
            addr,
            seq,
            task,
        })
    }

    /// The URL of the TSA at `addr` (itself, or a proxy in front of it).
    pub fn url_at(addr: SocketAddr) -> String {
        format!("http://{addr}/tsa")
    }

    pub fn url(&self) -> String {
        Self::url_at(self.addr)
    }

    /// The root certificate (DER).
    pub fn root_der(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("root.der")).unwrap_or_default()
    }

    /// The root certificate (PEM file), for `openssl ts -verify -CAfile`.
    pub fn root_pem(&self) -> PathBuf {
        self.dir.join("root.pem")
    }

    /// A trust bundle entry pinning this TSA's root under `name`.
    pub fn pinned(&self, name: &str) -> TrustedTsa {
        TrustedTsa::new(name, &[self.root_der()], &[])
    }

    /// A token for `imprint` straight from `openssl ts -reply` (what a test stores by hand).
    pub fn token_for(&self, imprint: &[u8; 32]) -> anyhow::Result<Vec<u8>> {
        let hex: String = imprint.iter().map(|b| format!("{b:02x}")).collect();
        let q = format!("query-{hex}.tsq");
        openssl(
            &self.dir,
            &[
                "ts", "-query", "-digest", &hex, "-sha256", "-cert", "-out", &q,
            ],
        )?;
        let resp = reply_to(&self.dir, &self.seq, &std::fs::read(self.dir.join(&q))?)?;
        let (r, t) = (format!("reply-{hex}.tsr"), format!("token-{hex}.tsr"));
        std::fs::write(self.dir.join(&r), resp)?;
        openssl(
            &self.dir,
            &["ts", "-reply", "-in", &r, "-token_out", "-out", &t],
        )?;
        Ok(std::fs::read(self.dir.join(t))?)
    }

    /// Whether `openssl ts -verify` accepts `token` for `imprint` against this TSA's root.
    pub fn openssl_verifies(&self, token: &[u8], imprint: &[u8; 32]) -> bool {
        let hex: String = imprint.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.dir.join(format!("check-{hex}.tsr"));
        if std::fs::write(&path, token).is_err() {
            return false;
        }
        let path = path.to_string_lossy().into_owned();
        let root = self.root_pem().to_string_lossy().into_owned();
        openssl(
            &self.dir,
            &[
                "ts",
                "-verify",
                "-in",
                &path,
                "-token_in",
                "-digest",
                &hex,
                "-CAfile",
                &root,
            ],
        )
        .is_ok()
    }
}

impl Drop for TestTsa {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `openssl ts -reply` to the DER request `query`: the DER response. One at a time.
fn reply_to(dir: &Path, seq: &Mutex<u64>, query: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut n = seq
        .lock()
        .map_err(|_| anyhow::anyhow!("a reply panicked"))?;
    *n += 1;
    let (q, r) = (format!("request-{n}.tsq"), format!("response-{n}.tsr"));
    std::fs::write(dir.join(&q), query)?;
    openssl(
        dir,
        &[
            "ts",
            "-reply",
            "-config",
            "ts.cnf",
            "-queryfile",
            &q,
            "-out",
            &r,
        ],
    )?;
    Ok(std::fs::read(dir.join(r))?)
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    dir: PathBuf,
    seq: Arc<Mutex<u64>>,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &str, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", kind)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    let kind = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if req.method() != hyper::Method::POST || kind != "application/timestamp-query" {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            b"POST application/timestamp-query".to_vec(),
        );
    }
    let Ok(body) = req.into_body().collect().await else {
        return reply(StatusCode::BAD_REQUEST, "text/plain", b"body".to_vec());
    };
    let query = body.to_bytes();
    match tokio::task::spawn_blocking(move || reply_to(&dir, &seq, &query)).await {
        Ok(Ok(bytes)) => reply(StatusCode::OK, "application/timestamp-reply", bytes),
        _ => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            b"openssl ts -reply failed".to_vec(),
        ),
    }
}
