//! The kube-apiserver's batching audit webhook client, reproduced (docs/DESIGN.md §5).
//!
//! What the apiserver does, and so what this does:
//! - events become `EventList` batches of at most `max_batch` (400) items of one
//!   `apiVersion`; the items carry no `kind`/`apiVersion`; the body is what Go's
//!   `encoding/json` `Encoder` writes: no whitespace, `<>&` escaped as `\u003c\u003e\u0026`,
//!   U+2028/U+2029 escaped, and a trailing newline;
//! - each batch is sent in its own task, after taking a token from a token bucket
//!   (10 QPS, burst 15), with no cap on batches in flight;
//! - `POST` over HTTPS with a client certificate, 30 s timeout per attempt; 200-206 is
//!   success; anything else (4xx included) or a transport error re-sends the whole batch
//!   after a backoff (10 s, ×1.5, 5 attempts in all; a larger `Retry-After` wins); after
//!   the last attempt the batch is dropped and counted, like `apiserver_audit_error_total`.
//!
//! What it does not reproduce: the apiserver's 10,000-event buffer and 30 s batch wait
//! (events here are all available at once, so batches are always full), the ±20 % jitter
//! of the apiserver's backoff (delays here are exact so that tests can measure them), and
//! the decode/re-encode through Go structs (member order here is the input's, and unknown
//! members are kept, which is what the trail must cope with anyway).
//!
//! Input lines are parsed with the workspace's strict parser ([`sealtrail_core::jcs`]), so
//! member order and number lexemes survive untouched.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use bytes::Bytes;
use rustls_pki_types::ServerName;
use sealtrail_core::jcs::{self, Object, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

/// The `User-Agent` the emulated apiserver sends.
pub const DEFAULT_USER_AGENT: &str = "kube-apiserver/v1.31.0 (linux/amd64) kubernetes/emulator";
/// The apiVersion of events that carry none.
pub const DEFAULT_API_VERSION: &str = "audit.k8s.io/v1";
/// The apiserver's default batch size (`--audit-webhook-batch-max-size`).
pub const DEFAULT_MAX_BATCH: usize = 400;
/// Upper bound on batches in flight per emulated apiserver.
pub const MAX_IN_FLIGHT_CAP: usize = 256;

/// Backoff between attempts at one batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt.
    pub initial_backoff: Duration,
    /// Each further wait is the previous one times this.
    pub factor: f64,
    /// Attempts in all, the first included (0 is taken as 1).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// The apiserver's: 10 s, ×1.5, 5 attempts.
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(10),
            factor: 1.5,
            max_attempts: 5,
        }
    }
}

/// How to emulate the apiserver(s).
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The webhook URL (`https://host:port/path`), as in the webhook kubeconfig.
    pub url: String,
    /// CA certificate (PEM) that issued the webhook's server certificate.
    pub ca: PathBuf,
    /// Client certificate and key (PEM) the apiserver presents.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Items per batch, at most (apiserver default 400).
    pub max_batch: usize,
    /// Batches per second each apiserver may start; `None`: unthrottled.
    pub qps: Option<f64>,
    /// Token bucket size (apiserver default 15).
    pub burst: u32,
    /// Batches in flight per apiserver; `None`: one task per batch (capped at
    /// [`MAX_IN_FLIGHT_CAP`]).
    pub max_in_flight: Option<usize>,
    /// Timeout of one attempt (connect, TLS, request, whole response).
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub user_agent: String,
    /// Independent apiservers (each with its own connections and throttle) sharing the
    /// batches round-robin. 0 is taken as 1.
    pub apiservers: usize,
    /// Set every item's `requestReceivedTimestamp` and `stageTimestamp` to the time its
    /// batch is first sent, as a live apiserver's events are (replayed captures are years
    /// old, which the verifier's late-event check would flag).
    pub restamp: bool,
}

impl Default for EmulatorConfig {
    /// The apiserver's defaults, towards a local ingester with `sealtrail-devpki` files in
    /// the working directory.
    fn default() -> Self {
        Self {
            url: "https://127.0.0.1:8443/v1/audit".into(),
            ca: "ca.pem".into(),
            cert: "apiserver-client.pem".into(),
            key: "apiserver-client.key".into(),
            max_batch: DEFAULT_MAX_BATCH,
            qps: Some(10.0),
            burst: 15,
            max_in_flight: None,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            restamp: false,
            user_agent: DEFAULT_USER_AGENT.into(),
            apiservers: 1,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Go encoding/json

/// Appends `s` as Go's `encoding/json` encodes a string (HTML escaping on, Go ≥ 1.22):
/// `"` and `\` backslashed; `\b \f \n \r \t` short forms; other control characters, `<`,
/// `>`, `&`, U+2028 and U+2029 as `\u00xx`/`\u20xx` (lower-case hex); everything else as
/// literal UTF-8.
pub fn go_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let short: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            _ => None,
        };
        if let Some(esc) = short {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(esc);
            i += 1;
            start = i;
        } else if b < 0x20 || b == b'<' || b == b'>' || b == b'&' {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
            i += 1;
            start = i;
        } else if b == 0xe2
            && bytes.get(i + 1) == Some(&0x80)
            && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9))
        {
            // U+2028 LINE SEPARATOR / U+2029 PARAGRAPH SEPARATOR
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(if bytes[i + 2] == 0xa8 {
                b"\\u2028"
            } else {
                b"\\u2029"
            });
            i += 3;
            start = i;
        } else {
            i += 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `v` as Go's `encoding/json` would: compact, members in the given order, numbers
/// exactly as their input lexeme.
pub fn go_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.as_str().as_bytes()),
        Value::String(s) => go_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                go_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(o) => go_object(out, o, &[], None),
    }
}

/// An object, leaving out the members named in `skip` and appending `suffix.1` to the
/// string member named `suffix.0`.
fn go_object(out: &mut Vec<u8>, o: &Object, skip: &[&str], suffix: Option<(&str, &str)>) {
    out.push(b'{');
    let mut first = true;
    for (k, v) in o.iter() {
        if skip.contains(&k) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        go_string(out, k);
        out.push(b':');
        match (suffix, v) {
            (Some((name, sfx)), Value::String(s)) if name == k => {
                go_string(out, &format!("{s}{sfx}"))
            }
            _ => go_value(out, v),
        }
    }
    out.push(b'}');
}

fn parse_event(line: &[u8], n: usize) -> anyhow::Result<Object> {
    match jcs::parse(line).map_err(|e| anyhow!("event line {n}: {e}"))? {
        Value::Object(o) => Ok(o),
        _ => bail!("event line {n}: not a JSON object"),
    }
}

fn api_version_of(o: &Object, n: usize) -> anyhow::Result<String> {
    for (k, v) in o.iter() {
        if k == "apiVersion" {
            return match v {
                Value::String(s) => Ok(s.clone()),
                _ => bail!("event line {n}: apiVersion is not a string"),
            };
        }
    }
    Ok(DEFAULT_API_VERSION.into())
}

// ---------------------------------------------------------------------------------------
// Batches

/// One webhook request body.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The list's apiVersion (that of all its events).
    pub api_version: String,
    /// Number of items.
    pub events: usize,
    /// The exact body, trailing newline included.
    pub body: Bytes,
}

/// Groups audit-log lines (one event per line, `kind`/`apiVersion` included or not) into
/// the apiserver's `EventList` batches: consecutive events of one apiVersion (missing:
/// `audit.k8s.io/v1`), at most `max_batch` each, items without `kind` and `apiVersion`.
/// Empty lines are skipped.
pub fn batches(lines: &[Vec<u8>], max_batch: usize) -> anyhow::Result<Vec<Batch>> {
    ensure!(max_batch > 0, "max_batch must be at least 1");
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<Vec<u8>>)> = None;
    for (i, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let o = parse_event(line, i + 1)?;
        let version = api_version_of(&o, i + 1)?;
        let mut item = Vec::with_capacity(line.len());
        go_object(&mut item, &o, &["kind", "apiVersion"], None);
        match &mut current {
            Some((v, items)) if *v == version && items.len() < max_batch => items.push(item),
            _ => {
                if let Some((v, items)) = current.take() {
                    out.push(event_list(&v, &items));
                }
                current = Some((version, vec![item]));
            }
        }
    }
    if let Some((v, items)) = current {
        out.push(event_list(&v, &items));
    }
    Ok(out)
}

/// The bodies of [`batches`].
pub fn build_batches(lines: &[Vec<u8>], max_batch: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(batches(lines, max_batch)?
        .into_iter()
        .map(|b| b.body.to_vec())
        .collect())
}

/// `{"kind":"EventList","apiVersion":…,"metadata":{},"items":[…]}` and a newline, as Go's
/// `json.Encoder` writes it.
pub fn event_list(api_version: &str, items: &[Vec<u8>]) -> Batch {
    let len: usize = items.iter().map(|i| i.len() + 1).sum();
    let mut body = Vec::with_capacity(len + 100);
    body.extend_from_slice(br#"{"kind":"EventList","apiVersion":"#);
    go_string(&mut body, api_version);
    body.extend_from_slice(br#","metadata":{},"items":["#);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}\n");
    Batch {
        api_version: api_version.into(),
        events: items.len(),
        body: body.into(),
    }
}

/// The input replayed `n` times: pass 0 is the lines as they are; in pass `r` ≥ 1 every
/// string `auditID` gets `-r<r>` appended (so no event is an exact duplicate of another,
/// while the stages of one request still share their auditID) and the line is re-encoded
/// as Go would (`kind`/`apiVersion` kept). Empty lines are dropped.
pub fn repeat_events(lines: &[Vec<u8>], n: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let lines: Vec<&Vec<u8>> = lines
        .iter()
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(lines.len() * n);
    if n == 0 {
        return Ok(out);
    }
    out.extend(lines.iter().map(|l| l.to_vec()));
    if n == 1 {
        return Ok(out);
    }
    let parsed = lines
        .iter()
        .enumerate()
        .map(|(i, l)| parse_event(l, i + 1))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for r in 1..n {
        let sfx = format!("-r{r}");
        for o in &parsed {
            let mut line = Vec::new();
            go_object(&mut line, o, &[], Some(("auditID", &sfx)));
            out.push(line);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// HTTPS client
//
// A small HTTP/1.1 client of its own rather than hyper's, for one behaviour of Go's
// `net/http` Transport that matters here: when a server answers before it has read the
// whole request body (a 413 from a body limit, say) and closes, the response is still
// returned. The request is written while the response is read; a response that arrives
// first wins, and a write error only matters if no response follows.

type Conn = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// The apiserver's HTTPS client: HTTP/1.1 over TLS with a client certificate, keep-alive
/// connections reused, one timeout per attempt. Cheap to clone (shares its connections).
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.inner.timeout)
            .field("user_agent", &self.inner.user_agent)
            .finish_non_exhaustive()
    }
}

struct ClientInner {
    tls: TlsConnector,
    timeout: Duration,
    user_agent: String,
    idle: Mutex<Vec<(String, Conn)>>,
}

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// `Retry-After`, when given in seconds.
    pub retry_after: Option<Duration>,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
}

fn target(url: &str) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| anyhow!("{url}: only https:// URLs are supported"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let path = path.split('#').next().unwrap_or("/").to_string();
    ensure!(
        !authority.is_empty() && !authority.contains('@'),
        "{url}: bad host"
    );
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| anyhow!("{url}: bad IPv6 host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().with_context(|| format!("{url}: port"))?,
            None if after.is_empty() => 443,
            None => bail!("{url}: bad host"),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().with_context(|| format!("{url}: port"))?,
            ),
            None => (authority.to_string(), 443),
        }
    };
    Ok(Target {
        host,
        port,
        authority: authority.to_string(),
        path,
    })
}

impl Client {
    /// A client with this TLS configuration (its ALPN list is replaced by HTTP/1.1 only).
    pub fn new(mut tls: rustls::ClientConfig, timeout: Duration, user_agent: &str) -> Self {
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            inner: Arc::new(ClientInner {
                tls: TlsConnector::from(Arc::new(tls)),
                timeout,
                user_agent: user_agent.into(),
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// One attempt: `POST url` with `body` as the apiserver sends it, the whole response
    /// read, within the client's timeout.
    pub async fn post(&self, url: &str, body: Bytes) -> anyhow::Result<Response> {
        self.post_with_headers(url, body, &[]).await
    }

    /// [`Client::post`] with extra request headers (e.g. the kubeconfig's bearer token).
    pub async fn post_with_headers(
        &self,
        url: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Response> {
        let timeout = self.inner.timeout;
        tokio::time::timeout(timeout, self.post_inner(url, body, headers))
            .await
            .map_err(|_| anyhow!("no complete response within {timeout:?}"))?
    }

    async fn post_inner(
        &self,
        url: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Response> {
        let t = target(url)?;
        let pool_key = format!("{}:{}", t.host, t.port);
        let conn = match self.checkout(&pool_key).await {
            Some(c) => c,
            None => self.connect(&t.host, t.port).await?,
        };
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nContent-Length: {}\r\n\
             Accept: application/json, */*\r\nContent-Type: application/json\r\n",
            t.path,
            t.authority,
            self.inner.user_agent,
            body.len()
        );
        for (name, value) in headers {
            anyhow::ensure!(
                !format!("{name}{value}").contains(['\r', '\n']),
                "header {name} has a line break"
            );
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let (response, reusable) = exchange(conn, head.into_bytes(), body).await?;
        if let Some(conn) = reusable {
            self.inner
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((pool_key, conn));
        }
        Ok(response)
    }

    /// An idle connection to `key` the server has not closed (as Go's transport, which
    /// always reads idle connections, would notice).
    async fn checkout(&self, key: &str) -> Option<Conn> {
        loop {
            let mut conn = {
                let mut idle = self
                    .inner
                    .idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let pos = idle.iter().rposition(|(k, _)| k == key)?;
                idle.swap_remove(pos).1
            };
            let mut probe = [0u8; 1];
            // Polled once: pending means open and quiet.
            if tokio::time::timeout(Duration::ZERO, conn.read(&mut probe))
                .await
                .is_err()
            {
                return Some(conn);
            }
        }
    }

    async fn connect(&self, host: &str, port: u16) -> anyhow::Result<Conn> {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connecting to {host}:{port}"))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(host.to_string())
            .with_context(|| format!("server name {host:?}"))?;
        self.inner
            .tls
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {host}:{port}"))
    }
}

/// Writes the request while reading the response. The connection comes back if it can
/// carry another request.
async fn exchange(
    conn: Conn,
    head: Vec<u8>,
    body: Bytes,
) -> anyhow::Result<(Response, Option<Conn>)> {
    let (rd, mut wr) = tokio::io::split(conn);
    let write = async move {
        wr.write_all(&head).await?;
        wr.write_all(&body).await?;
        wr.flush().await?;
        Ok::<_, std::io::Error>(wr)
    };
    let read = async move {
        let mut rd = BufReader::new(rd);
        let r = read_response(&mut rd).await;
        (r, rd)
    };
    tokio::pin!(write, read);
    let mut written: Option<std::io::Result<tokio::io::WriteHalf<Conn>>> = None;
    loop {
        tokio::select! {
            (r, rd) = &mut read => {
                let (resp, keep_alive) = match (r, &written) {
                    (Ok(r), _) => r,
                    (Err(e), Some(Err(w))) => {
                        return Err(e.context(format!("writing the request failed too: {w}")));
                    }
                    (Err(e), _) => return Err(e),
                };
                let conn = match written {
                    Some(Ok(wr)) if keep_alive && rd.buffer().is_empty() => {
                        Some(rd.into_inner().unsplit(wr))
                    }
                    _ => None,
                };
                return Ok((resp, conn));
            }
            w = &mut write, if written.is_none() => written = Some(w),
        }
    }
}

async fn read_line<R: AsyncBufRead + Unpin>(rd: &mut R, limit: usize) -> anyhow::Result<String> {
    let mut line = Vec::new();
    let n = (&mut *rd)
        .take(limit as u64)
        .read_until(b'\n', &mut line)
        .await?;
    ensure!(n > 0, "connection closed before a complete response");
    ensure!(line.ends_with(b"\n"), "response line too long or truncated");
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    String::from_utf8(line).context("response head is not UTF-8")
}

/// Reads one response; `true` if the connection may carry another request.
async fn read_response<R: AsyncBufRead + Unpin>(rd: &mut R) -> anyhow::Result<(Response, bool)> {
    loop {
        let status_line = read_line(rd, MAX_HEAD)
            .await
            .context("reading the response")?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        ensure!(
            version.starts_with("HTTP/1."),
            "not an HTTP/1 response: {status_line:?}"
        );
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|s| (100..1000).contains(s))
            .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
        let mut headers = Vec::new();
        let mut size = 0;
        loop {
            let line = read_line(rd, MAX_HEAD).await?;
            size += line.len();
            ensure!(size <= MAX_HEAD, "response head too large");
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| anyhow!("bad header line {line:?}"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        if (100..200).contains(&status) {
            continue; // 100 Continue and friends: the real response follows.
        }
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || version == "HTTP/1.0";
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = match header("content-length") {
            Some(v) => Some(
                v.parse::<u64>()
                    .with_context(|| format!("Content-Length {v:?}"))?,
            ),
            None => None,
        };
        let mut body = Vec::new();
        let delimited = if status == 204 || status == 304 {
            true
        } else if chunked {
            loop {
                let line = read_line(rd, 1024).await?;
                let hex = line.split(';').next().unwrap_or_default().trim();
                let n =
                    u64::from_str_radix(hex, 16).with_context(|| format!("chunk size {hex:?}"))?;
                if n == 0 {
                    while !read_line(rd, MAX_HEAD).await?.is_empty() {}
                    break;
                }
                let start = body.len();
                (&mut *rd).take(n).read_to_end(&mut body).await?;
                ensure!(
                    (body.len() - start) as u64 == n,
                    "connection closed inside a chunk"
                );
                ensure!(read_line(rd, 2).await?.is_empty(), "bad chunk end");
            }
            true
        } else if let Some(n) = length {
            (&mut *rd).take(n).read_to_end(&mut body).await?;
            ensure!(
                body.len() as u64 == n,
                "connection closed inside the response body"
            );
            true
        } else {
            rd.read_to_end(&mut body).await?;
            false
        };
        let retry_after = header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        return Ok((
            Response {
                status,
                retry_after,
                headers,
                body: body.into(),
            },
            delimited && !close,
        ));
    }
}

/// The client `cfg` describes (its TLS files, timeout and User-Agent).
pub fn client(cfg: &EmulatorConfig) -> anyhow::Result<Client> {
    let tls = crate::pki::client_config(&cfg.ca, &cfg.cert, &cfg.key)?;
    Ok(Client::new(tls, cfg.timeout, &cfg.user_agent))
}

/// One attempt at posting arbitrary bytes, as the apiserver would post a batch; the HTTP
/// status. Transport errors and timeouts are errors.
pub async fn send_body(client: &Client, url: &str, body: impl Into<Bytes>) -> anyhow::Result<u16> {
    Ok(client.post(url, body.into()).await?.status)
}

// ---------------------------------------------------------------------------------------
// Sending

/// Timing of one acknowledged batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchLatency {
    /// From the first attempt's start to the acknowledgement, backoffs included.
    pub total: Duration,
    /// Each attempt's own time.
    pub attempts: Vec<Duration>,
}

/// What happened to one batch.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    pub events: usize,
    pub ok: bool,
    pub total: Duration,
    pub attempts: Vec<Duration>,
    /// The HTTP status of each attempt that got a response.
    pub statuses: Vec<u16>,
    pub transport_errors: u64,
    /// The last failure (status or transport error), if any.
    pub last_error: Option<String>,
}

/// Sends one batch with the apiserver's retries. Never fails: a batch that was not
/// acknowledged after the last attempt comes back with `ok == false` (dropped).
pub async fn send_batch(
    client: &Client,
    url: &str,
    body: Bytes,
    events: usize,
    retry: &RetryPolicy,
) -> BatchOutcome {
    let start = Instant::now();
    let max = retry.max_attempts.max(1);
    let mut backoff = retry.initial_backoff;
    let mut out = BatchOutcome {
        events,
        ok: false,
        total: Duration::ZERO,
        attempts: Vec::new(),
        statuses: Vec::new(),
        transport_errors: 0,
        last_error: None,
    };
    for attempt in 1..=max {
        let t = Instant::now();
        let result = client.post(url, body.clone()).await;
        out.attempts.push(t.elapsed());
        let mut retry_after = None;
        match result {
            Ok(r) => {
                out.statuses.push(r.status);
                if (200..=206).contains(&r.status) {
                    out.ok = true;
                    out.last_error = None;
                    break;
                }
                retry_after = r.retry_after;
                let text = String::from_utf8_lossy(&r.body[..r.body.len().min(300)]).into_owned();
                out.last_error = Some(format!("HTTP {}: {}", r.status, text.trim()));
            }
            Err(e) => {
                out.transport_errors += 1;
                out.last_error = Some(format!("{e:#}"));
            }
        }
        if attempt == max {
            break;
        }
        tokio::time::sleep(backoff.max(retry_after.unwrap_or_default())).await;
        backoff = backoff.mul_f64(retry.factor);
    }
    out.total = start.elapsed();
    out
}

/// The apiserver's throttle (`golang.org/x/time/rate`): a bucket of `burst` tokens refilled
/// at `qps`, starting full; a taker waits for its token.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes a token, waiting until there is one.
    pub async fn take(&mut self) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.qps).min(self.burst);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens < 0.0 && self.qps > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(-self.tokens / self.qps)).await;
        }
    }
}

/// An `EventList` body with both timestamps of every item set to `now` (MicroTime, as the
/// apiserver writes them). Re-encoded with serde_json: fine for live-like traffic, whose
/// bytes no capture has to match.
pub fn restamp(body: &[u8], now: time::OffsetDateTime) -> Bytes {
    let Ok(mut list) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Bytes::copy_from_slice(body);
    };
    let stamp = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.microsecond()
    );
    if let Some(items) = list.get_mut("items").and_then(|i| i.as_array_mut()) {
        for item in items.iter_mut().filter_map(|i| i.as_object_mut()) {
            for k in ["requestReceivedTimestamp", "stageTimestamp"] {
                item.insert(k.into(), serde_json::Value::String(stamp.clone()));
            }
        }
    }
    serde_json::to_vec(&list).map_or_else(|_| Bytes::copy_from_slice(body), Bytes::from)
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct EmulatorReport {
    /// Events in all batches (each counted once, however many attempts).
    pub events_sent: u64,
    /// Events in acknowledged batches.
    pub events_ok: u64,
    /// Events in dropped batches (what `apiserver_audit_error_total` would count).
    pub events_dropped: u64,
    pub batches_sent: u64,
    pub batches_ok: u64,
    pub batches_dropped: u64,
    /// Requests made, retries included.
    pub attempts: u64,
    /// Attempts beyond the first of each batch.
    pub retries: u64,
    /// Attempts that got no HTTP response (connection, TLS, timeout).
    pub transport_errors: u64,
    /// HTTP status of every attempt that got one.
    pub status_counts: BTreeMap<u16, u64>,
    /// One per acknowledged batch, in completion order.
    pub latencies: Vec<BatchLatency>,
    /// The last error of each dropped batch.
    pub errors: Vec<String>,
    pub elapsed: Duration,
    /// CPU time (user + system) this process spent while sending, from `/proc/self/stat`;
    /// building the batches beforehand is not counted. `None` where `/proc` is missing.
    pub cpu: Option<Duration>,
}

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`: 100 on every Linux ABI).
const USER_HZ: u64 = 100;

/// CPU time (user + system) of this process so far.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing ')'.
    let rest = stat.rsplit_once(')')?.1;
    let mut f = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

impl EmulatorReport {
    fn add(&mut self, o: BatchOutcome) {
        let events = o.events as u64;
        self.events_sent += events;
        self.batches_sent += 1;
        self.attempts += o.attempts.len() as u64;
        self.retries += o.attempts.len().saturating_sub(1) as u64;
        self.transport_errors += o.transport_errors;
        for s in &o.statuses {
            *self.status_counts.entry(*s).or_default() += 1;
        }
        if o.ok {
            self.events_ok += events;
            self.batches_ok += 1;
            self.latencies.push(BatchLatency {
                total: o.total,
                attempts: o.attempts,
            });
        } else {
            self.events_dropped += events;
            self.batches_dropped += 1;
            self.errors.push(o.last_error.unwrap_or_default());
        }
    }

    /// The `q`-quantile (0.0..=1.0, nearest rank) of acknowledged batches' total latency.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        let mut v: Vec<Duration> = self.latencies.iter().map(|l| l.total).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
        Some(v[rank.saturating_sub(1).min(v.len() - 1)])
    }

    pub fn p50(&self) -> Option<Duration> {
        self.percentile(0.50)
    }

    pub fn p99(&self) -> Option<Duration> {
        self.percentile(0.99)
    }

    /// Acknowledged events per second of the whole run.
    pub fn events_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.events_ok as f64 / s
        } else {
            0.0
        }
    }

    /// A short human summary (several lines).
    pub fn summary(&self) -> String {
        let ms = |d: Option<Duration>| {
            d.map_or("-".to_string(), |d| {
                format!("{:.1} ms", d.as_secs_f64() * 1e3)
            })
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "events: {} sent, {} acknowledged, {} dropped",
            self.events_sent, self.events_ok, self.events_dropped
        );
        let _ = writeln!(
            s,
            "batches: {} sent, {} ok, {} dropped; {} attempts ({} retries, {} transport errors)",
            self.batches_sent,
            self.batches_ok,
            self.batches_dropped,
            self.attempts,
            self.retries,
            self.transport_errors
        );
        let statuses: Vec<String> = self
            .status_counts
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect();
        let _ = writeln!(
            s,
            "HTTP statuses: {}",
            if statuses.is_empty() {
                "-".into()
            } else {
                statuses.join(", ")
            }
        );
        let _ = writeln!(
            s,
            "elapsed {:.3} s, {:.0} events/s; batch latency p50 {}, p99 {}",
            self.elapsed.as_secs_f64(),
            self.events_per_sec(),
            ms(self.p50()),
            ms(self.p99())
        );
        if let Some(cpu) = self.cpu {
            let per_event = cpu.as_secs_f64() * 1e6 / self.events_sent.max(1) as f64;
            let _ = writeln!(
                s,
                "emulator CPU while sending: {:.2} s, {per_event:.1} µs per event",
                cpu.as_secs_f64()
            );
        }
        for e in self.errors.iter().take(5) {
            let _ = writeln!(s, "dropped batch: {e}");
        }
        s
    }

    /// The report as JSON (durations in milliseconds).
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        serde_json::json!({
            "events_sent": self.events_sent,
            "events_ok": self.events_ok,
            "events_dropped": self.events_dropped,
            "batches_sent": self.batches_sent,
            "batches_ok": self.batches_ok,
            "batches_dropped": self.batches_dropped,
            "attempts": self.attempts,
            "retries": self.retries,
            "transport_errors": self.transport_errors,
            "status_counts": self.status_counts.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "elapsed_ms": ms(self.elapsed),
            "cpu_ms": self.cpu.map(ms),
            "events_per_sec": self.events_per_sec(),
            "batch_latency_p50_ms": self.p50().map(ms),
            "batch_latency_p99_ms": self.p99().map(ms),
            "errors": self.errors,
        })
    }
}

/// Sends `lines` (audit-log lines) as the apiserver(s) of `cfg` would; see [`batches`].
pub async fn run(cfg: &EmulatorConfig, lines: &[Vec<u8>]) -> anyhow::Result<EmulatorReport> {
    let batches = batches(lines, cfg.max_batch)?;
    run_batches(cfg, batches).await
}

/// Sends prepared batches: `cfg.apiservers` emulated apiservers take them round-robin; each
/// throttles the start of its batches and sends every batch in its own task.
pub async fn run_batches(
    cfg: &EmulatorConfig,
    batches: Vec<Batch>,
) -> anyhow::Result<EmulatorReport> {
    if let Some(q) = cfg.qps {
        ensure!(q.is_finite() && q > 0.0, "qps must be positive");
    }
    let n = cfg.apiservers.max(1);
    let mut shares: Vec<Vec<Batch>> = (0..n).map(|_| Vec::new()).collect();
    for (i, b) in batches.into_iter().enumerate() {
        shares[i % n].push(b);
    }
    let start = Instant::now();
    let cpu_start = process_cpu();
    let mut apiservers = Vec::new();
    for share in shares {
        let client = client(cfg)?;
        let cfg = cfg.clone();
        apiservers.push(tokio::spawn(apiserver(cfg, client, share)));
    }
    let mut report = EmulatorReport::default();
    for a in apiservers {
        for o in a.await.context("apiserver task")? {
            report.add(o);
        }
    }
    report.elapsed = start.elapsed();
    report.cpu = process_cpu()
        .zip(cpu_start)
        .map(|(end, start)| end.saturating_sub(start));
    Ok(report)
}

async fn apiserver(cfg: EmulatorConfig, client: Client, batches: Vec<Batch>) -> Vec<BatchOutcome> {
    let limit = cfg
        .max_in_flight
        .unwrap_or(batches.len())
        .clamp(1, MAX_IN_FLIGHT_CAP);
    let in_flight = Arc::new(Semaphore::new(limit));
    let mut throttle = cfg.qps.map(|q| TokenBucket::new(q, cfg.burst));
    let mut tasks = Vec::with_capacity(batches.len());
    for b in batches {
        if let Some(t) = &mut throttle {
            t.take().await;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        let url = cfg.url.clone();
        let retry = cfg.retry;
        let body = if cfg.restamp {
            restamp(&b.body, time::OffsetDateTime::now_utc())
        } else {
            b.body
        };
        tasks.push(tokio::spawn(async move {
            let o = send_batch(&client, &url, body, b.events, &retry).await;
            drop(permit);
            o
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(o) => out.push(o),
            Err(e) => out.push(BatchOutcome {
                events: 0,
                ok: false,
                total: Duration::ZERO,
                attempts: Vec::new(),
                statuses: Vec::new(),
                transport_errors: 0,
                last_error: Some(format!("batch task failed: {e}")),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::header::RETRY_AFTER;
    use http::{HeaderMap, Request};
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::pki::{self, PkiOptions, PkiPaths};

    fn events() -> Vec<Vec<u8>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/k8s-audit/events.jsonl");
        std::fs::read(path)
            .expect("testdata/k8s-audit/events.jsonl")
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn enc(s: &str) -> String {
        let mut out = Vec::new();
        go_string(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_go_does() {
        assert_eq!(enc("plain/ü€😀"), r#""plain/ü€😀""#);
        assert_eq!(enc("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            enc("<a href='x'>&amp;</a>"),
            r#""\u003ca href='x'\u003e\u0026amp;\u003c/a\u003e""#
        );
        assert_eq!(enc("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(
            enc("\u{0}\u{1}\u{1b}\u{1f} \u{7f}"),
            "\"\\u0000\\u0001\\u001b\\u001f \u{7f}\""
        );
        assert_eq!(
            enc("x\u{2028}y\u{2029}z\u{2027}"),
            "\"x\\u2028y\\u2029z\u{2027}\""
        );
    }

    #[test]
    fn items_lose_kind_and_api_version_and_keep_everything_else() {
        let lines = vec![
            br#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","n":1.50e+3,"big":123456789012345678901234567890,"s":"<x>","o":{"kind":"inner","z":[1,{"b":null,"a":true}]}}"#.to_vec(),
            br#"{ "auditID" : "b" , "stage":"ResponseComplete" }"#.to_vec(),
            br#"{"apiVersion":"audit.k8s.io/v1beta1","kind":"Event","auditID":"c"}"#.to_vec(),
            br#"{"apiVersion":"audit.k8s.io/v1beta1","auditID":"d"}"#.to_vec(),
            Vec::new(),
            br#"{"auditID":"e"}"#.to_vec(),
        ];
        let b = batches(&lines, 400).unwrap();
        let bodies: Vec<String> = b
            .iter()
            .map(|b| String::from_utf8(b.body.to_vec()).unwrap())
            .collect();
        assert_eq!(
            bodies,
            [
                concat!(
                    r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#,
                    r#"{"level":"Metadata","auditID":"a","n":1.50e+3,"big":123456789012345678901234567890,"s":"\u003cx\u003e","o":{"kind":"inner","z":[1,{"b":null,"a":true}]}},"#,
                    r#"{"auditID":"b","stage":"ResponseComplete"}]}"#,
                    "\n"
                ),
                concat!(
                    r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1beta1","metadata":{},"items":["#,
                    r#"{"auditID":"c"},{"auditID":"d"}]}"#,
                    "\n"
                ),
                concat!(
                    r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[{"auditID":"e"}]}"#,
                    "\n"
                ),
            ]
        );
        assert_eq!(b.iter().map(|b| b.events).collect::<Vec<_>>(), [2, 2, 1]);
        assert_eq!(build_batches(&lines, 1).unwrap().len(), 5);
        assert!(batches(&[b"[1]".to_vec()], 10).is_err());
        assert!(batches(&[b"{\"a\":".to_vec()], 10).is_err());
        assert!(batches(&[br#"{"apiVersion":1}"#.to_vec()], 10).is_err());
    }

    #[test]
    fn real_events_batch_by_version_and_size() {
        let lines = events();
        assert_eq!(lines.len(), 222);
        let b = batches(&lines, 50).unwrap();
        assert_eq!(b.iter().map(|b| b.events).sum::<usize>(), 222);
        assert!(b.iter().all(|b| b.events <= 50));
        let v1beta1: usize = b
            .iter()
            .filter(|b| b.api_version == "audit.k8s.io/v1beta1")
            .map(|b| b.events)
            .sum();
        assert_eq!(v1beta1, 9);
        for batch in &b {
            assert!(batch.body.ends_with(b"]}\n"));
            let v: serde_json::Value = serde_json::from_slice(&batch.body).unwrap();
            assert_eq!(v["kind"], "EventList");
            assert_eq!(v["apiVersion"], batch.api_version.as_str());
            let items = v["items"].as_array().unwrap();
            assert_eq!(items.len(), batch.events);
            for item in items {
                assert!(item.get("kind").is_none() && item.get("apiVersion").is_none());
                assert!(item["auditID"].is_string());
            }
            // Compact, like Go, and with no raw HTML characters inside strings.
            assert!(!batch.body[..batch.body.len() - 1].contains(&b'\n'));
            assert!(
                !batch.body.contains(&b'<')
                    && !batch.body.contains(&b'>')
                    && !batch.body.contains(&b'&')
            );
        }
        // Nothing lost: each item equals its input line minus kind/apiVersion.
        let mut items = Vec::new();
        for batch in &b {
            let v: serde_json::Value = serde_json::from_slice(&batch.body).unwrap();
            items.extend(v["items"].as_array().unwrap().iter().cloned());
        }
        for (line, item) in lines.iter().zip(&items) {
            let mut want: serde_json::Value = serde_json::from_slice(line).unwrap();
            let o = want.as_object_mut().unwrap();
            o.remove("kind");
            o.remove("apiVersion");
            assert_eq!(&want, item);
        }
    }

    #[test]
    fn repeats_rewrite_audit_ids() {
        let lines = vec![
            br#"{"kind":"Event","auditID":"x","stage":"RequestReceived","s":"a&b"}"#.to_vec(),
            br#"{"kind":"Event","auditID":"x","stage":"ResponseComplete"}"#.to_vec(),
        ];
        let r = repeat_events(&lines, 3).unwrap();
        let r: Vec<String> = r
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect();
        assert_eq!(
            r,
            [
                r#"{"kind":"Event","auditID":"x","stage":"RequestReceived","s":"a&b"}"#,
                r#"{"kind":"Event","auditID":"x","stage":"ResponseComplete"}"#,
                r#"{"kind":"Event","auditID":"x-r1","stage":"RequestReceived","s":"a\u0026b"}"#,
                r#"{"kind":"Event","auditID":"x-r1","stage":"ResponseComplete"}"#,
                r#"{"kind":"Event","auditID":"x-r2","stage":"RequestReceived","s":"a\u0026b"}"#,
                r#"{"kind":"Event","auditID":"x-r2","stage":"ResponseComplete"}"#,
            ]
        );
        assert!(repeat_events(&lines, 0).unwrap().is_empty());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut r = EmulatorReport::default();
        assert_eq!(r.p50(), None);
        for ms in (1..=100).rev() {
            r.latencies.push(BatchLatency {
                total: Duration::from_millis(ms),
                attempts: vec![Duration::from_millis(ms)],
            });
        }
        assert_eq!(r.p50(), Some(Duration::from_millis(50)));
        assert_eq!(r.p99(), Some(Duration::from_millis(99)));
        assert_eq!(r.percentile(1.0), Some(Duration::from_millis(100)));
        assert_eq!(r.percentile(0.0), Some(Duration::from_millis(1)));
    }

    // --- against a local HTTPS server that requires a client certificate ---------------

    #[derive(Debug, Clone)]
    struct Seen {
        at: Instant,
        method: String,
        path: String,
        headers: HeaderMap,
        body: Bytes,
    }

    /// Answers request number n (0-based) with `respond(n)`: (status, Retry-After).
    type Responder = Arc<dyn Fn(usize) -> (u16, Option<u64>) + Send + Sync>;

    struct Server {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
        connections: Arc<AtomicUsize>,
    }

    impl Server {
        fn url(&self) -> String {
            format!("https://127.0.0.1:{}/v1/audit?x=1", self.addr.port())
        }
        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    async fn server(pki: &PkiPaths, respond: Responder) -> Server {
        let tls = pki::server_config(
            &pki.ingester_server_cert,
            &pki.ingester_server_key,
            &pki.ca_cert,
        )
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::new(AtomicUsize::new(0));
        let (s, c) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let (seen, respond, count) = (s.clone(), respond.clone(), count.clone());
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    // A client without an acceptable certificate fails here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (seen, respond, count) = (seen.clone(), respond.clone(), count.clone());
                        async move {
                            let at = Instant::now();
                            let (parts, body) = req.into_parts();
                            let len = parts
                                .headers
                                .get(http::header::CONTENT_LENGTH)
                                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
                            if len.is_some_and(|l| l > 1 << 20) {
                                // Like a body limit: answer without reading the body.
                                drop(body);
                                return Ok(hyper::Response::builder()
                                    .status(413)
                                    .body(Full::new(Bytes::from_static(b"too large")))
                                    .unwrap());
                            }
                            let body = body.collect().await?.to_bytes();
                            seen.lock().unwrap().push(Seen {
                                at,
                                method: parts.method.to_string(),
                                path: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            });
                            let (status, retry_after) =
                                respond(count.fetch_add(1, Ordering::SeqCst));
                            let mut resp = hyper::Response::builder().status(status);
                            if let Some(s) = retry_after {
                                resp = resp.header(RETRY_AFTER, s.to_string());
                            }
                            Ok::<_, hyper::Error>(
                                resp.body(Full::new(Bytes::from_static(b"{}"))).unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Server {
            addr,
            seen,
            connections,
        }
    }

    fn setup() -> (tempfile::TempDir, PkiPaths) {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki::generate(dir.path(), &PkiOptions::default()).unwrap();
        (dir, pki)
    }

    fn config(pki: &PkiPaths, url: String) -> EmulatorConfig {
        EmulatorConfig {
            url,
            ca: pki.ca_cert.clone(),
            cert: pki.apiserver_client_cert.clone(),
            key: pki.apiserver_client_key.clone(),
            qps: None,
            timeout: Duration::from_secs(10),
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(100),
                factor: 2.0,
                max_attempts: 4,
            },
            ..EmulatorConfig::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_the_real_events_as_the_apiserver_does() {
        let (_dir, pki) = setup();
        let srv = server(&pki, Arc::new(|_| (200, None))).await;
        let lines = events();
        let mut cfg = config(&pki, srv.url());
        cfg.max_batch = 40;
        cfg.max_in_flight = Some(1);
        let report = run(&cfg, &lines).await.unwrap();
        assert_eq!(report.events_sent, 222);
        assert_eq!(report.events_ok, 222);
        assert_eq!(report.batches_dropped, 0);
        assert_eq!(report.retries, 0);
        assert_eq!(report.batches_ok, report.batches_sent);
        assert_eq!(
            report.status_counts,
            BTreeMap::from([(200, report.batches_sent)])
        );
        assert_eq!(report.latencies.len() as u64, report.batches_ok);
        assert!(report.p50().is_some() && report.p99() >= report.p50());

        let want = batches(&lines, 40).unwrap();
        let seen = srv.seen();
        assert_eq!(seen.len(), want.len());
        // One batch in flight at a time: they arrive in order.
        for (s, w) in seen.iter().zip(&want) {
            assert_eq!(s.method, "POST");
            assert_eq!(s.path, "/v1/audit?x=1");
            assert_eq!(s.body, w.body);
            let h = |n: &str| s.headers.get(n).unwrap().to_str().unwrap().to_string();
            assert_eq!(h("content-type"), "application/json");
            assert_eq!(h("accept"), "application/json, */*");
            assert_eq!(h("user-agent"), DEFAULT_USER_AGENT);
            assert_eq!(h("content-length"), w.body.len().to_string());
            assert_eq!(h("host"), format!("127.0.0.1:{}", srv.addr.port()));
        }
        // Keep-alive: sequential batches reuse one connection.
        assert_eq!(srv.connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_attempts_are_retried_with_backoff() {
        let (_dir, pki) = setup();
        // 500, 400, then success: every non-2xx is retried, 4xx included.
        let srv = server(
            &pki,
            Arc::new(|n| {
                (
                    if n == 0 {
                        500
                    } else if n == 1 {
                        400
                    } else {
                        201
                    },
                    None,
                )
            }),
        )
        .await;
        let cfg = config(&pki, srv.url());
        let report = run(&cfg, &events()[1..6]).await.unwrap();
        assert_eq!((report.batches_ok, report.batches_dropped), (1, 0));
        assert_eq!((report.attempts, report.retries), (3, 2));
        assert_eq!(
            report.status_counts,
            BTreeMap::from([(201, 1), (400, 1), (500, 1)])
        );
        let seen = srv.seen();
        assert_eq!(seen.len(), 3);
        // The whole batch each time.
        assert!(seen.iter().all(|s| s.body == seen[0].body));
        let gap1 = seen[1].at - seen[0].at;
        let gap2 = seen[2].at - seen[1].at;
        assert!(
            gap1 >= Duration::from_millis(100) && gap1 < Duration::from_millis(600),
            "{gap1:?}"
        );
        assert!(
            gap2 >= Duration::from_millis(200) && gap2 < Duration::from_millis(700),
            "{gap2:?}"
        );
        let l = &report.latencies[0];
        assert_eq!(l.attempts.len(), 3);
        assert!(l.total >= Duration::from_millis(300));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_are_dropped_after_the_last_attempt() {
        let (_dir, pki) = setup();
        let srv = server(&pki, Arc::new(|_| (503, None))).await;
        let mut cfg = config(&pki, srv.url());
        cfg.retry = RetryPolicy {
            initial_backoff: Duration::from_millis(20),
            factor: 1.5,
            max_attempts: 3,
        };
        cfg.max_batch = 3;
        let report = run(&cfg, &events()[1..7]).await.unwrap();
        assert_eq!(
            (
                report.batches_sent,
                report.batches_ok,
                report.batches_dropped
            ),
            (2, 0, 2)
        );
        assert_eq!((report.events_sent, report.events_dropped), (6, 6));
        assert_eq!((report.attempts, report.retries), (6, 4));
        assert_eq!(report.status_counts, BTreeMap::from([(503, 6)]));
        assert_eq!(report.errors.len(), 2);
        assert!(
            report.errors[0].starts_with("HTTP 503"),
            "{:?}",
            report.errors
        );
        assert!(report.latencies.is_empty());
        assert_eq!(srv.seen().len(), 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retry_after_wins_when_longer() {
        let (_dir, pki) = setup();
        let srv = server(
            &pki,
            Arc::new(|n| if n == 0 { (429, Some(1)) } else { (200, None) }),
        )
        .await;
        let mut cfg = config(&pki, srv.url());
        cfg.retry.initial_backoff = Duration::from_millis(10);
        let report = run(&cfg, &events()[..1]).await.unwrap();
        assert_eq!((report.batches_ok, report.retries), (1, 1));
        let seen = srv.seen();
        let gap = seen[1].at - seen[0].at;
        assert!(
            gap >= Duration::from_secs(1) && gap < Duration::from_millis(2500),
            "{gap:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transport_errors_are_retried_and_counted() {
        let (_dir, pki) = setup();
        // Nothing listens on this port (bound, then closed).
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let mut cfg = config(&pki, format!("https://127.0.0.1:{}/v1/audit", addr.port()));
        cfg.retry = RetryPolicy {
            initial_backoff: Duration::from_millis(10),
            factor: 1.0,
            max_attempts: 2,
        };
        let report = run(&cfg, &events()[..1]).await.unwrap();
        assert_eq!(
            (
                report.batches_dropped,
                report.attempts,
                report.transport_errors
            ),
            (1, 2, 2)
        );
        assert!(report.status_counts.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_attempt_timeout() {
        let (_dir, pki) = setup();
        // Accepts TCP but never answers the TLS handshake.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let mut cfg = config(&pki, format!("https://127.0.0.1:{}/v1/audit", addr.port()));
        cfg.timeout = Duration::from_millis(200);
        let c = client(&cfg).unwrap();
        let t = Instant::now();
        let err = send_body(&c, &cfg.url, b"{}".to_vec()).await.unwrap_err();
        assert!(format!("{err:#}").contains("within"), "{err:#}");
        assert!(t.elapsed() >= Duration::from_millis(200) && t.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_certificates_matter() {
        let (_dir, pki) = setup();
        let srv = server(&pki, Arc::new(|_| (200, None))).await;
        let url = srv.url();
        let ok = client(&config(&pki, url.clone())).unwrap();
        assert_eq!(
            send_body(&ok, &url, b"not json".to_vec()).await.unwrap(),
            200
        );
        assert_eq!(srv.seen()[0].body, Bytes::from_static(b"not json"));
        // A server refusing a large body before reading it: its status still comes back.
        for _ in 0..3 {
            let status = send_body(&ok, &url, vec![b'x'; 4 << 20]).await.unwrap();
            assert_eq!(status, 413);
        }
        assert_eq!(send_body(&ok, &url, b"{}".to_vec()).await.unwrap(), 200);
        assert_eq!(srv.seen().len(), 2);

        // A client certificate from another CA is refused.
        let mut other = config(&pki, url.clone());
        other.cert = pki.other_client_cert.clone();
        other.key = pki.other_client_key.clone();
        let c = client(&other).unwrap();
        assert!(send_body(&c, &url, b"{}".to_vec()).await.is_err());

        // A server whose certificate the client's CA did not issue is refused too.
        let mut wrong_ca = config(&pki, url.clone());
        wrong_ca.ca = pki.other_ca_cert.clone();
        let c = client(&wrong_ca).unwrap();
        assert!(send_body(&c, &url, b"{}".to_vec()).await.is_err());

        // So is a client with no certificate at all.
        let tls = rustls::ClientConfig::builder_with_provider(pki::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates({
                let mut r = rustls::RootCertStore::empty();
                r.add(pki::load_certs(&pki.ca_cert).unwrap().remove(0))
                    .unwrap();
                r
            })
            .with_no_client_auth();
        let c = Client::new(tls, Duration::from_secs(5), DEFAULT_USER_AGENT);
        assert!(send_body(&c, &url, b"{}".to_vec()).await.is_err());
        assert_eq!(srv.seen().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn throttle_and_concurrency() {
        let (_dir, pki) = setup();
        let srv = server(&pki, Arc::new(|_| (200, None))).await;
        let mut cfg = config(&pki, srv.url());
        cfg.max_batch = 1;
        // 8 batches at 20 QPS with a burst of 3: the last starts (8 - 3) / 20 s = 250 ms in.
        cfg.qps = Some(20.0);
        cfg.burst = 3;
        let t = Instant::now();
        let report = run(&cfg, &events()[..8]).await.unwrap();
        assert_eq!(report.batches_ok, 8);
        let elapsed = t.elapsed();
        assert!(
            elapsed >= Duration::from_millis(240) && elapsed < Duration::from_secs(2),
            "{elapsed:?}"
        );
        let seen = srv.seen();
        let first = seen.iter().map(|s| s.at).min().unwrap();
        let early = seen
            .iter()
            .filter(|s| s.at - first < Duration::from_millis(30))
            .count();
        assert!(early <= 4, "burst not respected: {early}");

        // Two apiservers, each with its own bucket: twice the rate.
        cfg.apiservers = 2;
        let t = Instant::now();
        let report = run(&cfg, &events()[..8]).await.unwrap();
        assert_eq!((report.batches_sent, report.batches_ok), (8, 8));
        let elapsed = t.elapsed();
        assert!(
            elapsed >= Duration::from_millis(40) && elapsed < Duration::from_millis(240),
            "{elapsed:?}"
        );

        // Unthrottled, many in flight.
        cfg.qps = None;
        cfg.apiservers = 3;
        let report = run(&cfg, &events()).await.unwrap();
        assert_eq!((report.events_ok, report.batches_ok), (222, 222));
    }
}

#[cfg(test)]
mod url_tests {
    #![allow(clippy::unwrap_used)]

    use super::target;

    #[test]
    fn urls() {
        let t = target("https://127.0.0.1:8443/v1/audit?timeout=30s").unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.authority.as_str(),
                t.path.as_str()
            ),
            ("127.0.0.1", 8443, "127.0.0.1:8443", "/v1/audit?timeout=30s")
        );
        let t = target("https://[::1]:9/x#frag").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("::1", 9, "/x"));
        let t = target("https://ingester.sealtrail.svc").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("ingester.sealtrail.svc", 443, "/")
        );
        assert!(target("http://127.0.0.1/").is_err());
        assert!(target("https://h:port/").is_err());
        assert!(target("https:///x").is_err());
    }
}
