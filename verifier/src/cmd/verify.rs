//! `verify`: the full (or, with a state, incremental) audit of a stored trail.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::ArgAction;
use sealtrail_store::args::StoreArgs;
use sealtrail_verifier::{
    GrpcSigner, ObjectLockPolicy, Options, SignerConfig, State, StateKey, metrics, verify_store,
};

use super::{load_trust, open_store, parse_duration_opt, runtime};

pub const EXIT_CODES: &str = "\
Exit codes:
  0  intact: every event, proof, signature, chain link verifies (and, when asked, the
     store is consistent with the signer's latest checkpoint and with the state file)
  1  findings: tampering, loss or inconsistency (each finding has a kind and a location),
     no trail under the prefix (no_trail), or advisory findings only (duplicate_audit_event,
     late_event, future_event, bad_event_time, object-lock findings, ...); for
     `canonicalize`, invalid input
  2  the verification could not be completed (store, signer, trust bundle or state file
     unusable, a state that does not verify with --state-key)";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The pinned trust bundle (JSON).
    #[arg(long)]
    pub trust: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The signer, `https://host:port`: its latest checkpoint must extend the stored
    /// tree, and every leaf it signed must be stored (catches a cut tail).
    #[arg(long, requires_all = ["signer_ca", "signer_cert", "signer_key"])]
    pub signer: Option<String>,
    /// CA of the signer's server certificate (PEM).
    #[arg(long)]
    pub signer_ca: Option<PathBuf>,
    /// The verifier's client certificate towards the signer (PEM).
    #[arg(long)]
    pub signer_cert: Option<PathBuf>,
    /// Its key (PEM).
    #[arg(long)]
    pub signer_key: Option<PathBuf>,
    /// Name in the signer's certificate, if not the URL's host.
    #[arg(long)]
    pub signer_server_name: Option<String>,
    /// State file: remembers the last verified checkpoint, its frontier and the objects
    /// verified; the next run checks the store against it and reads only new objects.
    /// Created if absent; advanced only after a run without integrity findings.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// The key (a file of at least 32 bytes, e.g. `openssl rand -hex 32`) that
    /// authenticates the state file (HMAC-SHA256): a state it does not verify is refused.
    /// Keep it where whoever can write the state cannot read it.
    #[arg(long, env = "SEALTRAIL_STATE_KEY_FILE", requires = "state")]
    pub state_key: Option<PathBuf>,
    /// Accept a prefix under which nothing is stored yet (a brand-new log) instead of
    /// reporting `no_trail`.
    #[arg(long)]
    pub allow_empty: bool,
    /// Report events whose stageTimestamp (or requestReceivedTimestamp, by this plus a
    /// day) is older than their receipt by the ingester (or, in segments from before
    /// sealing, than the checkpoint that first covers them) by more than this (`90s`,
    /// `30m`, `1h`, `2d`; `off` to disable).
    #[arg(long, default_value = "1h")]
    pub late_after: String,
    /// Report a pending batch that no segment seals once it is older than this
    /// (`unsealed_batch`; same units as --late-after).
    #[arg(long, default_value = "1h")]
    pub seal_grace: String,
    /// Report events dated more than this after their receipt by the ingester (or their
    /// checkpoint): `future_event` (same units as --late-after; `off` to disable).
    #[arg(long, default_value = "5m")]
    pub future_after: String,
    /// How much later than the TSA time of a token covering it a checkpoint may be dated
    /// before it is `time_inconsistent` (same units as --late-after).
    #[arg(long, default_value = "60s")]
    pub time_tolerance: String,
    /// With timestamp authorities pinned: report checkpoints that no token covers once the
    /// oldest of them is older than this (`untimestamped_tail`; `off` to disable).
    #[arg(long, default_value = "1h")]
    pub untimestamped_after: String,
    /// Do not report (auditID, stage) pairs stored twice.
    #[arg(long)]
    pub no_duplicate_check: bool,
    /// S3 stores: each segment must be locked until at least its checkpoint time plus
    /// this many days.
    #[arg(long, default_value_t = 0)]
    pub min_retention_days: u64,
    /// S3 stores: GOVERNANCE mode is a finding (`--require-compliance false` to accept it).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub require_compliance: bool,
    /// Write the result as Prometheus text (node-exporter textfile collector), atomically.
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        store,
        trust,
        json,
        signer,
        signer_ca,
        signer_cert,
        signer_key,
        signer_server_name,
        state,
        state_key,
        allow_empty,
        late_after,
        future_after,
        seal_grace,
        time_tolerance,
        untimestamped_after,
        no_duplicate_check,
        min_retention_days,
        require_compliance,
        metrics_file,
    } = args;
    let trust = load_trust(&trust)?;
    let rt = runtime()?;
    let late_after =
        parse_duration_opt(&late_after).map_err(|e| anyhow::anyhow!("--late-after {e}"))?;
    let seal_grace = parse_duration_opt(&seal_grace)
        .map_err(|e| anyhow::anyhow!("--seal-grace {e}"))?
        .ok_or_else(|| anyhow::anyhow!("--seal-grace cannot be off"))?;
    let future_after =
        parse_duration_opt(&future_after).map_err(|e| anyhow::anyhow!("--future-after {e}"))?;
    let time_tolerance = parse_duration_opt(&time_tolerance)
        .map_err(|e| anyhow::anyhow!("--time-tolerance {e}"))?
        .ok_or_else(|| anyhow::anyhow!("--time-tolerance cannot be off"))?;
    // `off`: no age is too old.
    let untimestamped_after = parse_duration_opt(&untimestamped_after)
        .map_err(|e| anyhow::anyhow!("--untimestamped-after {e}"))?
        .unwrap_or(Duration::MAX);
    let state_key = state_key.as_deref().map(StateKey::from_file).transpose()?;
    let mut options = Options {
        check_duplicates: !no_duplicate_check,
        late_after,
        future_after,
        allow_empty,
        seal_grace: Some(seal_grace),
        time_tolerance: Some(time_tolerance),
        untimestamped_after: Some(untimestamped_after),
        progress: std::io::stderr().is_terminal(),
        // Content hashes only serve the next run's state.
        no_object_hashes: state.is_none(),
        ..Options::default()
    };
    let (store, prefix, s3) = open_store(&rt, store)?;
    // Only S3 can lock: a directory would report every segment not locked.
    if s3.is_some() {
        options.object_lock = Some(ObjectLockPolicy {
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
        options.state = State::load(path, state_key.as_ref())?;
        if state_key.is_none() && options.state.is_some() {
            eprintln!(
                "sealtrail-verify: the state {} is not authenticated (no --state-key): whoever can write it can make a run skip a changed object",
                path.display()
            );
        }
    }
    let report = rt.block_on(verify_store(store.as_ref(), &trust, &options))?;
    if let Some(path) = &state {
        match &report.state {
            Some(s) => s.save(path, state_key.as_ref())?,
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
