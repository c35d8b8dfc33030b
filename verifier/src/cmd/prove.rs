//! `prove`: exports an offline proof bundle (docs/FORMAT.md §8).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use sealtrail_store::args::StoreArgs;
use sealtrail_verifier::prove::{self, ProveOptions, Selection};

use super::{load_trust, open_store, parse_duration_opt, runtime};

pub const PROVE_EXIT_CODES: &str = "\
Exit codes:
  0  the bundle was written (every event in it verified before export; a bundle that
     rests on a retired key is written too, each retired_key_head named on standard
     error: check-bundle calls it NOT SETTLED)
  1  no bundle: no stored event matches, or a selected event, its checkpoint or its
     consistency with the head does not verify (each is named)
  2  the export could not be completed (store, trust bundle, arguments, limits)";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The pinned trust bundle (JSON): every exported checkpoint must verify against it.
    #[arg(long)]
    pub trust: PathBuf,
    /// Every stored event (all stages) of this auditID.
    #[arg(long, required_unless_present = "from", conflicts_with = "from")]
    pub audit_id: Option<String>,
    /// Events whose stageTimestamp is at or after this time (RFC 3339).
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// ... and before this time (RFC 3339, excluded).
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// Only events of this user.username (with --from/--to).
    #[arg(long, requires = "from")]
    pub user: Option<String>,
    /// Only events of this verb (with --from/--to).
    #[arg(long, requires = "from")]
    pub verb: Option<String>,
    /// Leave out the consistency proofs to the newest stored checkpoint (they need every
    /// segment read); a time range then reads only its hour partitions, +- --margin.
    #[arg(long)]
    pub no_consistency: bool,
    /// With --no-consistency, how long after (or, by clock skew, before) its
    /// stageTimestamp an event may have been stored and still be found (`90s`, `30m`,
    /// `1h`, `2d`).
    #[arg(long, default_value = "1h")]
    pub margin: String,
    /// Write the bundle here (atomically) instead of to standard output.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        store,
        trust,
        audit_id,
        from,
        to,
        user,
        verb,
        no_consistency,
        margin,
        out,
    } = args;
    let trust = load_trust(&trust)?;
    let selection = match (audit_id, from, to) {
        (Some(audit_id), None, None) => Selection::AuditId { audit_id },
        (None, Some(from), Some(to)) => Selection::TimeRange {
            from,
            to,
            user,
            verb,
        },
        _ => anyhow::bail!("give --audit-id, or --from and --to"),
    };
    let margin = parse_duration_opt(&margin)
        .map_err(|e| anyhow::anyhow!("--margin {e}"))?
        .unwrap_or_default();
    let rt = runtime()?;
    let (store, prefix, _) = open_store(&rt, store)?;
    let options = ProveOptions {
        prefix,
        consistency: !no_consistency,
        margin,
    };
    let proved = match rt.block_on(prove::prove(store.as_ref(), &trust, &selection, &options)) {
        Ok(p) => p,
        Err(e @ sealtrail_verifier::Error::NotProvable(_)) => {
            eprintln!("sealtrail-verify prove: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    match &out {
        Some(path) => sealtrail_verifier::state::write_atomic(path, &proved.bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&proved.bytes)?;
            stdout.flush()?;
        }
    }
    eprint!("{}", proved.report.summary(&selection, margin));
    if let Some(path) = &out {
        eprintln!("bundle written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
