//! `sealtrail-cloudwatch`: parses the configuration and runs the source until SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use sealtrail_cloudwatch::metrics::Metrics;
use sealtrail_cloudwatch::sink::HttpsSink;
use sealtrail_cloudwatch::source::{CloudWatchConfig, CloudWatchSource, EKS_AUDIT_STREAM_PREFIX};
use sealtrail_cloudwatch::{
    Config, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_EVENTS, PollConfig, run,
};
use sealtrail_store::args::StoreArgs;

#[derive(Parser)]
#[command(
    name = "sealtrail-cloudwatch",
    version,
    about = "Feed an EKS cluster's audit events from CloudWatch Logs into the trail, each once"
)]
struct Cli {
    /// The log group: `/aws/eks/<cluster>/cluster`.
    #[arg(long)]
    log_group: String,
    /// Only streams whose name starts with this.
    #[arg(long, default_value = EKS_AUDIT_STREAM_PREFIX)]
    stream_prefix: String,
    /// CloudWatch Logs endpoint override (a VPC endpoint; moto in tests).
    #[arg(long)]
    logs_endpoint: Option<String>,
    /// CloudWatch Logs region (else from the environment or profile).
    #[arg(long)]
    logs_region: Option<String>,
    /// The ingester's webhook, `https://host:port/v1/audit`.
    #[arg(long)]
    ingester_url: String,
    /// CA of the ingester's server certificate (PEM).
    #[arg(long)]
    ingester_ca: PathBuf,
    /// This source's client certificate towards the ingester (PEM).
    #[arg(long)]
    client_cert: PathBuf,
    /// Its key (PEM).
    #[arg(long)]
    client_key: PathBuf,
    /// The log's store, where the cursor is kept (read and written create-new).
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    lock: sealtrail_store::args::LockArgs,
    /// How far behind the wall clock each window ends, seconds.
    #[arg(long, default_value_t = sealtrail_cloudwatch::DEFAULT_SETTLE.as_secs())]
    settle_seconds: u64,
    /// How far back each window re-reads the previous one, seconds.
    #[arg(long, default_value_t = sealtrail_cloudwatch::DEFAULT_OVERLAP.as_secs())]
    overlap_seconds: u64,
    /// Most event time read in one pass, milliseconds (two slices are held at once).
    #[arg(long, default_value_t = sealtrail_cloudwatch::DEFAULT_MAX_SLICE.as_millis() as u64)]
    max_slice_ms: u64,
    /// Time between passes, seconds.
    #[arg(long, default_value_t = sealtrail_cloudwatch::DEFAULT_POLL_INTERVAL.as_secs())]
    poll_seconds: u64,
    /// Most batches sent to the ingester at once (each named in the cursor first).
    #[arg(long, default_value_t = sealtrail_cloudwatch::DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// Where a log group without a cursor starts: RFC 3339, or `now`.
    #[arg(long, default_value = "now")]
    start: String,
    /// Serve /metrics, /healthz and /readyz here (plain HTTP).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn start_ms(start: &str) -> anyhow::Result<i64> {
    if start == "now" {
        return Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64);
    }
    let us = sealtrail_core::event::parse_timestamp_micros(start)
        .ok_or_else(|| anyhow::anyhow!("--start {start:?}: not RFC 3339 (or `now`)"))?;
    Ok(us / 1000)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    sealtrail_ops::init_logging(cli.log_json);
    let start_ms = start_ms(&cli.start)?;
    let opened = cli
        .store
        .open_for_writing(&cli.lock)
        .await
        .with_context(|| format!("store {}", cli.store.store))?;
    let tls_metrics = sealtrail_ops::tls::TlsMetrics::default();
    let tls = sealtrail_ops::tls::Reloading::client(
        sealtrail_ops::tls::TlsFiles {
            cert: cli.client_cert.clone(),
            key: cli.client_key.clone(),
            ca: cli.ingester_ca.clone(),
        },
        vec![b"http/1.1".to_vec()],
        "cloudwatch-client",
        &tls_metrics,
    )?;
    tls.watch(sealtrail_ops::tls::RELOAD_INTERVAL);
    let sink = HttpsSink::new(&cli.ingester_url, tls)?;
    let source = CloudWatchSource::connect(CloudWatchConfig {
        log_group: cli.log_group.clone(),
        stream_prefix: cli.stream_prefix.clone(),
        endpoint: cli.logs_endpoint.clone(),
        region: cli.logs_region.clone(),
    })
    .await;
    let metrics = Arc::new(Metrics::default());
    let shutdown = sealtrail_ops::Shutdown::new(sealtrail_ops::shutdown_signal());
    if let Some(addr) = &cli.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics-listen {addr}"))?;
        let m = metrics.clone();
        let health = sealtrail_ops::Health {
            metrics: Arc::new(move || m.render()),
            ready: Arc::new(|| Box::pin(async { None })),
        }
        .with_tls(tls_metrics.clone());
        sealtrail_ops::spawn_health(health, listener, shutdown.wait());
    }
    let config = Config {
        source: Arc::new(source),
        sink: Arc::new(sink),
        store: opened.store,
        prefix: opened.prefix,
        poll: PollConfig {
            settle: Duration::from_secs(cli.settle_seconds),
            overlap: Duration::from_secs(cli.overlap_seconds),
            max_batch_events: DEFAULT_MAX_BATCH_EVENTS,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_slice: Duration::from_millis(cli.max_slice_ms.max(1)),
            retry_backoff: Duration::from_millis(500),
            max_in_flight: cli.max_in_flight.max(1),
        },
        interval: Duration::from_secs(cli.poll_seconds),
        start_ms,
        metrics,
    };
    run(config, shutdown.wait()).await?;
    Ok(())
}
