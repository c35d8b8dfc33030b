//! `sealtrail-verify`: parses arguments and runs the verifier.
//!
//! Exit codes: 0 intact; 1 tampering or inconsistency found (or invalid input to
//! `canonicalize`); 2 the verification could not be completed.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sealtrail_core::trust::Trust;
use sealtrail_store::LocalDirStore;
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
        /// The store: a local directory.
        #[arg(long)]
        store: PathBuf,
        /// Object key prefix of the log, ending in '/', or empty.
        #[arg(long, default_value = "")]
        prefix: String,
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
            trust,
            json,
        } => {
            let bundle = std::fs::read(&trust)
                .map_err(|e| anyhow::anyhow!("trust bundle {}: {e}", trust.display()))?;
            let trust = Trust::parse(&bundle)?;
            if !store.is_dir() {
                anyhow::bail!("store {} is not a directory", store.display());
            }
            let store = LocalDirStore::open(&store)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(verify_store(&store, &trust, &Options { prefix }))?;
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
