//! Where batches go: the ingester's webhook, as the apiserver sends them ([`HttpsSink`]:
//! an `EventList` POSTed over mutual TLS), so that a trail from CloudWatch goes through the
//! same canonical form, the same durable-before-2xx rule and the same dedupe as the
//! webhook's.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::Error;
use crate::source::BoxFuture;

/// How long one POST may take, connection included.
pub const POST_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest answer body read.
const MAX_ANSWER_LEN: usize = 64 * 1024;

/// What became of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// 2xx: durable in the trail.
    Stored,
    /// Worth retrying: unreachable, 429, 5xx.
    Retry(String),
    /// Refused as it is (another 4xx): sending it again would not help.
    Refused(String),
}

/// Takes one batch (an `EventList`).
pub trait Sink: Send + Sync {
    fn send(&self, body: Bytes) -> BoxFuture<'_, Sent>;
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// The ingester's webhook over mutual TLS, kept-alive connections: one per batch in flight.
pub struct HttpsSink {
    host: String,
    port: u16,
    path: String,
    tls: sealtrail_ops::tls::Reloading<rustls::ClientConfig>,
    /// Connections not in use; a POST takes one (or opens one) and puts it back after.
    idle: std::sync::Mutex<Vec<Sender>>,
}

impl HttpsSink {
    /// `url` is `https://host:port/path` (the webhook's, `/v1/audit`).
    pub fn new(
        url: &str,
        tls: sealtrail_ops::tls::Reloading<rustls::ClientConfig>,
    ) -> Result<Self, Error> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| Error::Config(format!("--ingester-url {url}: {e}")))?;
        if uri.scheme_str() != Some("https") {
            return Err(Error::Config(format!("--ingester-url {url}: not https")));
        }
        let host = uri
            .host()
            .ok_or_else(|| Error::Config(format!("--ingester-url {url}: no host")))?
            .trim_matches(['[', ']'])
            .to_string();
        Ok(Self {
            host,
            port: uri.port_u16().unwrap_or(443),
            path: uri
                .path_and_query()
                .map_or("/".into(), |p| p.as_str().to_string()),
            tls,
            idle: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// A new connection (TCP, TLS with the client certificate of the moment, HTTP/1.1).
    async fn connect(&self) -> Result<Sender, String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect {}:{}: {e}", self.host, self.port))?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
        let tls = TlsConnector::from(self.tls.config())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", self.host))?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        // Ends when either side closes the connection.
        tokio::spawn(conn);
        Ok(sender)
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Sender>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One POST on an idle connection; one the server closed meanwhile is replaced once
    /// before the attempt counts as failed.
    async fn post(&self, body: Bytes) -> Result<(u16, String), String> {
        for fresh in [false, true] {
            let kept = if fresh { None } else { self.idle().pop() };
            let sender = match kept {
                Some(mut s) => match s.ready().await {
                    Ok(()) => s,
                    Err(_) => self.connect().await?,
                },
                None => self.connect().await?,
            };
            match self.exchange(sender, body.clone()).await {
                Ok((sender, status, answer)) => {
                    self.idle().push(sender);
                    return Ok((status, answer));
                }
                Err(e) if fresh => return Err(e),
                Err(_) => continue,
            }
        }
        Err("no connection".into())
    }

    async fn exchange(
        &self,
        mut sender: Sender,
        body: Bytes,
    ) -> Result<(Sender, u16, String), String> {
        let req = http::Request::post(&self.path)
            .header(http::header::HOST, &self.host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "sealtrail-cloudwatch")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let answer = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_LEN)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .map_err(|e| format!("reading the answer: {e}"))?;
        Ok((sender, status, answer))
    }
}

impl Sink for HttpsSink {
    fn send(&self, body: Bytes) -> BoxFuture<'_, Sent> {
        Box::pin(async move {
            match tokio::time::timeout(POST_TIMEOUT, self.post(body)).await {
                Err(_) => Sent::Retry(format!("no answer within {} s", POST_TIMEOUT.as_secs())),
                Ok(Err(e)) => Sent::Retry(e),
                Ok(Ok((status, _))) if (200..300).contains(&status) => Sent::Stored,
                Ok(Ok((status, answer))) if status == 429 || status >= 500 => {
                    Sent::Retry(format!("HTTP {status}: {}", answer.trim()))
                }
                Ok(Ok((status, answer))) => {
                    Sent::Refused(format!("HTTP {status}: {}", answer.trim()))
                }
            }
        })
    }
}

/// A sink for unit tests: records what it got.
#[derive(Default)]
pub struct MemorySink {
    pub got: std::sync::Mutex<Vec<Bytes>>,
}

impl Sink for Arc<MemorySink> {
    fn send(&self, body: Bytes) -> BoxFuture<'_, Sent> {
        self.got
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(body);
        Box::pin(async { Sent::Stored })
    }
}
