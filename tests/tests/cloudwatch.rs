//! The EKS source against moto's CloudWatch Logs: real PutLogEvents into EKS-named
//! streams, read with FilterLogEvents, sent through the real ingester into the trail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use common::*;
use sealtrail_cloudwatch::metrics::Metrics;
use sealtrail_cloudwatch::sink::HttpsSink;
use sealtrail_cloudwatch::source::{CloudWatchConfig, CloudWatchSource, EKS_AUDIT_STREAM_PREFIX};
use sealtrail_cloudwatch::{Config, PollConfig};
use sealtrail_core::segment;
use sealtrail_store::ObjectStore;
use sealtrail_tests::moto::{MotoServer, logs_client};
use sealtrail_verifier::{FindingKind, Options, verify_store};

const GROUP: &str = "/aws/eks/sealtrail-test/cluster";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Puts `messages` into `streams` EKS audit streams: round robin, each PutLogEvents call
/// in timestamp order (as CloudWatch requires) but the streams' times interleaved, and
/// every 7 events sharing one millisecond.
async fn put_all(
    client: &aws_sdk_cloudwatchlogs::Client,
    messages: &[String],
    streams: usize,
    base_ms: i64,
) {
    client
        .create_log_group()
        .log_group_name(GROUP)
        .send()
        .await
        .unwrap();
    let names: Vec<String> = (0..streams)
        .map(|i| format!("{EKS_AUDIT_STREAM_PREFIX}-{i:032x}"))
        .collect();
    for n in &names {
        client
            .create_log_stream()
            .log_group_name(GROUP)
            .log_stream_name(n)
            .send()
            .await
            .unwrap();
    }
    // A stream of another component, which the source must not read.
    client
        .create_log_stream()
        .log_group_name(GROUP)
        .log_stream_name("kube-scheduler-0123")
        .send()
        .await
        .unwrap();
    client
        .put_log_events()
        .log_group_name(GROUP)
        .log_stream_name("kube-scheduler-0123")
        .log_events(
            InputLogEvent::builder()
                .timestamp(base_ms)
                .message("I1203 scheduler")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let mut per_stream: Vec<Vec<(i64, &String)>> = vec![Vec::new(); streams];
    for (i, m) in messages.iter().enumerate() {
        // Later messages of a stream get earlier times in the next stream: out of order
        // across streams, many in one millisecond.
        let ts = base_ms + (i / 7) as i64 * 3 - (i % streams) as i64 * 40;
        per_stream[i % streams].push((ts, m));
    }
    for (s, events) in per_stream.iter_mut().enumerate() {
        events.sort_by_key(|(ts, _)| *ts);
        for chunk in events.chunks(50) {
            let batch: Vec<InputLogEvent> = chunk
                .iter()
                .map(|(ts, m)| {
                    InputLogEvent::builder()
                        .timestamp(*ts)
                        .message(m.as_str())
                        .build()
                        .unwrap()
                })
                .collect();
            client
                .put_log_events()
                .log_group_name(GROUP)
                .log_stream_name(&names[s])
                .set_log_events(Some(batch))
                .send()
                .await
                .unwrap();
        }
    }
}

/// The source's configuration for this harness and moto.
async fn source_config(h: &Harness, endpoint: &str, metrics: Arc<Metrics>) -> Config {
    let tls_metrics = sealtrail_ops::tls::TlsMetrics::default();
    let tls = sealtrail_ops::tls::Reloading::client(
        sealtrail_ops::tls::TlsFiles {
            cert: h.pki.apiserver_client_cert.clone(),
            key: h.pki.apiserver_client_key.clone(),
            ca: h.pki.ca_cert.clone(),
        },
        vec![b"http/1.1".to_vec()],
        "cloudwatch-client",
        &tls_metrics,
    )
    .unwrap();
    let source = CloudWatchSource::with_client(
        logs_client(endpoint).await,
        CloudWatchConfig {
            log_group: GROUP.into(),
            stream_prefix: EKS_AUDIT_STREAM_PREFIX.into(),
            endpoint: None,
            region: None,
        },
    );
    Config {
        source: Arc::new(source),
        sink: Arc::new(HttpsSink::new(&h.webhook_url(), tls).unwrap()),
        store: Arc::new(h.store()),
        prefix: String::new(),
        poll: PollConfig {
            settle: Duration::from_secs(1),
            overlap: Duration::from_secs(2),
            max_batch_events: 40,
            max_batch_bytes: 1 << 20,
            max_slice: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(100),
            max_in_flight: 3,
        },
        interval: Duration::from_millis(200),
        start_ms: now_ms() - 3_600_000,
        metrics,
    }
}

/// Every message but the last `damaged` is stored once, byte for byte the canonical form
/// of what was put, and the trail holds nothing else.
fn assert_stored_once(dir: &std::path::Path, messages: &[String], damaged: usize) {
    let held = stored(dir);
    for m in &messages[..messages.len() - damaged] {
        let canonical = sealtrail_core::event::parse_event_line(m.as_bytes())
            .unwrap()
            .canonical;
        assert_eq!(held.get(&canonical), Some(&1), "{}", &m[..80.min(m.len())]);
    }
    assert_eq!(held.values().sum::<usize>(), messages.len());
}

/// Every stored event by its canonical bytes, with how often it is stored.
fn stored(dir: &std::path::Path) -> HashMap<Vec<u8>, usize> {
    let mut out = HashMap::new();
    for file in segments(dir) {
        let bytes = std::fs::read(&file).unwrap();
        let (_, body) = segment::parse_header(&bytes).unwrap();
        for (_, rec) in segment::records(body) {
            *out.entry(rec.unwrap().canonical).or_insert(0) += 1;
        }
    }
    out
}

/// Real events in 3 streams, out of timestamp order across streams, 7 to a millisecond, one
/// message cut short: each event in the trail once, byte for byte the canonical form of
/// what was put; the cut one kept as a damaged source event and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_once_from_several_streams() {
    let moto = MotoServer::start().unwrap();
    let h = Harness::start().await;
    let mut messages: Vec<String> = event_lines()
        .iter()
        .map(|l| String::from_utf8(l.clone()).unwrap())
        .collect();
    // CloudWatch cuts a message over its limit short: what arrives is not JSON.
    let mut cut = messages[3].clone();
    cut.truncate(cut.len() / 2);
    messages.push(cut);
    let base = now_ms() - 60_000;
    let client = logs_client(&moto.endpoint).await;
    put_all(&client, &messages, 3, base).await;

    let metrics = Arc::new(Metrics::default());
    let config = source_config(&h, &moto.endpoint, metrics.clone()).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sealtrail_cloudwatch::run(config, async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(60);
    while metrics.sent.get() < messages.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "sent {} of {}",
            metrics.sent.get(),
            messages.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A few more passes re-read the overlap: nothing more is sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert_eq!(metrics.sent.get(), messages.len() as u64);
    assert_eq!(metrics.damaged.get(), 1);
    h.wait_sealed().await;

    assert_stored_once(&h.store_dir, &messages, 1);

    let r = verify_store(&h.store(), &h.trust, &Options::default())
        .await
        .unwrap();
    let kinds: Vec<FindingKind> = r.findings.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        vec![FindingKind::TruncatedSourceEvent],
        "{}",
        r.summary()
    );
    assert!(
        r.findings[0].detail.contains("kube-apiserver-audit-"),
        "{}",
        r.summary()
    );
    // The cursor is in the store, next to the log.
    let cursors = h.store().list("sources/cloudwatch/").await.unwrap();
    assert!(!cursors.is_empty());

    // reconcile: the log group against the trail, over a range. Nothing missing yet; an
    // event sent to the webhook only is extra; a deleted segment's events are missing.
    let t = time::OffsetDateTime::now_utc();
    let fresh = format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"9d1c0a7e-0f0e-4b8e-8d5e-6a3c2b1f0e9d","stage":"ResponseComplete","requestURI":"/api/v1/pods","verb":"list","user":{{"username":"mallory"}},"sourceIPs":["10.0.0.9"],"requestReceivedTimestamp":"{0}","stageTimestamp":"{0}"}}"#,
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    replay(&h, &[fresh.into_bytes()], 1).await;
    h.wait_sealed().await;
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let (from, to) = (
        fmt(t - time::Duration::hours(2)),
        fmt(t + time::Duration::hours(1)),
    );
    let reconcile = || {
        let out = std::process::Command::new(binary("sealtrail-verify"))
            .args([
                "reconcile",
                "--cloudwatch-log-group",
                GROUP,
                "--from",
                &from,
                "--to",
                &to,
            ])
            .args([
                "--logs-endpoint",
                &moto.endpoint,
                "--logs-region",
                "us-east-1",
                "--json",
            ])
            .arg("--store")
            .arg(&h.store_dir)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), report)
    };
    let (code, report) = reconcile();
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["missing"].as_array().unwrap().len(), 0, "{report}");
    let extra = report["extra"].as_array().unwrap();
    assert_eq!(extra.len(), 1, "{report}");
    assert_eq!(extra[0]["audit_id"], "9d1c0a7e-0f0e-4b8e-8d5e-6a3c2b1f0e9d");
    assert_eq!(
        report["unreadable"].as_array().unwrap().len(),
        1,
        "the cut message"
    );

    let victim = segments(&h.store_dir)[2].clone();
    let bytes = std::fs::read(&victim).unwrap();
    let (_, body) = segment::parse_header(&bytes).unwrap();
    let lost = segment::records(body).count();
    std::fs::remove_file(&victim).unwrap();
    let (code, report) = reconcile();
    assert_eq!(code, Some(1));
    let missing = report["missing"].as_array().unwrap();
    // The sample holds a few requests twice: a copy elsewhere in the trail still matches
    // those by (auditID, stage), reported apart.
    let by_id = report["matched_by_id"].as_array().unwrap().len();
    assert!(missing.len() >= lost.saturating_sub(7), "{report}");
    assert_eq!(missing.len() + by_id, lost, "{report}");
    assert!(missing.iter().all(|m| {
        m["source"]
            .as_str()
            .unwrap()
            .starts_with(EKS_AUDIT_STREAM_PREFIX)
    }));
    h.shutdown().await;
}

/// The source as a process, SIGKILLed 5 times while events keep arriving in CloudWatch,
/// and the signer down meanwhile (`SEALTRAIL_CLOUDWATCH_OUTAGE_SECS`, 20 s by default; the
/// issue's 2 minutes by hand): every event in the trail once, verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_five_times() {
    let outage = Duration::from_secs(
        std::env::var("SEALTRAIL_CLOUDWATCH_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    let moto = MotoServer::start().unwrap();
    let mut h = Harness::start().await;
    let client = logs_client(&moto.endpoint).await;
    let lines = sealtrail_tests::emulator::repeat_events(&event_lines(), 5).unwrap();
    let messages: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8(l.clone()).unwrap())
        .collect();
    // The group and its streams, empty: the writer below fills them while the source runs.
    put_all(&client, &[], 3, now_ms()).await;
    let streams: Vec<String> = (0..3)
        .map(|i| format!("{EKS_AUDIT_STREAM_PREFIX}-{i:032x}"))
        .collect();
    let writer = {
        let client = client.clone();
        let messages = messages.clone();
        tokio::spawn(async move {
            for (n, chunk) in messages.chunks(37).enumerate() {
                let ts = now_ms();
                let events: Vec<InputLogEvent> = chunk
                    .iter()
                    .map(|m| {
                        InputLogEvent::builder()
                            .timestamp(ts)
                            .message(m.as_str())
                            .build()
                            .unwrap()
                    })
                    .collect();
                client
                    .put_log_events()
                    .log_group_name(GROUP)
                    .log_stream_name(&streams[n % 3])
                    .set_log_events(Some(events))
                    .send()
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    let start = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let start = start
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (url, ca, cert, key, store_dir) = (
        h.webhook_url(),
        h.pki.ca_cert.clone(),
        h.pki.apiserver_client_cert.clone(),
        h.pki.apiserver_client_key.clone(),
        h.store_dir.clone(),
    );
    let spawn = || {
        std::process::Command::new(binary("sealtrail-cloudwatch"))
            .args(["--log-group", GROUP, "--logs-endpoint", &moto.endpoint])
            .args(["--logs-region", "us-east-1", "--ingester-url", &url])
            .arg("--ingester-ca")
            .arg(&ca)
            .arg("--client-cert")
            .arg(&cert)
            .arg("--client-key")
            .arg(&key)
            .arg("--store")
            .arg(&store_dir)
            .args([
                "--settle-seconds",
                "1",
                "--overlap-seconds",
                "3",
                "--poll-seconds",
                "1",
            ])
            .arg(format!("--start={start}"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(1500 + 400 * round)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if round == 1 {
            h.stop_signer().await;
        }
        child = spawn();
    }
    writer.await.unwrap();
    tokio::time::sleep(outage.saturating_sub(Duration::from_secs(8))).await;
    h.start_signer().await;
    // Every event stored, then sealed.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let held = stored_or_pending(&h).await;
        if held >= messages.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{held} of {} stored",
            messages.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    h.wait_sealed().await;
    assert_stored_once(&h.store_dir, &messages, 0);
    // (Not the duplicate check: the sample set holds a few requests twice itself.)
    let r = verify_store(&h.store(), &h.trust, &Options::default())
        .await
        .unwrap();
    assert!(r.intact() && r.findings.is_empty(), "{}", r.summary());
    h.shutdown().await;
}

/// Events the ingester acknowledged: every pending batch is kept after its seal.
async fn stored_or_pending(h: &Harness) -> usize {
    let store = h.store();
    let mut n = 0;
    for o in store.list("pending/").await.unwrap() {
        let bytes = store.get(&o.key).await.unwrap();
        n += sealtrail_core::pending::parse(&bytes).unwrap().events.len();
    }
    n
}

/// CPU seconds (user + system) used so far by a process and all its descendants.
fn cpu_tree(pid: u32) -> f64 {
    let mut total = cpu_seconds(pid);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            total += cpu_tree(child);
        }
    }
    total
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) close with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5); 12 and 13 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// Throughput and lag, by hand (`scripts/bench-cloudwatch`): a backlog of events in one
/// log group read by the release binary, then one event put while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: scripts/bench-cloudwatch"]
async fn bench_throughput_and_lag() {
    let copies: usize = std::env::var("SEALTRAIL_BENCH_COPIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let (settle, poll) = (5u64, 2u64);
    let moto = MotoServer::start().unwrap();
    let h = Harness::start().await;
    let client = logs_client(&moto.endpoint).await;
    let lines = sealtrail_tests::emulator::repeat_events(&event_lines(), copies).unwrap();
    let messages: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8(l.clone()).unwrap())
        .collect();
    let put_start = Instant::now();
    let base = now_ms() - 600_000;
    put_all(&client, &messages, 4, base).await;
    eprintln!(
        "put {} events into 4 streams in {:.1} s",
        messages.len(),
        put_start.elapsed().as_secs_f64()
    );
    // From just before the backlog: moto's FilterLogEvents scans every event of the group
    // on each call (CloudWatch does not), so empty slices before it would only measure moto.
    let start = sealtrail_core::source::micro_time(base - 1_000);
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr: std::net::SocketAddr = ([127, 0, 0, 1], metrics_port).into();
    let moto_cpu_before = cpu_tree(moto.pid().unwrap());
    // The ingester and the signer run in this process.
    let own_cpu_before = cpu_seconds(std::process::id());
    let t0 = Instant::now();
    let mut child = std::process::Command::new(binary("sealtrail-cloudwatch"))
        .args(["--log-group", GROUP, "--logs-endpoint", &moto.endpoint])
        .args([
            "--logs-region",
            "us-east-1",
            "--ingester-url",
            &h.webhook_url(),
        ])
        .arg("--ingester-ca")
        .arg(&h.pki.ca_cert)
        .arg("--client-cert")
        .arg(&h.pki.apiserver_client_cert)
        .arg("--client-key")
        .arg(&h.pki.apiserver_client_key)
        .arg("--store")
        .arg(&h.store_dir)
        .arg(format!("--settle-seconds={settle}"))
        .arg(format!("--poll-seconds={poll}"))
        .arg(format!("--start={start}"))
        .arg(format!("--metrics-listen={metrics_addr}"))
        .args(
            std::env::var("SEALTRAIL_BENCH_SOURCE_ARGS")
                .ok()
                .iter()
                .flat_map(|a| a.split_whitespace()),
        )
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The source's own count of events stored (2xx), read cheaply from its /metrics.
    let sent = || async {
        let (_, text) = http_get(metrics_addr, "/metrics").await;
        metric(&text, "sealtrail_cloudwatch_events_sent_total").unwrap_or(0.0) as usize
    };
    wait_listening(metrics_addr).await;
    while sent().await < messages.len() {
        assert!(t0.elapsed() < Duration::from_secs(900));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = t0.elapsed().as_secs_f64();
    let source_cpu = cpu_seconds(child.id());
    let moto_cpu = cpu_tree(moto.pid().unwrap()) - moto_cpu_before;
    let own_cpu = cpu_seconds(std::process::id()) - own_cpu_before;
    let (_, text) = http_get(metrics_addr, "/metrics").await;
    let retries = metric(&text, "sealtrail_cloudwatch_batch_retries_total").unwrap_or(0.0);
    let n = messages.len() as f64;
    eprintln!(
        "backlog: {} events in {took:.1} s = {:.0} events/s; CPU per event: source {:.1} µs, moto {:.1} µs, ingester+signer {:.1} µs; {retries} batch retries",
        messages.len(),
        n / took,
        source_cpu / n * 1e6,
        moto_cpu / n * 1e6,
        own_cpu / n * 1e6
    );

    // Lag: one event put now, found in the trail.
    let marker = format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"0d6b7d1e-1b5c-4a53-9d43-2f7f0a9c1e11","stage":"ResponseComplete","requestURI":"/","verb":"get","user":{{"username":"bench"}},"requestReceivedTimestamp":"{0}","stageTimestamp":"{0}"}}"#,
        sealtrail_core::source::micro_time(now_ms())
    );
    let put_at = Instant::now();
    client
        .put_log_events()
        .log_group_name(GROUP)
        .log_stream_name(format!("{EKS_AUDIT_STREAM_PREFIX}-{:032x}", 0))
        .log_events(
            InputLogEvent::builder()
                .timestamp(now_ms())
                .message(marker)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    while sent().await < messages.len() + 1 {
        assert!(put_at.elapsed() < Duration::from_secs(120));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "lag: {:.1} s from PutLogEvents to durable in the trail (settle {settle} s + poll {poll} s)",
        put_at.elapsed().as_secs_f64()
    );
    assert_eq!(stored_or_pending(&h).await, messages.len() + 1);
    child.kill().unwrap();
    child.wait().unwrap();
    h.shutdown().await;
}
