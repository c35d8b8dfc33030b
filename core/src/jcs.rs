//! Strict JSON parsing and RFC 8785 (JSON Canonicalization Scheme) canonical bytes.
//!
//! [`parse`] reads one JSON text (RFC 8259) and refuses what a lenient parser would let
//! through silently: duplicate object keys (also when they only collide after escape
//! decoding), lone UTF-16 surrogate escapes, raw control characters, invalid UTF-8, a byte
//! order mark, nesting deeper than [`MAX_DEPTH`], numbers outside the range of a double
//! and trailing bytes. Every error carries the byte offset where it was found.
//!
//! [`Value::write_canonical`] writes the RFC 8785 form: no whitespace, members sorted by
//! their keys as UTF-16 code unit sequences, the minimal string escaping of RFC 8785
//! §3.2.2.2 and numbers as ECMAScript's `Number.prototype.toString` prints them.
//!
//! One deliberate deviation: a number written as an integer (an optional `-` and digits,
//! no fraction, no exponent) is kept with its exact digits (`-0` becomes `0`). RFC 8785
//! would round it through a double, so that two events differing only in a large integer
//! would share a digest. For integers of magnitude below 2^53 both rules give the same
//! bytes.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::error::{Error, JsonErrorKind};

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 256;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    Object(Object),
}

/// A JSON number kept as its validated lexeme from the input.
///
/// Equality compares lexemes: `1` and `1.0` are different `Number`s (though they have
/// the same canonical form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Number(String);

impl Number {
    /// The lexeme as it appeared in the input (or as built by `from_u64`/`from_i64`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if the lexeme has no fraction and no exponent.
    pub fn is_integer(&self) -> bool {
        is_integer_lexeme(self.0.as_bytes())
    }

    /// The value, if the lexeme is an integer (no fraction, no exponent) that fits a `u64`.
    /// `-0` gives `Some(0)`.
    pub fn as_u64(&self) -> Option<u64> {
        if !self.is_integer() {
            return None;
        }
        if self.0 == "-0" {
            return Some(0);
        }
        self.0.parse().ok()
    }

    /// The value, if the lexeme is an integer (no fraction, no exponent) that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        if !self.is_integer() {
            return None;
        }
        self.0.parse().ok()
    }

    pub fn from_u64(n: u64) -> Self {
        Number(n.to_string())
    }

    pub fn from_i64(n: i64) -> Self {
        Number(n.to_string())
    }

    /// Appends the canonical form of this number: integers keep their digits (`-0` is
    /// `0`), others are printed as ECMAScript prints the nearest double.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        let s = self.0.as_bytes();
        if is_integer_lexeme(s) {
            if s == b"-0" {
                out.push(b'0');
            } else {
                out.extend_from_slice(s);
            }
        } else {
            // The lexeme was validated by the parser (JSON numbers are a subset of what
            // `f64::from_str` accepts) and checked to be finite; `unwrap_or` only keeps
            // clippy quiet.
            let f: f64 = self.0.parse().unwrap_or(f64::NAN);
            if f.is_finite() {
                let mut buf = ryu_js::Buffer::new();
                out.extend_from_slice(buf.format_finite(f).as_bytes());
            } else {
                out.push(b'0');
            }
        }
    }
}

fn is_integer_lexeme(s: &[u8]) -> bool {
    !s.iter().any(|&b| matches!(b, b'.' | b'e' | b'E'))
}

/// Object members in input order; keys are unique (the parser guarantees it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Object(Vec<(String, Value)>);

impl Object {
    pub fn new() -> Self {
        Object(Vec::new())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Members in input (or insertion) order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Sets key to value, replacing an existing member of that key. Returns the old value.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) -> Option<Value> {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                self.0.push((key, value));
                None
            }
        }
    }

    /// Removes the member of that key, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    fn write_canonical(&self, out: &mut Vec<u8>) {
        let m = &self.0;
        out.push(b'{');
        let sorted = m
            .windows(2)
            .all(|w| cmp_utf16(&w[0].0, &w[1].0) == Ordering::Less);
        if sorted {
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                v.write_canonical(out);
            }
        } else {
            let mut order: Vec<&(String, Value)> = m.iter().collect();
            order.sort_unstable_by(|a, b| cmp_utf16(&a.0, &b.0));
            for (i, (k, v)) in order.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                v.write_canonical(out);
            }
        }
        out.push(b'}');
    }
}

/// Compares two strings as sequences of UTF-16 code units (RFC 8785 §3.2.3) without
/// allocating.
///
/// UTF-8 byte order is code point order, which is UTF-16 order except that a code point
/// of U+10000 or above (a surrogate pair, 0xD800..) sorts before U+E000..U+FFFF. At the
/// first differing byte both strings are at the same position within a character (their
/// prefixes are equal), so only a differing *leading* byte can be that case: 0xEE/0xEF
/// (U+E000..U+FFFF) against 0xF0..0xF4 (U+10000..).
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    match a.iter().zip(b).position(|(x, y)| x != y) {
        None => a.len().cmp(&b.len()),
        Some(i) => {
            let (x, y) = (a[i], b[i]);
            if x >= 0xEE && y >= 0xEE && ((x >= 0xF0) != (y >= 0xF0)) {
                y.cmp(&x)
            } else {
                x.cmp(&y)
            }
        }
    }
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<&Number> {
        match self {
            Value::Number(n) => Some(n),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_object_mut(&mut self) -> Option<&mut Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// See [`Number::as_u64`].
    pub fn as_u64(&self) -> Option<u64> {
        self.as_number().and_then(Number::as_u64)
    }

    /// See [`Number::as_i64`].
    pub fn as_i64(&self) -> Option<i64> {
        self.as_number().and_then(Number::as_i64)
    }

    /// Appends the RFC 8785 canonical bytes of this value to `out`.
    ///
    /// Recursive: values built by hand should stay within a sane depth (parsed values are
    /// within [`MAX_DEPTH`]).
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Number(n) => n.write_canonical(out),
            Value::String(s) => write_string(s, out),
            Value::Array(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    v.write_canonical(out);
                }
                out.push(b']');
            }
            Value::Object(o) => o.write_canonical(out),
        }
    }

    pub fn to_canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_canonical(&mut out);
        out
    }
}

/// Bytes that end a run of literal string content, when parsing (`"`, `\`, controls) and
/// when writing (the same set: RFC 8785 escapes exactly these).
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `s` as an RFC 8785 string (§3.2.2.2).
fn write_string(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !SPECIAL[b as usize] {
            continue;
        }
        out.extend_from_slice(&bytes[run..i]);
        run = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0A => out.extend_from_slice(b"\\n"),
            0x0C => out.extend_from_slice(b"\\f"),
            0x0D => out.extend_from_slice(b"\\r"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xF) as usize],
            ]),
        }
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Parses one JSON text (RFC 8259, strict) with the checks described in the module
/// documentation.
pub fn parse(input: &[u8]) -> Result<Value, Error> {
    parse_hooked(input, None)
}

/// What [`parse_with_items`] calls with each element of the top-level `items` array: the
/// top-level members parsed before `items`, the element's position, the element. It
/// returns the element to keep it in the tree, or `None` once it has consumed it.
pub type ItemHook<'h> =
    dyn FnMut(&[(String, Value)], usize, Value) -> Result<Option<Value>, Error> + 'h;

/// [`parse`] of a document whose top-level object holds a large array under `key`: each
/// element is handed to `hook` as soon as it is complete, so that a caller that turns
/// elements into something smaller never holds the whole tree. The checks are those of
/// [`parse`], and an error of the hook stops the parse.
pub fn parse_with_items(input: &[u8], key: &str, hook: &mut ItemHook<'_>) -> Result<Value, Error> {
    let hook = Hook {
        key,
        f: hook,
        seen: 0,
    };
    parse_hooked(input, Some(hook))
}

fn parse_hooked<'a>(input: &'a [u8], hook: Option<Hook<'a>>) -> Result<Value, Error> {
    if input.starts_with(b"\xEF\xBB\xBF") {
        return Err(err(
            JsonErrorKind::Syntax("byte order mark is not allowed"),
            0,
        ));
    }
    let text =
        std::str::from_utf8(input).map_err(|e| err(JsonErrorKind::InvalidUtf8, e.valid_up_to()))?;
    Parser {
        text,
        bytes: input,
        pos: 0,
        hook,
    }
    .parse_document()
}

/// [`parse`] + [`Value::to_canonical`].
pub fn canonicalize(input: &[u8]) -> Result<Vec<u8>, Error> {
    let value = parse(input)?;
    let mut out = Vec::with_capacity(input.len());
    value.write_canonical(&mut out);
    Ok(out)
}

fn err(kind: JsonErrorKind, offset: usize) -> Error {
    Error::Json { kind, offset }
}

/// An array or object being parsed.
enum Frame {
    Array(Vec<Value>),
    Object(ObjectFrame),
}

struct ObjectFrame {
    members: Vec<(String, Value)>,
    /// The key of the member whose value is being parsed.
    key: String,
    /// Hashes of the keys in `members`, once the object is large enough that linear
    /// duplicate checks would be slow.
    index: Option<(RandomState, HashSet<u64>)>,
}

/// Objects up to this many members are checked for duplicates by a linear scan.
const LINEAR_DUP_CHECK: usize = 16;

impl ObjectFrame {
    /// Checks that `key` is not yet a member (`offset`: where the key starts).
    fn check_new_key(&mut self, key: &str, offset: usize) -> Result<(), Error> {
        let dup = || err(JsonErrorKind::DuplicateKey(key.to_owned()), offset);
        if self.members.len() < LINEAR_DUP_CHECK {
            if self.members.iter().any(|(k, _)| k == key) {
                return Err(dup());
            }
            return Ok(());
        }
        let (state, set) = self.index.get_or_insert_with(|| {
            let state = RandomState::new();
            let set = self
                .members
                .iter()
                .map(|(k, _)| state.hash_one(k))
                .collect();
            (state, set)
        });
        if !set.insert(state.hash_one(key)) && self.members.iter().any(|(k, _)| k == key) {
            return Err(dup());
        }
        Ok(())
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    hook: Option<Hook<'a>>,
}

struct Hook<'a> {
    key: &'a str,
    f: &'a mut ItemHook<'a>,
    /// Elements offered so far.
    seen: usize,
}

impl Parser<'_> {
    /// Offers a completed element of an array to the hook if the array is the top-level
    /// object's member the hook asked for; what comes back stays in the array.
    fn offer(&mut self, stack: &[Frame], value: Value) -> Result<Option<Value>, Error> {
        let (Some(hook), [Frame::Object(top), Frame::Array(_)]) = (self.hook.as_mut(), stack)
        else {
            return Ok(Some(value));
        };
        if top.key != hook.key {
            return Ok(Some(value));
        }
        let at = hook.seen;
        hook.seen += 1;
        (hook.f)(&top.members, at, value)
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(&b) = self.bytes.get(self.pos) {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn end_or(&self, what: &'static str) -> Error {
        if self.pos >= self.bytes.len() {
            err(JsonErrorKind::UnexpectedEnd, self.bytes.len())
        } else {
            err(JsonErrorKind::Syntax(what), self.pos)
        }
    }

    /// Parses `"key"` and the `:` after it (whitespace skipped before both).
    fn parse_key(&mut self, frame: &mut ObjectFrame) -> Result<(), Error> {
        self.skip_ws();
        if self.peek() != Some(b'"') {
            return Err(self.end_or("expected a string key"));
        }
        let at = self.pos;
        let key = self.parse_string()?;
        frame.check_new_key(&key, at)?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(self.end_or("expected ':'"));
        }
        self.pos += 1;
        frame.key = key;
        Ok(())
    }

    fn parse_document(mut self) -> Result<Value, Error> {
        let mut stack: Vec<Frame> = Vec::new();
        'value: loop {
            self.skip_ws();
            let Some(b) = self.peek() else {
                return Err(err(JsonErrorKind::UnexpectedEnd, self.pos));
            };
            let mut value = match b {
                b'[' | b'{' => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(err(JsonErrorKind::TooDeep, self.pos));
                    }
                    self.pos += 1;
                    self.skip_ws();
                    if b == b'[' {
                        if self.peek() == Some(b']') {
                            self.pos += 1;
                            Value::Array(Vec::new())
                        } else {
                            stack.push(Frame::Array(Vec::new()));
                            continue 'value;
                        }
                    } else if self.peek() == Some(b'}') {
                        self.pos += 1;
                        Value::Object(Object::new())
                    } else {
                        let mut frame = ObjectFrame {
                            members: Vec::new(),
                            key: String::new(),
                            index: None,
                        };
                        self.parse_key(&mut frame)?;
                        stack.push(Frame::Object(frame));
                        continue 'value;
                    }
                }
                b'"' => Value::String(self.parse_string()?),
                b'-' | b'0'..=b'9' => Value::Number(self.parse_number()?),
                b't' => self.parse_literal(b"true", Value::Bool(true))?,
                b'f' => self.parse_literal(b"false", Value::Bool(false))?,
                b'n' => self.parse_literal(b"null", Value::Null)?,
                _ => return Err(err(JsonErrorKind::Syntax("expected a value"), self.pos)),
            };
            // `value` is complete: hand it to the enclosing arrays and objects, closing
            // those that end right after it.
            loop {
                match stack.last_mut() {
                    None => {
                        self.skip_ws();
                        if self.pos != self.bytes.len() {
                            return Err(err(JsonErrorKind::TrailingData, self.pos));
                        }
                        return Ok(value);
                    }
                    Some(Frame::Array(_)) => {
                        if let Some(value) = self.offer(&stack, value)? {
                            let Some(Frame::Array(items)) = stack.last_mut() else {
                                unreachable!("top frame is an array")
                            };
                            items.push(value);
                        }
                        self.skip_ws();
                        match self.peek() {
                            Some(b',') => {
                                self.pos += 1;
                                continue 'value;
                            }
                            Some(b']') => {
                                self.pos += 1;
                                let Some(Frame::Array(items)) = stack.pop() else {
                                    unreachable!("top frame is an array")
                                };
                                value = Value::Array(items);
                            }
                            _ => return Err(self.end_or("expected ',' or ']'")),
                        }
                    }
                    Some(Frame::Object(frame)) => {
                        let key = std::mem::take(&mut frame.key);
                        frame.members.push((key, value));
                        self.skip_ws();
                        match self.peek() {
                            Some(b',') => {
                                self.pos += 1;
                                self.parse_key(frame)?;
                                continue 'value;
                            }
                            Some(b'}') => {
                                self.pos += 1;
                                let Some(Frame::Object(frame)) = stack.pop() else {
                                    unreachable!("top frame is an object")
                                };
                                value = Value::Object(Object(frame.members));
                            }
                            _ => return Err(self.end_or("expected ',' or '}'")),
                        }
                    }
                }
            }
        }
    }

    fn parse_literal(&mut self, word: &'static [u8], value: Value) -> Result<Value, Error> {
        let rest = &self.bytes[self.pos..];
        if rest.starts_with(word) {
            self.pos += word.len();
            return Ok(value);
        }
        if word.starts_with(rest) {
            return Err(err(JsonErrorKind::UnexpectedEnd, self.bytes.len()));
        }
        Err(err(JsonErrorKind::Syntax("invalid literal"), self.pos))
    }

    fn digits(&mut self) -> Result<(), Error> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(self.end_or("expected a digit"));
        }
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        Ok(())
    }

    fn parse_number(&mut self) -> Result<Number, Error> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(err(
                        JsonErrorKind::Syntax("leading zeros are not allowed"),
                        start,
                    ));
                }
            }
            _ => self.digits()?,
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
            integer = false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digits()?;
            integer = false;
        }
        let lexeme = &self.text[start..self.pos];
        if !integer {
            match lexeme.parse::<f64>() {
                Ok(f) if f.is_finite() => {}
                _ => return Err(err(JsonErrorKind::NumberOutOfRange, start)),
            }
        }
        Ok(Number(lexeme.to_owned()))
    }

    /// Reads 4 hex digits at `self.pos`.
    fn hex4(&mut self) -> Result<u16, Error> {
        let mut v: u16 = 0;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return Err(self.end_or("expected 4 hex digits after \\u")),
            };
            v = (v << 4) | u16::from(d);
            self.pos += 1;
        }
        Ok(v)
    }

    /// Parses a string; `self.pos` is at its opening quote.
    fn parse_string(&mut self) -> Result<String, Error> {
        self.pos += 1;
        let start = self.pos;
        // Fast path: no escapes.
        let mut i = start;
        while let Some(&b) = self.bytes.get(i) {
            if SPECIAL[b as usize] {
                if b == b'"' {
                    self.pos = i + 1;
                    return Ok(self.text[start..i].to_owned());
                }
                break;
            }
            i += 1;
        }
        let mut s = String::with_capacity(i - start + 16);
        s.push_str(&self.text[start..i]);
        self.pos = i;
        self.parse_string_slow(s)
    }

    fn parse_string_slow(&mut self, mut s: String) -> Result<String, Error> {
        loop {
            let run = self.pos;
            while let Some(&b) = self.bytes.get(self.pos) {
                if SPECIAL[b as usize] {
                    break;
                }
                self.pos += 1;
            }
            // Stopped at an ASCII byte (or the end), so this is a char boundary.
            s.push_str(&self.text[run..self.pos]);
            match self.peek() {
                None => return Err(err(JsonErrorKind::UnexpectedEnd, self.pos)),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some(b'\\') => self.parse_escape(&mut s)?,
                Some(_) => return Err(err(JsonErrorKind::ControlCharacter, self.pos)),
            }
        }
    }

    /// Parses one escape sequence; `self.pos` is at the backslash.
    fn parse_escape(&mut self, s: &mut String) -> Result<(), Error> {
        let at = self.pos;
        self.pos += 1;
        let Some(c) = self.peek() else {
            return Err(err(JsonErrorKind::UnexpectedEnd, self.pos));
        };
        self.pos += 1;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let u = self.hex4()?;
                match u {
                    0xD800..=0xDBFF => {
                        match self.bytes.get(self.pos..self.pos + 2) {
                            Some(b"\\u") => {}
                            None if self.pos + 1 >= self.bytes.len() => {
                                return Err(err(JsonErrorKind::UnexpectedEnd, self.bytes.len()));
                            }
                            _ => return Err(err(JsonErrorKind::LoneSurrogate, at)),
                        }
                        self.pos += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(err(JsonErrorKind::LoneSurrogate, at));
                        }
                        let cp =
                            0x10000 + ((u32::from(u) - 0xD800) << 10) + (u32::from(lo) - 0xDC00);
                        char::from_u32(cp).ok_or_else(|| err(JsonErrorKind::LoneSurrogate, at))?
                    }
                    0xDC00..=0xDFFF => return Err(err(JsonErrorKind::LoneSurrogate, at)),
                    _ => char::from_u32(u32::from(u))
                        .ok_or_else(|| err(JsonErrorKind::LoneSurrogate, at))?,
                }
            }
            _ => return Err(err(JsonErrorKind::Syntax("invalid escape"), at)),
        };
        s.push(ch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(input: &[u8]) -> (JsonErrorKind, usize) {
        match parse(input) {
            Err(Error::Json { kind, offset }) => (kind, offset),
            other => panic!("expected a JSON error, got {other:?}"),
        }
    }

    #[test]
    fn utf16_order_puts_astral_before_private_use() {
        assert_eq!(cmp_utf16("\u{10000}", "\u{E000}"), Ordering::Less);
        assert_eq!(cmp_utf16("\u{FFFF}", "\u{1F600}"), Ordering::Greater);
        assert_eq!(cmp_utf16("\u{D7FF}", "\u{10000}"), Ordering::Less);
        assert_eq!(cmp_utf16("a", "ab"), Ordering::Less);
        assert_eq!(cmp_utf16("ab", "ab"), Ordering::Equal);
    }

    #[test]
    fn high_surrogate_at_end() {
        assert_eq!(kind(br#""\ud800"#).0, JsonErrorKind::UnexpectedEnd);
        assert_eq!(kind(br#""\ud800x""#), (JsonErrorKind::LoneSurrogate, 1));
        assert_eq!(kind(br#""\ud800\n""#), (JsonErrorKind::LoneSurrogate, 1));
    }

    #[test]
    fn large_object_duplicate() {
        let mut s = String::from("{");
        for i in 0..100 {
            s.push_str(&format!("\"k{i}\":{i},"));
        }
        let at = s.len();
        s.push_str("\"k42\":0}");
        assert_eq!(
            kind(s.as_bytes()),
            (JsonErrorKind::DuplicateKey("k42".into()), at)
        );
        s.truncate(at);
        s.push_str("\"k100\":0}");
        assert_eq!(
            parse(s.as_bytes()).map(|v| v.as_object().map(Object::len)),
            Ok(Some(101))
        );
    }
}
