//! Segment objects: the events of one webhook request, self-contained and readable with
//! jq or DuckDB, and their object keys.
//!
//! A segment is UTF-8 JSON Lines, every line RFC 8785 canonical JSON and ending in `\n`:
//!
//! ```text
//! {"checkpoint":"<signed note>","count":K,"first_index":I,"format":"sealtrail-segment/v1"}
//! {"event":{...canonical event...},"index":I,"proof":["<hex>",...]}
//! ...                                                     (K event lines, indexes I..I+K-1)
//! ```
//!
//! Each `proof` is the RFC 6962 inclusion proof of that event's leaf into the tree of the
//! header's checkpoint. A segment written by sealing a pending batch ([`crate::pending`])
//! has format `sealtrail-segment/v2` and three more header members that name the batch it
//! seals: `batch` (its object key), `batch_sha256` (the SHA-256 of its bytes, hex) and
//! `received_ms` (copied from it); its event lines are the batch's, in the batch's order. Object keys are `<prefix>segments/YYYY/MM/DD/HH/<first>-<last>.jsonl`
//! with the checkpoint's (signed) UTC time and zero-padded 20-digit indexes, so that
//! listing is in index order within an hour and a time range reads only its partitions.

use crate::Error;
use crate::checkpoint::SignedCheckpoint;
use crate::event::CanonicalEvent;
use crate::jcs::{self, Number, Object, Value};
use crate::merkle::{Hash, MAX_PROOF_HASHES, leaf_hash};
use std::io::Write as _;

/// The `format` value of version 1 segments (signed as received, before sealing existed).
pub const SEGMENT_FORMAT: &str = "sealtrail-segment/v1";
/// The `format` value of segments that seal a pending batch.
pub const SEALED_SEGMENT_FORMAT: &str = "sealtrail-segment/v2";
/// Largest segment object read (a 64 MiB webhook body makes a segment of about that size).
pub const MAX_SEGMENT_LEN: usize = 512 * 1024 * 1024;
/// Most events in one segment.
pub const MAX_SEGMENT_EVENTS: u64 = crate::event::MAX_EVENTS_PER_BATCH as u64;

/// Header line of a segment.
#[derive(Debug, Clone)]
pub struct SegmentHeader {
    pub checkpoint: SignedCheckpoint,
    pub count: u64,
    pub first_index: u64,
    /// The pending batch this segment seals (v2), or `None` (v1).
    pub sealed: Option<SealedFrom>,
}

/// What a v2 segment says of the pending batch it seals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedFrom {
    /// The pending batch's object key.
    pub batch: String,
    /// SHA-256 of the pending batch's bytes.
    pub batch_sha256: Hash,
    /// The pending batch's `received_ms`.
    pub received_ms: u64,
}

/// One event line as read back.
#[derive(Debug, Clone)]
pub struct Record {
    pub index: u64,
    pub proof: Vec<Hash>,
    /// Canonical bytes of the stored event (re-canonicalized by the reader).
    pub canonical: Vec<u8>,
    pub leaf_hash: Hash,
    pub audit_id: Option<String>,
    pub stage: Option<String>,
    pub stage_timestamp: Option<String>,
    /// `requestReceivedTimestamp`, when the event has it as a string.
    pub request_received_timestamp: Option<String>,
    /// `timestamp`, the single time of audit events before `audit.k8s.io/v1beta1` added the
    /// two above, when the event has it as a string.
    pub legacy_timestamp: Option<String>,
    /// Where the message came from, if the event is a damaged source event (§1.4).
    pub damaged_source: Option<crate::source::DamagedSource>,
}

/// Writes a segment. `proofs[i]` is the inclusion proof of `events[i]` (index
/// `first_index + i`) into `checkpoint`.
pub fn encode(
    first_index: u64,
    checkpoint: &SignedCheckpoint,
    events: &[CanonicalEvent],
    proofs: &[Vec<Hash>],
) -> Result<Vec<u8>, Error> {
    encode_with(first_index, checkpoint, None, events, proofs)
}

/// Writes a segment that seals a pending batch (format v2) or, with `sealed` `None`, a v1
/// segment.
pub fn encode_with(
    first_index: u64,
    checkpoint: &SignedCheckpoint,
    sealed: Option<&SealedFrom>,
    events: &[CanonicalEvent],
    proofs: &[Vec<Hash>],
) -> Result<Vec<u8>, Error> {
    let lines: Vec<&[u8]> = events.iter().map(|e| &e.canonical[..]).collect();
    encode_lines(first_index, checkpoint, sealed, &lines, proofs)
}

/// [`encode_with`] of events given as their canonical bytes (e.g. the lines of a pending
/// batch, which are exactly those bytes).
pub fn encode_lines(
    first_index: u64,
    checkpoint: &SignedCheckpoint,
    sealed: Option<&SealedFrom>,
    events: &[&[u8]],
    proofs: &[Vec<Hash>],
) -> Result<Vec<u8>, Error> {
    if events.len() != proofs.len() {
        return Err(Error::Segment(format!(
            "{} events but {} proofs",
            events.len(),
            proofs.len()
        )));
    }
    let mut header = Object::new();
    if let Some(s) = sealed {
        header.insert("batch", Value::String(s.batch.clone()));
        header.insert("batch_sha256", Value::String(hex::encode(s.batch_sha256)));
        header.insert(
            "received_ms",
            Value::Number(Number::from_u64(s.received_ms)),
        );
    }
    header.insert(
        "checkpoint",
        Value::String(String::from_utf8_lossy(&checkpoint.to_bytes()).into_owned()),
    );
    header.insert(
        "count",
        Value::Number(Number::from_u64(events.len() as u64)),
    );
    header.insert("first_index", Value::Number(Number::from_u64(first_index)));
    let format = if sealed.is_some() {
        SEALED_SEGMENT_FORMAT
    } else {
        SEGMENT_FORMAT
    };
    header.insert("format", Value::String(format.into()));
    let body_len: usize = events.iter().map(|e| e.len() + 40).sum::<usize>()
        + proofs.iter().map(|p| p.len() * 67).sum::<usize>();
    let mut out = Vec::with_capacity(body_len + 1024);
    Value::Object(header).write_canonical(&mut out);
    out.push(b'\n');
    for (i, (event, proof)) in events.iter().zip(proofs).enumerate() {
        write_record(&mut out, first_index + i as u64, event, proof);
        out.push(b'\n');
    }
    Ok(out)
}

/// An event line without its newline: the canonical JSON of
/// `{"event":…,"index":…,"proof":[…]}` (members already in RFC 8785 order).
fn write_record(out: &mut Vec<u8>, index: u64, canonical_event: &[u8], proof: &[Hash]) {
    out.extend_from_slice(b"{\"event\":");
    out.extend_from_slice(canonical_event);
    out.extend_from_slice(b",\"index\":");
    let _ = write!(out, "{index}");
    out.extend_from_slice(b",\"proof\":[");
    let mut hex_hash = [0u8; 2 * crate::merkle::HASH_LEN];
    for (j, h) in proof.iter().enumerate() {
        if j > 0 {
            out.push(b',');
        }
        out.push(b'"');
        // Cannot fail: the buffer is exactly twice the hash's length.
        let _ = hex::encode_to_slice(h, &mut hex_hash);
        out.extend_from_slice(&hex_hash);
        out.push(b'"');
    }
    out.extend_from_slice(b"]}");
}

/// Reads a segment's header; [`records`] then reads its lines one by one, so that one bad
/// line does not hide the others.
pub fn parse_header(bytes: &[u8]) -> Result<(SegmentHeader, &[u8]), Error> {
    let bad = |why: String| Error::Segment(why);
    if bytes.len() > MAX_SEGMENT_LEN {
        return Err(bad(format!(
            "{} bytes (max {MAX_SEGMENT_LEN})",
            bytes.len()
        )));
    }
    let end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| bad("no header line".into()))?;
    let header = jcs::parse(&bytes[..end])?;
    // One header, one spelling: unsigned members must not be rewritable in another form.
    if header.to_canonical() != bytes[..end] {
        return Err(bad("header is not in its canonical form".into()));
    }
    let obj = header
        .as_object()
        .ok_or_else(|| bad("header is not an object".into()))?;
    let v2 = match obj.get("format").and_then(Value::as_str) {
        Some(SEGMENT_FORMAT) => false,
        Some(SEALED_SEGMENT_FORMAT) => true,
        _ => return Err(bad("header: unknown format".into())),
    };
    let members: &[&str] = if v2 {
        &[
            "batch",
            "batch_sha256",
            "checkpoint",
            "count",
            "first_index",
            "format",
            "received_ms",
        ]
    } else {
        &["checkpoint", "count", "first_index", "format"]
    };
    expect_keys(obj, members).map_err(|e| bad(format!("header: {e}")))?;
    let sealed = if v2 {
        let batch = obj
            .get("batch")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("header: batch is not a string".into()))?
            .to_string();
        let batch_sha256 = obj
            .get("batch_sha256")
            .and_then(Value::as_str)
            .filter(|s| s.len() == 64 && !s.bytes().any(|b| b.is_ascii_uppercase()))
            .and_then(|s| hex::decode(s).ok())
            .and_then(|b| <Hash>::try_from(b).ok())
            .ok_or_else(|| bad("header: batch_sha256 is not 64 lowercase hex digits".into()))?;
        let received_ms = obj
            .get("received_ms")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("header: invalid received_ms".into()))?;
        Some(SealedFrom {
            batch,
            batch_sha256,
            received_ms,
        })
    } else {
        None
    };
    let count = obj
        .get("count")
        .and_then(Value::as_u64)
        .filter(|c| (1..=MAX_SEGMENT_EVENTS).contains(c))
        .ok_or_else(|| bad("header: invalid count".into()))?;
    let first_index = obj
        .get("first_index")
        .and_then(Value::as_u64)
        .filter(|f| f.checked_add(count).is_some())
        .ok_or_else(|| bad("header: invalid first_index".into()))?;
    let note = obj
        .get("checkpoint")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("header: checkpoint is not a string".into()))?;
    let checkpoint = SignedCheckpoint::parse(note.as_bytes())?;
    Ok((
        SegmentHeader {
            checkpoint,
            count,
            first_index,
            sealed,
        },
        &bytes[end + 1..],
    ))
}

/// The event lines after the header: (line number from 1 for the header, parsed record).
pub fn records(body: &[u8]) -> impl Iterator<Item = (usize, Result<Record, Error>)> + '_ {
    records_with_events(body).map(|(line, r)| (line, r.map(|(record, _)| record)))
}

/// [`records`], each with its event parsed: for a reader that looks into the events (a
/// search) without parsing them twice.
pub fn records_with_events(
    body: &[u8],
) -> impl Iterator<Item = (usize, Result<(Record, Value), Error>)> + '_ {
    body.split_inclusive(|b| *b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 2, parse_record(line)))
}

fn parse_record(line: &[u8]) -> Result<(Record, Value), Error> {
    let bad = |why: &str| Error::Segment(why.to_string());
    let line = line
        .strip_suffix(b"\n")
        .ok_or_else(|| bad("last line does not end in a newline (cut short?)"))?;
    let Value::Object(mut obj) = jcs::parse(line)? else {
        return Err(bad("line is not an object"));
    };
    expect_keys(&obj, &["event", "index", "proof"]).map_err(Error::Segment)?;
    let index = obj
        .get("index")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("invalid index"))?;
    let proof_values = obj
        .get("proof")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("proof is not an array"))?;
    if proof_values.len() > MAX_PROOF_HASHES {
        return Err(bad("proof too long"));
    }
    let proof = proof_values
        .iter()
        .map(|v| {
            v.as_str()
                .filter(|s| s.len() == 64)
                .and_then(|s| hex::decode(s).ok())
                .and_then(|b| <Hash>::try_from(b).ok())
                .ok_or_else(|| bad("proof hash is not 64 hex digits"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let event = obj.remove("event").ok_or_else(|| bad("no event"))?;
    let ev = event
        .as_object()
        .ok_or_else(|| bad("event is not an object"))?;
    let get = |k: &str| ev.get(k).and_then(Value::as_str).map(str::to_string);
    let (audit_id, stage, stage_timestamp) = (get("auditID"), get("stage"), get("stageTimestamp"));
    let request_received_timestamp = get("requestReceivedTimestamp");
    let legacy_timestamp = get("timestamp");
    let damaged_source = ev
        .get("annotations")
        .and_then(Value::as_object)
        .and_then(crate::source::damaged_source_of);
    let canonical = event.to_canonical();
    // One event, one stored form: a line rewritten into another spelling of the same JSON
    // (member order, escapes, spaces) is refused, not silently accepted.
    if !is_record_line(line, index, &canonical, &proof) {
        return Err(bad("line is not in its canonical form"));
    }
    let record = Record {
        index,
        proof,
        leaf_hash: leaf_hash(&canonical),
        canonical,
        audit_id,
        stage,
        stage_timestamp,
        request_received_timestamp,
        legacy_timestamp,
        damaged_source,
    };
    Ok((record, event))
}

/// Whether `line` is exactly what [`write_record`] writes for these parts, compared in
/// place (this runs once per stored event in the verifier: no allocation).
fn is_record_line(line: &[u8], index: u64, canonical_event: &[u8], proof: &[Hash]) -> bool {
    let mut digits = [0u8; 20];
    let mut n = digits.len();
    let mut v = index;
    loop {
        n -= 1;
        digits[n] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let rest = line
        .strip_prefix(&b"{\"event\":"[..])
        .and_then(|r| r.strip_prefix(canonical_event))
        .and_then(|r| r.strip_prefix(&b",\"index\":"[..]))
        .and_then(|r| r.strip_prefix(&digits[n..]))
        .and_then(|r| r.strip_prefix(&b",\"proof\":["[..]));
    let Some(mut rest) = rest else {
        return false;
    };
    let mut hex = [0u8; 64];
    for (j, h) in proof.iter().enumerate() {
        if j > 0 {
            let Some(r) = rest.strip_prefix(b",") else {
                return false;
            };
            rest = r;
        }
        if hex::encode_to_slice(h, &mut hex).is_err() {
            return false;
        }
        let Some(r) = rest
            .strip_prefix(b"\"")
            .and_then(|r| r.strip_prefix(&hex[..]))
            .and_then(|r| r.strip_prefix(b"\""))
        else {
            return false;
        };
        rest = r;
    }
    rest == b"]}"
}

fn expect_keys(obj: &Object, keys: &[&str]) -> Result<(), String> {
    if obj.len() != keys.len() || keys.iter().any(|k| obj.get(k).is_none()) {
        let got: Vec<&str> = obj.iter().map(|(k, _)| k).collect();
        return Err(format!("members {got:?}, expected {keys:?}"));
    }
    Ok(())
}

/// The UTC hour of a Unix millisecond time as the key partition `YYYY/MM/DD/HH`.
pub fn hour_partition(time_ms: u64) -> String {
    let t = i64::try_from(time_ms / 1000)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}/{:02}/{:02}/{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour()
    )
}

/// The object key of a segment.
pub fn object_key(prefix: &str, checkpoint_time_ms: u64, first_index: u64, count: u64) -> String {
    format!(
        "{prefix}segments/{}/{first_index:020}-{:020}.jsonl",
        hour_partition(checkpoint_time_ms),
        first_index + count.saturating_sub(1)
    )
}

/// The index range `(first, last)` a key names, if it is a segment key under `prefix`.
pub fn parse_object_key(prefix: &str, key: &str) -> Option<(u64, u64)> {
    let rest = key.strip_prefix(prefix)?.strip_prefix("segments/")?;
    let name = rest.rsplit('/').next()?;
    let (first, last) = name.strip_suffix(".jsonl")?.split_once('-')?;
    if first.len() != 20 || last.len() != 20 {
        return None;
    }
    Some((first.parse().ok()?, last.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_canonical_line_is_a_record() {
        let proof = [[0xabu8; 32], [0x01u8; 32]];
        let mut line = Vec::new();
        write_record(&mut line, 1234, br#"{"a":1}"#, &proof);
        line.push(b'\n');
        let rec = parse_record(&line).unwrap().0;
        assert_eq!((rec.index, rec.proof.len()), (1234, 2));
        let text = String::from_utf8(line).unwrap();
        for variant in [
            text.replace(r#"{"a":1}"#, r#"{ "a":1}"#),
            text.replace(",\"index\":1234", ",\"index\":01234"),
            text.replace("abab", "ABAB"),
            text.replace("]}", "] }"),
        ] {
            assert!(parse_record(variant.as_bytes()).is_err(), "{variant}");
        }
    }

    #[test]
    fn key_roundtrip() {
        let k = object_key("audit/", 1_764_221_736_123, 400, 400);
        assert_eq!(
            k,
            "audit/segments/2025/11/27/05/00000000000000000400-00000000000000000799.jsonl"
        );
        assert_eq!(parse_object_key("audit/", &k), Some((400, 799)));
        assert_eq!(parse_object_key("other/", &k), None);
    }
}
