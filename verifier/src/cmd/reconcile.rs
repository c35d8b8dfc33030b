//! `reconcile`: the events the apiserver's log-file backend wrote that the trail lacks.

use std::path::PathBuf;
use std::process::ExitCode;

use sealtrail_store::args::StoreArgs;

use super::{open_store, runtime};

#[derive(clap::Args)]
pub struct Args {
    /// The apiserver's audit log (`--audit-log-path`), JSON Lines.
    #[arg(long)]
    pub apiserver_log: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        apiserver_log,
        store,
        json,
    } = args;
    let log = std::fs::read(&apiserver_log)
        .map_err(|e| anyhow::anyhow!("{}: {e}", apiserver_log.display()))?;
    let rt = runtime()?;
    let (store, prefix, _) = open_store(&rt, store)?;
    let report = rt.block_on(sealtrail_verifier::reconcile::reconcile(
        store.as_ref(),
        &prefix,
        &log,
    ))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
    }
    Ok(if report.missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
