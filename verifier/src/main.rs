//! `sealtrail-verify`: parses arguments and runs the verifier.
//!
//! Exit codes: 0 intact; 1 tampering or inconsistency found (or invalid input to
//! `canonicalize`); 2 the verification could not be completed.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sealtrail_core::trust::Trust;
use sealtrail_store::s3::{S3Config, S3Store};
use sealtrail_store::{LocalDirStore, Location, ObjectStore};
use sealtrail_verifier::{Options, canonicalize, verify_store};

#[derive(Parser)]
#[command(
    name = "sealtrail-verify",
    version,
    about = "Verify a Sealtrail audit trail"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify every stored event, proof, checkpoint signature and chain link.
    Verify {
        /// The store: `s3://BUCKET[/PREFIX]` or a local directory.
        #[arg(long)]
        store: String,
        /// Object key prefix of the log in a directory store, ending in '/', or empty.
        #[arg(long, default_value = "")]
        prefix: String,
        /// S3 endpoint override (S3-compatible stores).
        #[arg(long)]
        s3_endpoint: Option<String>,
        /// Path-style S3 addressing.
        #[arg(long)]
        s3_path_style: bool,
        /// S3 region (else from the environment or profile).
        #[arg(long, env = "AWS_REGION")]
        s3_region: Option<String>,
        /// The pinned trust bundle (JSON).
        #[arg(long)]
        trust: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print `<hex leaf hash> <canonical JSON>` for each event read from standard input
    /// (an EventList, or one JSON event per line).
    Canonicalize,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sealtrail-verify: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Verify {
            store,
            prefix,
            s3_endpoint,
            s3_path_style,
            s3_region,
            trust,
            json,
        } => {
            let bundle = std::fs::read(&trust)
                .map_err(|e| anyhow::anyhow!("trust bundle {}: {e}", trust.display()))?;
            let trust = Trust::parse(&bundle)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let (store, prefix): (Box<dyn ObjectStore>, String) = match Location::parse(&store)? {
                Location::Dir(dir) => {
                    if !dir.is_dir() {
                        anyhow::bail!("store {} is not a directory", dir.display());
                    }
                    (Box::new(LocalDirStore::open(&dir)?), prefix)
                }
                Location::S3 { bucket, prefix: p } => {
                    // Reading needs no lock settings; the retention given is never used.
                    let mut cfg = S3Config::new(bucket, std::time::Duration::from_secs(1));
                    cfg.endpoint = s3_endpoint;
                    cfg.force_path_style = s3_path_style;
                    cfg.region = s3_region;
                    (Box::new(rt.block_on(S3Store::connect(cfg))?), p)
                }
            };
            let report = rt.block_on(verify_store(store.as_ref(), &trust, &Options { prefix }))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.summary());
            }
            Ok(if report.intact() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Canonicalize => {
            let mut input = Vec::new();
            std::io::stdin().read_to_end(&mut input)?;
            match canonicalize::canonicalize(&input) {
                Ok(events) => {
                    let mut out = Vec::new();
                    for e in &events {
                        canonicalize::format_line(e, &mut out);
                    }
                    std::io::stdout().write_all(&out)?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("sealtrail-verify canonicalize: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
