//! `check-bundle`: verifies a proof bundle offline against a pinned trust bundle.

use std::path::PathBuf;
use std::process::ExitCode;

use sealtrail_verifier::prove::{self, Bundle};

use super::load_trust;

pub const CHECK_BUNDLE_EXIT_CODES: &str = "\
Exit codes:
  0  every event, inclusion proof, checkpoint signature, rotation and consistency proof
     verifies against the trust bundle
  1  something does not verify (each problem names its event or checkpoint), a
     timestamp token included, or a checkpoint's time against the tokens covering it
  2  the bundle or the trust bundle cannot be read or parsed
  3  not settled: every proof holds, but the head (or, without consistency proofs, an
     event's checkpoint) is signed only by keys the pinned history retired
     (`retired_key_head`): export a bundle whose head a current key signed";

#[derive(clap::Args)]
pub struct Args {
    /// The bundle file (`-` for standard input).
    pub file: PathBuf,
    /// The pinned trust bundle (JSON).
    #[arg(long)]
    pub trust: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// How much later than the TSA time of a timestamp token covering it a checkpoint may
    /// be dated before it is `time_inconsistent` (`90s`, `30m`, `1h`, `2d`).
    #[arg(long, default_value = "60s")]
    pub time_tolerance: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        file,
        trust,
        json,
        time_tolerance,
    } = args;
    let trust = load_trust(&trust)?;
    let tolerance = super::parse_duration_opt(&time_tolerance)
        .map_err(|e| anyhow::anyhow!("--time-tolerance {e}"))?
        .ok_or_else(|| anyhow::anyhow!("--time-tolerance cannot be off"))?;
    let bytes = if file.as_os_str() == "-" {
        prove::read_limited(std::io::stdin().lock())
    } else {
        std::fs::File::open(&file).and_then(prove::read_limited)
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let bundle = Bundle::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let report = prove::check_bundle_with(&bundle, &trust, tolerance);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
    }
    Ok(if report.verified {
        ExitCode::SUCCESS
    } else if report.only_unsettled() {
        ExitCode::from(3)
    } else {
        ExitCode::from(1)
    })
}
