//! `sealtrail-verify`: parses arguments and runs one subcommand (one file each under
//! `cmd/`). Exit codes are in each subcommand's `--help` and in docs/FORMAT.md §9.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sealtrail-verify",
    version,
    about = "Verify a Sealtrail audit trail",
    after_help = cmd::verify::EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify every stored event, proof, checkpoint signature and chain link.
    #[command(after_help = cmd::verify::EXIT_CODES)]
    Verify(Box<cmd::verify::Args>),
    /// Print `<hex leaf hash> <canonical JSON>` for each event read from standard input
    /// (an EventList, or one JSON event per line).
    Canonicalize,
    /// List the events the apiserver's log-file backend wrote that the trail does not hold
    /// (what the webhook path dropped). Exit 0 when none is missing, 1 otherwise.
    Reconcile(cmd::reconcile::Args),
    /// Export an offline proof bundle (docs/FORMAT.md §8): the selected events with their
    /// inclusion proofs, signed checkpoints, rotation checkpoints and consistency proofs.
    /// Every event is checked before it is exported. A summary goes to standard error.
    #[command(after_help = cmd::prove::PROVE_EXIT_CODES)]
    Prove(Box<cmd::prove::Args>),
    /// Answer "who did what, when": print the stored events that match the filters, each
    /// verified (leaf hash, inclusion proof, signed checkpoint) before it is printed, as
    /// JSON Lines, a table or counts; a time range reads only the hour partitions it needs.
    /// A summary (and any integrity finding in the searched range) goes to standard error.
    #[command(after_help = cmd::search::SEARCH_EXIT_CODES)]
    Search(Box<cmd::search::Args>),
    /// Verify a proof bundle offline against a pinned trust bundle (no store, no network).
    #[command(after_help = cmd::check_bundle::CHECK_BUNDLE_EXIT_CODES)]
    CheckBundle(cmd::check_bundle::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Verify(args) => cmd::verify::run(*args),
        Command::Canonicalize => cmd::canonicalize::run(),
        Command::Reconcile(args) => cmd::reconcile::run(args),
        Command::Prove(args) => cmd::prove::run(*args),
        Command::CheckBundle(args) => cmd::check_bundle::run(args),
        Command::Search(args) => cmd::search::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sealtrail-verify: {e:#}");
            ExitCode::from(2)
        }
    }
}
