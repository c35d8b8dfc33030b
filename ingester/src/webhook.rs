//! The webhook route: EventList in, pending batch out (spool record, then store object),
//! 200 only when durable; the sealer signs it afterwards.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use sealtrail_core::event::{CanonicalEvent, EventBatch, parse_event_list};
use sealtrail_core::merkle::Hash;
use sealtrail_core::pending;
use sealtrail_store::{ObjectStore, PutOutcome, StoreError};
use std::sync::atomic::Ordering;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::sealer::{Batch, Entry, Sealer};
use crate::spool::{self, Spool, SpoolError};

use crate::{Error, WEBHOOK_PATH};

/// Memory a request holds per body byte, at most: the body, its canonical events and the
/// pending object (about 3: items are canonicalized as they are parsed, so the body's tree
/// is never whole), with room for one item's tree and the allocator.
pub const MEMORY_PER_BODY_BYTE: usize = 4;

/// Seconds the apiserver is asked to wait before re-sending after a 503.
const RETRY_AFTER_SECS: &str = "5";

pub struct App {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: String,
    pub sealer: Arc<Sealer>,
    pub spool: Option<Arc<Spool>>,
    /// How long a request waits for the store when its spool record is already durable.
    pub store_ack_timeout: std::time::Duration,
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
            Error::Unavailable(_)
            | Error::BadSignerAnswer(_)
            | Error::SpoolFull(_)
            | Error::Spool(_) => StatusCode::SERVICE_UNAVAILABLE,
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
                Error::SpoolFull(_) => "spool_full",
                Error::Spool(_) => "spool",
                Error::Config(_) | Error::Internal(_) => "internal",
            };
            // Counted as one rejected batch: the events of a refused body are not known.
            app.metrics.rejected(reason, 1);
            match &e {
                Error::Unavailable(_)
                | Error::BadSignerAnswer(_)
                | Error::Store(_)
                | Error::SpoolFull(_)
                | Error::Spool(_) => {
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

async fn ingest_inner(app: &Arc<App>, headers: &HeaderMap, body: Body) -> Result<Response, Error> {
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
    // Reserve the memory the request will hold (the body, its canonical events and the
    // pending object: MEMORY_PER_BODY_BYTE times the body, with room) before reading it;
    // the limit's size when no length is announced.
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let announced = content_length.unwrap_or(limit);
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
        read_body(body, limit.min(announced), content_length),
    )
    .await
    .map_err(|_| Error::BodyTimeout(app.body_timeout))?
    .map_err(|()| Error::TooLarge { limit })?;

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
        return Ok((StatusCode::OK, r#"{"accepted":0}"#).into_response());
    }

    if let Some(newest) = batch
        .events
        .iter()
        .filter_map(|e| e.stage_timestamp.as_deref())
        .filter_map(sealtrail_core::event::parse_timestamp_micros)
        .max()
    {
        m.saw_event_time(newest);
    }
    // In a task of its own: a client that hangs up must not cut the durable writes and the
    // hand-over to the sealer in two (a stored batch nobody queued, a record nobody answered).
    let (key, count, durable) = tokio::spawn(persist(app.clone(), batch.events))
        .await
        .map_err(|e| Error::Internal(format!("persist task: {e}")))??;
    tracing::debug!(batch = key, events = count, durable, "batch acknowledged");
    let body = serde_json::json!({ "accepted": count, "batch": key, "durable": durable });
    Ok((StatusCode::OK, body.to_string()).into_response())
}

/// Reads a whole body of at most `max` bytes into one buffer, sized from its
/// `Content-Length` when there is one: collecting the chunks and then joining them would
/// hold the body twice. `Err` if it is longer, or breaks off.
async fn read_body(mut body: Body, max: usize, content_length: Option<usize>) -> Result<Bytes, ()> {
    use http_body_util::BodyExt as _;
    let mut buf = Vec::with_capacity(content_length.unwrap_or(0).min(max));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| ())?.into_data() else {
            continue;
        };
        if buf.len() + data.len() > max {
            return Err(());
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.into())
}

/// Makes a batch durable (spool record, then pending object) and queues it for sealing;
/// returns its key, its size and where it is durable.
async fn persist(
    app: Arc<App>,
    events: Vec<CanonicalEvent>,
) -> Result<(String, u64, &'static str), Error> {
    let count = events.len() as u64;
    let received_ms = crate::now_ms();
    let (bytes, sha256) =
        pending::encode(received_ms, &events).map_err(|e| Error::Internal(e.to_string()))?;
    // Shared, not copied, by the spool's blocking write and the store's.
    let bytes = bytes::Bytes::from(bytes);
    let key = pending::object_key(&app.prefix, &events, received_ms);
    let spool_name = match &app.spool {
        Some(spool) => Some(spool_write(&app, spool, received_ms, &sha256, bytes.clone()).await?),
        None => None,
    };
    let stored = store_pending(&app, &key, &bytes, spool_name.is_some()).await;
    let remove_record = || async {
        if let (Some(spool), Some(name)) = (app.spool.clone(), spool_name.clone()) {
            let _ = tokio::task::spawn_blocking(move || spool.remove(&name)).await;
        }
    };
    match stored {
        // Not acknowledged: the apiserver re-sends it, so its record must not stay.
        Err(e) => {
            remove_record().await;
            Err(e)
        }
        // A retry of a batch an earlier attempt stored: that attempt may have failed after
        // the write (no one queued it), so this one seals the stored object (its receipt
        // time, its bytes); a second sealing of it is answered from the signer's dedupe.
        Ok(Stored::Earlier) => {
            let len = bytes.len() as u64;
            let batch = Batch::encoded(bytes, &events);
            let (sha, ms) = crate::sealer::adopt_stored(app.store.as_ref(), &key, batch.leaves())
                .await
                .map_err(Error::Internal)?;
            app.sealer.submit(Entry {
                key: key.clone(),
                sha256: sha,
                received_ms: ms,
                count,
                len,
                spool_name,
                stored: true,
                batch: Some(batch),
            });
            app.metrics.events_stored.inc_by(count);
            Ok((key, count, "store"))
        }
        Ok(stored) => {
            app.sealer.submit(Entry {
                key: key.clone(),
                sha256,
                received_ms,
                count,
                len: bytes.len() as u64,
                spool_name,
                stored: stored == Stored::Yes,
                batch: Some(Batch::encoded(bytes, &events)),
            });
            app.metrics.events_stored.inc_by(count);
            let durable = if stored == Stored::No {
                "spool"
            } else {
                "store"
            };
            Ok((key, count, durable))
        }
    }
}

/// Writes the spool record of a batch (fsynced) before anything else is done with it.
async fn spool_write(
    app: &App,
    spool: &Arc<Spool>,
    received_ms: u64,
    sha256: &Hash,
    bytes: bytes::Bytes,
) -> Result<String, Error> {
    let name = spool::record_name(received_ms, sha256);
    let (spool, record) = (spool.clone(), name.clone());
    let written = tokio::task::spawn_blocking(move || spool.write(&record, &bytes))
        .await
        .map_err(|e| Error::Internal(format!("spool task: {e}")))?;
    match written {
        Ok(()) => Ok(name),
        Err(e @ SpoolError::Full { .. }) => {
            app.metrics.spool_full.inc();
            Err(Error::SpoolFull(e.to_string()))
        }
        Err(e) => Err(Error::Spool(e.to_string())),
    }
}

/// Where the pending object is after [`store_pending`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// Stored now (or these very bytes were already).
    Yes,
    /// The key holds an earlier attempt of the batch (other bytes: another receipt time).
    Earlier,
    /// Not stored yet: the spool holds it.
    No,
}

/// Writes the pending object. With a spool record already durable, a store that fails or
/// is slow does not fail the request (the sealer writes it later), and a store known to be
/// down is not even tried; without one, the store's answer is the request's.
async fn store_pending(
    app: &App,
    key: &str,
    bytes: &bytes::Bytes,
    spooled: bool,
) -> Result<Stored, Error> {
    let m = &app.metrics;
    if spooled && !m.store_ok.load(Ordering::Relaxed) {
        return Ok(Stored::No);
    }
    let put = app.store.put_new_owned(key, bytes.clone());
    let outcome = if spooled {
        match tokio::time::timeout(app.store_ack_timeout, put).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {:?}",
                app.store_ack_timeout
            ))),
        }
    } else {
        put.await
    };
    match outcome {
        Ok(outcome) => {
            m.store_ok.store(true, Ordering::Relaxed);
            if outcome == PutOutcome::AlreadyStored {
                tracing::info!(key, "pending batch was already stored (retried write)");
            }
            Ok(Stored::Yes)
        }
        Err(StoreError::Conflict(_)) => {
            tracing::info!(
                key,
                "batch stored by an earlier attempt (a retried request)"
            );
            Ok(Stored::Earlier)
        }
        Err(e) => {
            m.storage_errors.inc();
            if matches!(e, StoreError::Unavailable(_) | StoreError::Io(_)) {
                m.store_ok.store(false, Ordering::Relaxed);
            }
            if spooled {
                tracing::warn!(key, error = %e, "store unavailable: batch kept in the spool");
                Ok(Stored::No)
            } else {
                Err(e.into())
            }
        }
    }
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
