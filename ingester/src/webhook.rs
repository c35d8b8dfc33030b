//! The webhook route: EventList in, segment out, 200 only when durable.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sealtrail_core::checkpoint::SignedCheckpoint;
use sealtrail_core::event::{EventBatch, parse_event_list};
use sealtrail_core::merkle::{self, Hash};
use sealtrail_core::segment;
use sealtrail_proto::v1::AppendRequest;
use sealtrail_proto::v1::signer_client::SignerClient;
use sealtrail_store::{ObjectStore, PutOutcome, StoreError};
use std::sync::atomic::Ordering;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::metrics::Metrics;

use crate::{Error, WEBHOOK_PATH};

/// Memory a request holds per body byte, at most: the body, its parsed tree, the canonical
/// events and the segment (measured on the sample events: the parsed tree is the largest).
pub const MEMORY_PER_BODY_BYTE: usize = 4;

/// Seconds the apiserver is asked to wait before re-sending after a 503.
const RETRY_AFTER_SECS: &str = "5";

pub struct App {
    pub origin: String,
    pub store: Arc<dyn ObjectStore>,
    pub prefix: String,
    pub signer: SignerClient<Channel>,
    pub max_body_bytes: usize,
    pub body_timeout: std::time::Duration,
    /// One permit per request being handled.
    pub requests: Arc<Semaphore>,
    /// One permit per KiB of body held.
    pub kib: Arc<Semaphore>,
    pub bearer_token: Option<String>,
    pub metrics: Arc<Metrics>,
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(ingest))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(app)
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::Unavailable(_) | Error::BadSignerAnswer(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Store(StoreError::Unavailable(_) | StoreError::Io(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Store(_) | Error::Config(_) | Error::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

async fn ingest(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let started = std::time::Instant::now();
    let resp = match ingest_inner(&app, &headers, body).await {
        Ok(resp) => resp,
        Err(e) => {
            let reason = match &e {
                Error::BadRequest(_) => "invalid",
                Error::TooLarge { .. } => "too_large",
                Error::UnsupportedMediaType(_) => "content_type",
                Error::Unauthorized(_) | Error::Forbidden(_) => "unauthorized",
                Error::Busy(_) => "busy",
                Error::BodyTimeout(_) => "body_timeout",
                Error::Unavailable(_) | Error::BadSignerAnswer(_) => "signer",
                Error::Store(_) => "storage",
                Error::Config(_) | Error::Internal(_) => "internal",
            };
            // Counted as one rejected batch: the events of a refused body are not known.
            app.metrics.rejected(reason, 1);
            match &e {
                Error::Unavailable(_) | Error::BadSignerAnswer(_) | Error::Store(_) => {
                    tracing::error!(error = %e, "batch not stored")
                }
                Error::Config(_) | Error::Internal(_) => {
                    tracing::error!(error = %e, "batch not stored")
                }
                _ => tracing::warn!(error = %e, reason, "batch rejected"),
            }
            e.into_response()
        }
    };
    app.metrics
        .request_seconds
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn ingest_inner(app: &App, headers: &HeaderMap, body: Body) -> Result<Response, Error> {
    // Authentication and limits first: nothing is read or parsed beyond them.
    if let Some(token) = &app.bearer_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same_secret(given.as_bytes(), token.as_bytes()) {
            return Err(Error::Unauthorized("missing or wrong bearer token".into()));
        }
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let mime = ct.split(';').next().unwrap_or_default().trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(Error::UnsupportedMediaType(ct.to_string()));
        }
    }
    let limit = app.max_body_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(Error::TooLarge { limit });
    }
    let _request = app
        .requests
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::Busy("too many requests in flight".into()))?;
    // Reserve the memory the request will hold (the body, its parsed tree, the canonical
    // events and the segment: MEMORY_PER_BODY_BYTE times the body) before reading it; the
    // limit's size when no length is announced.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(limit);
    let kib = u32::try_from(
        announced
            .saturating_mul(MEMORY_PER_BODY_BYTE)
            .div_ceil(1024)
            .max(1),
    )
    .unwrap_or(u32::MAX);
    let bytes_permit = app
        .kib
        .clone()
        .try_acquire_many_owned(kib)
        .map_err(|_| Error::Busy("too many body bytes in flight".into()))?;
    let bytes = tokio::time::timeout(
        app.body_timeout,
        axum::body::to_bytes(body, limit.min(announced)),
    )
    .await
    .map_err(|_| Error::BodyTimeout(app.body_timeout))?
    .map_err(|_| Error::TooLarge { limit })?;

    // The permit goes with the parse: if the client hangs up meanwhile, the memory stays
    // accounted for until the parse is over; then it comes back for the rest of the request.
    let (parsed, _bytes_permit) = tokio::task::spawn_blocking(move || {
        let parsed = parse_event_list(&bytes).map_err(|e| (e, audit_ids_lenient(&bytes)));
        (parsed, bytes_permit)
    })
    .await
    .map_err(|e| Error::Internal(format!("parse task: {e}")))?;
    let batch: EventBatch = match parsed {
        Ok(b) => b,
        Err((e, audit_ids)) => {
            // Name what the apiserver will retry (and finally drop), for the operators.
            tracing::warn!(error = %e, audit_ids = ?audit_ids, "events refused");
            return Err(e.into());
        }
    };
    let m = &app.metrics;
    m.events_received.inc_by(batch.events.len() as u64);
    m.batch_size.observe(batch.events.len() as f64);
    if batch.events.is_empty() {
        return Ok((StatusCode::OK, r#"{"stored":0}"#).into_response());
    }

    let leaves: Vec<Hash> = batch.events.iter().map(|e| e.leaf_hash).collect();
    let rpc_started = std::time::Instant::now();
    let answer = app
        .signer
        .clone()
        .append(AppendRequest {
            leaf_hashes: leaves.iter().map(|h| h.to_vec()).collect(),
        })
        .await;
    m.signer_rpc_seconds
        .observe(rpc_started.elapsed().as_secs_f64());
    m.signer_ok.store(answer.is_ok(), Ordering::Relaxed);
    let answer = answer
        .map_err(|s| Error::Unavailable(format!("signer: {} ({:?})", s.message(), s.code())))?
        .into_inner();

    // Check the signer's answer before storing it: a bad answer is never made evidence.
    let checkpoint = SignedCheckpoint::parse(&answer.checkpoint)
        .map_err(|e| Error::BadSignerAnswer(format!("checkpoint: {e}")))?;
    let cp = &checkpoint.checkpoint;
    if cp.origin != app.origin {
        return Err(Error::BadSignerAnswer(format!(
            "checkpoint of log {:?}, this ingester writes {:?}",
            cp.origin, app.origin
        )));
    }
    if answer.proofs.len() != leaves.len() {
        return Err(Error::BadSignerAnswer(format!(
            "{} proofs for {} leaves",
            answer.proofs.len(),
            leaves.len()
        )));
    }
    let first = answer.first_index;
    let mut proofs = Vec::with_capacity(leaves.len());
    for (i, (leaf, proof)) in leaves.iter().zip(answer.proofs).enumerate() {
        let proof = proof
            .hashes
            .into_iter()
            .map(|h| <Hash>::try_from(h.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Error::BadSignerAnswer("proof hash of the wrong length".into()))?;
        let index = first
            .checked_add(i as u64)
            .ok_or_else(|| Error::BadSignerAnswer("first index overflows".into()))?;
        merkle::verify_inclusion(index, cp.size, leaf, &proof, &cp.root)
            .map_err(|e| Error::BadSignerAnswer(format!("leaf {index}: {e}")))?;
        proofs.push(proof);
    }

    let count = batch.events.len() as u64;
    let bytes = segment::encode(first, &checkpoint, &batch.events, &proofs)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let key = segment::object_key(&app.prefix, cp.time_ms, first, count);
    let outcome = app.store.put_new(&key, &bytes).await;
    m.store_ok.store(outcome.is_ok(), Ordering::Relaxed);
    if outcome.is_err() {
        m.storage_errors.inc();
    }
    let outcome = outcome?;
    m.events_stored.inc_by(count);
    if let Some(newest) = batch
        .events
        .iter()
        .filter_map(|e| e.stage_timestamp.as_deref())
        .filter_map(sealtrail_core::event::parse_timestamp_micros)
        .max()
    {
        m.saw_event_time(newest);
    }
    if outcome == PutOutcome::AlreadyStored {
        tracing::info!(key, "segment was already stored (retried batch)");
    }
    tracing::debug!(key, events = count, first_index = first, "segment stored");
    let body = serde_json::json!({ "stored": count, "first_index": first, "object": key });
    Ok((StatusCode::OK, body.to_string()).into_response())
}

/// Most auditIDs named in one log line about a refused batch.
const MAX_LOGGED_AUDIT_IDS: usize = 400;

/// The auditIDs a refused body seems to carry, read leniently (the strict parser refused
/// it): only for the log, never for the trail.
fn audit_ids_lenient(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    v.get("items")
        .and_then(|i| i.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("auditID").and_then(|a| a.as_str()))
                .take(MAX_LOGGED_AUDIT_IDS)
                .map(|a| {
                    a.chars()
                        .take(sealtrail_core::event::MAX_AUDIT_ID_LEN)
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_ids_of_a_refused_batch() {
        let body = br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"auditID":"a","stage":"x","verb":"get","verb":"list"},{"auditID":"b"}]}"#;
        assert!(parse_event_list(body).is_err());
        assert_eq!(audit_ids_lenient(body), vec!["a", "b"]);
        assert!(audit_ids_lenient(b"not json").is_empty());
    }
}
