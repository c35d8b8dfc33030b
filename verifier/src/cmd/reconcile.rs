//! `reconcile`: the events the apiserver's log-file backend wrote, or an EKS log group
//! holds over a time range, that the trail lacks (and, for the range, the reverse).

use std::path::PathBuf;
use std::process::ExitCode;

use sealtrail_cloudwatch::source::{
    CloudWatchConfig, CloudWatchSource, EKS_AUDIT_STREAM_PREFIX, LogSource as _,
};
use sealtrail_store::args::StoreArgs;
use sealtrail_verifier::reconcile::{Range, reconcile_range};

use super::{open_store, runtime};

#[derive(clap::Args)]
pub struct Args {
    /// The apiserver's audit log (`--audit-log-path`), JSON Lines.
    #[arg(long, required_unless_present = "cloudwatch_log_group")]
    pub apiserver_log: Option<PathBuf>,
    /// Or an EKS log group (`/aws/eks/<cluster>/cluster`), read over --from..--to.
    #[arg(long, conflicts_with = "apiserver_log", requires_all = ["from", "to"])]
    pub cloudwatch_log_group: Option<String>,
    /// Start of the range (RFC 3339, included): CloudWatch timestamps, and the stored
    /// events' stageTimestamp for `extra`.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// End of the range (RFC 3339, excluded).
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// CloudWatch Logs endpoint override.
    #[arg(long)]
    pub logs_endpoint: Option<String>,
    /// CloudWatch Logs region (else from the environment or profile).
    #[arg(long)]
    pub logs_region: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn micros(flag: &str, t: &str) -> anyhow::Result<i64> {
    sealtrail_core::event::parse_timestamp_micros(t)
        .ok_or_else(|| anyhow::anyhow!("{flag} {t:?}: not RFC 3339"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let range = match (&args.from, &args.to) {
        (Some(f), Some(t)) => Some(Range {
            from_us: micros("--from", f)?,
            to_us: micros("--to", t)?,
        }),
        _ => None,
    };
    let (log, labels) = match (&args.apiserver_log, &args.cloudwatch_log_group) {
        (Some(path), _) => (
            std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            Vec::new(),
        ),
        (None, Some(group)) => {
            let range = range
                .ok_or_else(|| anyhow::anyhow!("--cloudwatch-log-group needs --from and --to"))?;
            rt.block_on(cloudwatch_log(&args, group, range))?
        }
        (None, None) => anyhow::bail!("give --apiserver-log or --cloudwatch-log-group"),
    };
    let (store, prefix, _) = open_store(&rt, args.store)?;
    let report = rt.block_on(reconcile_range(
        store.as_ref(),
        &prefix,
        &log,
        &labels,
        range,
    ))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
    }
    Ok(if report.missing.is_empty() && report.extra.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The log group's audit events in the range, one message per line in (timestamp, stream,
/// event id) order, and where each came from.
async fn cloudwatch_log(
    args: &Args,
    group: &str,
    range: Range,
) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
    let source = CloudWatchSource::connect(CloudWatchConfig {
        log_group: group.to_string(),
        stream_prefix: EKS_AUDIT_STREAM_PREFIX.into(),
        endpoint: args.logs_endpoint.clone(),
        region: args.logs_region.clone(),
    })
    .await;
    // FilterLogEvents' end is inclusive, milliseconds; the range's is exclusive.
    let to_ms = range.to_us.div_euclid(1000) - i64::from(range.to_us % 1000 == 0);
    let mut events = source
        .fetch(range.from_us.div_euclid(1000), to_ms)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    events.sort_by(|a, b| {
        (a.timestamp_ms, &a.stream, &a.event_id).cmp(&(b.timestamp_ms, &b.stream, &b.event_id))
    });
    events.dedup_by(|a, b| a.event_id == b.event_id);
    let mut log = Vec::new();
    let mut labels = Vec::with_capacity(events.len());
    for e in events {
        // A message holding a newline would split into lines: keep it as one.
        log.extend_from_slice(e.message.replace('\n', " ").as_bytes());
        log.push(b'\n');
        labels.push(format!("{} {}", e.stream, e.event_id));
    }
    Ok((log, labels))
}
