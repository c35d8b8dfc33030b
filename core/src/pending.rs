//! Pending batches: one webhook request's events, stored immutably when they are
//! acknowledged and before they are signed (durable first, sealed later).
//!
//! A pending batch is UTF-8 JSON Lines, every line RFC 8785 canonical JSON ending in `\n`:
//!
//! ```text
//! {"count":K,"format":"sealtrail-pending/v1","received_ms":T}
//! {...canonical event...}
//! ...                                                          (K event lines)
//! ```
//!
//! `received_ms` is the ingester's clock when the request arrived (Unix milliseconds). The
//! object key is `<prefix>pending/YYYY/MM/DD/HH/<events digest>.jsonl`, both parts given by
//! the events alone (see [`object_key`]), so that an apiserver retry of the same batch —
//! which arrives later, so with another `received_ms` — lands on the same key and is
//! recognised as stored, not stored twice. The exact bytes are the local spool's record of
//! the batch. A sealed segment ([`crate::segment`], format v2) names the pending batch it
//! seals by key and by the SHA-256 of its bytes.

use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::event::{CanonicalEvent, MAX_EVENTS_PER_BATCH, parse_event_line};
use crate::jcs::{self, Number, Object, Value};
use crate::merkle::Hash;

/// The `format` value of version 1 pending batches.
pub const PENDING_FORMAT: &str = "sealtrail-pending/v1";
/// Where pending batches are stored, below the log's prefix.
pub const PENDING_PREFIX: &str = "pending/";
/// Largest pending batch read (a 64 MiB webhook body canonicalizes to about that much).
pub const MAX_PENDING_LEN: usize = 256 * 1024 * 1024;

/// A pending batch as read back.
#[derive(Debug, Clone)]
pub struct PendingBatch {
    /// When the ingester received the request, Unix milliseconds (its own clock).
    pub received_ms: u64,
    pub events: Vec<CanonicalEvent>,
    /// SHA-256 of the object's bytes.
    pub sha256: Hash,
}

/// Writes a pending batch; returns its bytes and their SHA-256.
pub fn encode(received_ms: u64, events: &[CanonicalEvent]) -> Result<(Vec<u8>, Hash), Error> {
    if events.is_empty() || events.len() > MAX_EVENTS_PER_BATCH {
        return Err(Error::Segment(format!(
            "a pending batch holds 1 to {MAX_EVENTS_PER_BATCH} events, not {}",
            events.len()
        )));
    }
    let mut header = Object::new();
    header.insert(
        "count",
        Value::Number(Number::from_u64(events.len() as u64)),
    );
    header.insert("format", Value::String(PENDING_FORMAT.into()));
    header.insert("received_ms", Value::Number(Number::from_u64(received_ms)));
    let len: usize = events.iter().map(|e| e.canonical.len() + 1).sum();
    let mut out = Vec::with_capacity(len + 80);
    Value::Object(header).write_canonical(&mut out);
    out.push(b'\n');
    for e in events {
        out.extend_from_slice(&e.canonical);
        out.push(b'\n');
    }
    let sha = Sha256::digest(&out).into();
    Ok((out, sha))
}

/// The header of a pending batch, checked: `(count, received_ms, where the events start)`.
fn parse_header(bytes: &[u8]) -> Result<(u64, u64, usize), Error> {
    let bad = |why: String| Error::Segment(format!("pending batch: {why}"));
    if bytes.len() > MAX_PENDING_LEN {
        return Err(bad(format!(
            "{} bytes (max {MAX_PENDING_LEN})",
            bytes.len()
        )));
    }
    let end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| bad("no header line".into()))?;
    let head = &bytes[..end];
    let header = jcs::parse(head)?;
    if header.to_canonical() != head {
        return Err(bad("header is not in its canonical form".into()));
    }
    let obj = header
        .as_object()
        .ok_or_else(|| bad("header is not an object".into()))?;
    let keys = ["count", "format", "received_ms"];
    if obj.len() != keys.len() || keys.iter().any(|k| obj.get(k).is_none()) {
        return Err(bad(format!("header members are not {keys:?}")));
    }
    if obj.get("format").and_then(Value::as_str) != Some(PENDING_FORMAT) {
        return Err(bad("unknown format".into()));
    }
    let count = obj
        .get("count")
        .and_then(Value::as_u64)
        .filter(|c| (1..=MAX_EVENTS_PER_BATCH as u64).contains(c))
        .ok_or_else(|| bad("invalid count".into()))?;
    let received_ms = obj
        .get("received_ms")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("invalid received_ms".into()))?;
    Ok((count, received_ms, end + 1))
}

/// The event lines of a pending batch (byte ranges, newline excluded) and its
/// `received_ms`, with the header checked as [`parse`] does and the lines counted, but the
/// events themselves not parsed: only for bytes already known to be a valid batch, such as
/// the ingester's own, read back and matched against the SHA-256 it computed when it wrote
/// them.
pub fn split_lines(bytes: &[u8]) -> Result<(u64, Vec<std::ops::Range<usize>>), Error> {
    let (count, received_ms, start) = parse_header(bytes)?;
    let mut lines = Vec::with_capacity(count as usize);
    let mut at = start;
    for line in bytes[start..].split_inclusive(|b| *b == b'\n') {
        let Some(body) = line.strip_suffix(b"\n") else {
            return Err(Error::Segment(
                "pending batch: last line has no newline".into(),
            ));
        };
        lines.push(at..at + body.len());
        at += line.len();
    }
    if lines.len() as u64 != count {
        return Err(Error::Segment(format!(
            "pending batch: {} event lines, header says {count}",
            lines.len()
        )));
    }
    Ok((received_ms, lines))
}

/// Reads a pending batch strictly: a canonical header of exactly these members, then
/// exactly `count` lines, each the canonical form of a stamped event.
pub fn parse(bytes: &[u8]) -> Result<PendingBatch, Error> {
    let bad = |why: String| Error::Segment(format!("pending batch: {why}"));
    let (count, received_ms, body_start) = parse_header(bytes)?;
    let body = &bytes[body_start..];
    let mut events = Vec::with_capacity(count as usize);
    for (i, line) in body.split_inclusive(|b| *b == b'\n').enumerate() {
        let line_no = i + 2;
        if events.len() as u64 == count {
            return Err(bad(format!(
                "line {line_no}: more lines than count {count}"
            )));
        }
        let line = line
            .strip_suffix(b"\n")
            .ok_or_else(|| bad(format!("line {line_no} does not end in a newline")))?;
        let event = parse_event_line(line).map_err(|e| bad(format!("line {line_no}: {e}")))?;
        if event.canonical != line {
            return Err(bad(format!(
                "line {line_no} is not a stamped event in its canonical form"
            )));
        }
        events.push(event);
    }
    if events.len() as u64 != count {
        return Err(bad(format!(
            "{} event lines, header says {count} (cut short?)",
            events.len()
        )));
    }
    Ok(PendingBatch {
        received_ms,
        events,
        sha256: Sha256::digest(bytes).into(),
    })
}

/// SHA-256 over the concatenated leaf hashes of a batch's events, in order: the identity of
/// its events.
pub fn events_digest<'a>(leaves: impl IntoIterator<Item = &'a Hash>) -> Hash {
    let mut h = Sha256::new();
    for l in leaves {
        h.update(l);
    }
    h.finalize().into()
}

/// The time whose UTC hour partitions a batch: its first event's `stageTimestamp` when that
/// is an RFC 3339 time, else `received_ms` (so a retry of the batch gets the same key).
pub fn partition_ms(events: &[CanonicalEvent], received_ms: u64) -> u64 {
    events
        .first()
        .and_then(|e| e.stage_timestamp.as_deref())
        .and_then(crate::event::parse_timestamp_micros)
        .and_then(|us| u64::try_from(us / 1000).ok())
        .unwrap_or(received_ms)
}

/// The object key of a pending batch: the hour of [`partition_ms`] and the
/// [`events_digest`].
pub fn object_key(prefix: &str, events: &[CanonicalEvent], received_ms: u64) -> String {
    format!(
        "{prefix}{PENDING_PREFIX}{}/{}.jsonl",
        crate::segment::hour_partition(partition_ms(events, received_ms)),
        hex::encode(events_digest(events.iter().map(|e| &e.leaf_hash)))
    )
}

/// The hour partition (`YYYY/MM/DD/HH`) and the events digest a pending batch key names, if
/// it is a pending key under `prefix`.
pub fn parse_object_key<'a>(prefix: &str, key: &'a str) -> Option<(&'a str, Hash)> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(PENDING_PREFIX)?;
    let (hour, name) = rest.rsplit_once('/')?;
    let parts: Vec<&str> = hour.split('/').collect();
    let widths = [4, 2, 2, 2];
    if parts.len() != 4
        || parts
            .iter()
            .zip(widths)
            .any(|(p, w)| p.len() != w || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let hex_digest = name.strip_suffix(".jsonl")?;
    if hex_digest.len() != 64 || hex_digest.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let digest = <Hash>::try_from(hex::decode(hex_digest).ok()?).ok()?;
    Some((hour, digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_event_list;

    fn events() -> Vec<CanonicalEvent> {
        let body = br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"auditID":"a","stage":"ResponseComplete","stageTimestamp":"2026-01-01T00:00:00.000000Z"},{"auditID":"b","stage":"RequestReceived"}]}"#;
        parse_event_list(body).unwrap().events
    }

    #[test]
    fn roundtrip_and_key() {
        let evs = events();
        let (bytes, sha) = encode(1_767_300_000_000, &evs).unwrap();
        let p = parse(&bytes).unwrap();
        assert_eq!(p.events, evs);
        assert_eq!((p.received_ms, p.sha256), (1_767_300_000_000, sha));
        // Partitioned by the first event's time, named by the events: a retry (later
        // receipt) gets the same key.
        let key = object_key("c1/", &p.events, p.received_ms);
        assert_eq!(
            key,
            object_key("c1/", &p.events, p.received_ms + 99_999_999)
        );
        assert!(key.starts_with("c1/pending/2026/01/01/00/"), "{key}");
        let digest = events_digest(evs.iter().map(|e| &e.leaf_hash));
        assert_eq!(
            parse_object_key("c1/", &key),
            Some(("2026/01/01/00", digest))
        );
        assert_eq!(
            partition_ms(&evs[1..], 1_767_300_000_000),
            1_767_300_000_000
        );
        assert_eq!(parse_object_key("c2/", &key), None);
        assert_eq!(parse_object_key("c1/", &key.replace("/00/", "/0/")), None);
        assert!(encode(1, &[]).is_err());
    }

    #[test]
    fn only_the_exact_bytes_parse() {
        let (bytes, _) = encode(5, &events()).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let variants = [
            text.replace("\"count\":2", "\"count\":3"),
            text.replace("\"count\":2", "\"count\":1"),
            text.replace("{\"count\"", "{ \"count\""),
            text.replace("\"auditID\":\"a\"", "\"auditID\": \"a\""),
            text.replace(",\"kind\":\"Event\"", ""),
            text.replacen("\"received_ms\":5}", "\"received_ms\":5,\"x\":1}", 1),
            text.trim_end_matches('\n').to_string(),
            format!("{text}{{}}\n"),
            text.replace("sealtrail-pending/v1", "sealtrail-pending/v2"),
        ];
        for v in variants {
            assert!(parse(v.as_bytes()).is_err(), "{v}");
        }
        assert!(parse(&bytes).is_ok());
    }

    /// The lines split_lines finds are exactly the canonical events, and it refuses what
    /// does not have the shape of a batch (the events themselves it leaves unchecked).
    #[test]
    fn split_lines_finds_the_canonical_events() {
        let evs = events();
        let (bytes, _) = encode(5, &evs).unwrap();
        let (ms, lines) = split_lines(&bytes).unwrap();
        assert_eq!(ms, 5);
        let got: Vec<&[u8]> = lines.iter().map(|l| &bytes[l.clone()]).collect();
        let want: Vec<&[u8]> = evs.iter().map(|e| &e.canonical[..]).collect();
        assert_eq!(got, want);
        let text = String::from_utf8(bytes).unwrap();
        for v in [
            text.replace("\"count\":2", "\"count\":3"),
            text.replace("\"count\":2", "\"count\":1"),
            text.trim_end_matches('\n').to_string(),
            text.replace("sealtrail-pending/v1", "sealtrail-pending/v2"),
            String::new(),
        ] {
            assert!(split_lines(v.as_bytes()).is_err(), "{v}");
        }
    }
}
