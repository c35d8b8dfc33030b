//! What every Sealtrail service (signer, ingester) runs besides its own API: the plain-HTTP
//! listener for `/metrics`, `/healthz` and `/readyz`, the shutdown signal shared by all of
//! a service's listeners, log set-up for the binaries, and TLS material reloaded when its
//! files change ([`tls`]).
//!
//! What it does not: no service metric definitions (each service owns its registry; only
//! the TLS metrics are shared), no request handling on the services' authenticated ports.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;

pub mod tls;

/// A boxed future, for readiness checks that ask a peer.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the health listener serves.
pub struct Health {
    /// The Prometheus (OpenMetrics) text of the service's registry.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// `None` when ready, or why not.
    pub ready: Arc<dyn Fn() -> BoxFuture<Option<String>> + Send + Sync>,
}

impl Health {
    /// The same, with the TLS certificate metrics after the service's own on `/metrics`.
    pub fn with_tls(self, tls: tls::TlsMetrics) -> Self {
        let service = self.metrics;
        Self {
            metrics: Arc::new(move || {
                let mut text = service();
                tls.append_to(&mut text);
                text
            }),
            ready: self.ready,
        }
    }
}

/// Serves `/metrics`, `/healthz` (the process answers) and `/readyz` until `shutdown`.
pub async fn serve_health(
    health: Health,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Health { metrics, ready } = health;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = metrics();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let check = ready();
                async move {
                    match check.await {
                        None => (StatusCode::OK, "ready".to_string()),
                        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves the health listener in a task of its own ([`serve_health`]); a listener that
/// fails is logged, and the service goes on.
pub fn spawn_health(
    health: Health,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = serve_health(health, listener, shutdown).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    })
}

/// One shutdown signal for several listeners: [`Shutdown::wait`] futures all complete when
/// the future given to [`Shutdown::new`] does.
#[derive(Clone)]
pub struct Shutdown {
    rx: tokio::sync::watch::Receiver<bool>,
}

impl Shutdown {
    pub fn new(signal: impl Future<Output = ()> + Send + 'static) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal.await;
            let _ = tx.send(true);
        });
        Self { rx }
    }

    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}

/// SIGTERM (Kubernetes) or Ctrl-C.
/// The next accepted connection. A failed accept (out of file descriptors and the like) is
/// logged and retried after a pause rather than in a spin.
pub async fn accept(
    listener: &tokio::net::TcpListener,
) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(a) => return a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: draining in-flight requests");
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`), as text or JSON lines.
pub fn init_logging(json: bool) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}
