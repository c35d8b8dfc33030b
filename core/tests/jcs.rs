//! Tests of the strict JSON parser and the RFC 8785 canonical serializer.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use sealtrail_core::jcs::{self, MAX_DEPTH, Number, Object, Value};
use sealtrail_core::{Error, JsonErrorKind};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/jcs");
const EVENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/k8s-audit/events.jsonl"
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
    let count = std::fs::read_dir(format!("{TESTDATA}/input")).unwrap().count();
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
    let v = jcs::parse(br#"[18446744073709551615, 18446744073709551616, -9223372036854775808, -0, 1.0, 1e2, 42]"#).unwrap();
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
    assert_eq!(o.get("a").and_then(Value::as_object).map(Object::len), Some(1));
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
