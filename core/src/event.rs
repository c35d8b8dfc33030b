//! Audit events as the apiserver sends them, and their canonical form.
//!
//! The webhook backend posts `{"kind":"EventList","apiVersion":"audit.k8s.io/v1",
//! "metadata":{},"items":[...]}` whose items carry no `kind`/`apiVersion`; the log-file
//! backend writes each event on its own line *with* them. Each item is stamped with
//! `"kind":"Event"` and the list's `apiVersion` before canonicalization, so that an event
//! has one digest whichever backend wrote it. Nothing else is added, removed or reordered
//! semantically: every member the apiserver sent is kept, unknown ones included.

use crate::Error;
use crate::jcs::{self, Object, Value};
use crate::merkle::{Hash, leaf_hash};

/// Most events accepted in one batch (the apiserver's default batch is 400).
pub const MAX_EVENTS_PER_BATCH: usize = 10_000;
/// `apiVersion`s of `audit.k8s.io` event lists accepted.
pub const SUPPORTED_API_VERSIONS: [&str; 2] = ["audit.k8s.io/v1", "audit.k8s.io/v1beta1"];
/// The `apiVersion` stamped on a lone event that has none.
pub const DEFAULT_API_VERSION: &str = "audit.k8s.io/v1";
/// Longest `auditID` accepted (a UUID is 36).
pub const MAX_AUDIT_ID_LEN: usize = 256;

/// One event in canonical form, with what the trail needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalEvent {
    /// RFC 8785 bytes of the stamped event (docs/FORMAT.md, "Canonical event").
    pub canonical: Vec<u8>,
    /// SHA-256(0x00 ‖ canonical): the Merkle leaf.
    pub leaf_hash: Hash,
    pub audit_id: String,
    pub stage: String,
    /// `stageTimestamp` as sent (MicroTime, RFC 3339), if any.
    pub stage_timestamp: Option<String>,
}

/// A decoded `EventList`.
#[derive(Debug, Clone)]
pub struct EventBatch {
    pub api_version: String,
    pub events: Vec<CanonicalEvent>,
}

/// Parses a webhook body (`EventList`) and canonicalizes every item. Any problem with any
/// item refuses the whole batch: the apiserver re-sends batches whole.
pub fn parse_event_list(body: &[u8]) -> Result<EventBatch, Error> {
    // Items are canonicalized as the parser completes them, once `kind` and `apiVersion`
    // came first (as Go's encoder writes them): the body's whole tree, several times the
    // body's size, is never held. Items before them wait in the tree and are done below.
    let mut events = Vec::new();
    let mut scratch = Vec::new();
    let mut early = |top: &[(String, Value)], index: usize, item: Value| {
        if index >= MAX_EVENTS_PER_BATCH {
            return Err(too_many(format!("more than {MAX_EVENTS_PER_BATCH}")));
        }
        let member = |name: &str| {
            top.iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.as_str())
        };
        match (member("kind"), member("apiVersion")) {
            (Some("EventList"), Some(v)) if SUPPORTED_API_VERSIONS.contains(&v) => {
                events.push(canonical_event_in(item, v, index, Some(&mut scratch))?);
                Ok(None)
            }
            _ => Ok(Some(item)),
        }
    };
    let value = jcs::parse_with_items(body, "items", &mut early)?;
    let Value::Object(mut list) = value else {
        return Err(Error::Batch("body is not a JSON object".into()));
    };
    match list.get("kind").and_then(Value::as_str) {
        Some("EventList") => {}
        Some(other) => {
            return Err(Error::Batch(format!(
                "kind is {other:?}, not \"EventList\""
            )));
        }
        None => return Err(Error::Batch("no kind (expected \"EventList\")".into())),
    }
    let api_version = match list.get("apiVersion").and_then(Value::as_str) {
        Some(v) if SUPPORTED_API_VERSIONS.contains(&v) => v.to_string(),
        Some(v) => return Err(Error::Batch(format!("unsupported apiVersion {v:?}"))),
        None => return Err(Error::Batch("no apiVersion".into())),
    };
    let items = match list.remove("items") {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(_) => return Err(Error::Batch("items is not an array".into())),
    };
    if events.len() + items.len() > MAX_EVENTS_PER_BATCH {
        return Err(too_many((events.len() + items.len()).to_string()));
    }
    for item in items {
        let index = events.len();
        events.push(canonical_event_in(
            item,
            &api_version,
            index,
            Some(&mut scratch),
        )?);
    }
    Ok(EventBatch {
        api_version,
        events,
    })
}

fn too_many(n: String) -> Error {
    Error::Limit(format!(
        "{n} events in one batch (max {MAX_EVENTS_PER_BATCH})"
    ))
}

/// Canonicalizes one event line as the log-file backend writes it (with `kind` and
/// `apiVersion`); a missing `kind` is stamped `Event` and a missing `apiVersion`
/// [`DEFAULT_API_VERSION`], as the webhook path would.
pub fn parse_event_line(line: &[u8]) -> Result<CanonicalEvent, Error> {
    let value = jcs::parse(line)?;
    let api_version = line_api_version(&value)?;
    canonical_event(value, &api_version, 0)
}

/// Whether [`parse_event_line`] accepts `line`, without canonicalizing it: its
/// `apiVersion` (stamped as there) if so. For a source that only has to tell a whole event
/// from a damaged one, and batch events by `apiVersion`.
pub fn check_event_line(line: &[u8]) -> Result<String, Error> {
    let value = jcs::parse(line)?;
    let api_version = line_api_version(&value)?;
    let Value::Object(mut obj) = value else {
        return Err(Error::Event {
            index: 0,
            reason: "item is not a JSON object".into(),
        });
    };
    stamped_fields(&mut obj, &api_version).map_err(|reason| Error::Event { index: 0, reason })?;
    Ok(api_version)
}

fn line_api_version(value: &Value) -> Result<String, Error> {
    let api_version = value
        .as_object()
        .and_then(|o| o.get("apiVersion"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_API_VERSION)
        .to_string();
    if !SUPPORTED_API_VERSIONS.contains(&api_version.as_str()) {
        return Err(Error::Event {
            index: 0,
            reason: format!("unsupported apiVersion {api_version:?}"),
        });
    }
    Ok(api_version)
}

/// Stamps `kind` and `apiVersion` and reads the members every event must have: its
/// auditID, stage and stageTimestamp (if any).
fn stamped_fields(
    obj: &mut Object,
    api_version: &str,
) -> Result<(String, String, Option<String>), String> {
    stamp(obj, "kind", "Event")?;
    stamp(obj, "apiVersion", api_version)?;
    let audit_id = required_str(obj, "auditID")?;
    if audit_id.is_empty() || audit_id.len() > MAX_AUDIT_ID_LEN {
        return Err(format!("auditID of {} bytes", audit_id.len()));
    }
    let stage = required_str(obj, "stage")?;
    let stage_timestamp = match obj.get("stageTimestamp") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("stageTimestamp is not a string".into()),
    };
    Ok((audit_id, stage, stage_timestamp))
}

/// Stamps and canonicalizes one event. `index` is its position in the batch (for errors).
pub fn canonical_event(
    item: Value,
    api_version: &str,
    index: usize,
) -> Result<CanonicalEvent, Error> {
    canonical_event_in(item, api_version, index, None)
}

/// [`canonical_event`], written through `scratch` (a buffer reused across the events of
/// a batch) when one is given, then copied at its exact size: growing each event's own
/// buffer reallocates a dozen times and keeps up to twice its size for as long as the
/// batch waits to be sealed.
fn canonical_event_in(
    item: Value,
    api_version: &str,
    index: usize,
    scratch: Option<&mut Vec<u8>>,
) -> Result<CanonicalEvent, Error> {
    let bad = |reason: String| Error::Event { index, reason };
    let Value::Object(mut obj) = item else {
        return Err(bad("item is not a JSON object".into()));
    };
    let (audit_id, stage, stage_timestamp) = stamped_fields(&mut obj, api_version).map_err(bad)?;
    let value = Value::Object(obj);
    let canonical = match scratch {
        Some(buf) => {
            buf.clear();
            value.write_canonical(buf);
            buf.clone()
        }
        None => value.to_canonical(),
    };
    Ok(CanonicalEvent {
        leaf_hash: leaf_hash(&canonical),
        canonical,
        audit_id,
        stage,
        stage_timestamp,
    })
}

fn stamp(obj: &mut Object, key: &str, want: &str) -> Result<(), String> {
    match obj.get(key) {
        None => {
            obj.insert(key, Value::String(want.to_string()));
            Ok(())
        }
        Some(Value::String(s)) if s == want => Ok(()),
        Some(other) => Err(format!(
            "{key} is {}, expected {want:?}",
            String::from_utf8_lossy(&other.to_canonical())
        )),
    }
}

fn required_str(obj: &Object, key: &str) -> Result<String, String> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{key} is not a string")),
        None => Err(format!("no {key}")),
    }
}

/// Parses a Kubernetes MicroTime / RFC 3339 timestamp into Unix microseconds.
pub fn parse_timestamp_micros(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &str) -> Vec<u8> {
        format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{items}]}}"#
        )
        .into_bytes()
    }

    /// Items canonicalized as they are parsed give exactly what the whole tree gives, in
    /// whatever order the list's members come, and refuse what it refuses.
    #[test]
    fn items_canonicalized_while_parsing_agree_with_the_tree() {
        let items = r#"{"auditID":"a","stage":"x","n":1},{"stage":"y","auditID":"b"}"#;
        let v1 = "audit.k8s.io/v1";
        let bodies = [
            format!(
                r#"{{"kind":"EventList","apiVersion":"{v1}","metadata":{{}},"items":[{items}]}}"#
            ),
            format!(r#"{{"items":[{items}],"apiVersion":"{v1}","kind":"EventList"}}"#),
            format!(r#"{{"apiVersion":"{v1}","items":[{items}],"kind":"EventList"}}"#),
        ];
        let want = parse_event_list(bodies[0].as_bytes()).unwrap();
        assert_eq!(want.events.len(), 2);
        assert_eq!(want.events[1].audit_id, "b");
        for b in &bodies {
            let got = parse_event_list(b.as_bytes()).unwrap();
            let pairs = got.events.iter().zip(&want.events);
            assert!(
                pairs
                    .clone()
                    .all(|(g, w)| g.canonical == w.canonical && g.leaf_hash == w.leaf_hash)
            );
            assert_eq!(got.events.len(), want.events.len());
        }
        // The same refusals: a bad item, a wrong kind after the items, a duplicate list key.
        for b in [
            format!(r#"{{"kind":"EventList","apiVersion":"{v1}","items":[{{"auditID":"a"}}]}}"#),
            format!(r#"{{"items":[{items}],"kind":"Pod","apiVersion":"{v1}"}}"#),
            format!(r#"{{"kind":"EventList","apiVersion":"{v1}","items":[{items}],"items":[]}}"#),
            format!(r#"{{"kind":"EventList","apiVersion":"{v1}","items":[{items}]"#),
        ] {
            assert!(parse_event_list(b.as_bytes()).is_err(), "{b}");
        }
    }

    /// A list over the item limit is refused while parsing, before the rest is read.
    #[test]
    fn the_item_limit_stops_the_parse() {
        let one = r#"{"auditID":"a","stage":"x"}"#;
        let mut items = vec![one; MAX_EVENTS_PER_BATCH + 1].join(",");
        // Broken after the limit: only the limit can have stopped it.
        items.push_str(",{");
        let e = parse_event_list(&list(&items)).unwrap_err();
        assert!(matches!(e, Error::Limit(_)), "{e}");
    }

    /// The check without canonicalizing accepts exactly what parse_event_line accepts.
    #[test]
    fn checking_agrees_with_parsing() {
        for line in [
            &br#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","stage":"x"}"#[..],
            br#"{"auditID":"a","stage":"x"}"#,
            br#"{"apiVersion":"audit.k8s.io/v1beta1","auditID":"a","stage":"x"}"#,
            br#"{"kind":"Pod","auditID":"a","stage":"x"}"#,
            br#"{"apiVersion":"v1","auditID":"a","stage":"x"}"#,
            br#"{"auditID":"","stage":"x"}"#,
            br#"{"auditID":"a"}"#,
            br#"{"auditID":"a","stage":"x","stageTimestamp":1}"#,
            br#"{"auditID":"a","stage":"x","auditID":"b"}"#,
            br#"{"auditID":"a","st"#,
            br#"[1]"#,
        ] {
            let parsed = parse_event_line(line);
            let checked = check_event_line(line);
            assert_eq!(
                parsed.is_ok(),
                checked.is_ok(),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            check_event_line(br#"{"apiVersion":"audit.k8s.io/v1beta1","auditID":"a","stage":"x"}"#)
                .unwrap(),
            "audit.k8s.io/v1beta1"
        );
    }

    #[test]
    fn stamps_kind_and_api_version() {
        let b =
            parse_event_list(&list(r#"{"auditID":"a","stage":"ResponseComplete","z":1}"#)).unwrap();
        assert_eq!(
            String::from_utf8(b.events[0].canonical.clone()).unwrap(),
            r#"{"apiVersion":"audit.k8s.io/v1","auditID":"a","kind":"Event","stage":"ResponseComplete","z":1}"#
        );
        // The same event as the log-file backend writes it has the same digest.
        let line = parse_event_line(
            br#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","z":1,"stage":"ResponseComplete","auditID":"a"}"#,
        )
        .unwrap();
        assert_eq!(line.leaf_hash, b.events[0].leaf_hash);
    }

    #[test]
    fn refuses_bad_batches() {
        for body in [
            br#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","items":[]}"#.to_vec(),
            br#"{"kind":"EventList","apiVersion":"v1","items":[]}"#.to_vec(),
            br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":{}}"#.to_vec(),
            br#"[]"#.to_vec(),
            list("1"),
            list(r#"{"stage":"ResponseComplete"}"#),
            list(r#"{"auditID":"a"}"#),
            list(r#"{"auditID":"a","stage":"x","kind":"Pod"}"#),
            list(r#"{"auditID":"a","stage":"x","apiVersion":"audit.k8s.io/v1beta1"}"#),
            list(r#"{"auditID":"a","stage":"x","stage":"y"}"#),
        ] {
            assert!(
                parse_event_list(&body).is_err(),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            parse_timestamp_micros("2018-10-25T13:58:49.736141Z"),
            Some(1_540_475_929_736_141)
        );
        assert_eq!(parse_timestamp_micros("yesterday"), None);
    }
}
