//! Where events come from: a log group read by event time ([`LogSource`]), and its real
//! implementation, CloudWatch Logs' `FilterLogEvents` ([`CloudWatchSource`]).

use std::future::Future;
use std::pin::Pin;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::config::{BehaviorVersion, Region};
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};

use crate::Error;

/// The stream name prefix EKS gives the apiserver's audit streams
/// (`kube-apiserver-audit-<id>`).
pub const EKS_AUDIT_STREAM_PREFIX: &str = "kube-apiserver-audit";

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One log event as CloudWatch keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEvent {
    /// CloudWatch's id of the event: unique within the log group, stable across reads.
    pub event_id: String,
    pub stream: String,
    /// The event's timestamp (the time it was logged with), Unix milliseconds.
    pub timestamp_ms: i64,
    /// The message: one audit Event as JSON, unless CloudWatch cut it short.
    pub message: String,
}

/// A log group, read by event timestamp.
pub trait LogSource: Send + Sync {
    /// Every event whose timestamp is in `start_ms..=end_ms`, in any order.
    fn fetch(&self, start_ms: i64, end_ms: i64) -> BoxFuture<'_, Result<Vec<SourceEvent>, Error>>;
    /// The log group, for logs and the cursor.
    fn log_group(&self) -> &str;
}

/// How to reach CloudWatch Logs.
#[derive(Debug, Clone, Default)]
pub struct CloudWatchConfig {
    pub log_group: String,
    /// Only streams whose name starts with this ([`EKS_AUDIT_STREAM_PREFIX`]).
    pub stream_prefix: String,
    /// Endpoint override (moto in tests, a VPC endpoint).
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

/// `FilterLogEvents` over one log group's audit streams, every page.
#[derive(Debug, Clone)]
pub struct CloudWatchSource {
    client: Client,
    config: CloudWatchConfig,
}

impl CloudWatchSource {
    /// The default credential chain (env, profile, IRSA web identity).
    pub async fn connect(config: CloudWatchConfig) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_cloudwatchlogs::config::Builder::from(&shared);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        Self {
            client: Client::from_conf(builder.build()),
            config,
        }
    }

    /// With a ready client (its endpoint, region and credentials apply).
    pub fn with_client(client: Client, config: CloudWatchConfig) -> Self {
        Self { client, config }
    }

    async fn fetch_impl(&self, start_ms: i64, end_ms: i64) -> Result<Vec<SourceEvent>, Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self
                .client
                .filter_log_events()
                .log_group_name(&self.config.log_group)
                .start_time(start_ms)
                .end_time(end_ms);
            if !self.config.stream_prefix.is_empty() {
                req = req.log_stream_name_prefix(&self.config.stream_prefix);
            }
            if let Some(t) = token.take() {
                req = req.next_token(t);
            }
            let page = req
                .send()
                .await
                .map_err(|e| describe("FilterLogEvents", e))?;
            for e in page.events() {
                let (Some(id), Some(stream), Some(ts)) =
                    (e.event_id(), e.log_stream_name(), e.timestamp())
                else {
                    return Err(Error::Source(
                        "FilterLogEvents returned an event without id, stream or timestamp".into(),
                    ));
                };
                // Also checked here: a server that ignores the prefix (moto does) must not
                // bring another component's logs in.
                if !stream.starts_with(&self.config.stream_prefix) {
                    continue;
                }
                out.push(SourceEvent {
                    event_id: id.to_string(),
                    stream: stream.to_string(),
                    timestamp_ms: ts,
                    message: e.message().unwrap_or_default().to_string(),
                });
            }
            match page.next_token() {
                // An empty page with a token means "more streams to search", not the end.
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }
}

impl LogSource for CloudWatchSource {
    fn fetch(&self, start_ms: i64, end_ms: i64) -> BoxFuture<'_, Result<Vec<SourceEvent>, Error>> {
        Box::pin(self.fetch_impl(start_ms, end_ms))
    }

    fn log_group(&self) -> &str {
        &self.config.log_group
    }
}

fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(
    what: &str,
    e: SdkError<E>,
) -> Error {
    match &e {
        SdkError::ServiceError(s) => Error::Source(format!(
            "{what}: {}: {}",
            s.err().code().unwrap_or("error"),
            s.err().message().unwrap_or_default()
        )),
        _ => {
            let mut msg = format!("{what}: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            Error::Source(msg)
        }
    }
}
