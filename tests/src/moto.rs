//! A real moto server (S3 with Object Lock, KMS) for tests, and SDK clients pointed at it.
//!
//! [`MotoServer::start`] runs the executable named by `SEALTRAIL_MOTO_SERVER` (set by
//! `scripts/test`, which installs `moto[server]` into `target/moto-venv`), else
//! `moto_server` from `PATH`, as `moto_server -H 127.0.0.1 -p <free port>`, and waits until
//! it answers HTTP. A missing executable is an error, never a skip: the tests that need
//! moto must not pass by not running.
//!
//! The server is started under a tiny `sh` watchdog that reads its standard input: when
//! the test process exits (even without running destructors, as with a `static`
//! `OnceLock<MotoServer>`), the pipe closes and the watchdog kills moto, so no server
//! outlives its test binary. Dropping a [`MotoServer`] stops it the same way.
//!
//! moto keeps all state in memory: [`MotoServer::stop`] followed by
//! [`MotoServer::restart_same_port`] gives an *empty* server (no buckets, no keys) at the
//! same endpoint. It is meant for outage tests, not for persistence tests.
//!
//! Known moto deviations are listed in docs/DESIGN.md §4 and in `sealtrail_store::s3`.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

/// Environment variable naming the `moto_server` executable.
pub const MOTO_SERVER_ENV: &str = "SEALTRAIL_MOTO_SERVER";

/// Static credentials moto accepts (it does not check them).
pub const TEST_ACCESS_KEY: &str = "testing";
pub const TEST_SECRET_KEY: &str = "testing";
pub const TEST_REGION: &str = "us-east-1";

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running moto server; killed on drop.
pub struct MotoServer {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub port: u16,
    exe: PathBuf,
    log_path: PathBuf,
    child: Option<(Child, ChildStdin)>,
}

impl std::fmt::Debug for MotoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotoServer")
            .field("endpoint", &self.endpoint)
            .field("running", &self.child.is_some())
            .field("log", &self.log_path)
            .finish()
    }
}

/// The moto_server executable: `$SEALTRAIL_MOTO_SERVER`, else `moto_server` on `PATH`.
pub fn moto_executable() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(MOTO_SERVER_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!(
            "{MOTO_SERVER_ENV}={} does not exist: run scripts/test (it installs moto into \
             target/moto-venv), or `pip install 'moto[server]'` and point {MOTO_SERVER_ENV} at \
             its moto_server",
            p.display()
        );
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let cand = dir.join("moto_server");
            if cand.is_file() {
                return Ok(cand);
            }
        }
    }
    bail!(
        "moto_server not found: set {MOTO_SERVER_ENV} or put moto_server on PATH. Run \
         scripts/test (it installs moto into target/moto-venv and exports \
         {MOTO_SERVER_ENV}), or `pip install 'moto[server]'`. These tests are never skipped."
    )
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

impl MotoServer {
    /// Starts moto on a free port and waits (up to 20 s) until it answers HTTP.
    pub fn start() -> anyhow::Result<Self> {
        let exe = moto_executable()?;
        let mut last_err = None;
        // A free port can be taken between our probe and moto's bind: try a few.
        for _ in 0..3 {
            let port = free_port()?;
            let mut server = Self {
                endpoint: format!("http://127.0.0.1:{port}"),
                port,
                exe: exe.clone(),
                log_path: std::env::temp_dir()
                    .join(format!("sealtrail-moto-{}-{port}.log", std::process::id())),
                child: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("moto did not start")))
    }

    /// The process id of the server's process (a watchdog whose child is moto), for
    /// benchmarks that count its CPU time.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|(c, _)| c.id())
    }

    /// Stops the server (moto's in-memory state is lost). Idempotent.
    pub fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            // Closing the watchdog's stdin makes it kill moto and exit.
            drop(stdin);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    /// Starts a fresh server on the same port after [`stop`](Self::stop). moto's state is
    /// in memory only: the restarted server has no buckets and no objects.
    pub fn restart_same_port(&mut self) -> anyhow::Result<()> {
        self.stop();
        // The port may linger briefly; retry for a few seconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Whether the server process is running (as far as this handle knows).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some((child, _)) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let log = File::create(&self.log_path)
            .with_context(|| format!("creating {}", self.log_path.display()))?;
        // Watchdog: run moto in the background; when our stdin closes (we dropped the
        // handle or the test process exited), kill it. If moto exits on its own, `wait`
        // returns and the shell exits too, which `try_wait` sees.
        // (A background list's stdin is /dev/null unless redirected explicitly: hence fd 3.)
        let script = r#"exe="$1"; shift
exec 3<&0
"$exe" "$@" </dev/null 3<&- &
pid=$!
( while read -r _line; do :; done; kill "$pid" 2>/dev/null ) <&3 &
exec 3<&-
wait "$pid""#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sealtrail-moto")
            .arg(&self.exe)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin pipe for moto watchdog"))?;
        self.child = Some((child, stdin));
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            let exited = match &mut self.child {
                Some((child, _)) => child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                self.child = None;
                bail!(
                    "moto_server exited during startup ({status}); log {}:\n{}",
                    self.log_path.display(),
                    self.log_tail()
                );
            }
            if http_ok(addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                bail!(
                    "moto_server on port {} did not answer HTTP within {READY_TIMEOUT:?}; log {}:\n{}",
                    self.port,
                    self.log_path.display(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text.get(start..).unwrap_or_default().to_string()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// A TCP connect plus `GET /` that gets any HTTP status line back.
fn http_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET / HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).is_ok() && &buf == b"HTTP/"
}

/// What both moto clients share: static test credentials, us-east-1, the endpoint, short
/// timeouts (moto is local) and the SDK's standard retries.
fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(TEST_REGION))
        .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
            aws_sdk_s3::config::Credentials::new(
                TEST_ACCESS_KEY,
                TEST_SECRET_KEY,
                None,
                None,
                "sealtrail-tests",
            ),
        ))
        .endpoint_url(endpoint)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .build()
}

/// An S3 client for moto (path-style addressing).
pub async fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(&sdk_config(endpoint))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A CloudWatch Logs client for moto.
pub async fn logs_client(endpoint: &str) -> aws_sdk_cloudwatchlogs::Client {
    aws_sdk_cloudwatchlogs::Client::new(&sdk_config(endpoint))
}

/// A KMS client for moto.
pub async fn kms_client(endpoint: &str) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&sdk_config(endpoint))
}

/// Creates `name` with Object Lock enabled (which also enables versioning) and, if
/// `default_retention_days` is given, a default COMPLIANCE retention of that many days.
pub async fn create_lock_bucket(
    client: &aws_sdk_s3::Client,
    name: &str,
    default_retention_days: Option<i32>,
) -> anyhow::Result<()> {
    use aws_sdk_s3::types::{
        DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode,
        ObjectLockRule,
    };
    client
        .create_bucket()
        .bucket(name)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "create bucket {name}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    if let Some(days) = default_retention_days {
        let conf = ObjectLockConfiguration::builder()
            .object_lock_enabled(ObjectLockEnabled::Enabled)
            .rule(
                ObjectLockRule::builder()
                    .default_retention(
                        DefaultRetention::builder()
                            .mode(ObjectLockRetentionMode::Compliance)
                            .days(days)
                            .build(),
                    )
                    .build(),
            )
            .build();
        client
            .put_object_lock_configuration()
            .bucket(name)
            .object_lock_configuration(conf)
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "put object lock configuration on {name}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
    }
    Ok(())
}

/// Creates a plain bucket (no Object Lock, no versioning), for negative tests.
pub async fn create_plain_bucket(client: &aws_sdk_s3::Client, name: &str) -> anyhow::Result<()> {
    client
        .create_bucket()
        .bucket(name)
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "create bucket {name}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    Ok(())
}
