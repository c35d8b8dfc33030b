//! The strict reader of bundle files (docs/FORMAT.md §8.1): each limit is checked before
//! the work it bounds, and a file is accepted only in its one canonical spelling.

use crate::Error;
use crate::checkpoint::{SignedCheckpoint, is_valid_origin};
use crate::jcs::{self, Object, Value};
use crate::merkle::{Hash, MAX_PROOF_HASHES};

use super::{
    Bundle, BundleEvent, BundleTimestamp, Consistency, ConsistencyProof, EventFields,
    MAX_BUNDLE_CHECKPOINTS, MAX_BUNDLE_EVENTS, MAX_BUNDLE_LEN, MAX_BUNDLE_ROTATIONS,
    MAX_BUNDLE_TIMESTAMPS, PROOF_FORMAT, Selection, only_members,
};

/// The members of the bundle object that are always there.
const MEMBERS: &[&str] = &[
    "checkpoints",
    "consistency",
    "events",
    "format",
    "origin",
    "rotations",
    "selection",
];

impl Bundle {
    /// Parses a bundle file strictly: the size limit first, then strict JSON (duplicate
    /// members refused), exactly the members of the format, the counts within the limits
    /// before any decoding, every note a canonical signed checkpoint of the bundle's origin,
    /// the orders and references of [`Bundle::check_structure`], and finally the bytes must
    /// be exactly [`Bundle::encode`] of what was read (one bundle, one byte string).
    /// Nothing is verified against keys or proofs here.
    ///
    /// Errors: [`Error::Bundle`] saying what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        parse_bundle(bytes).map_err(Error::Bundle)
    }
}

fn parse_bundle(bytes: &[u8]) -> Result<Bundle, String> {
    if bytes.len() > MAX_BUNDLE_LEN {
        return Err(format!("{} bytes (max {MAX_BUNDLE_LEN})", bytes.len()));
    }
    let json = bytes
        .strip_suffix(b"\n")
        .ok_or("does not end in a newline")?;
    let value = jcs::parse(json).map_err(|e| e.to_string())?;
    let top = value.as_object().ok_or("not a JSON object")?;
    if top.get("format").and_then(Value::as_str) != Some(PROOF_FORMAT) {
        return Err(format!("format is not {PROOF_FORMAT:?}"));
    }
    only_members(top, MEMBERS, &["timestamps"], "bundle")?;
    // Every count is checked before any entry is decoded.
    let checkpoint_values = array(top, "checkpoints", 1, MAX_BUNDLE_CHECKPOINTS)?;
    let event_values = array(top, "events", 1, MAX_BUNDLE_EVENTS)?;
    let rotation_values = array(top, "rotations", 0, MAX_BUNDLE_ROTATIONS)?;
    let timestamp_values = match top.get("timestamps") {
        None => &[][..],
        Some(_) => array(top, "timestamps", 1, MAX_BUNDLE_TIMESTAMPS)?,
    };
    let origin = top
        .get("origin")
        .and_then(Value::as_str)
        .filter(|o| is_valid_origin(o))
        .ok_or("origin is not a valid log origin")?
        .to_string();
    let selection = Selection::from_value(top.get("selection").unwrap_or(&Value::Null))?;
    let checkpoints = parse_notes(checkpoint_values, "checkpoints", &origin)?;
    let rotations = parse_notes(rotation_values, "rotations", &origin)?;
    let events = event_values
        .iter()
        .enumerate()
        .map(|(i, v)| parse_event(v).map_err(|e| format!("events[{i}]: {e}")))
        .collect::<Result<Vec<_>, String>>()?;
    let timestamps = timestamp_values
        .iter()
        .enumerate()
        .map(|(i, v)| parse_timestamp(v).map_err(|e| format!("timestamps[{i}]: {e}")))
        .collect::<Result<Vec<_>, String>>()?;
    let consistency = match top.get("consistency") {
        Some(Value::Null) | None => None,
        Some(v) => Some(parse_consistency(v).map_err(|e| format!("consistency: {e}"))?),
    };
    let bundle = Bundle {
        origin,
        selection,
        checkpoints,
        rotations,
        consistency,
        events,
        timestamps,
    };
    bundle.structure_problem()?;
    if bundle.encode() != bytes {
        return Err("not in canonical form (RFC 8785 JSON and one final newline)".into());
    }
    Ok(bundle)
}

/// The array member `k`, with `min` to `max` entries.
fn array<'a>(top: &'a Object, k: &str, min: usize, max: usize) -> Result<&'a [Value], String> {
    let a = top
        .get(k)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{k} is not an array"))?;
    if a.len() > max || a.len() < min {
        return Err(format!("{} {k} ({min} to {max} allowed)", a.len()));
    }
    Ok(a)
}

/// Signed notes, each a canonical checkpoint of `origin`.
fn parse_notes(
    values: &[Value],
    what: &str,
    origin: &str,
) -> Result<Vec<SignedCheckpoint>, String> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let note = v
                .as_str()
                .ok_or_else(|| format!("{what}[{i}] is not a string"))?;
            let sc = SignedCheckpoint::parse(note.as_bytes())
                .map_err(|e| format!("{what}[{i}]: {e}"))?;
            if sc.checkpoint.origin != origin {
                return Err(format!(
                    "{what}[{i}] is of log {:?}, the bundle of {origin:?}",
                    sc.checkpoint.origin
                ));
            }
            Ok(sc)
        })
        .collect()
}

fn parse_event(v: &Value) -> Result<BundleEvent, String> {
    let o = v.as_object().ok_or("not an object")?;
    only_members(
        o,
        &["checkpoint", "event", "index", "proof"],
        &[],
        "event entry",
    )?;
    let event = o.get("event").ok_or("no event")?;
    Ok(BundleEvent {
        index: o
            .get("index")
            .and_then(Value::as_u64)
            .ok_or("index is not an unsigned integer")?,
        checkpoint: parse_hash(o.get("checkpoint")).ok_or("checkpoint is not 64 hex digits")?,
        fields: EventFields::read(event)?,
        canonical: event.to_canonical(),
        proof: parse_hashes(o.get("proof"))?,
    })
}

fn parse_timestamp(v: &Value) -> Result<BundleTimestamp, String> {
    use base64::Engine as _;
    let o = v.as_object().ok_or("not an object")?;
    only_members(o, &["checkpoint", "token", "tsa"], &[], "timestamp entry")?;
    let token = o
        .get("token")
        .and_then(Value::as_str)
        .ok_or("token is not a string")?;
    // Counted before decoding: base64 of the largest token.
    if token.len() > crate::timestamp::MAX_TOKEN_LEN.div_ceil(3) * 4 {
        return Err(format!("a token of {} base64 characters", token.len()));
    }
    Ok(BundleTimestamp {
        checkpoint: parse_hash(o.get("checkpoint")).ok_or("checkpoint is not 64 hex digits")?,
        tsa: o
            .get("tsa")
            .and_then(Value::as_str)
            .ok_or("tsa is not a string")?
            .to_string(),
        token: base64::engine::general_purpose::STANDARD
            .decode(token)
            .map_err(|e| format!("token: {e}"))?,
    })
}

fn parse_consistency(v: &Value) -> Result<Consistency, String> {
    let o = v.as_object().ok_or("not an object or null")?;
    only_members(o, &["head", "proofs"], &[], "consistency")?;
    let head = parse_hash(o.get("head")).ok_or("head is not 64 hex digits")?;
    let values = o
        .get("proofs")
        .and_then(Value::as_array)
        .ok_or("proofs is not an array")?;
    if values.len() >= MAX_BUNDLE_CHECKPOINTS {
        return Err(format!("{} proofs", values.len()));
    }
    let proofs = values
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let po = p
                .as_object()
                .ok_or_else(|| format!("proofs[{i}] is not an object"))?;
            only_members(po, &["from", "proof"], &[], "consistency proof")?;
            Ok(ConsistencyProof {
                from: parse_hash(po.get("from"))
                    .ok_or_else(|| format!("proofs[{i}].from is not 64 hex digits"))?,
                proof: parse_hashes(po.get("proof")).map_err(|e| format!("proofs[{i}]: {e}"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Consistency { head, proofs })
}

/// 64 lowercase hex digits.
fn parse_hash(v: Option<&Value>) -> Option<Hash> {
    let s = v?.as_str()?;
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    hex::decode(s).ok()?.try_into().ok()
}

/// A proof: at most [`MAX_PROOF_HASHES`] hashes, counted before any is decoded.
fn parse_hashes(v: Option<&Value>) -> Result<Vec<Hash>, String> {
    let a = v.and_then(Value::as_array).ok_or("proof is not an array")?;
    if a.len() > MAX_PROOF_HASHES {
        return Err(format!(
            "proof of {} hashes (max {MAX_PROOF_HASHES})",
            a.len()
        ));
    }
    a.iter()
        .map(|h| parse_hash(Some(h)).ok_or_else(|| "proof hash is not 64 hex digits".to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hashes_are_64_lowercase_hex_digits() {
        let h = |s: &str| parse_hash(Some(&Value::String(s.into())));
        assert_eq!(h(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(h(&"AB".repeat(32)), None);
        assert_eq!(h(&"ab".repeat(31)), None);
        assert_eq!(h(&"zz".repeat(32)), None);
    }

    #[test]
    fn limits_are_checked_before_decoding() {
        let too_long = Value::Array(vec![Value::Null; MAX_PROOF_HASHES + 1]);
        assert!(
            parse_hashes(Some(&too_long))
                .unwrap_err()
                .starts_with("proof of 65 hashes")
        );
        assert!(Bundle::parse(b"{}").is_err(), "no final newline");
    }
}
