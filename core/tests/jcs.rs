//! Tests of `sealtrail_core::jcs`: the strict JSON parser and the RFC 8785 canonical
//! serializer. Vectors in `core/testdata/jcs/` (see its README), the real audit events of
//! `testdata/k8s-audit/`, property tests and a cross-check against
//! `serde_json_canonicalizer`.
#![allow(clippy::unwrap_used)]

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use sealtrail_core::jcs::{self, MAX_DEPTH, Number, Object, Value};
use sealtrail_core::{Error, JsonErrorKind};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/jcs");
const EVENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/k8s-audit/events.jsonl"
);

fn canon(input: &[u8]) -> Vec<u8> {
    match jcs::canonicalize(input) {
        Ok(c) => c,
        Err(e) => panic!("{:?}: {e}", String::from_utf8_lossy(input)),
    }
}

fn canon_str(input: &str) -> String {
    String::from_utf8(canon(input.as_bytes())).unwrap()
}

#[track_caller]
fn assert_err(input: &[u8], want: JsonErrorKind, offset: usize) {
    match jcs::parse(input) {
        Err(Error::Json { kind, offset: at }) => {
            assert_eq!(
                (&kind, at),
                (&want, offset),
                "input {:?}",
                String::from_utf8_lossy(&input[..input.len().min(80)])
            );
        }
        other => panic!(
            "input {:?}: expected {want:?} at {offset}, got {other:?}",
            String::from_utf8_lossy(&input[..input.len().min(80)])
        ),
    }
    // canonicalize refuses the same way.
    assert!(jcs::canonicalize(input).is_err());
}

// ---------------------------------------------------------------------------------------
// Test vectors

#[test]
fn cyberphone_vectors() {
    let names = [
        "arrays",
        "french",
        "structures",
        "unicode",
        "values",
        "weird",
    ];
    for name in names {
        let input = std::fs::read(format!("{TESTDATA}/input/{name}.json")).unwrap();
        let want = std::fs::read(format!("{TESTDATA}/output/{name}.json")).unwrap();
        let got = canon(&input);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "vector {name}"
        );
        assert_eq!(canon(&got), got, "idempotent on {name}");
    }
    // Every file of the directory is covered.
    let count = std::fs::read_dir(format!("{TESTDATA}/input"))
        .unwrap()
        .count();
    assert_eq!(count, names.len());
}

#[test]
fn rfc8785_appendix_b_numbers() {
    let table = std::fs::read_to_string(format!("{TESTDATA}/rfc8785-appendix-b.txt")).unwrap();
    let mut tested = 0;
    let mut skipped = 0;
    for line in table.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (hex, want) = line.split_once(',').unwrap();
        let f = f64::from_bits(u64::from_str_radix(hex, 16).unwrap());
        if !f.is_finite() {
            // NaN and Infinity: not representable in JSON.
            assert!(want == "NaN" || want == "Infinity", "{line}");
            skipped += 1;
            continue;
        }
        // `{:e}` is the shortest representation that round-trips, always with an
        // exponent, so it takes the double path of the canonicalizer.
        for lexeme in [format!("{f:e}"), format!("{f:?}"), format!("{f:E}")] {
            let got = canon_str(&lexeme);
            assert_eq!(got, want, "{hex} written as {lexeme}");
            // Inside a structure as well.
            assert_eq!(canon_str(&format!("[ {lexeme} ]")), format!("[{want}]"));
        }
        // The expected strings are canonical themselves.
        assert_eq!(canon_str(want), want);
        tested += 1;
    }
    assert_eq!((tested, skipped), (24, 2));
}

#[test]
fn more_number_formatting() {
    for (input, want) in [
        ("1.0", "1"),
        ("1e2", "100"),
        ("1E2", "100"),
        ("1e+2", "100"),
        ("-0", "0"),
        ("-0.0", "0"),
        ("0e10", "0"),
        ("-0e-5", "0"),
        ("0.1", "0.1"),
        ("100.50", "100.5"),
        ("1e21", "1e+21"),
        ("1e20", "100000000000000000000"),
        ("1e-7", "1e-7"),
        ("0.000001", "0.000001"),
        ("123456789012345678901234567890.0", "1.2345678901234568e+29"),
        ("1e-400", "0"),
        ("-1e-400", "0"),
        ("4.9e-324", "5e-324"),
        ("2.4e-324", "0"),
        ("2.5e-324", "5e-324"),
        ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ("9007199254740993.0", "9007199254740992"),
        ("0", "0"),
        ("7", "7"),
        ("-7", "-7"),
    ] {
        assert_eq!(canon_str(input), want, "{input}");
    }
}

// ---------------------------------------------------------------------------------------
// Big integers

#[test]
fn big_integers_keep_their_digits() {
    assert_eq!(
        canon_str("18446744073709551616123"),
        "18446744073709551616123"
    );
    assert_eq!(
        canon_str("-18446744073709551616123"),
        "-18446744073709551616123"
    );
    assert_eq!(
        canon_str(r#"{"n":123456789012345678901234567890123456789}"#),
        r#"{"n":123456789012345678901234567890123456789}"#
    );
    let a = canon(b"9007199254740993");
    let b = canon(b"9007199254740992");
    assert_ne!(a, b);
    assert_eq!(a, b"9007199254740993");
    assert_eq!(b, b"9007199254740992");
    // RFC 8785 proper would have given 9007199254740992 for both.
    assert_eq!(
        serde_json_canonicalizer::to_vec(&serde_json::json!(9007199254740993u64)).unwrap(),
        b"9007199254740992"
    );
    assert_eq!(canon_str("-0"), "0");
    assert_eq!(canon_str("[-0,0]"), "[0,0]");
    assert_eq!(canon_str("1.0"), "1");
    assert_eq!(canon_str("1e2"), "100");
    assert_eq!(canon_str("18446744073709551615"), "18446744073709551615");
}

#[test]
fn number_accessors() {
    let v = jcs::parse(
        br#"[18446744073709551615, 18446744073709551616, -9223372036854775808, -0, 1.0, 1e2, 42]"#,
    )
    .unwrap();
    let a = v.as_array().unwrap();
    assert_eq!(a[0].as_u64(), Some(u64::MAX));
    assert_eq!(a[0].as_i64(), None);
    assert_eq!(a[1].as_u64(), None);
    assert_eq!(a[2].as_i64(), Some(i64::MIN));
    assert_eq!(a[2].as_u64(), None);
    assert_eq!(a[3].as_u64(), Some(0));
    assert_eq!(a[3].as_i64(), Some(0));
    assert_eq!(a[4].as_u64(), None);
    assert_eq!(a[5].as_u64(), None);
    assert_eq!(a[6].as_u64(), Some(42));
    let Value::Number(n) = &a[5] else { panic!() };
    assert_eq!(n.as_str(), "1e2");
    assert_eq!(Number::from_u64(u64::MAX).as_str(), "18446744073709551615");
    assert_eq!(Number::from_i64(i64::MIN).as_str(), "-9223372036854775808");
    assert_eq!(Number::from_i64(-5).as_i64(), Some(-5));
    assert_eq!(
        Value::Number(Number::from_u64(u64::MAX)).to_canonical(),
        b"18446744073709551615"
    );
}

#[test]
fn object_api() {
    let mut v = jcs::parse(br#"{"b":1,"a":{"x":"y"},"c":null}"#).unwrap();
    let o = v.as_object_mut().unwrap();
    assert_eq!(o.len(), 3);
    assert!(!o.is_empty());
    assert_eq!(
        o.get("a").and_then(Value::as_object).map(Object::len),
        Some(1)
    );
    assert_eq!(o.get("zz"), None);
    let old = o.insert("b", Value::String("two".into()));
    assert_eq!(old.and_then(|v| v.as_u64()), Some(1));
    assert_eq!(o.insert("d", Value::Bool(true)), None);
    assert_eq!(o.remove("c"), Some(Value::Null));
    assert_eq!(o.remove("c"), None);
    let keys: Vec<&str> = o.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["b", "a", "d"]);
    assert_eq!(
        String::from_utf8(v.to_canonical()).unwrap(),
        r#"{"a":{"x":"y"},"b":"two","d":true}"#
    );
    let mut out = b"prefix:".to_vec();
    v.write_canonical(&mut out);
    assert!(out.starts_with(b"prefix:{\"a\""));

    let mut o = Object::new();
    assert!(o.is_empty());
    o.insert(String::from("\u{e000}"), Value::Null);
    o.insert("\u{1f600}", Value::Null);
    o.insert("z", Value::Array(vec![Value::Null]));
    let v = Value::Object(o);
    assert_eq!(v.as_str(), None);
    assert_eq!(
        String::from_utf8(v.to_canonical()).unwrap(),
        "{\"z\":[null],\"\u{1f600}\":null,\"\u{e000}\":null}"
    );
    assert_eq!(jcs::parse(b"\"s\"").unwrap().as_str(), Some("s"));
    assert_eq!(jcs::parse(b"[]").unwrap().as_array(), Some(&[][..]));
}

#[test]
fn strings() {
    // Escapes decoded; canonical escaping is minimal.
    assert_eq!(
        canon_str(r#""\u0000\u001f\u007f\u0080\/\b\f\n\r\t\"\\\u00e9\uD83D\uDE00""#),
        "\"\\u0000\\u001f\u{7f}\u{80}/\\b\\f\\n\\r\\t\\\"\\\\\u{e9}\u{1f600}\""
    );
    // Every escape form of every control character gives the canonical escape.
    for c in 0u32..0x20 {
        let ch = char::from_u32(c).unwrap();
        let want = match ch {
            '\u{8}' => "\\b".to_string(),
            '\t' => "\\t".to_string(),
            '\n' => "\\n".to_string(),
            '\u{c}' => "\\f".to_string(),
            '\r' => "\\r".to_string(),
            _ => format!("\\u{c:04x}"),
        };
        assert_eq!(canon_str(&format!("\"\\u{c:04X}\"")), format!("\"{want}\""));
        assert_eq!(canon_str(&format!("\"\\u{c:04x}\"")), format!("\"{want}\""));
    }
    // Non-ASCII stays literal, whichever way it was written.
    assert_eq!(canon_str("\"\\u20AC\""), "\"\u{20ac}\"");
    assert_eq!(canon_str("\"\u{20ac}\""), "\"\u{20ac}\"");
    assert_eq!(canon_str("\"\\uFFFF\\uE000\""), "\"\u{ffff}\u{e000}\"");
    assert_eq!(canon_str("\"\\udbff\\udfff\""), "\"\u{10ffff}\"");
    assert_eq!(canon_str("\"</script>\""), "\"</script>\"");
    // The value, not the lexeme.
    let v = jcs::parse(br#""a\tb\u0041""#).unwrap();
    assert_eq!(v.as_str(), Some("a\tbA"));
}

// ---------------------------------------------------------------------------------------
// Errors

#[test]
fn duplicate_keys() {
    use JsonErrorKind::DuplicateKey;
    assert_err(br#"{"a":1,"a":2}"#, DuplicateKey("a".into()), 7);
    assert_err(br#"{"a":1,"\u0061":2}"#, DuplicateKey("a".into()), 7);
    assert_err(
        r#"{"\u00e9":1, "é":2}"#.as_bytes(),
        DuplicateKey("é".into()),
        13,
    );
    assert_err(br#"[0, {"b":{"a":1,"a":[}]"#, DuplicateKey("a".into()), 16);
    // Same key in different objects is fine, as are keys differing only in case or
    // normalization.
    assert!(
        jcs::parse(br#"{"a":{"a":1},"b":{"a":2},"A":3,"\u1e0d\u0307":1,"\u1e0b\u0323":2}"#).is_ok()
    );
}

#[test]
fn invalid_utf8() {
    use JsonErrorKind::InvalidUtf8;
    assert_err(b"[\"ab\xff\"]", InvalidUtf8, 4);
    assert_err(b"\"\xc0\x80\"", InvalidUtf8, 1); // overlong NUL
    assert_err(b"\"\xed\xa0\x80\"", InvalidUtf8, 1); // a surrogate encoded in UTF-8
    assert_err(b"\"\xf4\x90\x80\x80\"", InvalidUtf8, 1); // above U+10FFFF
    assert_err(b"[1, \"\xe2\x82\"]", InvalidUtf8, 5); // truncated
    assert_err(b"\"ok\" \xe2\x82", InvalidUtf8, 5); // even after the value
}

#[test]
fn lone_surrogates() {
    use JsonErrorKind::LoneSurrogate;
    assert_err(br#"["\ud800"]"#, LoneSurrogate, 2);
    assert_err(br#"["\uDBFF "]"#, LoneSurrogate, 2);
    assert_err(br#""ab\udc00""#, LoneSurrogate, 3);
    assert_err(br#""\uDFFF\uD800""#, LoneSurrogate, 1);
    assert_err(br#""\ud800\u0041""#, LoneSurrogate, 1);
    assert_err(br#""\ud800\ud800""#, LoneSurrogate, 1);
    assert_err(br#"{"k\ud83d":1}"#, LoneSurrogate, 3);
}

#[test]
fn control_characters() {
    use JsonErrorKind::ControlCharacter;
    assert_err(b"\"a\x01\"", ControlCharacter, 2);
    assert_err(b"[\"line\nbreak\"]", ControlCharacter, 6);
    assert_err(b"\"\x00\"", ControlCharacter, 1);
    assert_err(b"\"\\n\x1f\"", ControlCharacter, 3);
    assert_err(b"{\"k\tey\":1}", ControlCharacter, 3);
    // DEL and C1 controls are fine (and stay literal).
    assert_eq!(canon(b"\"\x7f\xc2\x80\""), b"\"\x7f\xc2\x80\"");
}

#[test]
fn depth_limit() {
    let arrays = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
    let mixed = |n: usize| {
        let open: String = (0..n)
            .map(|i| if i % 2 == 0 { "[" } else { r#"{"k":"# })
            .collect();
        let close: String = (0..n)
            .rev()
            .map(|i| if i % 2 == 0 { "]" } else { "}" })
            .collect();
        format!("{open}null{close}")
    };
    assert_eq!(MAX_DEPTH, 256);
    for make in [&arrays as &dyn Fn(usize) -> String, &objects, &mixed] {
        let ok = make(MAX_DEPTH);
        assert_eq!(canon_str(&ok), ok);
        let deep = make(MAX_DEPTH + 1);
        // The offending bracket is the 257th opener.
        let at = deep
            .char_indices()
            .filter(|&(_, c)| c == '[' || c == '{')
            .nth(MAX_DEPTH)
            .unwrap()
            .0;
        assert_err(deep.as_bytes(), JsonErrorKind::TooDeep, at);
    }
    // Deep but short-lived nesting is fine as long as it never exceeds the limit.
    let wide = format!("[{}]", vec![arrays(MAX_DEPTH - 1); 50].join(","));
    assert!(jcs::parse(wide.as_bytes()).is_ok());
}

#[test]
fn megabyte_of_brackets_is_refused_quickly() {
    let start = Instant::now();
    for open in [b'[', b'{'] {
        let input = if open == b'[' {
            vec![b'['; 1 << 20]
        } else {
            br#"{"a":"#.repeat((1 << 20) / 5)
        };
        let at = if open == b'[' { 256 } else { 256 * 5 };
        assert_err(&input, JsonErrorKind::TooDeep, at);
    }
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn trailing_data() {
    use JsonErrorKind::TrailingData;
    assert_err(b"1 2", TrailingData, 2);
    assert_err(b"{} x", TrailingData, 3);
    assert_err(b"[]]", TrailingData, 2);
    assert_err(b"truex", TrailingData, 4);
    assert_err(b"\"a\"\"b\"", TrailingData, 3);
    assert_err(b"0\n\x00", TrailingData, 2);
    // Trailing whitespace is fine.
    assert_eq!(canon(b" \t\r\n[ 1 ,\t2 ]\r\n "), b"[1,2]");
}

#[test]
fn numbers_refused() {
    use JsonErrorKind::{NumberOutOfRange, Syntax, UnexpectedEnd};
    assert_err(b"01", Syntax("leading zeros are not allowed"), 0);
    assert_err(b"-01", Syntax("leading zeros are not allowed"), 0);
    assert_err(b"[1, 00]", Syntax("leading zeros are not allowed"), 4);
    assert_err(b"1e400", NumberOutOfRange, 0);
    assert_err(b"[-1e400]", NumberOutOfRange, 1);
    assert_err(b"{\"x\": 1.5e309}", NumberOutOfRange, 6);
    assert_err(b"+1", Syntax("expected a value"), 0);
    assert_err(b".5", Syntax("expected a value"), 0);
    assert_err(b"[1.]", Syntax("expected a digit"), 3);
    assert_err(b"1.", UnexpectedEnd, 2);
    assert_err(b"1e", UnexpectedEnd, 2);
    assert_err(b"[1e+]", Syntax("expected a digit"), 4);
    assert_err(b"-", UnexpectedEnd, 1);
    assert_err(b"[-x]", Syntax("expected a digit"), 2);
    assert_err(b"NaN", Syntax("expected a value"), 0);
    assert_err(b"[Infinity]", Syntax("expected a value"), 1);
    assert_err(b"-Infinity", Syntax("expected a digit"), 1);
    assert_err(b"0x10", JsonErrorKind::TrailingData, 1);
    // Huge exact integers are not out of range: they are kept as digits.
    let big = "9".repeat(400);
    assert_eq!(canon_str(&big), big);
}

#[test]
fn empty_and_bom_and_other_syntax() {
    use JsonErrorKind::{Syntax, UnexpectedEnd};
    assert_err(b"", UnexpectedEnd, 0);
    assert_err(b" \n", UnexpectedEnd, 2);
    assert_err(
        b"\xEF\xBB\xBF{}",
        Syntax("byte order mark is not allowed"),
        0,
    );
    assert_err(b" \xEF\xBB\xBF{}", Syntax("expected a value"), 1);
    assert_err(b"\x0c1", Syntax("expected a value"), 0); // form feed is not whitespace
    assert_err("\u{a0}1".as_bytes(), Syntax("expected a value"), 0);
    assert_err(b"[1,]", Syntax("expected a value"), 3);
    assert_err(b"[1 2]", Syntax("expected ',' or ']'"), 3);
    assert_err(b"{\"a\":1,}", Syntax("expected a string key"), 7);
    assert_err(b"{'a':1}", Syntax("expected a string key"), 1);
    assert_err(b"{\"a\" 1}", Syntax("expected ':'"), 5);
    assert_err(b"{\"a\":1 \"b\":2}", Syntax("expected ',' or '}'"), 7);
    assert_err(b"[", UnexpectedEnd, 1);
    assert_err(b"{\"a\":", UnexpectedEnd, 5);
    assert_err(b"{\"a\"", UnexpectedEnd, 4);
    assert_err(b"\"abc", UnexpectedEnd, 4);
    assert_err(b"\"abc\\", UnexpectedEnd, 5);
    assert_err(b"\"\\u12", UnexpectedEnd, 5);
    assert_err(b"\"\\u12G4\"", Syntax("expected 4 hex digits after \\u"), 5);
    assert_err(b"\"\\x\"", Syntax("invalid escape"), 1);
    assert_err(b"\"\\U0041\"", Syntax("invalid escape"), 1);
    assert_err(b"tru", UnexpectedEnd, 3);
    assert_err(b"[nul]", Syntax("invalid literal"), 1);
    assert_err(b"True", Syntax("expected a value"), 0);
    assert_err(b"/* */ 1", Syntax("expected a value"), 0);
    // Any value at the top level.
    for (input, want) in [
        ("null", "null"),
        ("true", "true"),
        ("false", "false"),
        ("\"\"", "\"\""),
    ] {
        assert_eq!(canon_str(input), want);
    }
}

#[test]
fn error_display_mentions_offset() {
    let e = jcs::parse(br#"{"a":1,"a":2}"#).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("byte 7") && msg.contains("duplicate"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// Real Kubernetes audit events

/// True if the value has an integer lexeme of magnitude above 2^53 (where we keep the
/// digits and RFC 8785 would round).
fn has_big_int(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_integer() && n.as_i64().is_none_or(|i| i.unsigned_abs() > 1 << 53),
        Value::Array(a) => a.iter().any(has_big_int),
        Value::Object(o) => o.iter().any(|(_, v)| has_big_int(v)),
        _ => false,
    }
}

fn events() -> Vec<Vec<u8>> {
    let data = std::fs::read(EVENTS).unwrap();
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

#[test]
fn real_events() {
    let events = events();
    assert_eq!(events.len(), 222);
    let mut compared = 0;
    for (i, line) in events.iter().enumerate() {
        let v = jcs::parse(line).unwrap_or_else(|e| panic!("event {i}: {e}"));
        let c = v.to_canonical();
        assert_eq!(jcs::canonicalize(line).unwrap(), c);
        assert_eq!(canon(&c), c, "event {i} idempotent");
        assert_eq!(jcs::parse(&c).unwrap().to_canonical(), c);
        // Canonical output is valid JSON for serde_json too, with the same value.
        let ours: serde_json::Value = serde_json::from_slice(&c).unwrap();
        let theirs: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert_eq!(ours, theirs, "event {i}");
        if !has_big_int(&v) {
            let reference = serde_json_canonicalizer::to_vec(&theirs).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&c),
                String::from_utf8_lossy(&reference),
                "event {i} vs serde_json_canonicalizer"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 222);
}

#[test]
fn real_events_reordered_and_reindented() {
    // serde_json (BTreeMap, byte order) pretty-printed: different whitespace, member order
    // and escaping; same canonical bytes.
    for line in events() {
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let pretty = serde_json::to_vec_pretty(&v).unwrap();
        assert_eq!(canon(&pretty), canon(&line));
    }
}

// ---------------------------------------------------------------------------------------
// Property tests

/// A generated JSON value.
#[derive(Debug, Clone)]
enum M {
    Null,
    Bool(bool),
    /// An integer lexeme (any size).
    Int(String),
    Float(f64),
    Str(String),
    Arr(Vec<M>),
    /// Unique keys.
    Obj(Vec<(String, M)>),
}

/// What a value means: numbers by their canonical string, objects as maps.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sem {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Sem>),
    Obj(BTreeMap<String, Sem>),
}

fn float_string(f: f64) -> String {
    if f == 0.0 {
        "0".into()
    } else {
        ryu_js::Buffer::new().format_finite(f).into()
    }
}

fn sem(m: &M) -> Sem {
    match m {
        M::Null => Sem::Null,
        M::Bool(b) => Sem::Bool(*b),
        M::Int(s) if s == "-0" => Sem::Num("0".into()),
        M::Int(s) => Sem::Num(s.clone()),
        M::Float(f) => Sem::Num(float_string(*f)),
        M::Str(s) => Sem::Str(s.clone()),
        M::Arr(a) => Sem::Arr(a.iter().map(sem).collect()),
        M::Obj(o) => Sem::Obj(o.iter().map(|(k, v)| (k.clone(), sem(v))).collect()),
    }
}

fn sem_of(v: &Value) -> Sem {
    match v {
        Value::Null => Sem::Null,
        Value::Bool(b) => Sem::Bool(*b),
        Value::Number(_) => Sem::Num(String::from_utf8(v.to_canonical()).unwrap()),
        Value::String(s) => Sem::Str(s.clone()),
        Value::Array(a) => Sem::Arr(a.iter().map(sem_of).collect()),
        Value::Object(o) => {
            let map: BTreeMap<_, _> = o.iter().map(|(k, v)| (k.to_owned(), sem_of(v))).collect();
            assert_eq!(map.len(), o.len(), "keys are unique");
            Sem::Obj(map)
        }
    }
}

/// An independent, simple (allocating) RFC 8785 serializer of the meaning.
fn reference_canonical(s: &Sem, out: &mut String) {
    match s {
        Sem::Null => out.push_str("null"),
        Sem::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Sem::Num(n) => out.push_str(n),
        Sem::Str(s) => reference_string(s, out),
        Sem::Arr(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                reference_canonical(v, out);
            }
            out.push(']');
        }
        Sem::Obj(o) => {
            let mut members: Vec<_> = o.iter().collect();
            members.sort_by_key(|(k, _)| k.encode_utf16().collect::<Vec<u16>>());
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                reference_string(k, out);
                out.push(':');
                reference_canonical(v, out);
            }
            out.push('}');
        }
    }
}

fn reference_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A tiny deterministic generator for serialization choices.
struct Styler(u64);

impl Styler {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn ws(&mut self, out: &mut String) {
        for _ in 0..self.pick(4).saturating_sub(1) {
            out.push([' ', '\t', '\n', '\r'][self.pick(4) as usize]);
        }
    }
}

/// Writes `m` as some valid JSON text: random whitespace, member order and escapes.
fn serialize(m: &M, st: &mut Styler, out: &mut String) {
    st.ws(out);
    match m {
        M::Null => out.push_str("null"),
        M::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        M::Int(s) => out.push_str(s),
        M::Float(f) => {
            // Always with a fraction or an exponent (Debug prints `1.0`, `1e21`).
            match st.pick(3) {
                0 => out.push_str(&format!("{f:e}")),
                1 => out.push_str(&format!("{f:E}")),
                _ => out.push_str(&format!("{f:?}")),
            }
        }
        M::Str(s) => serialize_string(s, st, out),
        M::Arr(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    st.ws(out);
                    out.push(',');
                }
                serialize(v, st, out);
                st.ws(out);
            }
            st.ws(out);
            out.push(']');
        }
        M::Obj(o) => {
            let mut members: Vec<&(String, M)> = o.iter().collect();
            // Fisher-Yates with the styler.
            for i in (1..members.len()).rev() {
                let j = st.pick(i as u64 + 1) as usize;
                members.swap(i, j);
            }
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    st.ws(out);
                    out.push(',');
                }
                st.ws(out);
                serialize_string(k, st, out);
                st.ws(out);
                out.push(':');
                serialize(v, st, out);
                st.ws(out);
            }
            st.ws(out);
            out.push('}');
        }
    }
}

fn serialize_string(s: &str, st: &mut Styler, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        let must_escape = c == '"' || c == '\\' || (c as u32) < 0x20;
        match st.pick(4) {
            // \u escapes, surrogate pairs for astral characters, random hex case.
            0 => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    if st.pick(2) == 0 {
                        out.push_str(&format!("\\u{u:04x}"));
                    } else {
                        out.push_str(&format!("\\u{u:04X}"));
                    }
                }
            }
            // Short escapes where they exist.
            1 if matches!(c, '"' | '\\' | '/' | '\u{8}' | '\t' | '\n' | '\u{c}' | '\r') => {
                out.push('\\');
                out.push(match c {
                    '\u{8}' => 'b',
                    '\t' => 't',
                    '\n' => 'n',
                    '\u{c}' => 'f',
                    '\r' => 'r',
                    c => c,
                });
            }
            _ if must_escape => out.push_str(&format!("\\u{:04x}", c as u32)),
            _ => out.push(c),
        }
    }
    out.push('"');
}

fn text_of(m: &M, seed: u64) -> String {
    let mut out = String::new();
    serialize(m, &mut Styler(seed | 1), &mut out);
    out
}

fn arb_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range('a', 'e'),
        2 => any::<char>(),
        1 => proptest::char::range('\u{0}', '\u{1f}'),
        1 => prop::sample::select(vec!['"', '\\', '/', '\u{7f}', '\u{80}', '\u{2028}']),
        1 => proptest::char::range('\u{e000}', '\u{ffff}'),
        1 => proptest::char::range('\u{10000}', '\u{10ffff}'),
    ]
}

fn arb_string() -> impl Strategy<Value = String> {
    prop::collection::vec(arb_char(), 0..8).prop_map(|v| v.into_iter().collect())
}

fn arb_int() -> BoxedStrategy<String> {
    prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        (-1000i64..1000).prop_map(|i| i.to_string()),
        "-?[1-9][0-9]{15,40}",
        Just("-0".to_string()),
        Just("9007199254740993".to_string()),
        Just("-9007199254740992".to_string()),
    ]
    .boxed()
}

fn arb_float() -> BoxedStrategy<f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        -1e6f64..1e6,
        (-1000i32..1000).prop_map(f64::from),
        Just(-0.0),
        Just(1e21),
        Just(9.999999999999999e20),
        Just(5e-324),
        Just(1e-7),
    ]
    .boxed()
}

fn unique_keys(members: Vec<(String, M)>) -> M {
    let mut seen = std::collections::HashSet::new();
    M::Obj(
        members
            .into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .collect(),
    )
}

fn arb_value() -> impl Strategy<Value = M> {
    let leaf = prop_oneof![
        Just(M::Null),
        any::<bool>().prop_map(M::Bool),
        arb_int().prop_map(M::Int),
        arb_float().prop_map(M::Float),
        arb_string().prop_map(M::Str),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(M::Arr),
            prop::collection::vec((arb_string(), inner), 0..8).prop_map(unique_keys),
        ]
    })
}

/// Values from a small domain, so that two independent draws are often equal.
fn arb_small_value() -> impl Strategy<Value = M> {
    let leaf = prop_oneof![
        Just(M::Null),
        any::<bool>().prop_map(M::Bool),
        prop::sample::select(vec![
            "0",
            "-0",
            "1",
            "100",
            "9007199254740993",
            "9007199254740992"
        ])
        .prop_map(|s| M::Int(s.into())),
        prop::sample::select(vec![0.0, -0.0, 1.0, 100.0, 0.5, 9007199254740992.0])
            .prop_map(M::Float),
        prop::sample::select(vec!["", "a", "\u{e000}", "\u{10000}", "\n"])
            .prop_map(|s| M::Str(s.into())),
    ];
    leaf.prop_recursive(2, 8, 2, |inner| {
        let key =
            prop::sample::select(vec!["a", "b", "\u{e000}", "\u{10000}"]).prop_map(String::from);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(M::Arr),
            prop::collection::vec((key, inner), 0..3).prop_map(unique_keys),
        ]
    })
}

/// The value as serde_json sees it, if it has no integer beyond ±2^53.
fn to_serde(m: &M) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match m {
        M::Null => J::Null,
        M::Bool(b) => J::Bool(*b),
        M::Int(s) => {
            let i: i64 = s.parse().ok()?;
            if i.unsigned_abs() > 1 << 53 {
                return None;
            }
            J::from(i)
        }
        M::Float(f) => J::Number(serde_json::Number::from_f64(*f)?),
        M::Str(s) => J::String(s.clone()),
        M::Arr(a) => J::Array(a.iter().map(to_serde).collect::<Option<_>>()?),
        M::Obj(o) => J::Object(
            o.iter()
                .map(|(k, v)| Some((k.clone(), to_serde(v)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_canonical_form(m in arb_value(), seed in any::<u64>()) {
        let text = text_of(&m, seed);
        let parsed = jcs::parse(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(sem_of(&parsed), sem(&m));
        let c = parsed.to_canonical();
        prop_assert_eq!(&jcs::canonicalize(text.as_bytes()).unwrap(), &c);
        // Idempotent.
        prop_assert_eq!(&jcs::canonicalize(&c).unwrap(), &c);
        // Same meaning after the round trip.
        prop_assert_eq!(sem_of(&jcs::parse(&c).unwrap()), sem(&m));
        // Equal to an independent serializer of the meaning.
        let mut reference = String::new();
        reference_canonical(&sem(&m), &mut reference);
        prop_assert_eq!(String::from_utf8(c).unwrap(), reference);
    }

    #[test]
    fn prop_same_value_same_bytes(m in arb_value(), s1 in any::<u64>(), s2 in any::<u64>()) {
        let a = jcs::canonicalize(text_of(&m, s1).as_bytes()).unwrap();
        let b = jcs::canonicalize(text_of(&m, s2).as_bytes()).unwrap();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn prop_injective(a in arb_small_value(), b in arb_small_value(), s1 in any::<u64>(), s2 in any::<u64>()) {
        let ca = jcs::canonicalize(text_of(&a, s1).as_bytes()).unwrap();
        let cb = jcs::canonicalize(text_of(&b, s2).as_bytes()).unwrap();
        prop_assert_eq!(sem(&a) == sem(&b), ca == cb, "{:?} vs {:?}", a, b);
    }

    #[test]
    fn prop_injective_wide(a in arb_value(), b in arb_value()) {
        let ca = jcs::canonicalize(text_of(&a, 1).as_bytes()).unwrap();
        let cb = jcs::canonicalize(text_of(&b, 2).as_bytes()).unwrap();
        prop_assert_eq!(sem(&a) == sem(&b), ca == cb);
    }

    #[test]
    fn prop_matches_serde_json_canonicalizer(m in arb_value(), seed in any::<u64>()) {
        if let Some(j) = to_serde(&m) {
            let ours = jcs::canonicalize(text_of(&m, seed).as_bytes()).unwrap();
            let theirs = serde_json_canonicalizer::to_vec(&j).unwrap();
            prop_assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(theirs).unwrap());
        }
    }

    #[test]
    fn prop_key_order_is_utf16_order(a in arb_string(), b in arb_string()) {
        let want = a.encode_utf16().cmp(b.encode_utf16());
        prop_assert_eq!(jcs::cmp_utf16(&a, &b), want);
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(c) = jcs::canonicalize(&bytes) {
            prop_assert_eq!(jcs::canonicalize(&c).unwrap(), c);
        }
    }

    #[test]
    fn prop_mutated_json_never_panics(m in arb_value(), seed in any::<u64>(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut text = text_of(&m, seed).into_bytes();
        let i = at.index(text.len());
        text[i] = byte;
        match jcs::canonicalize(&text) {
            Ok(c) => prop_assert_eq!(jcs::canonicalize(&c).unwrap(), c),
            Err(Error::Json { offset, .. }) => prop_assert!(offset <= text.len()),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}

#[test]
fn utf16_order_examples() {
    // RFC 8785 §3.2.3 sorting example.
    let input = "{\"\\u20ac\":\"Euro Sign\",\"\\r\":\"Carriage Return\",\"\\ufb33\":\"Hebrew Letter Dalet With Dagesh\",\"1\":\"One\",\"\\ud83d\\ude00\":\"Emoji: Grinning Face\",\"\\u0080\":\"Control\",\"\\u00f6\":\"Latin Small Letter O With Diaeresis\"}";
    let v = jcs::parse(input.as_bytes()).unwrap();
    let c = jcs::parse(&v.to_canonical()).unwrap();
    let order: Vec<&str> = c
        .as_object()
        .unwrap()
        .iter()
        .map(|(_, v)| v.as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "Carriage Return",
            "One",
            "Control",
            "Latin Small Letter O With Diaeresis",
            "Euro Sign",
            "Emoji: Grinning Face",
            "Hebrew Letter Dalet With Dagesh"
        ]
    );
    assert_eq!(jcs::cmp_utf16("\u{ffff}", "\u{10000}"), Ordering::Greater);
}
