//! HTTPS with required client certificates, and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use sealtrail_ops::tls::ReloadingServer;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::{Error, ServerTls};

/// Time a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client gets to send a request's headers (slow clients hold no slot for long).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time in-flight requests get to finish after shutdown begins (the apiserver's own
/// per-request timeout is 30 s).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The webhook's TLS configuration, reloaded from `files` when they change (see
/// `sealtrail_ops::tls`); its certificate's expiry is exported as component `ingester`.
pub fn tls_config(
    files: &ServerTls,
    metrics: &sealtrail_ops::tls::TlsMetrics,
) -> Result<ReloadingServer, Error> {
    let files = sealtrail_ops::tls::TlsFiles {
        cert: files.cert.clone(),
        key: files.key.clone(),
        ca: files.client_ca.clone(),
    };
    let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tls = ReloadingServer::server(files, alpn, "ingester", metrics)
        .map_err(|e| Error::Config(e.to_string()))?;
    tls.watch(sealtrail_ops::tls::RELOAD_INTERVAL);
    Ok(tls)
}

/// Serves `router` until `shutdown`: over TLS with required client certificates, or plain
/// HTTP when `tls` is `None` (only when the operator asked for it explicitly).
pub async fn serve(
    router: axum::Router,
    tls: Option<ReloadingServer>,
    allowed_clients: Arc<Vec<String>>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = sealtrail_ops::accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        // The configuration current now: a reloaded certificate serves new connections only.
        let acceptor = tls.as_ref().map(|t| TlsAcceptor::from(t.config()));
        let router = router.clone();
        let allowed_clients = allowed_clients.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                let conn = Conn {
                    router,
                    allowed: true,
                    names: Vec::new(),
                };
                conn.serve(TokioIo::new(tcp), watcher, peer).await;
                return;
            };
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // The CA already vouched for the certificate; the allowlist narrows who of its
            // holders may post. A refused client gets 403 on every request (and a log line).
            let names = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| sealtrail_proto::identity::names_of(c.as_ref()))
                .unwrap_or_default();
            let allowed =
                allowed_clients.is_empty() || names.iter().any(|n| allowed_clients.contains(n));
            if !allowed {
                tracing::warn!(%peer, identities = ?names, "client identity not allowed");
            }
            Conn {
                router,
                allowed,
                names,
            }
            .serve(TokioIo::new(tls), watcher, peer)
            .await;
        });
    }
    drop(listener);
    tracing::info!("draining in-flight requests");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
    }
    Ok(())
}

/// One accepted connection.
struct Conn {
    router: axum::Router,
    allowed: bool,
    names: Vec<String>,
}

impl Conn {
    async fn serve<I>(
        self,
        io: I,
        watcher: hyper_util::server::graceful::Watcher,
        peer: std::net::SocketAddr,
    ) where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Self {
            router,
            allowed,
            names,
        } = self;
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let router = router.clone();
                let names = names.clone();
                async move {
                    if allowed {
                        router.oneshot(req.map(axum::body::Body::new)).await
                    } else {
                        Ok(axum::response::IntoResponse::into_response(
                            Error::Forbidden(names),
                        ))
                    }
                }
            });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let conn = builder.serve_connection(io, service);
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
