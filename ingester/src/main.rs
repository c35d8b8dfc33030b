//! `sealtrail-ingester`: parses configuration and runs the webhook.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use sealtrail_ingester::signer_client::SignerClientConfig;
use sealtrail_ingester::{Config, DEFAULT_MAX_BODY_BYTES, ServerTls};
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
