//! Events a source damaged, kept as evidence (docs/FORMAT.md §1.4).
//!
//! CloudWatch Logs cuts a message longer than its limit short, so an audit event that
//! large reaches the source as a string that is not JSON. It must not be dropped silently,
//! nor stored as if it were the event: the source wraps it in an audit `Event` of its own,
//! marked by the annotation [`DAMAGED_ANNOTATION`], that carries where it came from and the
//! message as received. It is a leaf like any other; the verifier reports each one
//! (`truncated_source_event`).

use sha2::{Digest as _, Sha256};

/// The annotation that marks a damaged source event; its value names the source.
pub const DAMAGED_ANNOTATION: &str = "sealtrail.dev/damaged-source";
/// The annotations that say where the message came from, and hold it.
pub const LOG_GROUP_ANNOTATION: &str = "sealtrail.dev/source-log-group";
pub const LOG_STREAM_ANNOTATION: &str = "sealtrail.dev/source-log-stream";
pub const EVENT_ID_ANNOTATION: &str = "sealtrail.dev/source-event-id";
pub const MESSAGE_SHA256_ANNOTATION: &str = "sealtrail.dev/source-message-sha256";
pub const MESSAGE_ANNOTATION: &str = "sealtrail.dev/source-message";
/// `user.username` of a damaged source event: no user of the cluster can be named.
pub const DAMAGED_USER: &str = "sealtrail:damaged-source-event";

/// Where a damaged message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedSource {
    pub source: String,
    pub log_group: String,
    pub log_stream: String,
    pub event_id: String,
}

/// The audit event (JSON, one line) that keeps a damaged message: `auditID` is derived
/// from the source and its event id (so the same message always gives the same event), both
/// timestamps are the source's timestamp.
pub fn damaged_event(from: &DamagedSource, timestamp_ms: i64, message: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    for part in [&from.source, &from.log_group, &from.event_id] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let d = hex::encode(&h.finalize()[..16]);
    let audit_id = format!(
        "{}-{}-{}-{}-{}",
        &d[..8],
        &d[8..12],
        &d[12..16],
        &d[16..20],
        &d[20..32]
    );
    let time = micro_time(timestamp_ms);
    let event = serde_json::json!({
        "kind": "Event",
        "apiVersion": crate::event::DEFAULT_API_VERSION,
        "level": "Metadata",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "requestURI": "",
        "verb": "",
        "user": { "username": DAMAGED_USER },
        "requestReceivedTimestamp": time,
        "stageTimestamp": time,
        "annotations": {
            DAMAGED_ANNOTATION: from.source,
            LOG_GROUP_ANNOTATION: from.log_group,
            LOG_STREAM_ANNOTATION: from.log_stream,
            EVENT_ID_ANNOTATION: from.event_id,
            MESSAGE_SHA256_ANNOTATION: hex::encode(Sha256::digest(message.as_bytes())),
            MESSAGE_ANNOTATION: message,
        },
    });
    event.to_string().into_bytes()
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` of Unix milliseconds, as the apiserver writes times
/// (times before 1970 or past 9999 are clamped).
pub fn micro_time(ms: i64) -> String {
    let ms = ms.clamp(0, 253_402_300_799_999);
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// The source named by a stored event's `annotations`, if it is a damaged source event.
pub fn damaged_source_of(annotations: &crate::jcs::Object) -> Option<DamagedSource> {
    let s = |k: &str| {
        annotations
            .get(k)
            .and_then(crate::jcs::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let source = annotations
        .get(DAMAGED_ANNOTATION)
        .and_then(crate::jcs::Value::as_str)?
        .to_string();
    Some(DamagedSource {
        source,
        log_group: s(LOG_GROUP_ANNOTATION),
        log_stream: s(LOG_STREAM_ANNOTATION),
        event_id: s(EVENT_ID_ANNOTATION),
    })
}

/// The source of an event (as JSON), if it is a damaged source event.
pub fn damaged_source(event: &serde_json::Value) -> Option<DamagedSource> {
    let a = event.get("annotations")?.as_object()?;
    let s = |k: &str| {
        a.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let source = a.get(DAMAGED_ANNOTATION)?.as_str()?.to_string();
    Some(DamagedSource {
        source,
        log_group: s(LOG_GROUP_ANNOTATION),
        log_stream: s(LOG_STREAM_ANNOTATION),
        event_id: s(EVENT_ID_ANNOTATION),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_damaged_message_is_an_event_that_names_it() {
        let from = DamagedSource {
            source: "cloudwatch".into(),
            log_group: "/aws/eks/demo/cluster".into(),
            log_stream: "kube-apiserver-audit-0123".into(),
            event_id: "37516444276576032107271244188253845372110944882478530560".into(),
        };
        let cut = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","req"#;
        let line = damaged_event(&from, 1_764_221_735_915, cut);
        let e = crate::event::parse_event_line(&line).unwrap();
        assert_eq!(
            e.stage_timestamp.as_deref(),
            Some("2025-11-27T05:35:35.915000Z")
        );
        assert_eq!(line, damaged_event(&from, 1_764_221_735_915, cut));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(damaged_source(&v), Some(from));
        assert_eq!(v["annotations"][MESSAGE_ANNOTATION], cut);
        assert!(damaged_source(&serde_json::json!({"annotations": {}})).is_none());
        assert_eq!(micro_time(-5), "1970-01-01T00:00:00.000000Z");
    }
}
