//! `sealtrail-signer anchor`: the flags of the anchor (RFC 3161 timestamps on the newest
//! stored checkpoint) and its start; the work is in `sealtrail_signer::anchor`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use sealtrail_core::trust::Trust;
use sealtrail_signer::anchor::{self, AnchorConfig, AnchorMetrics, Tsa};
use sealtrail_store::args::{LockArgs, StoreArgs};

#[derive(clap::Args)]
pub struct AnchorArgs {
    /// The trust bundle: the log's key history (`export-trust --state-dir`), which checks
    /// the checkpoints found, and the pinned timestamp authorities, which check each token.
    #[arg(long, env = "SEALTRAIL_TRUST")]
    trust: PathBuf,
    /// A timestamp authority, NAME=URL (http:// or https://); NAME is its entry in the
    /// trust bundle. Repeatable: each gets every anchor.
    #[arg(long = "tsa", required = true)]
    tsas: Vec<String>,
    /// Least time between two requests to one TSA, in seconds.
    #[arg(long, default_value_t = anchor::DEFAULT_INTERVAL.as_secs())]
    tsa_interval: u64,
    /// Lag after which a TSA is overdue (metric sealtrail_anchor_overdue), in seconds.
    #[arg(long, default_value_t = anchor::DEFAULT_ALERT_AFTER.as_secs())]
    tsa_alert_after: u64,
    /// Time one request to a TSA may take, in seconds.
    #[arg(long, default_value_t = anchor::DEFAULT_TIMEOUT.as_secs())]
    tsa_timeout: u64,
    /// Address for /metrics, /healthz and /readyz (plain HTTP); none if absent.
    #[arg(long)]
    metrics_listen: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    lock: LockArgs,
}

pub async fn run(args: AnchorArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.trust)
        .with_context(|| format!("trust bundle {}", args.trust.display()))?;
    let trust =
        Trust::parse(&bytes).with_context(|| format!("trust bundle {}", args.trust.display()))?;
    let tsas = args
        .tsas
        .iter()
        .map(|s| Tsa::parse(s, &trust))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    if args.tsa_interval == 0 {
        bail!("--tsa-interval must be at least 1 second");
    }
    let opened = args
        .store
        .open_for_writing(&args.lock)
        .await
        .with_context(|| format!("store {}", args.store.store))?;
    let metrics = Arc::new(AnchorMetrics::default());
    let shutdown = sealtrail_ops::Shutdown::new(sealtrail_ops::shutdown_signal());
    if let Some(addr) = &args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "anchor metrics listening");
        sealtrail_ops::spawn_health(metrics.clone().health(), listener, shutdown.wait());
    }
    let config = AnchorConfig {
        prefix: opened.prefix,
        tsas,
        trust,
        interval: Duration::from_secs(args.tsa_interval),
        alert_after: Duration::from_secs(args.tsa_alert_after),
        timeout: Duration::from_secs(args.tsa_timeout),
    };
    tracing::info!(tsas = config.tsas.len(), "anchor started");
    anchor::run(config, opened.store, metrics, shutdown.wait()).await;
    tracing::info!("anchor stopped");
    Ok(())
}
