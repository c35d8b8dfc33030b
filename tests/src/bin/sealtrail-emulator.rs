//! `sealtrail-emulator`: replays audit events to a webhook as kube-apiserver would (see
//! `sealtrail_tests::emulator`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sealtrail_tests::emulator::{self, EmulatorConfig, RetryPolicy};

/// Replays audit events (JSON Lines, as the apiserver's log backend writes them) to an
/// audit webhook exactly as kube-apiserver's batching webhook client does: EventList
/// batches of one apiVersion without kind/apiVersion on the items, Go-style JSON, HTTPS
/// with a client certificate, a token-bucket throttle, a timeout per attempt, retries with
/// exponential backoff (Retry-After honoured when longer), and dropped batches after the
/// last attempt. Exits 0 only if no batch was dropped.
#[derive(Debug, Parser)]
#[command(name = "sealtrail-emulator", version)]
struct Args {
    /// Webhook URL.
    #[arg(long, default_value = "https://127.0.0.1:8443/v1/audit")]
    url: String,
    /// CA certificate (PEM) of the webhook's server certificate.
    #[arg(long, default_value = "ca.pem")]
    ca: PathBuf,
    /// Client certificate (PEM) the apiserver presents.
    #[arg(long, default_value = "apiserver-client.pem")]
    cert: PathBuf,
    /// Key (PEM) of the client certificate.
    #[arg(long, default_value = "apiserver-client.key")]
    key: PathBuf,
    /// Audit events, one JSON object per line.
    #[arg(long)]
    events: PathBuf,
    /// Replay the file N times. Pass 1 sends the events as they are; in each later pass r
    /// (r = 1, 2, ...) every auditID gets "-r<r>" appended, so the trail sees no exact
    /// duplicates (the stages of one request still share their auditID).
    #[arg(long, default_value_t = 1, value_name = "N")]
    repeat: usize,
    /// Items per batch, at most.
    #[arg(long, default_value_t = emulator::DEFAULT_MAX_BATCH)]
    max_batch: usize,
    /// Batches per second each apiserver may start (token bucket rate).
    #[arg(long, default_value_t = 10.0)]
    qps: f64,
    /// Token bucket size.
    #[arg(long, default_value_t = 15)]
    burst: u32,
    /// Do not throttle batches at all.
    #[arg(long, conflicts_with_all = ["qps", "burst"])]
    no_throttle: bool,
    /// Number of independent apiservers (each with its own connections and throttle);
    /// batches are split among them round-robin. For load tests.
    #[arg(long, default_value_t = 1, value_name = "K")]
    concurrency: usize,
    /// Batches in flight per apiserver, at most (default: all, capped at 256).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Timeout of one attempt, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Wait after the first failed attempt, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    initial_backoff_ms: u64,
    /// Each further wait is the previous one times this.
    #[arg(long, default_value_t = 1.5)]
    backoff_factor: f64,
    /// Attempts per batch in all, the first included.
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    /// User-Agent header.
    #[arg(long, default_value = emulator::DEFAULT_USER_AGENT)]
    user_agent: String,
    /// Print the report as JSON instead of a summary.
    #[arg(long)]
    json: bool,
    /// Stamp each batch's events with the time it is sent (live traffic, for late-event
    /// checks), instead of replaying the captured timestamps.
    #[arg(long)]
    restamp: bool,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sealtrail-emulator: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    let args = Args::parse();
    let bytes = std::fs::read(&args.events)
        .with_context(|| format!("reading {}", args.events.display()))?;
    let lines: Vec<Vec<u8>> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(<[u8]>::to_vec)
        .collect();
    let lines = emulator::repeat_events(&lines, args.repeat)?;
    let cfg = EmulatorConfig {
        url: args.url,
        ca: args.ca,
        cert: args.cert,
        key: args.key,
        max_batch: args.max_batch,
        qps: (!args.no_throttle).then_some(args.qps),
        burst: args.burst,
        max_in_flight: args.max_in_flight,
        timeout: Duration::from_millis(args.timeout_ms),
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(args.initial_backoff_ms),
            factor: args.backoff_factor,
            max_attempts: args.max_attempts,
        },
        user_agent: args.user_agent,
        apiservers: args.concurrency,
        restamp: args.restamp,
    };
    let batches = emulator::batches(&lines, cfg.max_batch)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(emulator::run_batches(&cfg, batches))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.summary());
    }
    Ok(report.batches_dropped == 0)
}
