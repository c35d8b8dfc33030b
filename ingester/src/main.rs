//! `sealtrail-ingester`: parses configuration and runs the webhook.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use sealtrail_ingester::signer_client::SignerClientConfig;
use sealtrail_ingester::{
    Config, DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IN_FLIGHT_BYTES,
    DEFAULT_MAX_IN_FLIGHT_REQUESTS, ServerTls,
};
use sealtrail_store::LocalDirStore;

#[derive(Parser)]
#[command(
    name = "sealtrail-ingester",
    version,
    about = "Sealtrail ingester: kube-apiserver audit webhook backend"
)]
struct Cli {
    /// The log origin of this cluster (must match the signer's).
    #[arg(long, env = "SEALTRAIL_ORIGIN")]
    origin: String,
    /// Address to listen on (HTTPS).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: String,
    /// Webhook server certificate (PEM).
    #[arg(long)]
    tls_cert: PathBuf,
    /// Webhook server key (PEM).
    #[arg(long)]
    tls_key: PathBuf,
    /// CA of the apiserver's client certificate (PEM). A client certificate is required.
    #[arg(long)]
    client_ca: PathBuf,
    /// Local write-once directory store (the embedded default).
    #[arg(long)]
    store_dir: PathBuf,
    /// Object key prefix, ending in '/', or empty.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Signer URL, https://host:port.
    #[arg(long)]
    signer_url: String,
    /// CA of the signer's certificate (PEM).
    #[arg(long)]
    signer_ca: PathBuf,
    /// This ingester's client certificate towards the signer (PEM).
    #[arg(long)]
    signer_cert: PathBuf,
    /// This ingester's client key towards the signer (PEM).
    #[arg(long)]
    signer_key: PathBuf,
    /// Name expected in the signer's certificate, if not the URL's host.
    #[arg(long)]
    signer_server_name: Option<String>,
    /// Deadline of one Append to the signer, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    signer_timeout_ms: u64,
    /// Largest webhook body accepted, in bytes; larger ones get 413.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Requests handled at once at most; beyond, 429 with Retry-After.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT_REQUESTS)]
    max_in_flight_requests: usize,
    /// Body bytes held at once at most; beyond, 429 with Retry-After.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT_BYTES)]
    max_in_flight_bytes: usize,
    /// Time a client gets to send a whole body, in seconds; then 408.
    #[arg(long, default_value_t = DEFAULT_BODY_TIMEOUT.as_secs())]
    body_timeout_secs: u64,
    /// Client-certificate identity (CN or SAN) allowed to post; repeatable. None: any
    /// certificate from --client-ca.
    #[arg(long = "allow-client")]
    allowed_clients: Vec<String>,
    /// File holding a bearer token that requests must carry (in addition to the certificate).
    #[arg(long)]
    bearer_token_file: Option<PathBuf>,
    /// Address for /metrics, /healthz and /readyz (plain HTTP).
    #[arg(long)]
    metrics_listen: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let store = LocalDirStore::open(&cli.store_dir)
        .with_context(|| format!("store {}", cli.store_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(&cli.listen)
        .await
        .with_context(|| format!("listen on {}", cli.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "ingester listening");
    let bearer_token = match &cli.bearer_token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("bearer token {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let metrics_listener = match &cli.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listen on {addr}"))?,
        ),
        None => None,
    };
    let config = Config {
        origin: cli.origin,
        store: Arc::new(store),
        prefix: cli.prefix,
        signer: SignerClientConfig {
            url: cli.signer_url,
            ca: cli.signer_ca,
            cert: cli.signer_cert,
            key: cli.signer_key,
            server_name: cli.signer_server_name,
            timeout: Duration::from_millis(cli.signer_timeout_ms),
        },
        tls: ServerTls {
            cert: cli.tls_cert,
            key: cli.tls_key,
            client_ca: cli.client_ca,
        },
        max_body_bytes: cli.max_body_bytes,
        max_in_flight_requests: cli.max_in_flight_requests,
        max_in_flight_bytes: cli.max_in_flight_bytes,
        body_timeout: Duration::from_secs(cli.body_timeout_secs),
        allowed_clients: cli.allowed_clients,
        bearer_token,
        metrics_listener,
    };
    sealtrail_ingester::run(config, listener, shutdown_signal()).await?;
    tracing::info!("ingester stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
