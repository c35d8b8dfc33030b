//! One timestamp authority as the anchor asks it: an RFC 3161 request over HTTP (RFC 3161
//! §3.4, `application/timestamp-query`), over TLS for an `https` URL, and every check of
//! the answer before anything is stored.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use sealtrail_core::merkle::Hash;
use sealtrail_core::timestamp::{self, MAX_TOKEN_LEN, TokenInfo};
use sealtrail_core::trust::TrustedTsa;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Why one request for a token failed: the `reason` label of the failure metric.
#[derive(Debug, thiserror::Error)]
pub enum TsaError {
    /// The TSA could not be reached or did not answer in time.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// An HTTP error status, or a body that is not a timestamp reply.
    #[error("HTTP: {0}")]
    Http(String),
    /// The answer is not a granted response with a token that verifies for this request.
    #[error("refused answer: {0}")]
    Refused(String),
}

impl TsaError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "unreachable",
            Self::Http(_) => "http",
            Self::Refused(_) => "refused",
        }
    }
}

/// A configured TSA: the pinned entry its tokens must verify against, and its URL.
#[derive(Debug, Clone)]
pub struct Tsa {
    pub pinned: TrustedTsa,
    pub url: Uri,
}

impl Tsa {
    /// Parses `NAME=URL` (`http://` or `https://`); `NAME` must be pinned in `trust`.
    pub fn parse(spec: &str, trust: &sealtrail_core::trust::Trust) -> Result<Self, String> {
        let (name, url) = spec
            .split_once('=')
            .ok_or_else(|| format!("--tsa {spec:?}: expected NAME=URL"))?;
        let pinned = trust.tsa(name).cloned().ok_or_else(|| {
            format!("--tsa {name}: the trust bundle pins no timestamp authority of that name")
        })?;
        let url: Uri = url.parse().map_err(|e| format!("--tsa {name}: {e}"))?;
        match url.scheme_str() {
            Some("http" | "https") if url.host().is_some() => Ok(Self { pinned, url }),
            _ => Err(format!(
                "--tsa {name}: the URL must be http:// or https:// with a host"
            )),
        }
    }

    pub fn name(&self) -> &str {
        &self.pinned.name
    }

    /// Asks for a token on `imprint` and checks it (docs/FORMAT.md §10.2): HTTP 200 with a
    /// timestamp reply, a granted status, a token that verifies against the pinned roots,
    /// for this imprint and this nonce. Returns the token's bytes and what it says.
    pub async fn stamp(
        &self,
        imprint: &Hash,
        tls: &Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<(Vec<u8>, TokenInfo), TsaError> {
        let nonce = {
            use rand_core::RngCore as _;
            rand_core::OsRng.next_u64()
        };
        let body =
            timestamp::request(imprint, nonce).map_err(|e| TsaError::Refused(e.to_string()))?;
        let resp = tokio::time::timeout(timeout, self.post(body, tls))
            .await
            .map_err(|_| TsaError::Unreachable(format!("no answer within {timeout:?}")))??;
        let token =
            timestamp::token_from_response(&resp).map_err(|e| TsaError::Refused(e.to_string()))?;
        let info = timestamp::verify_token(&token, &self.pinned)
            .map_err(|e| TsaError::Refused(e.to_string()))?;
        if &info.imprint != imprint {
            return Err(TsaError::Refused(
                "the token names another message imprint".into(),
            ));
        }
        if info.nonce.as_deref() != Some(timestamp::nonce_bytes(nonce).as_slice()) {
            return Err(TsaError::Refused(
                "the token's nonce is not the request's".into(),
            ));
        }
        Ok((token, info))
    }

    async fn post(
        &self,
        body: Vec<u8>,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<Vec<u8>, TsaError> {
        let host = self.url.host().unwrap_or_default().to_string();
        let https = self.url.scheme_str() == Some("https");
        let port = self.url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| TsaError::Unreachable(format!("{host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let path = self.url.path_and_query().map_or("/", |p| p.as_str());
        let req = Request::post(path)
            .header(
                header::HOST,
                self.url.authority().map_or(host.as_str(), |a| a.as_str()),
            )
            .header(header::CONTENT_TYPE, "application/timestamp-query")
            .header(header::ACCEPT, "application/timestamp-reply")
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|e| TsaError::Http(e.to_string()))?;
        if https {
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| TsaError::Unreachable(format!("{host}: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| TsaError::Unreachable(format!("TLS to {host}: {e}")))?;
            exchange(stream, req).await
        } else {
            exchange(tcp, req).await
        }
    }
}

/// One HTTP/1.1 request on a fresh connection; the reply body is read up to
/// [`MAX_TOKEN_LEN`].
async fn exchange<S>(stream: S, req: Request<Full<bytes::Bytes>>) -> Result<Vec<u8>, TsaError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| TsaError::Unreachable(e.to_string()))?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| TsaError::Unreachable(e.to_string()))?;
    if resp.status() != StatusCode::OK {
        return Err(TsaError::Http(format!("status {}", resp.status())));
    }
    let kind = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = kind.split(';').next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("application/timestamp-reply") {
        return Err(TsaError::Http(format!(
            "content type {kind:?}, not application/timestamp-reply"
        )));
    }
    let body = Limited::new(resp.into_body(), MAX_TOKEN_LEN)
        .collect()
        .await
        .map_err(|e| TsaError::Http(format!("reply body: {e}")))?;
    Ok(body.to_bytes().to_vec())
}

/// The client TLS configuration for `https` TSAs: the system's roots.
pub fn client_tls() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}
