//! `sealtrail-verify canonicalize`: the canonical form and leaf hash of events, so that
//! anyone can recompute what the trail stores for an event they hold.

use sealtrail_core::event::{CanonicalEvent, parse_event_line, parse_event_list};

/// Canonicalizes `input`: an `EventList` document, or JSON Lines of events (as the
/// apiserver's log-file backend writes them). Errors name the line.
pub fn canonicalize(input: &[u8]) -> Result<Vec<CanonicalEvent>, String> {
    let trimmed = input.trim_ascii_start();
    if trimmed.starts_with(b"{") && looks_like_event_list(trimmed) {
        return parse_event_list(input)
            .map(|b| b.events)
            .map_err(|e| format!("EventList: {e}"));
    }
    let mut out = Vec::new();
    for (i, line) in input.split(|b| *b == b'\n').enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        out.push(parse_event_line(line).map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    Ok(out)
}

/// One JSON document spanning the whole input whose kind is EventList.
fn looks_like_event_list(input: &[u8]) -> bool {
    matches!(
        sealtrail_core::jcs::parse(input),
        Ok(v) if v.as_object().and_then(|o| o.get("kind")).and_then(|k| k.as_str()) == Some("EventList")
    )
}

/// The output line: `<hex leaf hash> <canonical JSON>\n`.
pub fn format_line(e: &CanonicalEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(hex::encode(e.leaf_hash).as_bytes());
    out.push(b' ');
    out.extend_from_slice(&e.canonical);
    out.push(b'\n');
}
