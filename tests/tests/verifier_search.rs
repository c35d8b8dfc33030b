//! `search`: investigations over a trail of the 222 real sample events (emulator →
//! ingester → signer → store), through the binary. Each filter alone and combined is checked
//! against the events the test selects itself from the input file; a tampered event or a
//! deleted segment in range is named and never printed; an empty range is an empty result.
//! On moto S3, a one-hour search in a trail of several days reads only that hour's objects.
//! The DuckDB recipe of docs/investigations.md counts what `search --count-by` counts, and
//! the Athena table of deploy/aws/ parses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sealtrail_core::event::parse_event_line;
use sealtrail_core::keys::Algorithm;
use sealtrail_core::merkle::MemoryLog;
use sealtrail_core::query::Query;
use sealtrail_core::segment;
use sealtrail_core::trust::{Trust, TrustBundle, TrustedKey};
use sealtrail_signer::{DevKeyFile, KeyBackend as _};
use sealtrail_store::ObjectStore;
use sealtrail_tests::moto::{MotoServer, s3_client};
use sealtrail_verifier::search::{SearchOptions, search};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn verify_bin(args: &[&str]) -> Output {
    std::process::Command::new(binary("sealtrail-verify"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An event as the test names it: auditID, stage, stageTimestamp (a multiset of these is
/// what a search result is compared by).
fn ident(e: &Value) -> String {
    format!("{} {} {}", e["auditID"], e["stage"], e["stageTimestamp"])
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A glob as the test reads it, independent of the product's matcher: only the shapes the
/// cases use (`prefix*`, `*suffix`, exact).
fn test_glob(pattern: &str, s: &str) -> bool {
    match (pattern.strip_suffix('*'), pattern.strip_prefix('*')) {
        (Some(prefix), _) => s.starts_with(prefix),
        (None, Some(suffix)) => s.ends_with(suffix),
        (None, None) => s == pattern,
    }
}

fn str_at<'a>(e: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = e;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str()
}

fn micros(s: &str) -> i128 {
    OffsetDateTime::parse(s, &Rfc3339)
        .unwrap()
        .unix_timestamp_nanos()
        / 1000
}

struct Trail {
    h: Harness,
    trust: PathBuf,
    events: Vec<Value>,
}

impl Trail {
    fn search(&self, store: &Path, args: &[&str]) -> Output {
        let mut all = vec![
            "search",
            "--store",
            store.to_str().unwrap(),
            "--trust",
            self.trust.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        verify_bin(&all)
    }

    /// The events a search through the binary prints (exit 0 asserted).
    fn found(&self, args: &[&str]) -> Vec<String> {
        let out = self.search(&self.h.store_dir, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        let stdout = String::from_utf8(out.stdout).unwrap();
        sorted(
            stdout
                .lines()
                .map(|l| ident(&serde_json::from_str(l).unwrap()))
                .collect(),
        )
    }

    fn expected(&self, pred: impl Fn(&Value) -> bool) -> Vec<String> {
        sorted(self.events.iter().filter(|e| pred(e)).map(ident).collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_answers_each_filter_with_verified_events_and_names_tampering() {
    let h = Harness::start().await;
    let lines = event_lines();
    replay(&h, &lines, 20).await;
    let trust = h.dir.path().join("trust.json");
    std::fs::write(&trust, h.trust.bundle().to_json()).unwrap();
    let events = lines
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let t = Trail { h, trust, events };

    let user = |e: &Value| str_at(e, &["user", "username"]).map(str::to_string);
    let obj = |e: &Value, k: &str| str_at(e, &["objectRef", k]).map(str::to_string);
    let code = |e: &Value| e["responseStatus"]["code"].as_i64();
    let has = |e: &Value, k: &str, want: &str| {
        e[k].as_array()
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(want)))
    };
    let (from, to) = ("2023-06-12T13:30:25.76Z", "2023-06-12T13:30:27Z");
    let in_range = |e: &Value| {
        e["stageTimestamp"]
            .as_str()
            .is_some_and(|s| micros(from) <= micros(s) && micros(s) < micros(to))
    };
    let twice = "841d3e6d-90d2-43df-8da4-684738bee3d5";
    type Pred<'a> = Box<dyn Fn(&Value) -> bool + 'a>;
    let cases: Vec<(Vec<&str>, Pred)> = vec![
        (
            vec!["--user", "system:admin"],
            Box::new(|e| user(e).as_deref() == Some("system:admin")),
        ),
        (
            vec!["--user", "system:serviceaccount:*"],
            Box::new(|e| user(e).is_some_and(|u| test_glob("system:serviceaccount:*", &u))),
        ),
        (
            vec!["--user", "minikube-user", "--user", "aksService"],
            Box::new(|e| matches!(user(e).as_deref(), Some("minikube-user" | "aksService"))),
        ),
        (
            vec!["--group", "system:masters"],
            Box::new(|e| {
                e["user"]["groups"]
                    .as_array()
                    .is_some_and(|g| g.iter().any(|v| v == "system:masters"))
            }),
        ),
        (
            vec!["--verb", "create", "--verb", "delete"],
            Box::new(|e| e["verb"] == "create" || e["verb"] == "delete"),
        ),
        (
            vec!["--resource", "secrets"],
            Box::new(|e| obj(e, "resource").as_deref() == Some("secrets")),
        ),
        (
            vec!["--resource", "pods", "--subresource", "exec"],
            Box::new(|e| {
                obj(e, "resource").as_deref() == Some("pods")
                    && obj(e, "subresource").as_deref() == Some("exec")
            }),
        ),
        (
            vec!["--namespace", "openshift-*"],
            Box::new(|e| obj(e, "namespace").is_some_and(|n| test_glob("openshift-*", &n))),
        ),
        (
            vec!["--name", "*-operator"],
            Box::new(|e| obj(e, "name").is_some_and(|n| test_glob("*-operator", &n))),
        ),
        (
            vec!["--api-group", "rbac.authorization.k8s.io"],
            Box::new(|e| obj(e, "apiGroup").as_deref() == Some("rbac.authorization.k8s.io")),
        ),
        (vec!["--code", "403"], Box::new(|e| code(e) == Some(403))),
        (
            vec!["--code", "4xx"],
            Box::new(|e| code(e).is_some_and(|c| (400..500).contains(&c))),
        ),
        (
            vec!["--source-ip", "10.0.0.7"],
            Box::new(|e| has(e, "sourceIPs", "10.0.0.7")),
        ),
        (
            vec!["--source-ip", "10.128.*"],
            Box::new(|e| {
                e["sourceIPs"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|v| v.as_str().is_some_and(|s| test_glob("10.128.*", s)))
                })
            }),
        ),
        (
            vec!["--user-agent", "kubectl/*"],
            Box::new(|e| {
                e["userAgent"]
                    .as_str()
                    .is_some_and(|s| test_glob("kubectl/*", s))
            }),
        ),
        (
            vec!["--audit-id", twice],
            Box::new(|e| e["auditID"] == twice),
        ),
        (
            vec!["--stage", "ResponseStarted"],
            Box::new(|e| e["stage"] == "ResponseStarted"),
        ),
        // The samples were captured years before this replay stored them: a time range
        // finds them only with a margin that long (and then lists every partition).
        (
            vec!["--from", from, "--to", to, "--margin", "5000d"],
            Box::new(in_range),
        ),
        // Combined.
        (
            vec![
                "--from",
                from,
                "--to",
                to,
                "--margin",
                "5000d",
                "--user",
                "system:serviceaccount:openshift-cluster-version:default",
                "--verb",
                "get",
            ],
            Box::new(|e| {
                in_range(e)
                    && user(e).as_deref()
                        == Some("system:serviceaccount:openshift-cluster-version:default")
                    && e["verb"] == "get"
            }),
        ),
        (
            vec![
                "--namespace",
                "default",
                "--verb",
                "create",
                "--code",
                "201",
            ],
            Box::new(|e| {
                obj(e, "namespace").as_deref() == Some("default")
                    && e["verb"] == "create"
                    && code(e) == Some(201)
            }),
        ),
        (
            vec![
                "--group",
                "system:authenticated",
                "--resource",
                "pods",
                "--verb",
                "get",
                "--code",
                "2xx",
            ],
            Box::new(|e| {
                e["user"]["groups"]
                    .as_array()
                    .is_some_and(|g| g.iter().any(|v| v == "system:authenticated"))
                    && obj(e, "resource").as_deref() == Some("pods")
                    && e["verb"] == "get"
                    && code(e).is_some_and(|c| (200..300).contains(&c))
            }),
        ),
    ];
    for (args, pred) in &cases {
        let want = t.expected(pred);
        assert!(
            !want.is_empty(),
            "{args:?} selects nothing in the sample: a case that cannot fail"
        );
        assert!(want.len() < t.events.len(), "{args:?} selects everything");
        assert_eq!(t.found(args), want, "{args:?}");
    }
    // No filter: every event, in index order (each once).
    assert_eq!(t.found(&[]), t.expected(|_| true));

    // Counts by user and verb, computed here from the input.
    let out = t.search(
        &t.h.store_dir,
        &["--count-by", "user", "--count-by", "verb", "--code", "2xx"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in t
        .events
        .iter()
        .filter(|e| code(e).is_some_and(|c| (200..300).contains(&c)))
    {
        let u = user(e).unwrap_or_else(|| "-".into());
        let v = e["verb"].as_str().unwrap_or("-").to_string();
        *want.entry((u, v)).or_default() += 1;
    }
    assert_eq!(counts(&out.stdout, "count\tuser\tverb"), want);

    // The table: a header and one row per event.
    let out = t.search(&t.h.store_dir, &["--table", "--resource", "secrets"]);
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].starts_with("TIME") && rows[0].contains("SOURCE IP"),
        "{table}"
    );
    assert_eq!(
        rows.len() - 1,
        t.expected(|e| obj(e, "resource").as_deref() == Some("secrets"))
            .len()
    );

    // A range with no events: exit 0, nothing printed, and only its hours read.
    let out = t.search(
        &t.h.store_dir,
        &[
            "--from",
            "2031-01-01T00:00:00Z",
            "--to",
            "2031-01-01T01:00:00Z",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out).contains("read 0 of 0 segment objects"),
        "{}",
        text(&out)
    );

    // --bundle: the result as a proof bundle that check-bundle verifies.
    let bundle = t.h.dir.path().join("admin.json");
    let out = t.search(
        &t.h.store_dir,
        &[
            "--user",
            "system:admin",
            "--verb",
            "get",
            "--bundle",
            bundle.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let b = sealtrail_verifier::prove::Bundle::parse(&std::fs::read(&bundle).unwrap()).unwrap();
    let want = t.expected(|e| user(e).as_deref() == Some("system:admin") && e["verb"] == "get");
    assert_eq!(b.events.len(), want.len());
    let out = verify_bin(&[
        "check-bundle",
        bundle.to_str().unwrap(),
        "--trust",
        t.trust.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("search: user system:admin, verb get"),
        "{}",
        text(&out)
    );

    tampered_events_are_named_not_printed(&t);
}

/// Parses `--count-by user --count-by verb` output.
fn counts(stdout: &[u8], header: &str) -> BTreeMap<(String, String), u64> {
    let s = std::str::from_utf8(stdout).unwrap();
    let mut lines = s.lines();
    assert_eq!(lines.next(), Some(header), "{s}");
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            ((f[1].to_string(), f[2].to_string()), f[0].parse().unwrap())
        })
        .collect()
}

/// A copy of the store with one event's byte changed (an altered requestURI), then with a
/// segment deleted: each is named, exit 1, and no event that does not verify is printed.
fn tampered_events_are_named_not_printed(t: &Trail) {
    let copy = t.h.dir.path().join("tampered");
    copy_store(&t.h.store_dir, &copy);
    let segs = segments(&copy);
    // The first system:admin event with a requestURI: change one letter of it.
    let (path, at, id) = segs
        .iter()
        .find_map(|p| {
            let bytes = std::fs::read(p).unwrap();
            let s = String::from_utf8(bytes).unwrap();
            s.lines().skip(1).find_map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let e = &v["event"];
                (e["user"]["username"] == "system:admin" && e["requestURI"].is_string()).then(
                    || {
                        let off = s.find(l).unwrap() + l.find("\"requestURI\":\"/").unwrap() + 15;
                        (p.clone(), off, e["auditID"].as_str().unwrap().to_string())
                    },
                )
            })
        })
        .expect("a system:admin event with a requestURI");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    make_writable(&path);
    std::fs::write(&path, &bytes).unwrap();
    let out = t.search(&copy, &["--user", "system:admin"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NOT INTACT") && stderr.contains("leaf_mismatch"),
        "{stderr}"
    );
    assert!(stderr.contains(&id), "the altered event is named: {stderr}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        !printed.contains(&id),
        "the altered event is never printed as verified"
    );
    let want = t.expected(|e| e["user"]["username"] == "system:admin");
    let n = want.len() - want.iter().filter(|w| w.contains(&id)).count();
    assert_eq!(printed.lines().count(), n, "every other match is printed");

    // A segment in the middle deleted: the gap is named.
    let copy2 = t.h.dir.path().join("cut");
    copy_store(&t.h.store_dir, &copy2);
    let segs = segments(&copy2);
    let victim = &segs[segs.len() / 2];
    let (a, b) = segment::parse_object_key("", &key_of(&copy2, victim)).unwrap();
    make_writable(victim.parent().unwrap());
    std::fs::remove_file(victim).unwrap();
    let out = t.search(&copy2, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // How a finding names its range: one index, or a span (the batches, and so the
    // segments, the emulator's timing makes vary from run to run).
    let range = if a == b {
        format!("missing_events index {a} ")
    } else {
        format!("missing_events indexes {a}..={b} ")
    };
    assert!(text(&out).contains(&range), "{}", text(&out));
}

fn make_writable(p: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mut perm = std::fs::metadata(p).unwrap().permissions();
    perm.set_mode(perm.mode() | 0o200);
    std::fs::set_permissions(p, perm).unwrap();
}

// ---------------------------------------------------------------------------------------
// S3: a trail of several days, one hour searched.
// ---------------------------------------------------------------------------------------

const S3_ORIGIN: &str = "sealtrail.test/search-days";
const S3_PREFIX: &str = "c1/";
/// 2026-11-01T00:00:00Z.
const DAY0: i64 = 1_793_491_200;

/// Writes a trail of `days` days to `store`: per hour, one segment of 3 sample events
/// (two segments in hour 10 of each day), their times rewritten into that hour, each
/// segment under its own checkpoint signed 20 minutes past the hour. Returns the trust and
/// the keys of the segments per hour (hours since DAY0).
async fn write_days(store: &dyn ObjectStore, days: i64) -> (Trust, BTreeMap<i64, Vec<String>>) {
    let tmp = tempfile::tempdir().unwrap();
    let key_path = tmp.path().join("k.pem");
    DevKeyFile::generate(&key_path, Algorithm::Ed25519).unwrap();
    let key = DevKeyFile::load(&key_path, true).unwrap();
    let samples: Vec<Value> = event_lines()
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let mut log = MemoryLog::new();
    let mut prev = None;
    let mut keys: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut n = 0usize;
    for hour in 0..days * 24 {
        let per_hour = if hour % 24 == 10 { 2 } else { 1 };
        for s in 0..per_hour {
            let base = DAY0 + hour * 3600 + 600 + 600 * s;
            let mut events = Vec::new();
            for i in 0..3 {
                let mut v = samples[n % samples.len()].clone();
                n += 1;
                let t = OffsetDateTime::from_unix_timestamp(base + i)
                    .unwrap()
                    .format(&Rfc3339)
                    .unwrap();
                v["auditID"] = Value::String(format!("days-{n:06}"));
                v["stageTimestamp"] = Value::String(t.clone());
                v["requestReceivedTimestamp"] = Value::String(t);
                events.push(parse_event_line(v.to_string().as_bytes()).unwrap());
            }
            let time_ms = u64::try_from(base + 600).unwrap() * 1000;
            let (_, k) = store_segment(
                store, S3_PREFIX, S3_ORIGIN, &key, &mut log, &mut prev, &events, time_ms,
            )
            .await;
            keys.entry(hour).or_default().push(k);
        }
    }
    let trust = Trust::from_bundle(TrustBundle::new(
        S3_ORIGIN,
        vec![TrustedKey::new(S3_ORIGIN, key.public_key(), 0)],
    ))
    .unwrap();
    (trust, keys)
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_hour_search_on_s3_reads_only_that_hours_objects() {
    let moto = MotoServer::start().expect("starting moto (run scripts/test)");
    let client = s3_client(&moto.endpoint).await;
    let store = lock_bucket_store(
        &client,
        &moto.endpoint,
        "search-days",
        Duration::from_secs(86_400),
    )
    .await;
    let (trust, keys) = write_days(store.as_ref(), 3).await;
    let total: usize = keys.values().map(Vec::len).sum();
    assert_eq!(total, 3 * 24 + 3);
    // Day 1, 10:00 to 11:00: the hour with two segments.
    let hour = 24 + 10;
    let query = Query {
        from: Some(rfc3339(DAY0 + hour * 3600)),
        to: Some(rfc3339(DAY0 + (hour + 1) * 3600)),
        ..Query::default()
    };
    let run = |margin: Duration, query: Query| {
        let (store, trust) = (Arc::clone(&store), trust.clone());
        async move {
            let mut found = Vec::new();
            let options = SearchOptions {
                prefix: S3_PREFIX.into(),
                margin,
                progress: false,
            };
            let report = search(store.as_ref(), &trust, &query, &options, &mut |hit| {
                found.push(String::from_utf8(hit.canonical).unwrap());
                Ok(())
            })
            .await
            .unwrap();
            (report, found)
        }
    };
    let (report, found) = run(Duration::ZERO, query.clone()).await;
    assert!(report.intact(), "{}", report.summary(Duration::ZERO));
    assert_eq!(
        report.segments_read, 2,
        "only that hour's two segments: {report:?}"
    );
    assert_eq!(report.segments_listed, 2);
    assert_eq!(found.len(), 6);
    let p = segment::hour_partition(u64::try_from(DAY0 + hour * 3600).unwrap() * 1000);
    assert_eq!(report.partitions, Some((p.clone(), p)));
    // With the default margin (an hour either side): the three hours' four segments, the
    // same six events.
    let (report, found_margin) = run(Duration::from_secs(3600), query.clone()).await;
    assert_eq!(report.segments_read, 4, "{report:?}");
    assert_eq!(found_margin, found);
    // A filter on top reads the same objects, and finds fewer.
    let narrowed = Query {
        audit_id: vec!["days-0001*".into()],
        ..query
    };
    let (report, _) = run(Duration::ZERO, narrowed).await;
    assert_eq!(report.segments_read, 2);
    // No time range: every object.
    let (report, all) = run(Duration::ZERO, Query::default()).await;
    assert_eq!(report.segments_read as usize, total);
    assert_eq!(all.len(), total * 3);
    assert!(report.intact());
}

// ---------------------------------------------------------------------------------------
// Query engines: the DuckDB recipe and the Athena table of docs/investigations.md.
// ---------------------------------------------------------------------------------------

/// The Python with duckdb and sqlglot that scripts/test installs.
fn query_python() -> PathBuf {
    PathBuf::from(
        std::env::var_os("SEALTRAIL_QUERY_PYTHON")
            .expect("SEALTRAIL_QUERY_PYTHON: a Python with duckdb and sqlglot (run scripts/test)"),
    )
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_duckdb_recipe_counts_what_search_counts() {
    let h = Harness::start().await;
    replay(&h, &event_lines(), 50).await;
    let trust = h.dir.path().join("trust.json");
    std::fs::write(&trust, h.trust.bundle().to_json()).unwrap();
    // The hour of the sample with the most events (2023-06-12 13:00 UTC).
    let (from, to) = ("2023-06-12T13:00:00Z", "2023-06-12T14:00:00Z");
    let recipe = repo().join("deploy/query/duckdb-count-by-user-verb.sql");
    let out = std::process::Command::new(query_python())
        .arg(repo().join("deploy/query/run-duckdb.py"))
        .arg(&recipe)
        .arg(h.store_dir.join("segments"))
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let duck = counts(&out.stdout, "count\tuser\tverb");
    let out = verify_bin(&[
        "search",
        "--store",
        h.store_dir.to_str().unwrap(),
        "--trust",
        trust.to_str().unwrap(),
        "--from",
        from,
        "--to",
        to,
        // Captured years before the replay stored them (see above).
        "--margin",
        "5000d",
        "--count-by",
        "user",
        "--count-by",
        "verb",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ours = counts(&out.stdout, "count\tuser\tverb");
    assert!(ours.values().sum::<u64>() >= 20, "{ours:?}");
    assert_eq!(duck, ours);
}

#[test]
fn the_athena_table_parses_and_projects_the_store_layout() {
    let ddl = repo().join("deploy/aws/athena-sealtrail-events.sql");
    let out = std::process::Command::new(query_python())
        .arg(repo().join("deploy/query/check-athena.py"))
        .arg(&ddl)
        .arg(repo().join("deploy/query/athena-examples.sql"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let sql = std::fs::read_to_string(&ddl).unwrap();
    // The projection is the store layout: segments/YYYY/MM/DD/HH/.
    assert!(sql.contains("'storage.location.template' = 's3://BUCKET/PREFIX/segments/${year}/${month}/${day}/${hour}/'"));
    let p = segment::hour_partition(1_764_221_736_123);
    assert_eq!(p, "2025/11/27/05");
    for (col, digits) in [("year", 4), ("month", 2), ("day", 2), ("hour", 2)] {
        assert!(
            sql.contains(&format!("'projection.{col}.digits' = '{digits}'")),
            "{col}"
        );
    }
}
