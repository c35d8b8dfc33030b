//! The one error type of this crate. Everything here is about input that does not meet
//! the formats; there is no I/O to fail.

use std::fmt;

/// Why a JSON document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonErrorKind {
    /// Not JSON at this point (the string says what was expected).
    Syntax(&'static str),
    /// The input ended inside a value.
    UnexpectedEnd,
    /// Bytes after the top-level value.
    TrailingData,
    /// An object names the same member twice (the key is given).
    DuplicateKey(String),
    /// Arrays/objects nested deeper than [`crate::jcs::MAX_DEPTH`].
    TooDeep,
    /// The bytes are not UTF-8.
    InvalidUtf8,
    /// A `\uD800`-`\uDFFF` escape that is not part of a surrogate pair.
    LoneSurrogate,
    /// A raw control character (below U+0020) inside a string.
    ControlCharacter,
    /// A number whose value is not a finite IEEE 754 double (for example `1e400`).
    NumberOutOfRange,
}

impl fmt::Display for JsonErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(what) => write!(f, "syntax error: {what}"),
            Self::UnexpectedEnd => f.write_str("unexpected end of input"),
            Self::TrailingData => f.write_str("trailing data after the JSON value"),
            Self::DuplicateKey(k) => write!(f, "duplicate object key {k:?}"),
            Self::TooDeep => write!(f, "nesting deeper than {} levels", crate::jcs::MAX_DEPTH),
            Self::InvalidUtf8 => f.write_str("invalid UTF-8"),
            Self::LoneSurrogate => f.write_str("lone UTF-16 surrogate in \\u escape"),
            Self::ControlCharacter => f.write_str("unescaped control character in string"),
            Self::NumberOutOfRange => f.write_str("number out of the range of a double"),
        }
    }
}

/// Errors of the format library.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid JSON at byte {offset}: {kind}")]
    Json { kind: JsonErrorKind, offset: usize },
    #[error("invalid audit batch: {0}")]
    Batch(String),
    #[error("invalid event (item {index}): {reason}")]
    Event { index: usize, reason: String },
    #[error("malformed checkpoint: {0}")]
    Checkpoint(String),
    #[error("malformed signed note: {0}")]
    Note(String),
    #[error("malformed segment: {0}")]
    Segment(String),
    #[error("malformed trust bundle: {0}")]
    Trust(String),
    /// An RFC 3161 timestamp response or token that does not verify (docs/FORMAT.md §10).
    #[error("timestamp: {0}")]
    Timestamp(String),
    #[error("invalid key: {0}")]
    Key(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("proof does not verify: {0}")]
    Proof(String),
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// A proof bundle file that does not meet docs/FORMAT.md §8.1: malformed, not
    /// canonical, or over a limit.
    #[error("proof bundle: {0}")]
    Bundle(String),
    /// An event selection (docs/FORMAT.md §8.1 `selection`) that selects nothing sensible.
    #[error("selection: {0}")]
    Selection(String),
}
