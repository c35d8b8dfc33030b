//! Load benchmark of the signer (a bench binary, not a timed test; run it by hand):
//!
//! 1. Append throughput through [`Log`] with a SoftHSM2 key (PKCS#11, ECDSA P-256) and with
//!    an in-memory dev key (same algorithm), at an offered 10,000 leaves/s (open loop:
//!    batches are sent on a fixed schedule and latency counts from the scheduled time, so a
//!    slow signer cannot hide behind a slower sender) and unthrottled (closed loop:
//!    concurrent appenders back to back). Reports leaves/s, checkpoints signed (the signer's
//!    own metric), signatures per 1,000 leaves, mean signature time and append latency.
//! 2. Restart time: a state of 1M and of 10M leaves (built once with 10,000-leaf appends and
//!    a dev key, cached under the target dir's tmp/), then the time from `State::open_uncut`
//!    to `Log::wait_started` (what `sealtrail_signer::run` does before it serves), with the
//!    default dedupe window and with none, page cache warm and dropped.
//! 3. Growth (`--only growth`, not part of the default run): one log appended to the
//!    largest of `--sizes` in 10,000-leaf appends with the default dedupe window, printing
//!    the CPU per leaf (this process, from /proc), RSS and state size at every tenth of
//!    each decade, so that a cost that grows with the log shows.
//!
//! ```text
//! cargo bench -p sealtrail-signer --bench signer_load [-- OPTIONS]
//!   --seconds N        per throughput scenario (default 10)
//!   --only throughput|restart|growth
//!   --sizes A,B        log sizes for the restart part (default 1000000,10000000)
//!   --runs N           restarts per configuration (default 5)
//!   --keep-state       keep the built states for the next run (else deleted at the end)
//! ```
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` at `C_Initialize`, and setting an environment variable
//! in-process is `unsafe` (forbidden here), so the binary re-runs itself as a child process
//! with `SOFTHSM2_CONF` pointing at a fresh token directory. Without the module (or
//! `softhsm2-util`) the SoftHSM rows are skipped with a message; `scripts/bench-signer`
//! installs it first.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sealtrail_core::keys::Algorithm;
use sealtrail_core::merkle::{self, Hash};
use sealtrail_signer::log::DEFAULT_DEDUPE_WINDOW;
use sealtrail_signer::metrics::Metrics;
use sealtrail_signer::pkcs11::{Pin, Pkcs11Config, Pkcs11Key};
use sealtrail_signer::state::State;
use sealtrail_signer::{CommitConfig, DevKeyFile, KeyBackend, Log};
use sealtrail_tests::softhsm::{configured_module_path, init_token, write_softhsm_conf};
use tokio::time::Instant;

const ORIGIN: &str = "sealtrail.bench/signer";
/// Set in the child process that has `SOFTHSM2_CONF`.
const CHILD_ENV: &str = "SEALTRAIL_BENCH_SOFTHSM_CHILD";
const TOKEN: &str = "sealtrail-bench";
const KEY_LABEL: &str = "bench-p256";
const USER_PIN: &str = "pin-Sealtrail-bench-1";
const SO_PIN: &str = "so-pin-Sealtrail-bench-1";
/// The offered rate of the paced scenarios (the issue's target rate).
const PACED_RATE: f64 = 10_000.0;
/// Leaves per append while building the restart states.
const BUILD_BATCH: usize = 10_000;

struct Opts {
    seconds: f64,
    throughput: bool,
    restart: bool,
    growth: bool,
    sizes: Vec<u64>,
    runs: usize,
    keep_state: bool,
}

impl Opts {
    fn parse() -> Result<Self, String> {
        let mut o = Self {
            seconds: 10.0,
            throughput: true,
            restart: true,
            growth: false,
            sizes: vec![1_000_000, 10_000_000],
            runs: 5,
            keep_state: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                // cargo bench passes --bench to harness = false binaries.
                "--bench" => {}
                "--seconds" => o.seconds = value()?.parse().map_err(|e| format!("{e}"))?,
                "--runs" => o.runs = value()?.parse().map_err(|e| format!("{e}"))?,
                "--keep-state" => o.keep_state = true,
                "--only" => match value()?.as_str() {
                    "throughput" => o.restart = false,
                    "restart" => o.throughput = false,
                    "growth" => (o.throughput, o.restart, o.growth) = (false, false, true),
                    v => return Err(format!("--only throughput|restart|growth, not {v}")),
                },
                "--sizes" => {
                    o.sizes = value()?
                        .split(',')
                        .map(|s| s.replace('_', "").parse().map_err(|e| format!("{s}: {e}")))
                        .collect::<Result<_, _>>()?;
                }
                other => return Err(format!("unknown option {other}")),
            }
        }
        if o.runs == 0 || o.seconds <= 0.0 {
            return Err("--runs and --seconds must be positive".into());
        }
        Ok(o)
    }
}

fn main() -> ExitCode {
    let opts = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("signer_load: {e}");
            return ExitCode::from(2);
        }
    };
    let softhsm = if !opts.throughput {
        None
    } else if std::env::var_os(CHILD_ENV).is_some() {
        Some(module_path().expect("the parent checked the module"))
    } else {
        match (module_path(), which("softhsm2-util")) {
            (Some(module), true) => return rerun_with_token_dir(&module),
            (None, _) => {
                println!(
                    "SKIPPED: SoftHSM2 rows: no PKCS#11 module at {} (set \
                     SEALTRAIL_TEST_PKCS11_MODULE, or run scripts/bench-signer, which \
                     installs softhsm2)",
                    configured_module_path().display()
                );
                None
            }
            (Some(_), false) => {
                println!("SKIPPED: SoftHSM2 rows: softhsm2-util not found (Debian softhsm2)");
                None
            }
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(opts, softhsm));
    ExitCode::SUCCESS
}

async fn run(opts: Opts, softhsm: Option<PathBuf>) {
    print_machine();
    let tmp = bench_tmp();
    let dev_dir = tempfile::tempdir_in(&tmp).expect("temp dir");
    let dev: Arc<dyn KeyBackend> = Arc::new(dev_key(&dev_dir.path().join("dev.key")));

    if opts.throughput {
        let mut keys: Vec<(&str, Arc<dyn KeyBackend>)> = Vec::new();
        if let Some(module) = &softhsm {
            keys.push(("softhsm", Arc::new(softhsm_key(module))));
        }
        keys.push(("dev-key", dev.clone()));
        throughput(&opts, &tmp, &keys).await;
    }
    if opts.growth {
        growth(&opts, &tmp).await;
    }
    if opts.restart {
        restart(&opts, &tmp).await;
    }
}

// ---------------------------------------------------------------------------------------
// Keys

fn module_path() -> Option<PathBuf> {
    let path = configured_module_path();
    path.is_file().then_some(path)
}

/// Whether `program` can be run at all (its `--version` exit code does not matter).
fn which(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

/// Runs this binary again with `SOFTHSM2_CONF` naming a fresh token directory.
fn rerun_with_token_dir(module: &Path) -> ExitCode {
    let dir = tempfile::tempdir_in(bench_tmp()).expect("temp dir");
    let conf = write_softhsm_conf(dir.path());
    let status = Command::new(std::env::current_exe().expect("own path"))
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .env("SOFTHSM2_CONF", &conf)
        .env("SEALTRAIL_TEST_PKCS11_MODULE", module)
        .status()
        .expect("re-run the benchmark");
    if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A fresh token with an ECDSA P-256 key generated inside it, opened with the default
/// session pool.
fn softhsm_key(module: &Path) -> Pkcs11Key {
    init_token(TOKEN, USER_PIN, SO_PIN);
    let config = || Pkcs11Config::new(module, TOKEN, KEY_LABEL, Pin::new(USER_PIN).expect("pin"));
    Pkcs11Key::generate(&config(), Algorithm::EcdsaP256Sha256).expect("generate in the token");
    Pkcs11Key::open(config()).expect("open the token key")
}

/// The comparison key: the same algorithm, in process memory.
fn dev_key(path: &Path) -> DevKeyFile {
    DevKeyFile::generate(path, Algorithm::EcdsaP256Sha256).expect("dev key");
    DevKeyFile::load(path, true).expect("load dev key")
}

// ---------------------------------------------------------------------------------------
// Throughput

#[derive(Clone, Copy)]
enum Load {
    /// Open loop: one append of `batch` leaves every `batch / PACED_RATE` seconds.
    Paced,
    /// Closed loop: this many tasks appending back to back.
    Unthrottled(usize),
}

struct Scenario {
    batch: usize,
    load: Load,
    min_interval_ms: u64,
    /// `CommitConfig::max_signatures_per_second` (0: unbounded).
    max_sigs: f64,
}

struct Outcome {
    leaves: u64,
    seconds: f64,
    checkpoints: u64,
    sign_mean_ms: f64,
    latencies: Vec<Duration>,
    errors: usize,
}

/// Leaf hashes that are never repeated within a process (so the dedupe window never hits).
fn leaves(n: usize) -> Vec<Hash> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let first = NEXT.fetch_add(n as u64, Ordering::Relaxed);
    (first..first + n as u64)
        .map(|i| merkle::leaf_hash(&i.to_le_bytes()))
        .collect()
}

async fn throughput(opts: &Opts, tmp: &Path, keys: &[(&str, Arc<dyn KeyBackend>)]) {
    // The defaults: 10 ms between signatures, at most 10 signatures/s sustained (burst 20).
    let d = sealtrail_signer::log::DEFAULT_MAX_SIGNATURES_PER_SECOND;
    let base = [
        (400, Load::Paced, 10, d),
        (10, Load::Paced, 10, d),
        (400, Load::Unthrottled(4), 10, d),
        (10, Load::Unthrottled(64), 10, d),
    ];
    // Without the signature budget, only the interval bounds the rate (1 / (interval +
    // commit time)): measured with the first backend only (SoftHSM2 when present).
    let spaced = [
        (400, Load::Paced, 10, 0.0),
        (10, Load::Paced, 10, 0.0),
        (400, Load::Paced, 100, 0.0),
    ];
    println!(
        "\n## Append throughput ({} s per row; P-256 keys; fresh state dir per row, fsync on)\n",
        opts.seconds
    );
    println!(
        "| key | load | batch | min interval | sig budget | leaves/s | checkpoints | \
         sigs / 1,000 leaves | mean sign | p50 | p99 | max |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut unthrottled_rates: Vec<(&str, usize, f64)> = Vec::new();
    for (k, (name, key)) in keys.iter().enumerate() {
        let extra: &[_] = if k == 0 { &spaced } else { &[] };
        for &(batch, load, min_interval_ms, max_sigs) in base.iter().chain(extra) {
            let s = Scenario {
                batch,
                load,
                min_interval_ms,
                max_sigs,
            };
            let o = run_scenario(&s, key.clone(), tmp, opts.seconds).await;
            let rate = o.leaves as f64 / o.seconds;
            if let Load::Unthrottled(_) = load {
                unthrottled_rates.push((name, batch, rate));
            }
            let load = match load {
                Load::Paced => format!("paced {PACED_RATE:.0}/s"),
                Load::Unthrottled(n) => format!("unthrottled, {n} tasks"),
            };
            let mut lat = o.latencies;
            lat.sort_unstable();
            let errors = if o.errors > 0 {
                format!(" ({} FAILED appends)", o.errors)
            } else {
                String::new()
            };
            println!(
                "| {name} | {load} | {batch} | {min_interval_ms} ms | {} | {rate:.0}{errors} | {} | \
                 {:.2} | {:.2} ms | {} | {} | {} |",
                if max_sigs > 0.0 {
                    format!("{max_sigs}/s")
                } else {
                    "none".into()
                },
                o.checkpoints,
                o.checkpoints as f64 * 1000.0 / o.leaves.max(1) as f64,
                o.sign_mean_ms,
                ms(percentile(&lat, 0.50)),
                ms(percentile(&lat, 0.99)),
                ms(lat.last().copied().unwrap_or_default()),
            );
        }
    }
    for batch in [400, 10] {
        let rate = |key: &str| {
            unthrottled_rates
                .iter()
                .find(|(n, b, _)| *n == key && *b == batch)
                .map(|r| r.2)
        };
        if let (Some(hsm), Some(dev)) = (rate("softhsm"), rate("dev-key")) {
            println!(
                "\nunthrottled, batches of {batch}: SoftHSM2 / dev key = {hsm:.0} / {dev:.0} \
                 leaves/s = {:.2}",
                hsm / dev
            );
        }
    }
}

async fn run_scenario(s: &Scenario, key: Arc<dyn KeyBackend>, tmp: &Path, secs: f64) -> Outcome {
    let dir = tempfile::tempdir_in(tmp).expect("state dir");
    let state = State::open(dir.path()).expect("open state");
    let metrics = Arc::new(Metrics::default());
    let config = CommitConfig {
        min_interval: Duration::from_millis(s.min_interval_ms),
        max_signatures_per_second: s.max_sigs,
        ..CommitConfig::default()
    };
    let log = Log::start_with_metrics(state, ORIGIN, key, config, metrics.clone()).expect("start");
    log.wait_started().await.expect("started");

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let batch = s.batch;
    let mut results: Vec<(Duration, bool)> = Vec::new();
    match s.load {
        Load::Paced => {
            let every = Duration::from_secs_f64(batch as f64 / PACED_RATE);
            let n = (secs * PACED_RATE / batch as f64).ceil() as u32;
            let mut tasks = Vec::with_capacity(n as usize);
            for j in 0..n {
                let due = started + every * j;
                tokio::time::sleep_until(due).await;
                let (log, leaves) = (log.clone(), leaves(batch));
                tasks.push(tokio::spawn(async move {
                    let ok = log.append(leaves).await.is_ok();
                    (due.elapsed(), ok)
                }));
            }
            for t in tasks {
                results.push(t.await.expect("append task"));
            }
        }
        Load::Unthrottled(n) => {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let log = log.clone();
                    tokio::spawn(async move {
                        let mut out = Vec::new();
                        while Instant::now() < deadline {
                            let leaves = leaves(batch);
                            let t = Instant::now();
                            let ok = log.append(leaves).await.is_ok();
                            out.push((t.elapsed(), ok));
                        }
                        out
                    })
                })
                .collect();
            for t in tasks {
                results.extend(t.await.expect("append task"));
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    log.close().await;
    let errors = results.iter().filter(|r| !r.1).count();
    let (sum, count) = sign_seconds(&metrics);
    Outcome {
        leaves: metrics.leaves_appended.get(),
        seconds,
        checkpoints: metrics.checkpoints_signed.get(),
        sign_mean_ms: if count > 0.0 {
            sum * 1000.0 / count
        } else {
            0.0
        },
        latencies: results.into_iter().map(|r| r.0).collect(),
        errors,
    }
}

/// `sign_seconds` sum and count, from the signer's Prometheus text.
fn sign_seconds(metrics: &Metrics) -> (f64, f64) {
    let text = metrics.encode();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    (
        value("sealtrail_signer_sign_seconds_sum"),
        value("sealtrail_signer_sign_seconds_count"),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------------------
// Restart

async fn restart(opts: &Opts, tmp: &Path) {
    let cold_ok = which("dd");
    let mut rows = Vec::new();
    for &size in &opts.sizes {
        let base = tmp.join(format!("bench-state-{}", short(size)));
        build_state(&base, size).await;
        let state_dir = base.join("state");
        let hashes = std::fs::metadata(state_dir.join("hashes")).map_or(0, |m| m.len());
        for (window, cold) in [
            (DEFAULT_DEDUPE_WINDOW, false),
            (0, false),
            (DEFAULT_DEDUPE_WINDOW, true),
        ] {
            if cold && !cold_ok {
                continue;
            }
            let mut open = Vec::new();
            let mut total = Vec::new();
            for _ in 0..opts.runs {
                if cold {
                    drop_page_cache(&state_dir);
                }
                let (o, t) = restart_once(&state_dir, &base.join("dev.key"), size, window).await;
                open.push(o);
                total.push(t);
            }
            open.sort_unstable();
            total.sort_unstable();
            rows.push(format!(
                "| {} | {:.0} MB | {} | {} | {} | {} | {} | {} |",
                short(size),
                hashes as f64 / 1e6,
                if window == 0 {
                    "0 (off)".to_string()
                } else {
                    short(window)
                },
                if cold { "dropped" } else { "warm" },
                opts.runs,
                ms(percentile(&open, 0.5)),
                ms(percentile(&total, 0.5)),
                ms(total.last().copied().unwrap_or_default()),
            ));
        }
        if !opts.keep_state {
            std::fs::remove_dir_all(&base).expect("remove the bench state");
        }
    }
    println!("\n## Restart: State::open_uncut + Log::start + wait_started\n");
    println!(
        "| log size | hashes file | dedupe window | page cache | runs | open_uncut p50 | \
         ready p50 | ready max |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    if opts.keep_state {
        println!("\n(states kept under {}: --keep-state)", tmp.display());
    }
}

/// One restart; returns the time to an opened state and the time until the log is ready
/// to append (both from the start).
async fn restart_once(dir: &Path, key: &Path, size: u64, window: u64) -> (Duration, Duration) {
    let key: Arc<dyn KeyBackend> = Arc::new(DevKeyFile::load(key, true).expect("dev key"));
    let config = CommitConfig {
        dedupe_window: window,
        ..CommitConfig::default()
    };
    let owned = dir.to_path_buf();
    let t = Instant::now();
    let state = tokio::task::spawn_blocking(move || State::open_uncut(&owned))
        .await
        .expect("open task")
        .expect("open state");
    let opened = t.elapsed();
    let log = Log::start(state, ORIGIN, key, config).expect("start");
    log.wait_started().await.expect("started");
    let ready = t.elapsed();
    assert_eq!(
        log.latest().expect("latest").map(|c| c.checkpoint.size),
        Some(size)
    );
    log.close().await;
    (opened, ready)
}

/// Builds (or reuses, if complete) a log of `size` leaves in `base/state`, appended in
/// batches of [`BUILD_BATCH`] through [`Log`] with a dev key (`base/dev.key`).
async fn build_state(base: &Path, size: u64) {
    let marker = base.join("complete");
    if std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == size.to_string()) {
        println!("reusing the {} state in {}", short(size), base.display());
        return;
    }
    if base.exists() {
        std::fs::remove_dir_all(base).expect("remove an incomplete bench state");
    }
    std::fs::create_dir_all(base).expect("bench state dir");
    let key: Arc<dyn KeyBackend> = Arc::new(dev_key(&base.join("dev.key")));
    let state = State::open(&base.join("state")).expect("open state");
    // No spacing and no dedupe: only the resulting state matters here.
    let config = CommitConfig {
        min_interval: Duration::ZERO,
        dedupe_window: 0,
        ..CommitConfig::default()
    };
    let log = Log::start(state, ORIGIN, key, config).expect("start");
    log.wait_started().await.expect("started");
    println!(
        "building a {} leaf state in {} ({BUILD_BATCH}-leaf appends, dev key) ...",
        short(size),
        base.display()
    );
    let t = Instant::now();
    let batches = size.div_ceil(BUILD_BATCH as u64);
    for b in 0..batches {
        let n = (size - b * BUILD_BATCH as u64).min(BUILD_BATCH as u64) as usize;
        log.append(leaves(n)).await.expect("append");
        if (b + 1) % (batches / 10).max(1) == 0 {
            println!(
                "  {} leaves, {:.0} s",
                (b + 1) * BUILD_BATCH as u64,
                t.elapsed().as_secs_f64()
            );
        }
    }
    let secs = t.elapsed().as_secs_f64();
    log.close().await;
    println!(
        "built {} leaves in {secs:.0} s ({:.0} leaves/s, {batches} checkpoints)",
        short(size),
        size as f64 / secs
    );
    std::fs::write(&marker, size.to_string()).expect("completion marker");
}

/// Asks the kernel to drop the state files from the page cache (`dd iflag=nocache
/// count=0`: POSIX_FADV_DONTNEED over the whole file, no root needed), so that a restart
/// reads from the disk as after a reboot (the VM host may still cache).
fn drop_page_cache(dir: &Path) {
    for name in ["hashes", "checkpoints", "checkpoints.idx", "head"] {
        let status = Command::new("dd")
            .arg(format!("if={}", dir.join(name).display()))
            .args(["iflag=nocache", "count=0", "status=none"])
            .status()
            .expect("dd");
        assert!(status.success(), "dd iflag=nocache on {name}");
    }
}

// ---------------------------------------------------------------------------------------
// Growth

/// CPU seconds (user + system) of this process, from /proc/self/stat (USER_HZ = 100).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_ascii_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

/// A line of /proc/self/status in MiB (`VmRSS`, `VmHWM`).
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(field))?;
            let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024.0)
        })
        .unwrap_or(0.0)
}

async fn growth(opts: &Opts, tmp: &Path) {
    let max = opts.sizes.iter().copied().max().unwrap_or(1_000_000);
    let dir = tempfile::tempdir_in(tmp).expect("temp dir");
    let key: Arc<dyn KeyBackend> = Arc::new(dev_key(&dir.path().join("dev.key")));
    let state = State::open(&dir.path().join("state")).expect("open state");
    // The default dedupe window (its upkeep is per leaf); no spacing or signature budget,
    // so that the appends, not the policy, set the pace.
    let config = CommitConfig {
        min_interval: Duration::ZERO,
        max_signatures_per_second: 1e6,
        signature_burst: 1_000_000,
        ..CommitConfig::default()
    };
    let log = Log::start(state, ORIGIN, key, config).expect("start");
    log.wait_started().await.expect("started");
    println!(
        "\n## Growth: one log to {} leaves, {BUILD_BATCH}-leaf appends\n",
        short(max)
    );
    println!(
        "| leaves | CPU µs per leaf (since the previous row) | leaves/s | RSS | hashes file |"
    );
    println!("|---|---|---|---|---|");
    let (mut done, mut cpu, mut t) = (0u64, cpu_seconds(), Instant::now());
    let mut next = 100_000u64.min(max);
    while done < max {
        let n = (max - done).min(BUILD_BATCH as u64) as usize;
        let appended = log.append(leaves(n)).await.expect("append");
        assert_eq!(appended.proofs.len(), n);
        done += n as u64;
        if done >= next {
            let (c, secs) = (cpu_seconds(), t.elapsed().as_secs_f64());
            let since = done - (next - step_of(next));
            let hashes = std::fs::metadata(dir.path().join("state/hashes")).map_or(0, |m| m.len());
            println!(
                "| {} | {:.2} | {:.0} | {:.0} MiB | {:.0} MB |",
                short(done),
                (c - cpu) * 1e6 / since as f64,
                since as f64 / secs,
                status_mib("VmRSS:"),
                hashes as f64 / 1e6
            );
            (cpu, t) = (c, Instant::now());
            next = (next + step_of(next + 1)).min(max);
        }
    }
    log.close().await;
    println!("\npeak RSS {:.0} MiB", status_mib("VmHWM:"));
}

/// Rows every tenth of a decade: 100k, 200k, ..., 1M, 2M, ...
fn step_of(n: u64) -> u64 {
    let mut step = 100_000;
    while n > step * 10 {
        step *= 10;
    }
    step
}

fn short(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

// ---------------------------------------------------------------------------------------

/// The cargo target dir's tmp/ (set by cargo for benches): on the same disk as a real state
/// dir would be, and outside the source tree.
fn bench_tmp() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).expect("target tmp dir");
    dir
}

fn print_machine() {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                Some(
                    l.strip_prefix("model name")?
                        .split(':')
                        .nth(1)?
                        .trim()
                        .to_string(),
                )
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let kb: f64 = s.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown memory".into());
    println!("# signer_load: {cpus} CPUs ({model}), {mem} RAM");
}
