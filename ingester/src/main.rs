//! `sealtrail-ingester`: parses configuration and runs the webhook.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use sealtrail_ingester::signer_client::SignerClientConfig;
use sealtrail_ingester::{
    Config, DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IN_FLIGHT_BYTES,
    DEFAULT_MAX_IN_FLIGHT_REQUESTS, DEFAULT_MAX_UNSEALED_MEMORY, DEFAULT_SEAL_DRAIN_TIMEOUT,
    DEFAULT_SPOOL_MAX_BYTES, DEFAULT_STORE_ACK_TIMEOUT, ServerTls,
};
use sealtrail_store::args::{LockArgs, StoreArgs};

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
    #[arg(long, required_unless_present = "insecure_http")]
    tls_cert: Option<PathBuf>,
    /// Webhook server key (PEM).
    #[arg(long, required_unless_present = "insecure_http")]
    tls_key: Option<PathBuf>,
    /// CA of the apiserver's client certificate (PEM). A client certificate is required.
    #[arg(long, required_unless_present = "insecure_http")]
    client_ca: Option<PathBuf>,
    /// Serve plain HTTP without client authentication (only behind a TLS-terminating
    /// proxy in the same pod). Never exposed to a network.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "client_ca"])]
    insecure_http: bool,
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long)]
    log_json: bool,
    /// Where segments go (Object Lock required on S3) and how each is locked.
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    lock: LockArgs,
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
    /// Local durable spool (its own volume): batches are recorded here (fsynced) before
    /// they are acknowledged and kept until sealed, so capture rides out store outages and
    /// restarts. Without it a batch is acknowledged only once the store holds it.
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// Bound of the spool, in bytes; when full (and the store is away), 503.
    #[arg(long, default_value_t = DEFAULT_SPOOL_MAX_BYTES)]
    spool_max_bytes: u64,
    /// Time a request waits for the store once its spool record is durable, in
    /// milliseconds; then it is acknowledged from the spool.
    #[arg(long, default_value_t = DEFAULT_STORE_ACK_TIMEOUT.as_millis() as u64)]
    store_ack_timeout_ms: u64,
    /// Time graceful shutdown keeps sealing queued batches, in seconds.
    #[arg(long, default_value_t = DEFAULT_SEAL_DRAIN_TIMEOUT.as_secs())]
    seal_drain_timeout_secs: u64,
    /// Memory batches kept from acknowledgement until sealed may hold, in bytes (beyond,
    /// re-read when due, up to as much again for the group being sealed).
    #[arg(long, default_value_t = DEFAULT_MAX_UNSEALED_MEMORY)]
    max_unsealed_memory_bytes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    sealtrail_ops::init_logging(cli.log_json);
    // Refuses a bucket without Object Lock: it could not keep evidence.
    let opened = cli
        .store
        .open_for_writing(&cli.lock)
        .await
        .with_context(|| format!("store {}", cli.store.store))?;
    let (store, prefix) = (opened.store, opened.prefix);
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
        store,
        prefix,
        signer: SignerClientConfig {
            url: cli.signer_url,
            ca: cli.signer_ca,
            cert: cli.signer_cert,
            key: cli.signer_key,
            server_name: cli.signer_server_name,
            timeout: Duration::from_millis(cli.signer_timeout_ms),
        },
        tls: match (cli.tls_cert, cli.tls_key, cli.client_ca) {
            (Some(cert), Some(key), Some(client_ca)) => Some(ServerTls {
                cert,
                key,
                client_ca,
            }),
            _ => None,
        },
        max_body_bytes: cli.max_body_bytes,
        max_in_flight_requests: cli.max_in_flight_requests,
        max_in_flight_bytes: cli.max_in_flight_bytes,
        body_timeout: Duration::from_secs(cli.body_timeout_secs),
        allowed_clients: cli.allowed_clients,
        bearer_token,
        metrics_listener,
        spool_dir: cli.spool_dir,
        spool_max_bytes: cli.spool_max_bytes,
        store_ack_timeout: Duration::from_millis(cli.store_ack_timeout_ms),
        seal_drain_timeout: Duration::from_secs(cli.seal_drain_timeout_secs),
        max_unsealed_memory: cli.max_unsealed_memory_bytes,
    };
    sealtrail_ingester::run(config, listener, sealtrail_ops::shutdown_signal()).await?;
    tracing::info!("ingester stopped");
    Ok(())
}
