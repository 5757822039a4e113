//! `anvil::json`: malformed inputs with their offsets, exact integers, escapes, round trips, and a proptest
//! that no byte string makes the parser panic.

use anvil::json::{MAX_DEPTH, Value, parse, parse_str};
use proptest::prelude::*;

#[test]
fn parses_values_and_keeps_key_order() {
    let v = parse_str(r#" {"b": [1, -2, 3.5, 1e3, true, false, null], "a": {"x": "y"}} "#).unwrap();
    let keys: Vec<&str> = v
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys, ["b", "a"]);
    let b = v.get("b").unwrap();
    assert_eq!(b.at(0).unwrap().as_u64(), Some(1));
    assert_eq!(b.at(1).unwrap().as_i64(), Some(-2));
    assert_eq!(b.at(1).unwrap().as_u64(), None);
    assert_eq!(b.at(2).unwrap().as_f64(), Some(3.5));
    assert_eq!(b.at(3).unwrap(), &Value::Number(1000.0));
    assert_eq!(b.at(4).unwrap().as_bool(), Some(true));
    assert!(b.at(6).unwrap().is_null());
    assert_eq!(
        v.get("a").and_then(|a| a.get("x")).and_then(Value::as_str),
        Some("y")
    );
    assert_eq!(v.get("missing"), None);
}

#[test]
fn integers_are_exact() {
    for text in [
        "0",
        "-0",
        "9007199254740993",
        "18446744073709551615",
        "-9223372036854775808",
    ] {
        let v = parse_str(text).unwrap();
        assert!(matches!(v, Value::Int(_)), "{text}");
        let expected = if text == "-0" { "0" } else { text };
        assert_eq!(v.to_json(), expected);
    }
    assert_eq!(
        parse_str("18446744073709551615").unwrap().as_u64(),
        Some(u64::MAX)
    );
    assert_eq!(
        parse_str("9007199254740993").unwrap().as_u64(),
        Some(9_007_199_254_740_993)
    );
    // Beyond u64: an f64.
    assert_eq!(
        parse_str("18446744073709551616").unwrap(),
        Value::Number(18446744073709551616.0)
    );
}

#[test]
fn string_escapes_and_surrogates() {
    let v = parse_str(r#""a\"b\\c\/d\b\f\n\r\t\u0041\u00e9\u4e2d\ud83d\ude00""#).unwrap();
    assert_eq!(v.as_str(), Some("a\"b\\c/d\u{8}\u{c}\n\r\tAé中😀"));
    let raw = parse_str("\"héllo 😀\"").unwrap();
    assert_eq!(raw.as_str(), Some("héllo 😀"));
}

#[test]
fn malformed_inputs_report_offsets() {
    let cases: &[(&[u8], usize)] = &[
        (b"", 0),
        (b"   ", 3),
        (b"{", 1),
        (b"[1,]", 3),
        (b"[1 2]", 3),
        (b"{\"a\" 1}", 5),
        (b"{\"a\":1,}", 7),
        (b"{1:2}", 1),
        (b"01", 0),
        (b"-", 1),
        (b"1.", 2),
        (b"1e", 2),
        (b"1e400", 0),
        (b"nul", 0),
        (b"truex", 4),
        (b"\"abc", 4),
        (b"\"a\nb\"", 2),
        (b"\"\\x\"", 2),
        (b"\"\\u12\"", 5),
        (b"\"\\ud800\"", 1),
        (b"\"\\ud800\\u0041\"", 1),
        (b"\"\\udc00\"", 1),
        (b"\"a\xffb\"", 2),
        (b"\"\xe4\xb8\"", 1),
        (b"[1] [2]", 4),
        (b"NaN", 0),
        (b"'a'", 0),
    ];
    for &(input, offset) in cases {
        match parse(input) {
            Ok(v) => panic!("{:?} parsed as {v:?}", String::from_utf8_lossy(input)),
            Err(e) => assert_eq!(
                e.offset,
                offset,
                "{:?}: {e}",
                String::from_utf8_lossy(input)
            ),
        }
    }
}

#[test]
fn depth_limit() {
    let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
    assert!(parse_str(&ok).is_ok());
    let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
    let e = parse_str(&deep).unwrap_err();
    assert_eq!(e.offset, MAX_DEPTH);
    // Far deeper than any stack would survive without the limit.
    assert!(parse_str(&"{\"a\":".repeat(100_000)).is_err());
}

#[test]
fn writer_escapes() {
    let v = Value::Object(vec![
        ("k\"\\\n".into(), Value::String("\u{1}\u{1f}\t é😀".into())),
        (
            "n".into(),
            Value::Array(vec![
                Value::Number(0.1),
                Value::Number(1e300),
                Value::Number(-2.0),
                Value::Int(7),
            ]),
        ),
        ("nan".into(), Value::Number(f64::NAN)),
    ]);
    let text = v.to_json();
    assert_eq!(
        text,
        r#"{"k\"\\\n":"\u0001\u001f\t é😀","n":[0.1,1e300,-2.0,7],"nan":null}"#
    );
    let back = parse_str(&text).unwrap();
    assert_eq!(back.get("k\"\\\n"), v.get("k\"\\\n"));
    assert_eq!(parse_str(&v.to_json_pretty()).unwrap(), back);
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| Value::Int(i128::from(i))),
        any::<u64>().prop_map(|i| Value::Int(i128::from(i))),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Number),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..8).prop_map(Value::Object),
        ]
    })
}

/// Integral floats read back as `Int`; compare numerically.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Int(y)) | (Value::Int(y), Value::Number(x)) => *x == *y as f64,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, a), (kb, b))| ka == kb && same(a, b))
        }
        _ => a == b,
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn json_like_bytes_never_panic(s in "[\\[\\]{}\",:0-9eE.+\\-a-z\\\\ ]{0,64}") {
        let _ = parse(s.as_bytes());
    }

    #[test]
    fn write_then_parse_round_trips(v in arb_value()) {
        let compact = parse_str(&v.to_json()).unwrap();
        prop_assert!(same(&compact, &v), "{:?} vs {:?}", compact, v);
        let pretty = parse_str(&v.to_json_pretty()).unwrap();
        prop_assert_eq!(pretty, compact);
    }
}
