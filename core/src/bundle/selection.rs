//! The `selection` of a proof bundle (docs/FORMAT.md §8.1): which events its exporter
//! chose, how that is spelled in the file, and which events it selects.

use serde::Serialize;

use crate::Error;
use crate::event::{MAX_AUDIT_ID_LEN, parse_timestamp_micros};
use crate::jcs::{Object, Value};
use crate::query::{Facts, Query, QueryMatcher};

use super::only_members;

/// Which events a bundle holds, as stated by its exporter (not proven complete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Selection {
    /// Every stored event (every stage) of one request.
    AuditId { audit_id: String },
    /// Events with `from ≤ stageTimestamp < to` (RFC 3339), optionally of one
    /// `user.username` and one `verb`.
    TimeRange {
        from: String,
        to: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        verb: Option<String>,
    },
    /// The events a [`Query`] selects (`sealtrail-verify search --bundle`).
    Search { search: Box<Query> },
}

/// The members of an event a selection and a summary look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventFields {
    pub audit_id: String,
    pub stage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
}

impl EventFields {
    /// Reads them from an event object: `auditID` and `stage` are required strings (every
    /// stored event has them); the others are taken when they are strings.
    ///
    /// Errors: [`Error::Bundle`] naming what is missing.
    pub fn of(event: &Value) -> Result<Self, Error> {
        Self::read(event).map_err(|why| Error::Bundle(why.to_string()))
    }

    pub(super) fn read(event: &Value) -> Result<Self, &'static str> {
        let obj = event.as_object().ok_or("event is not an object")?;
        let s = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(Self {
            audit_id: s("auditID").ok_or("event has no string auditID")?,
            stage: s("stage").ok_or("event has no string stage")?,
            stage_timestamp: s("stageTimestamp"),
            user: obj
                .get("user")
                .and_then(Value::as_object)
                .and_then(|u| u.get("username"))
                .and_then(Value::as_str)
                .map(str::to_string),
            verb: s("verb"),
        })
    }
}

impl Selection {
    /// Checks the selection: a non-empty auditID of at most 256 bytes, or RFC 3339 times
    /// with `from < to` and non-empty filters.
    ///
    /// Errors: [`Error::Selection`] saying which rule is broken.
    pub fn validate(&self) -> Result<(), Error> {
        self.check().map_err(Error::Selection)
    }

    fn check(&self) -> Result<(), String> {
        match self {
            Self::AuditId { audit_id } => {
                if audit_id.is_empty() || audit_id.len() > MAX_AUDIT_ID_LEN {
                    return Err(format!("auditID of {} bytes", audit_id.len()));
                }
            }
            Self::TimeRange { user, verb, .. } => {
                let (from, to) = self
                    .time_bounds()
                    .ok_or("from and to must be RFC 3339 times")?;
                if from >= to {
                    return Err("from must be before to".into());
                }
                if user.as_deref() == Some("") || verb.as_deref() == Some("") {
                    return Err("empty user or verb".into());
                }
            }
            Self::Search { search } => search.validate().map_err(|e| match e {
                Error::Selection(why) => why,
                other => other.to_string(),
            })?,
        }
        Ok(())
    }

    /// `(from, to)` in Unix microseconds, for a time range that parses.
    pub fn time_bounds(&self) -> Option<(i64, i64)> {
        match self {
            Self::AuditId { .. } => None,
            Self::TimeRange { from, to, .. } => {
                Some((parse_timestamp_micros(from)?, parse_timestamp_micros(to)?))
            }
            Self::Search { search } => match search.time_bounds() {
                (Some(from), Some(to)) => Some((from, to)),
                _ => None,
            },
        }
    }

    /// Whether an event belongs to the selection.
    pub fn matches(&self, e: &Facts<'_>) -> bool {
        self.matcher().matches(e)
    }

    /// The selection with its times parsed once, to test many events.
    pub fn matcher(&self) -> Matcher<'_> {
        Matcher {
            selection: self,
            bounds: self.time_bounds(),
            query: match self {
                Self::Search { search } => Some(search.matcher()),
                _ => None,
            },
        }
    }

    /// The `selection` member as the file spells it.
    pub(super) fn to_value(&self) -> Value {
        let mut o = Object::new();
        let s = |v: &str| Value::String(v.to_string());
        match self {
            Self::AuditId { audit_id } => {
                o.insert("audit_id", s(audit_id));
            }
            Self::TimeRange {
                from,
                to,
                user,
                verb,
            } => {
                o.insert("from", s(from));
                o.insert("to", s(to));
                if let Some(u) = user {
                    o.insert("user", s(u));
                }
                if let Some(v) = verb {
                    o.insert("verb", s(v));
                }
            }
            Self::Search { search } => {
                o.insert("search", search.to_value());
            }
        }
        Value::Object(o)
    }

    /// Reads the `selection` member: exactly one of the two shapes, then [`Self::validate`].
    pub(super) fn from_value(v: &Value) -> Result<Self, String> {
        let o = v.as_object().ok_or("selection is not an object")?;
        let s = |k: &str| -> Result<Option<String>, String> {
            match o.get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("selection.{k} is not a string")),
            }
        };
        let sel = if let Some(q) = o.get("search") {
            only_members(o, &["search"], &[], "selection")?;
            Self::Search {
                search: Box::new(Query::from_value(q)?),
            }
        } else if o.get("audit_id").is_some() {
            only_members(o, &["audit_id"], &[], "selection")?;
            Self::AuditId {
                audit_id: s("audit_id")?.unwrap_or_default(),
            }
        } else {
            only_members(o, &["from", "to"], &["user", "verb"], "selection")?;
            Self::TimeRange {
                from: s("from")?.unwrap_or_default(),
                to: s("to")?.unwrap_or_default(),
                user: s("user")?,
                verb: s("verb")?,
            }
        };
        sel.check().map_err(|e| format!("selection: {e}"))?;
        Ok(sel)
    }

    /// A human description.
    pub fn describe(&self) -> String {
        match self {
            Self::AuditId { audit_id } => format!("auditID {audit_id}"),
            Self::TimeRange {
                from,
                to,
                user,
                verb,
            } => {
                let mut s = format!("stageTimestamp from {from} (included) to {to} (excluded)");
                if let Some(u) = user {
                    s.push_str(&format!(", user {u}"));
                }
                if let Some(v) = verb {
                    s.push_str(&format!(", verb {v}"));
                }
                s
            }
            Self::Search { search } => format!("search: {}", search.describe()),
        }
    }
}

/// A [`Selection`] with its time range parsed.
#[derive(Debug, Clone, Copy)]
pub struct Matcher<'a> {
    selection: &'a Selection,
    bounds: Option<(i64, i64)>,
    query: Option<QueryMatcher<'a>>,
}

impl Matcher<'_> {
    pub fn selection(&self) -> &Selection {
        self.selection
    }

    /// Whether an event belongs to the selection.
    pub fn matches(&self, e: &Facts<'_>) -> bool {
        match self.selection {
            Selection::AuditId { audit_id } => e.audit_id == Some(audit_id.as_str()),
            Selection::TimeRange { user, verb, .. } => {
                self.time_matches(e.stage_timestamp)
                    && user.as_deref().is_none_or(|u| e.user == Some(u))
                    && verb.as_deref().is_none_or(|v| e.verb == Some(v))
            }
            Selection::Search { .. } => self.query.is_some_and(|q| q.matches(e)),
        }
    }

    /// Whether a stageTimestamp is within the time range (never, for an auditID selection
    /// or a timestamp that does not parse; for a search, its own rule).
    pub fn time_matches(&self, stage_timestamp: Option<&str>) -> bool {
        if let Some(q) = &self.query {
            return q.time_matches(stage_timestamp);
        }
        match (
            self.bounds,
            stage_timestamp.and_then(parse_timestamp_micros),
        ) {
            (Some((from, to)), Some(t)) => from <= t && t < to,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn selection_roundtrip_and_matching() {
        let t = Selection::TimeRange {
            from: "2025-11-27T05:00:00Z".into(),
            to: "2025-11-27T06:00:00Z".into(),
            user: Some("alice".into()),
            verb: None,
        };
        t.validate().unwrap();
        assert_eq!(Selection::from_value(&t.to_value()).unwrap(), t);
        let mut e = Facts {
            audit_id: Some("a"),
            stage: Some("ResponseComplete"),
            stage_timestamp: Some("2025-11-27T05:59:59.999999Z"),
            user: Some("alice"),
            verb: Some("get"),
            ..Facts::default()
        };
        assert!(t.matches(&e));
        e.stage_timestamp = Some("2025-11-27T06:00:00Z");
        assert!(!t.matches(&e), "to is excluded");
        let q = Selection::Search {
            search: Box::new(Query {
                from: Some("2025-11-27T05:00:00Z".into()),
                user: vec!["al*".into()],
                verb: vec!["get".into(), "list".into()],
                ..Query::default()
            }),
        };
        q.validate().unwrap();
        assert_eq!(Selection::from_value(&q.to_value()).unwrap(), q);
        e.stage_timestamp = Some("2025-11-27T05:59:59.999999Z");
        assert!(q.matches(&e));
        e.verb = Some("delete");
        assert!(!q.matches(&e));
        for bad in [
            Selection::AuditId {
                audit_id: String::new(),
            },
            Selection::TimeRange {
                from: "2025-11-27T06:00:00Z".into(),
                to: "2025-11-27T05:00:00Z".into(),
                user: None,
                verb: None,
            },
            Selection::TimeRange {
                from: "yesterday".into(),
                to: "2025-11-27T05:00:00Z".into(),
                user: None,
                verb: None,
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::Selection(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn selection_shapes_are_exclusive() {
        let v = crate::jcs::parse(br#"{"audit_id":"a","from":"2025-11-27T05:00:00Z"}"#).unwrap();
        assert!(Selection::from_value(&v).is_err());
        let v = crate::jcs::parse(
            br#"{"from":"2025-11-27T05:00:00Z","to":"2025-11-27T06:00:00Z","user":""}"#,
        )
        .unwrap();
        assert!(Selection::from_value(&v).is_err());
    }
}
