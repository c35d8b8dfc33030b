//! `search`: the stored events a query selects, verified, as JSON Lines, a table or counts;
//! optionally exported as a proof bundle.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ArgAction;
use sealtrail_core::query::Query;
use sealtrail_store::args::StoreArgs;
use sealtrail_verifier::prove::{self, ProveOptions, Selection};
use sealtrail_verifier::search::{self, Hit, Row, SearchOptions};

use super::{load_trust, open_store, parse_duration_opt, runtime};

pub const SEARCH_EXIT_CODES: &str = "\
Exit codes:
  0  every event printed verified (leaf hash, inclusion proof, signed checkpoint), and
     nothing in the segments read failed to verify (an empty result included); with
     --bundle, the bundle was written (or nothing matched)
  1  integrity findings in the searched range (each named on standard error): the
     events concerned were not printed and the result is incomplete; or --bundle could
     not prove the result
  2  the search could not be completed (store, trust bundle, arguments)";

/// What `--count-by` groups by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CountKey {
    User,
    Group,
    Verb,
    Resource,
    Namespace,
    Name,
    Code,
    SourceIp,
    UserAgent,
    Stage,
}

impl CountKey {
    fn header(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Group => "group",
            Self::Verb => "verb",
            Self::Resource => "resource",
            Self::Namespace => "namespace",
            Self::Name => "name",
            Self::Code => "code",
            Self::SourceIp => "source_ip",
            Self::UserAgent => "user_agent",
            Self::Stage => "stage",
        }
    }

    /// The values an event counts under (one per group or source IP; `-` when absent).
    fn values(self, r: &Row) -> Vec<String> {
        let one = |v: &Option<String>| vec![v.clone().unwrap_or_else(|| "-".into())];
        let many = |v: &[String]| {
            if v.is_empty() {
                vec!["-".to_string()]
            } else {
                v.to_vec()
            }
        };
        match self {
            Self::User => one(&r.user),
            Self::Group => many(&r.groups),
            Self::Verb => one(&r.verb),
            Self::Resource => vec![resource(r)],
            Self::Namespace => one(&r.namespace),
            Self::Name => one(&r.name),
            Self::Code => one(&r.code.map(|c| c.to_string())),
            Self::SourceIp => many(&r.source_ips),
            Self::UserAgent => one(&r.user_agent),
            Self::Stage => one(&r.stage),
        }
    }
}

/// `resource[/subresource]`, `-` when the event has no objectRef.resource.
fn resource(r: &Row) -> String {
    match (&r.resource, &r.subresource) {
        (Some(res), Some(sub)) => format!("{res}/{sub}"),
        (Some(res), None) => res.clone(),
        _ => "-".into(),
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The pinned trust bundle (JSON): every event printed proves into a checkpoint that
    /// verifies against it.
    #[arg(long)]
    pub trust: PathBuf,
    /// Events whose stageTimestamp is at or after this time (RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// ... and before this time (RFC 3339, excluded).
    #[arg(long)]
    pub to: Option<String>,
    /// Filters: each may be repeated (any of its values matches) and holds a glob (`*`
    /// any run of characters, `?` one); every filter given must match.
    /// user.username.
    #[arg(long, action = ArgAction::Append, value_name = "GLOB")]
    pub user: Vec<String>,
    /// One of user.groups.
    #[arg(long, action = ArgAction::Append, value_name = "GLOB")]
    pub group: Vec<String>,
    #[arg(long, action = ArgAction::Append, value_name = "GLOB")]
    pub verb: Vec<String>,
    /// objectRef.apiGroup (the core group has none).
    #[arg(long, action = ArgAction::Append, value_name = "GLOB")]
    pub api_group: Vec<String>,
    /// objectRef.resource (`secrets`, `pods`).
    #[arg(long, action = ArgAction::Append, value_name = "GLOB")]
    pub resource: Vec<String>,
    /// objectRef.subresource (`exec`, `log`, `status`).
    #[arg(long, action = ArgAction::Append, value_name = "GLOB")]
    pub subresource: Vec<String>,
    /// objectRef.namespace.
    #[arg(long, action = ArgAction::Append, value_name = "GLOB")]
    pub namespace: Vec<String>,
    /// objectRef.name.
    #[arg(long, action = ArgAction::Append, value_name = "GLOB")]
    pub name: Vec<String>,
    /// responseStatus.code: `403`, or a class `4xx`.
    #[arg(long, action = ArgAction::Append, value_name = "CODE")]
    pub code: Vec<String>,
    /// One of sourceIPs.
    #[arg(long, action = ArgAction::Append, value_name = "GLOB")]
    pub source_ip: Vec<String>,
    #[arg(long, action = ArgAction::Append, value_name = "GLOB")]
    pub user_agent: Vec<String>,
    #[arg(long, action = ArgAction::Append, value_name = "GLOB")]
    pub audit_id: Vec<String>,
    /// RequestReceived, ResponseStarted, ResponseComplete, Panic.
    #[arg(long, action = ArgAction::Append, value_name = "GLOB")]
    pub stage: Vec<String>,
    /// Print a table (time, user, verb, resource namespace/name, code, source IP) instead
    /// of JSON Lines.
    #[arg(long, conflicts_with = "count_by")]
    pub table: bool,
    /// Print counts grouped by these keys (repeat for several), most frequent first, as
    /// tab-separated values with a header line.
    #[arg(long, action = ArgAction::Append, value_enum)]
    pub count_by: Vec<CountKey>,
    /// Also export the matching events as a proof bundle (the `prove` format, with the
    /// search as its selection) for a third party.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// With --bundle, leave out the consistency proofs to the newest stored checkpoint
    /// (they need every segment read).
    #[arg(long, requires = "bundle")]
    pub no_consistency: bool,
    /// How long after (or, by clock skew, before) its stageTimestamp an event may have
    /// been stored and still be found by a time range (`90s`, `30m`, `1h`, `2d`).
    #[arg(long, default_value = "1h")]
    pub margin: String,
}

impl Args {
    fn query(&self) -> Query {
        Query {
            from: self.from.clone(),
            to: self.to.clone(),
            audit_id: self.audit_id.clone(),
            stage: self.stage.clone(),
            user: self.user.clone(),
            group: self.group.clone(),
            verb: self.verb.clone(),
            api_group: self.api_group.clone(),
            resource: self.resource.clone(),
            subresource: self.subresource.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            code: self.code.clone(),
            source_ip: self.source_ip.clone(),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// How the matches are printed.
enum Output {
    Lines(std::io::BufWriter<std::io::Stdout>),
    Table(Vec<[String; 6]>),
    Counts(Vec<CountKey>, BTreeMap<Vec<String>, u64>),
}

impl Output {
    fn take(&mut self, hit: Hit) -> std::io::Result<()> {
        match self {
            Self::Lines(w) => {
                w.write_all(&hit.canonical)?;
                w.write_all(b"\n")
            }
            Self::Table(rows) => {
                rows.push(table_row(&hit.row));
                Ok(())
            }
            Self::Counts(keys, counts) => {
                let mut combos: Vec<Vec<String>> = vec![Vec::new()];
                for k in keys.iter() {
                    let values = k.values(&hit.row);
                    combos = combos
                        .into_iter()
                        .flat_map(|c| {
                            values.iter().map(move |v| {
                                let mut c = c.clone();
                                c.push(v.clone());
                                c
                            })
                        })
                        .collect();
                }
                for c in combos {
                    *counts.entry(c).or_default() += 1;
                }
                Ok(())
            }
        }
    }

    fn finish(self) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        match self {
            Self::Lines(mut w) => w.flush(),
            Self::Table(rows) => {
                let head = [
                    "TIME",
                    "USER",
                    "VERB",
                    "RESOURCE NAMESPACE/NAME",
                    "CODE",
                    "SOURCE IP",
                ];
                let mut widths = head.map(str::len);
                for r in &rows {
                    for (w, c) in widths.iter_mut().zip(r) {
                        *w = (*w).max(c.chars().count());
                    }
                }
                let line = |cells: &[&str]| {
                    let mut s = String::new();
                    for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
                        if i + 1 == cells.len() {
                            s.push_str(c);
                        } else {
                            s.push_str(&format!("{c:<w$}  "));
                        }
                    }
                    s.push('\n');
                    s
                };
                out.write_all(line(&head).as_bytes())?;
                for r in &rows {
                    let cells: Vec<&str> = r.iter().map(String::as_str).collect();
                    out.write_all(line(&cells).as_bytes())?;
                }
                out.flush()
            }
            Self::Counts(keys, counts) => {
                let mut rows: Vec<(Vec<String>, u64)> = counts.into_iter().collect();
                rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let mut head = vec!["count"];
                head.extend(keys.iter().map(|k| k.header()));
                writeln!(out, "{}", head.join("\t"))?;
                for (values, n) in rows {
                    writeln!(out, "{n}\t{}", values.join("\t"))?;
                }
                out.flush()
            }
        }
    }
}

fn table_row(r: &Row) -> [String; 6] {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let object = match (&r.namespace, &r.name) {
        (Some(ns), Some(n)) => format!(" {ns}/{n}"),
        (Some(ns), None) => format!(" {ns}/"),
        (None, Some(n)) => format!(" {n}"),
        (None, None) => String::new(),
    };
    [
        dash(&r.time),
        dash(&r.user),
        dash(&r.verb),
        format!("{}{object}", resource(r)),
        r.code.map_or_else(|| "-".into(), |c| c.to_string()),
        if r.source_ips.is_empty() {
            "-".into()
        } else {
            r.source_ips.join(",")
        },
    ]
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let query = args.query();
    query.validate()?;
    let trust = load_trust(&args.trust)?;
    let margin = parse_duration_opt(&args.margin)
        .map_err(|e| anyhow::anyhow!("--margin {e}"))?
        .unwrap_or_default();
    let rt = runtime()?;
    let (store, prefix, _) = open_store(&rt, args.store.clone())?;
    let options = SearchOptions {
        prefix: prefix.clone(),
        margin,
        progress: std::io::stderr().is_terminal(),
    };
    let mut output = if args.table {
        Output::Table(Vec::new())
    } else if !args.count_by.is_empty() {
        Output::Counts(args.count_by.clone(), BTreeMap::new())
    } else {
        Output::Lines(std::io::BufWriter::new(std::io::stdout()))
    };
    let searched = rt.block_on(search::search(
        store.as_ref(),
        &trust,
        &query,
        &options,
        &mut |hit| output.take(hit),
    ));
    let report = match searched {
        Ok(r) => r,
        // `search … | head`: the reader has what it wanted.
        Err(sealtrail_verifier::Error::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e.into()),
    };
    match output.finish() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        other => other?,
    }
    eprint!("{}", report.summary(margin));
    if !report.intact() {
        return Ok(ExitCode::from(1));
    }
    let Some(path) = &args.bundle else {
        return Ok(ExitCode::SUCCESS);
    };
    if report.events_matched == 0 {
        eprintln!("no bundle written: no event matched");
        return Ok(ExitCode::SUCCESS);
    }
    let selection = Selection::Search {
        search: Box::new(query),
    };
    let prove_options = ProveOptions {
        prefix,
        consistency: !args.no_consistency,
        margin,
    };
    let proved = match rt.block_on(prove::prove(
        store.as_ref(),
        &trust,
        &selection,
        &prove_options,
    )) {
        Ok(p) => p,
        Err(e @ sealtrail_verifier::Error::NotProvable(_)) => {
            eprintln!("sealtrail-verify search: no bundle: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    sealtrail_verifier::state::write_atomic(path, &proved.bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    eprint!("{}", proved.report.summary(&selection, margin));
    eprintln!("bundle written to {}", path.display());
    Ok(ExitCode::SUCCESS)
}
