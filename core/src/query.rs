//! Event queries (docs/FORMAT.md §8.5): the filters an investigator combines to ask "who did
//! what, when" of a trail, the members of an audit event they look at ([`Facts`]), and the
//! one matching rule that `sealtrail-verify search` and a proof bundle's `search` selection
//! share.
//!
//! A query is a conjunction of filters; a filter is a list of patterns, one of which must
//! match. A pattern is a glob: `*` matches any run of characters (none included), `?`
//! exactly one character, every other character itself (no escapes, no classes). A filter
//! on a member matches only events that have that member as a string (as an integer, for
//! the response code); a filter on `groups` or `sourceIPs` matches when any element does.

use serde::Serialize;

use crate::Error;
use crate::event::parse_timestamp_micros;
use crate::jcs::{Object, Value};

/// Patterns one filter may hold.
pub const MAX_QUERY_TERMS: usize = 64;
/// Bytes one pattern may hold (the longest member a filter looks at, a user agent or a
/// name, is far shorter in practice; an auditID is at most [`crate::event::MAX_AUDIT_ID_LEN`]).
pub const MAX_PATTERN_LEN: usize = 1024;

/// The members of an audit event that a query (and a search's output) looks at, borrowed
/// from the parsed event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    pub audit_id: Option<&'a str>,
    pub stage: Option<&'a str>,
    pub stage_timestamp: Option<&'a str>,
    /// `user.username`.
    pub user: Option<&'a str>,
    /// `user.groups` (its string elements).
    pub groups: &'a [Value],
    pub verb: Option<&'a str>,
    /// `objectRef.resource`, `.subresource`, `.namespace`, `.name`, `.apiGroup`.
    pub resource: Option<&'a str>,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub api_group: Option<&'a str>,
    /// `responseStatus.code`.
    pub code: Option<i64>,
    /// `sourceIPs` (its string elements).
    pub source_ips: &'a [Value],
    pub user_agent: Option<&'a str>,
}

impl<'a> Facts<'a> {
    /// Reads them from an event (anything but an object has none).
    pub fn of(event: &'a Value) -> Self {
        let Some(e) = event.as_object() else {
            return Self::default();
        };
        let s = |o: &'a Object, k: &str| o.get(k).and_then(Value::as_str);
        let obj = |k: &str| e.get(k).and_then(Value::as_object);
        let arr = |o: Option<&'a Object>, k: &str| {
            o.and_then(|o| o.get(k))
                .and_then(Value::as_array)
                .unwrap_or_default()
        };
        let user = obj("user");
        let object_ref = obj("objectRef");
        Self {
            audit_id: s(e, "auditID"),
            stage: s(e, "stage"),
            stage_timestamp: s(e, "stageTimestamp"),
            user: user.and_then(|u| s(u, "username")),
            groups: arr(user, "groups"),
            verb: s(e, "verb"),
            resource: object_ref.and_then(|o| s(o, "resource")),
            subresource: object_ref.and_then(|o| s(o, "subresource")),
            namespace: object_ref.and_then(|o| s(o, "namespace")),
            name: object_ref.and_then(|o| s(o, "name")),
            api_group: object_ref.and_then(|o| s(o, "apiGroup")),
            code: obj("responseStatus")
                .and_then(|r| r.get("code"))
                .and_then(Value::as_i64),
            source_ips: arr(Some(e), "sourceIPs"),
            user_agent: s(e, "userAgent"),
        }
    }

    /// The string elements of `user.groups`.
    pub fn groups(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.groups.iter().filter_map(Value::as_str)
    }

    /// The string elements of `sourceIPs`.
    pub fn source_ips(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.source_ips.iter().filter_map(Value::as_str)
    }
}

/// An investigator's question: every filter given must match (an empty query selects
/// every event). Times are RFC 3339; `from ≤ stageTimestamp < to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Query {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audit_id: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stage: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verb: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_group: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subresource: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespace: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub name: Vec<String>,
    /// Response codes: `403`, or a class `4xx`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub code: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_ip: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_agent: Vec<String>,
}

/// The pattern filters, by their name in the file (docs/FORMAT.md §8.5), in that order.
const PATTERN_FILTERS: [&str; 13] = [
    "audit_id",
    "stage",
    "user",
    "group",
    "verb",
    "api_group",
    "resource",
    "subresource",
    "namespace",
    "name",
    "code",
    "source_ip",
    "user_agent",
];

impl Query {
    fn filters(&self) -> [&Vec<String>; 13] {
        [
            &self.audit_id,
            &self.stage,
            &self.user,
            &self.group,
            &self.verb,
            &self.api_group,
            &self.resource,
            &self.subresource,
            &self.namespace,
            &self.name,
            &self.code,
            &self.source_ip,
            &self.user_agent,
        ]
    }

    fn filters_mut(&mut self) -> [&mut Vec<String>; 13] {
        [
            &mut self.audit_id,
            &mut self.stage,
            &mut self.user,
            &mut self.group,
            &mut self.verb,
            &mut self.api_group,
            &mut self.resource,
            &mut self.subresource,
            &mut self.namespace,
            &mut self.name,
            &mut self.code,
            &mut self.source_ip,
            &mut self.user_agent,
        ]
    }

    /// Checks the query: times that are RFC 3339 with `from < to`, at most
    /// [`MAX_QUERY_TERMS`] non-empty patterns of at most [`MAX_PATTERN_LEN`] bytes per
    /// filter, codes that are three digits or a class (`4xx`).
    ///
    /// Errors: [`Error::Selection`] saying which rule is broken.
    pub fn validate(&self) -> Result<(), Error> {
        self.check().map_err(Error::Selection)
    }

    fn check(&self) -> Result<(), String> {
        let time = |name: &str, t: &Option<String>| match t {
            Some(s) if parse_timestamp_micros(s).is_none() => {
                Err(format!("{name} {s:?} is not an RFC 3339 date-time"))
            }
            _ => Ok(()),
        };
        time("from", &self.from)?;
        time("to", &self.to)?;
        if let (Some(from), Some(to)) = self.time_bounds()
            && from >= to
        {
            return Err("from must be before to".into());
        }
        for (name, list) in PATTERN_FILTERS.iter().zip(self.filters()) {
            if list.len() > MAX_QUERY_TERMS {
                return Err(format!("more than {MAX_QUERY_TERMS} {name} patterns"));
            }
            if let Some(p) = list
                .iter()
                .find(|p| p.is_empty() || p.len() > MAX_PATTERN_LEN)
            {
                return Err(format!("a {name} pattern of {} bytes", p.len()));
            }
        }
        if let Some(c) = self.code.iter().find(|c| !is_code_pattern(c)) {
            return Err(format!(
                "code {c:?}: expected three digits (403) or a class (4xx)"
            ));
        }
        Ok(())
    }

    /// `(from, to)` in Unix microseconds, each when given and valid.
    pub fn time_bounds(&self) -> (Option<i64>, Option<i64>) {
        let t = |s: &Option<String>| s.as_deref().and_then(parse_timestamp_micros);
        (t(&self.from), t(&self.to))
    }

    /// The query with its times parsed once, to test many events.
    pub fn matcher(&self) -> QueryMatcher<'_> {
        let (from, to) = self.time_bounds();
        QueryMatcher {
            query: self,
            from,
            to,
        }
    }

    /// Whether an event matches.
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        self.matcher().matches(f)
    }

    /// The query as the file spells it: an object of the filters given, times as strings,
    /// each pattern filter as an array of strings.
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        if let Some(t) = &self.from {
            o.insert("from", Value::String(t.clone()));
        }
        if let Some(t) = &self.to {
            o.insert("to", Value::String(t.clone()));
        }
        for (name, list) in PATTERN_FILTERS.iter().zip(self.filters()) {
            if !list.is_empty() {
                let items = list.iter().map(|p| Value::String(p.clone())).collect();
                o.insert(*name, Value::Array(items));
            }
        }
        Value::Object(o)
    }

    /// Reads a query from its file form: only the members [`Self::to_value`] writes, no
    /// empty array, then [`Self::validate`].
    pub fn from_value(v: &Value) -> Result<Self, String> {
        let o = v.as_object().ok_or("search is not an object")?;
        let mut q = Query::default();
        for (k, v) in o.iter() {
            match k {
                "from" | "to" => {
                    let s = v.as_str().ok_or(format!("search.{k} is not a string"))?;
                    let slot = if k == "from" { &mut q.from } else { &mut q.to };
                    *slot = Some(s.to_string());
                }
                _ => {
                    let i = PATTERN_FILTERS
                        .iter()
                        .position(|n| *n == k)
                        .ok_or(format!("search.{k}: not a filter"))?;
                    let items = v
                        .as_array()
                        .filter(|a| !a.is_empty())
                        .ok_or(format!("search.{k} is not a non-empty array"))?;
                    if items.len() > MAX_QUERY_TERMS {
                        return Err(format!("search.{k}: more than {MAX_QUERY_TERMS} patterns"));
                    }
                    let list = items
                        .iter()
                        .map(|p| p.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or(format!("search.{k} holds a non-string"))?;
                    *q.filters_mut()[i] = list;
                }
            }
        }
        q.check().map_err(|e| format!("search: {e}"))?;
        Ok(q)
    }

    /// A human description: the filters given, or "every event".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match (&self.from, &self.to) {
            (Some(a), Some(b)) => parts.push(format!(
                "stageTimestamp from {a} (included) to {b} (excluded)"
            )),
            (Some(a), None) => parts.push(format!("stageTimestamp from {a} (included)")),
            (None, Some(b)) => parts.push(format!("stageTimestamp before {b}")),
            (None, None) => {}
        }
        for (name, list) in PATTERN_FILTERS.iter().zip(self.filters()) {
            if !list.is_empty() {
                parts.push(format!("{name} {}", list.join(" or ")));
            }
        }
        if parts.is_empty() {
            "every event".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// A [`Query`] with its times parsed.
#[derive(Debug, Clone, Copy)]
pub struct QueryMatcher<'a> {
    query: &'a Query,
    from: Option<i64>,
    to: Option<i64>,
}

impl QueryMatcher<'_> {
    /// Whether an event's stageTimestamp is within the query's times (any event, without
    /// times; never one whose stageTimestamp is missing or not RFC 3339, with them).
    pub fn time_matches(&self, stage_timestamp: Option<&str>) -> bool {
        if self.from.is_none() && self.to.is_none() {
            return true;
        }
        let Some(t) = stage_timestamp.and_then(parse_timestamp_micros) else {
            return false;
        };
        self.from.is_none_or(|f| f <= t) && self.to.is_none_or(|to| t < to)
    }

    /// Whether an auditID may match (before the event is parsed).
    pub fn audit_id_matches(&self, audit_id: Option<&str>) -> bool {
        one(&self.query.audit_id, audit_id)
    }

    /// Whether an event matches every filter.
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        let q = self.query;
        self.time_matches(f.stage_timestamp)
            && one(&q.audit_id, f.audit_id)
            && one(&q.stage, f.stage)
            && one(&q.user, f.user)
            && any(&q.group, f.groups())
            && one(&q.verb, f.verb)
            && one(&q.api_group, f.api_group)
            && one(&q.resource, f.resource)
            && one(&q.subresource, f.subresource)
            && one(&q.namespace, f.namespace)
            && one(&q.name, f.name)
            && (q.code.is_empty()
                || f.code
                    .is_some_and(|c| q.code.iter().any(|p| code_matches(p, c))))
            && any(&q.source_ip, f.source_ips())
            && one(&q.user_agent, f.user_agent)
    }
}

/// A filter on one member: no patterns, or the member present and one pattern matching it.
fn one(patterns: &[String], value: Option<&str>) -> bool {
    patterns.is_empty() || value.is_some_and(|v| patterns.iter().any(|p| glob(p, v)))
}

/// A filter on an array member: no patterns, or some element matching one.
fn any<'v>(patterns: &[String], mut values: impl Iterator<Item = &'v str>) -> bool {
    patterns.is_empty() || values.any(|v| patterns.iter().any(|p| glob(p, v)))
}

fn is_code_pattern(p: &str) -> bool {
    let b = p.as_bytes();
    b.len() == 3
        && b[0].is_ascii_digit()
        && ((b[1].is_ascii_digit() && b[2].is_ascii_digit()) || (b[1] == b'x' && b[2] == b'x'))
}

/// `403` matches 403; `4xx` matches 400 to 499.
fn code_matches(pattern: &str, code: i64) -> bool {
    match pattern.strip_suffix("xx") {
        Some(class) => class
            .parse::<i64>()
            .is_ok_and(|c| code.div_euclid(100) == c),
        None => pattern.parse::<i64>().is_ok_and(|p| p == code),
    }
}

/// Whether `text` matches the glob `pattern` (`*` any run of characters, `?` one
/// character). Linear backtracking to the last `*`: O(len(pattern) × len(text)) at worst.
pub fn glob(pattern: &str, text: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return pattern == text;
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` take one more character.
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("alice", "alice", true),
            ("alice", "alice2", false),
            ("*", "", true),
            ("*", "anything", true),
            ("a*", "a", true),
            ("a*e", "alice", true),
            ("a*e", "alicex", false),
            ("*ice", "alice", true),
            ("a?ice", "alice", true),
            ("a?ice", "aice", false),
            (
                "system:serviceaccount:*:default",
                "system:serviceaccount:kube-system:default",
                true,
            ),
            (
                "system:serviceaccount:*:default",
                "system:serviceaccount:kube-system:admin",
                false,
            ),
            ("*a*b*c*", "xxaxxbxxcxx", true),
            ("*a*b*c*", "xxaxxcxxbxx", false),
            ("caf?", "café", true),
            ("10.0.*", "10.0.0.7", true),
            ("10.0.*", "10.128.0.7", false),
            ("**", "x", true),
        ] {
            assert_eq!(glob(p, t), want, "{p:?} vs {t:?}");
        }
    }

    fn event(json: &str) -> Value {
        crate::jcs::parse(json.as_bytes()).unwrap()
    }

    /// The vectors of docs/FORMAT.md §8.5: each query of `query-cases.jsonl` matches the
    /// event of `query-event.json` or not, as the file says, and re-encodes to itself;
    /// each line of `query-invalid.jsonl` is refused.
    #[test]
    fn the_format_vectors() {
        let v = event(include_str!("../testdata/vectors/query-event.json").trim_end());
        let f = Facts::of(&v);
        let cases = include_str!("../testdata/vectors/query-cases.jsonl");
        for line in cases.lines() {
            let case = event(line);
            let case = case.as_object().unwrap();
            let search = case.get("search").unwrap();
            let q = Query::from_value(search).unwrap();
            let want = case.get("match").unwrap().as_bool().unwrap();
            assert_eq!(q.matches(&f), want, "{line}");
            assert_eq!(q.to_value().to_canonical(), search.to_canonical(), "{line}");
        }
        assert!(cases.lines().count() >= 25);
        for line in include_str!("../testdata/vectors/query-invalid.jsonl").lines() {
            assert!(Query::from_value(&event(line)).is_err(), "{line}");
        }
    }

    #[test]
    fn invalid_queries_are_refused() {
        let s = |x: &str| vec![x.to_string()];
        for bad in [
            Query {
                from: Some("yesterday".into()),
                ..Default::default()
            },
            Query {
                from: Some("2025-11-27T06:00:00Z".into()),
                to: Some("2025-11-27T05:00:00Z".into()),
                ..Default::default()
            },
            Query {
                user: s(""),
                ..Default::default()
            },
            Query {
                code: s("4x3"),
                ..Default::default()
            },
            Query {
                code: s("40"),
                ..Default::default()
            },
            Query {
                verb: vec!["get".into(); MAX_QUERY_TERMS + 1],
                ..Default::default()
            },
            Query {
                name: s(&"n".repeat(MAX_PATTERN_LEN + 1)),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::Selection(_))),
                "{bad:?}"
            );
        }
    }
}
