//! `sealtrail-verify`: parses arguments and runs the verifier.
//!
//! Exit codes: 0 intact; 1 tampering or inconsistency found (or invalid input to
//! `canonicalize`); 2 the verification could not be completed.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use sealtrail_core::trust::Trust;
use sealtrail_store::s3::{LockMode, S3Store};
use sealtrail_store::{Location, ObjectStore, S3Settings};
use sealtrail_verifier::prove::{self, Bundle, ProveOptions, Selection};
use sealtrail_verifier::{
    GrpcSigner, ObjectLockPolicy, Options, SignerConfig, State, canonicalize, metrics, verify_store,
};

const EXIT_CODES: &str = "\
Exit codes:
  0  intact: every event, proof, signature, chain link verifies (and, when asked, the
     store is consistent with the signer's latest checkpoint and with the state file)
  1  findings: tampering, loss or inconsistency (each finding has a kind and a location),
     or advisory findings (duplicate_audit_event, late_event, object-lock findings);
     for `canonicalize`, invalid input
  2  the verification could not be completed (store, signer, trust bundle or state file
     unusable)";

const PROVE_EXIT_CODES: &str = "\
Exit codes:
  0  the bundle was written (every event in it verified before export)
  1  no bundle: no stored event matches, or a selected event, its checkpoint or its
     consistency with the head does not verify (each is named)
  2  the export could not be completed (store, trust bundle, arguments, limits)";

const CHECK_BUNDLE_EXIT_CODES: &str = "\
Exit codes:
  0  every event, inclusion proof, checkpoint signature, rotation and consistency proof
     verifies against the trust bundle
  1  something does not verify (each problem names its event or checkpoint)
  2  the bundle or the trust bundle cannot be read or parsed";

#[derive(Parser)]
#[command(
    name = "sealtrail-verify",
    version,
    about = "Verify a Sealtrail audit trail",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Verify every stored event, proof, checkpoint signature and chain link.
    #[command(after_help = EXIT_CODES)]
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// The pinned trust bundle (JSON).
        #[arg(long)]
        trust: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The signer, `https://host:port`: its latest checkpoint must extend the stored
        /// tree, and every leaf it signed must be stored (catches a cut tail).
        #[arg(long, requires_all = ["signer_ca", "signer_cert", "signer_key"])]
        signer: Option<String>,
        /// CA of the signer's server certificate (PEM).
        #[arg(long)]
        signer_ca: Option<PathBuf>,
        /// The verifier's client certificate towards the signer (PEM).
        #[arg(long)]
        signer_cert: Option<PathBuf>,
        /// Its key (PEM).
        #[arg(long)]
        signer_key: Option<PathBuf>,
        /// Name in the signer's certificate, if not the URL's host.
        #[arg(long)]
        signer_server_name: Option<String>,
        /// State file: remembers the last verified checkpoint, its frontier and the objects
        /// verified; the next run checks the store against it and reads only new objects.
        /// Created if absent; advanced only after a run without integrity findings.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Report events whose stageTimestamp is older than their receipt by the ingester
        /// (or, in segments from before sealing, than the checkpoint that first covers
        /// them) by more than this (`90s`, `30m`, `1h`, `2d`; `off` to disable).
        #[arg(long, default_value = "1h")]
        late_after: String,
        /// Report a pending batch that no segment seals once it is older than this
        /// (`unsealed_batch`; same units as --late-after).
        #[arg(long, default_value = "1h")]
        seal_grace: String,
        /// Do not report (auditID, stage) pairs stored twice.
        #[arg(long)]
        no_duplicate_check: bool,
        /// S3 stores: each segment must be locked until at least its checkpoint time plus
        /// this many days.
        #[arg(long, default_value_t = 0)]
        min_retention_days: u64,
        /// S3 stores: GOVERNANCE mode is a finding (`--require-compliance false` to accept it).
        #[arg(long, default_value_t = true, action = ArgAction::Set)]
        require_compliance: bool,
        /// Write the result as Prometheus text (node-exporter textfile collector), atomically.
        #[arg(long)]
        metrics_file: Option<PathBuf>,
    },
    /// Print `<hex leaf hash> <canonical JSON>` for each event read from standard input
    /// (an EventList, or one JSON event per line).
    Canonicalize,
    /// List the events the apiserver's log-file backend wrote that the trail does not hold
    /// (what the webhook path dropped). Exit 0 when none is missing, 1 otherwise.
    Reconcile {
        /// The apiserver's audit log (`--audit-log-path`), JSON Lines.
        #[arg(long)]
        apiserver_log: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export an offline proof bundle (docs/FORMAT.md §8): the selected events with their
    /// inclusion proofs, signed checkpoints, rotation checkpoints and consistency proofs.
    /// Every event is checked before it is exported. A summary goes to standard error.
    #[command(after_help = PROVE_EXIT_CODES)]
    Prove {
        #[command(flatten)]
        store: StoreArgs,
        /// The pinned trust bundle (JSON): every exported checkpoint must verify against it.
        #[arg(long)]
        trust: PathBuf,
        /// Every stored event (all stages) of this auditID.
        #[arg(long, required_unless_present = "from", conflicts_with = "from")]
        audit_id: Option<String>,
        /// Events whose stageTimestamp is at or after this time (RFC 3339).
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// ... and before this time (RFC 3339, excluded).
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// Only events of this user.username (with --from/--to).
        #[arg(long, requires = "from")]
        user: Option<String>,
        /// Only events of this verb (with --from/--to).
        #[arg(long, requires = "from")]
        verb: Option<String>,
        /// Leave out the consistency proofs to the newest stored checkpoint (they need every
        /// segment read); a time range then reads only its hour partitions, +- --margin.
        #[arg(long)]
        no_consistency: bool,
        /// With --no-consistency, how long after (or, by clock skew, before) its
        /// stageTimestamp an event may have been stored and still be found (`90s`, `30m`,
        /// `1h`, `2d`).
        #[arg(long, default_value = "1h")]
        margin: String,
        /// Write the bundle here (atomically) instead of to standard output.
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
    },
    /// Verify a proof bundle offline against a pinned trust bundle (no store, no network).
    #[command(after_help = CHECK_BUNDLE_EXIT_CODES)]
    CheckBundle {
        /// The bundle file (`-` for standard input).
        file: PathBuf,
        /// The pinned trust bundle (JSON).
        #[arg(long)]
        trust: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct StoreArgs {
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
}

/// The store to read, its key prefix, and the S3 client if it is one.
type OpenedStore = (Arc<dyn ObjectStore>, String, Option<Arc<S3Store>>);

fn open_store(rt: &tokio::runtime::Runtime, args: StoreArgs) -> anyhow::Result<OpenedStore> {
    let location = Location::parse(&args.store)?;
    if let Location::Dir(dir) = &location
        && !dir.is_dir()
    {
        anyhow::bail!("store {} is not a directory", dir.display());
    }
    let is_dir = matches!(location, Location::Dir(_));
    let opened = rt.block_on(location.open(S3Settings {
        endpoint: args.s3_endpoint,
        force_path_style: args.s3_path_style,
        region: args.s3_region,
        // Reading needs no lock settings: these are never used.
        lock_mode: LockMode::Compliance,
        retention: Duration::from_secs(1),
    }))?;
    let prefix = if is_dir { args.prefix } else { opened.prefix };
    Ok((opened.store, prefix, opened.s3))
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
            trust,
            json,
            signer,
            signer_ca,
            signer_cert,
            signer_key,
            signer_server_name,
            state,
            late_after,
            seal_grace,
            no_duplicate_check,
            min_retention_days,
            require_compliance,
            metrics_file,
        } => {
            let bundle = std::fs::read(&trust)
                .map_err(|e| anyhow::anyhow!("trust bundle {}: {e}", trust.display()))?;
            let trust = Trust::parse(&bundle)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let late_after =
                parse_duration_opt(&late_after).map_err(|e| anyhow::anyhow!("--late-after {e}"))?;
            let seal_grace = parse_duration_opt(&seal_grace)
                .map_err(|e| anyhow::anyhow!("--seal-grace {e}"))?
                .ok_or_else(|| anyhow::anyhow!("--seal-grace cannot be off"))?;
            let mut options = Options {
                check_duplicates: !no_duplicate_check,
                late_after,
                seal_grace: Some(seal_grace),
                progress: std::io::stderr().is_terminal(),
                // Content hashes only serve the next run's state.
                no_object_hashes: state.is_none(),
                ..Options::default()
            };
            let (store, prefix, s3) = open_store(&rt, store)?;
            if let Some(s3) = s3 {
                options.object_lock = Some(ObjectLockPolicy {
                    source: s3,
                    min_retention: Duration::from_secs(min_retention_days * 86_400),
                    require_compliance,
                });
            }
            options.prefix = prefix;
            if let Some(url) = signer {
                let (Some(ca), Some(cert), Some(key)) = (signer_ca, signer_cert, signer_key) else {
                    anyhow::bail!("--signer needs --signer-ca, --signer-cert and --signer-key");
                };
                let client = rt.block_on(async {
                    GrpcSigner::connect(&SignerConfig {
                        url,
                        ca,
                        cert,
                        key,
                        server_name: signer_server_name,
                        timeout: Duration::from_secs(60),
                    })
                });
                options.signer = Some(Arc::new(
                    client.map_err(|e| anyhow::anyhow!("signer: {e}"))?,
                ));
            }
            if let Some(path) = &state {
                options.state = State::load(path).map_err(|e| anyhow::anyhow!("state: {e}"))?;
            }
            let report = rt.block_on(verify_store(store.as_ref(), &trust, &options))?;
            if let Some(path) = &state {
                match &report.state {
                    Some(s) => s.save(path).map_err(|e| anyhow::anyhow!("state: {e}"))?,
                    None => eprintln!(
                        "sealtrail-verify: state {} not advanced (integrity findings, or nothing verified)",
                        path.display()
                    ),
                }
            }
            if let Some(path) = &metrics_file {
                sealtrail_verifier::state::write_atomic(path, metrics::render(&report).as_bytes())
                    .map_err(|e| anyhow::anyhow!("metrics file: {e}"))?;
            }
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
        Command::Reconcile {
            apiserver_log,
            store,
            json,
        } => {
            let log = std::fs::read(&apiserver_log)
                .map_err(|e| anyhow::anyhow!("{}: {e}", apiserver_log.display()))?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
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
        Command::Prove {
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
        } => {
            let bundle = std::fs::read(&trust)
                .map_err(|e| anyhow::anyhow!("trust bundle {}: {e}", trust.display()))?;
            let trust = Trust::parse(&bundle)?;
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
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let (store, prefix, _) = open_store(&rt, store)?;
            let options = ProveOptions {
                prefix,
                consistency: !no_consistency,
                margin,
            };
            let proved =
                match rt.block_on(prove::prove(store.as_ref(), &trust, &selection, &options)) {
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
        Command::CheckBundle { file, trust, json } => {
            let bundle = std::fs::read(&trust)
                .map_err(|e| anyhow::anyhow!("trust bundle {}: {e}", trust.display()))?;
            let trust = Trust::parse(&bundle)?;
            let bytes = if file.as_os_str() == "-" {
                prove::read_limited(std::io::stdin().lock())
            } else {
                std::fs::File::open(&file).and_then(prove::read_limited)
            }
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let bundle =
                Bundle::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let report = prove::check_bundle(&bundle, &trust);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.summary());
            }
            Ok(if report.verified {
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

/// `90s`, `30m`, `1h`, `2d`, a bare number of seconds, or `off`.
fn parse_duration_opt(s: &str) -> Result<Option<Duration>, String> {
    if s == "off" {
        return Ok(None);
    }
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected e.g. 90s, 30m, 1h, 2d or off"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
    };
    n.checked_mul(mult)
        .map(|secs| Some(Duration::from_secs(secs)))
        .ok_or_else(|| format!("{s:?}: too large"))
}
