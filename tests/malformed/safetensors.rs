//! Malformed safetensors checkpoints: lengths, offsets, shapes, dtypes, headers; and NaN/inf weights.

use super::{ALLOC_PER_FILE_BYTE, ALLOC_SLACK, file_bytes, peak_alloc, refused, scratch};
use anvil::io::Error;
use anvil::io::safetensors::{FileDtype, MAX_HEADER_LEN, SafeTensors, save};
use anvil::tensor::{DType, Tensor};
const OK_HEADER: &str = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;

#[test]
fn truncated_files_and_impossible_header_lengths() {
    let dir = scratch("lengths");
    let good = file_bytes(OK_HEADER, &[0; 8]);
    assert!(
        SafeTensors::open({
            let p = dir.join("good");
            std::fs::write(&p, &good).unwrap();
            p
        })
        .is_ok()
    );

    let e = refused(&dir, "empty", &[], &["truncated", "0 bytes"]);
    assert!(matches!(e, Error::Truncated { len: 0, .. }));
    refused(&dir, "five", &good[..5], &["truncated", "5 bytes"]);
    let header_len = OK_HEADER.len();
    let e = refused(
        &dir,
        "cut-header",
        &good[..20],
        &[&format!("header length {header_len}"), "20-byte file"],
    );
    assert!(matches!(e, Error::HeaderTooLong { .. }));
    let huge = [u64::MAX.to_le_bytes().as_slice(), b"{}"].concat();
    refused(
        &dir,
        "len-max",
        &huge,
        &[&format!("header length {}", u64::MAX), "10-byte file"],
    );
    let past = [(1u64 << 40).to_le_bytes().as_slice(), &[b' '; 64]].concat();
    refused(
        &dir,
        "len-2^40",
        &past,
        &["header length 1099511627776", "72-byte file"],
    );
    let e = refused(
        &dir,
        "cut-data",
        &good[..good.len() - 1],
        &["`a`", "data_offsets [0, 8]", "7-byte data region"],
    );
    assert!(matches!(e, Error::OffsetsOutOfRange { .. }));
}

/// Every proper prefix of a real file written by `save` is refused, naming the file; none allocates more
/// than the prefix backs.
#[test]
fn every_truncation_of_a_saved_file_is_refused() {
    let dir = scratch("prefixes");
    let full = dir.join("full.safetensors");
    let w = Tensor::from_vec((0..24).map(|i| i as f32 * 0.5).collect(), &[4, 6]).unwrap();
    let h = w.to_dtype(DType::BF16);
    let q = w.to_dtype(DType::I8);
    save(&full, &[("w", &w), ("h", &h), ("q", &q)], &[("k", "v")]).unwrap();
    let bytes = std::fs::read(&full).unwrap();
    for cut in 0..bytes.len() {
        refused(&dir, "cut.safetensors", &bytes[..cut], &[]);
    }
}

/// A header length backed by the file but above the cap is refused before the header is read: a sparse
/// 100 MB file costs nothing to make and nothing to refuse.
#[test]
fn header_length_is_capped_before_parsing() {
    let dir = scratch("cap");
    let path = dir.join("big-header.safetensors");
    let f = std::fs::File::create(&path).unwrap();
    let claimed = MAX_HEADER_LEN + 1;
    f.set_len(8 + claimed).unwrap();
    drop(f);
    let mut head = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::io::Write::write_all(&mut head, &claimed.to_le_bytes()).unwrap();
    drop(head);
    let (r, peak) = peak_alloc(|| SafeTensors::open(&path));
    let err = r.err().expect("refused");
    assert!(matches!(err, Error::HeaderTooLarge { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("big-header.safetensors")
            && text.contains(&format!("{MAX_HEADER_LEN}-byte limit")),
        "{text}"
    );
    assert!(
        peak < ALLOC_SLACK,
        "{peak} bytes allocated to refuse a header"
    );
}

/// Offsets out of range, reversed, overlapping (partly, nested, identical); each names the tensor(s).
#[test]
fn bad_offsets_name_the_tensors() {
    let dir = scratch("offsets");
    let t = |name: &str, dtype: &str, shape: &str, b: u64, e: u64| {
        format!(r#""{name}":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[{b},{e}]}}"#)
    };
    let cases: [(&str, String, usize, &[&str]); 7] = [
        (
            "past-end",
            t("w", "F32", "[4]", 0, 16),
            8,
            &["`w`", "data_offsets [0, 16]", "8-byte data region"],
        ),
        (
            "begin-past-end",
            t("w", "F32", "[0]", 9, 9),
            8,
            &["`w`", "[9, 9]"],
        ),
        (
            "reversed",
            t("w", "F32", "[0]", 8, 0),
            8,
            &["`w`", "[8, 0]"],
        ),
        (
            "partial-overlap",
            format!(
                "{},{}",
                t("a", "F32", "[2]", 0, 8),
                t("b", "F16", "[2]", 6, 10)
            ),
            16,
            &["`b`", "overlaps tensor `a`"],
        ),
        (
            "nested",
            format!(
                "{},{}",
                t("outer", "F32", "[4]", 0, 16),
                t("inner", "U8", "[2]", 4, 6)
            ),
            16,
            &["`inner`", "overlaps tensor `outer`"],
        ),
        (
            "identical",
            format!(
                "{},{}",
                t("x", "F32", "[1]", 4, 8),
                t("y", "I32", "[1]", 4, 8)
            ),
            8,
            &["overlaps tensor", "`x`", "`y`"],
        ),
        (
            "after-a-long-one",
            format!(
                "{},{},{}",
                t("long", "U8", "[12]", 0, 12),
                t("mid", "U8", "[2]", 2, 4),
                t("z", "U8", "[2]", 13, 15)
            ),
            16,
            &["`mid`", "overlaps tensor `long`"],
        ),
    ];
    for (name, entries, data, needles) in cases {
        refused(
            &dir,
            name,
            &file_bytes(&format!("{{{entries}}}"), &vec![0; data]),
            needles,
        );
    }
    // Empty tensors may sit anywhere inside the data region, even inside another tensor's bytes.
    let ok = format!(
        "{{{},{}}}",
        t("a", "F32", "[2]", 0, 8),
        t("e", "F32", "[0,3]", 4, 4)
    );
    let path = dir.join("empty-inside");
    std::fs::write(&path, file_bytes(&ok, &[0; 8])).unwrap();
    assert_eq!(
        SafeTensors::open(&path)
            .unwrap()
            .tensor("e")
            .unwrap()
            .shape(),
        &[0, 3]
    );
}

/// Shapes whose element or byte count overflows `usize`, or that claim far more than the file holds, are
/// refused from the header's numbers alone: nothing of the claimed size is ever allocated.
#[test]
fn huge_shapes_are_refused_before_allocation() {
    let dir = scratch("huge");
    let entry = |shape: &str, dtype: &str| {
        format!(r#"{{"big":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[0,8]}}}}"#)
    };
    let cases: [(&str, String, &[&str]); 7] = [
        (
            "2^64-elements",
            entry("[4294967296,4294967296]", "U8"),
            &["`big`", "[4294967296, 4294967296]", "more bytes than fit"],
        ),
        (
            "bytes-overflow",
            entry("[4611686018427387904]", "F32"),
            &["`big`", "more bytes than fit"],
        ),
        (
            "dim-past-u64",
            entry("[18446744073709551616]", "U8"),
            &["`big`", "not a non-negative integer"],
        ),
        (
            "dim-1e30",
            entry("[1e30]", "U8"),
            &["`big`", "not a non-negative integer"],
        ),
        (
            "2^60-elements",
            entry("[1152921504606846976]", "U8"),
            &["`big`", "span 8 bytes", "need 1152921504606846976"],
        ),
        (
            "billion-elements",
            entry("[1000,1000,1000]", "F32"),
            &["`big`", "need 4000000000"],
        ),
        (
            "many-dims",
            entry(&format!("[{}]", vec!["2"; 70].join(",")), "U8"),
            &["`big`", "more bytes than fit"],
        ),
    ];
    for (name, header, needles) in cases {
        refused(&dir, name, &file_bytes(&header, &[0; 8]), needles);
    }
}

/// A header with very many entries (100k empty tensors) or a very long shape loads within the allocation
/// bound of the bytes that back it; a deeply nested one is refused.
#[test]
fn many_tensors_allocate_in_proportion_to_the_file() {
    let dir = scratch("many");
    let n = 100_000;
    let mut header = String::from("{");
    for i in 0..n {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            r#""t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#
        ));
    }
    header.push('}');
    let bytes = file_bytes(&header, &[]);
    let path = dir.join("many.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let (st, peak) = peak_alloc(|| SafeTensors::open(&path).unwrap());
    assert_eq!(st.infos().len(), n);
    assert!(
        peak <= ALLOC_PER_FILE_BYTE * bytes.len() + ALLOC_SLACK,
        "{peak} for {} bytes",
        bytes.len()
    );
    // A long run of array elements, the densest JSON the parser turns into values: a 200001-axis empty
    // tensor is valid, and stays within the bound.
    let zeros = format!(
        r#"{{"z":{{"dtype":"U8","shape":[{}0],"data_offsets":[0,0]}}}}"#,
        "0,".repeat(200_000)
    );
    let bytes = file_bytes(&zeros, &[]);
    let path = dir.join("zeros.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let (st, peak) = peak_alloc(|| SafeTensors::open(&path).unwrap());
    assert_eq!(st.infos()[0].shape.len(), 200_001);
    assert!(
        peak <= ALLOC_PER_FILE_BYTE * bytes.len() + ALLOC_SLACK,
        "{peak} for {} bytes",
        bytes.len()
    );
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    refused(
        &dir,
        "nested.safetensors",
        &file_bytes(&nested, &[]),
        &["nesting deeper than the limit"],
    );
}

#[test]
fn dtype_shape_and_length_mismatches() {
    let dir = scratch("mismatch");
    let cases: [(&str, &str, usize, &[&str]); 6] = [
        (
            "f16-short",
            r#"{"h":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}}"#,
            8,
            &["`h`", "span 8 bytes", "need 6"],
        ),
        (
            "f32-long",
            r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            8,
            &["`w`", "span 8 bytes", "need 12"],
        ),
        (
            "scalar",
            r#"{"s":{"dtype":"F64","shape":[],"data_offsets":[0,4]}}"#,
            8,
            &["`s`", "span 4 bytes", "need 8"],
        ),
        (
            "unknown-dtype",
            r#"{"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#,
            8,
            &["`w`", "unknown dtype `F33`"],
        ),
        (
            "lowercase-dtype",
            r#"{"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}"#,
            8,
            &["`w`", "unknown dtype `f32`"],
        ),
        (
            "float-dim",
            r#"{"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}"#,
            8,
            &["`w`", "`shape`"],
        ),
    ];
    for (name, header, data, needles) in cases {
        refused(&dir, name, &file_bytes(header, &vec![0; data]), needles);
    }
    // A well-formed file whose int8 tensor lacks its scales loads, but reading that tensor names it.
    let path = dir.join("no-scales.safetensors");
    std::fs::write(
        &path,
        file_bytes(
            r#"{"q":{"dtype":"I8","shape":[2,2],"data_offsets":[0,4]}}"#,
            &[1; 4],
        ),
    )
    .unwrap();
    let st = SafeTensors::open(&path).unwrap();
    let text = st.tensor("q").err().unwrap().to_string();
    assert!(
        text.contains("no-scales.safetensors") && text.contains("`q`") && text.contains("q:scales"),
        "{text}"
    );
    let path = dir.join("bad-scales.safetensors");
    let header = r#"{"q":{"dtype":"I8","shape":[2,2],"data_offsets":[0,4]},"q:scales":{"dtype":"F32","shape":[3],"data_offsets":[4,16]}}"#;
    std::fs::write(&path, file_bytes(header, &[1; 16])).unwrap();
    let text = SafeTensors::open(&path)
        .unwrap()
        .tensor("q")
        .err()
        .unwrap()
        .to_string();
    assert!(
        text.contains("bad-scales.safetensors") && text.contains("`q`"),
        "{text}"
    );
}

#[test]
fn invalid_headers_say_what_is_wrong() {
    let dir = scratch("header");
    let cases: [(&str, &str, &[&str]); 11] = [
        (
            "not-json",
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#,
            &["invalid header", "JSON error at byte"],
        ),
        (
            "trailing",
            r#"{} x"#,
            &["invalid header", "trailing characters"],
        ),
        ("array", r#"[1, 2]"#, &["not a JSON object"]),
        (
            "entry-array",
            r#"{"a":[1]}"#,
            &["`a`", "entry is not an object"],
        ),
        (
            "no-offsets",
            r#"{"a":{"dtype":"F32","shape":[2]}}"#,
            &["`a`", "`data_offsets` missing"],
        ),
        (
            "three-offsets",
            r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0,0]}}"#,
            &["`a`", "not two integers"],
        ),
        (
            "negative-dim",
            r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
            &["`a`", "`shape`"],
        ),
        (
            "no-dtype",
            r#"{"a":{"shape":[2],"data_offsets":[0,8]}}"#,
            &["`a`", "`dtype` missing"],
        ),
        (
            "metadata-int",
            r#"{"__metadata__":{"k":1}}"#,
            &["metadata value of `k`"],
        ),
        (
            "metadata-twice",
            r#"{"__metadata__":{"k":"a","k":"b"}}"#,
            &["metadata key `k` appears twice"],
        ),
        (
            "duplicate",
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
            &["`a`", "appears twice"],
        ),
    ];
    for (name, header, needles) in cases {
        refused(&dir, name, &file_bytes(header, &[0; 8]), needles);
    }
    let mut bad_utf8 = file_bytes(r#"{"a":"xx"}"#, &[]);
    bad_utf8[14] = 0xff;
    refused(&dir, "utf8", &bad_utf8, &["not UTF-8"]);
    let missing = SafeTensors::open(dir.join("absent.safetensors"))
        .err()
        .unwrap();
    assert!(
        matches!(missing, Error::Io { op: "open", .. }),
        "{missing:?}"
    );
    assert!(missing.to_string().contains("absent.safetensors"));
    // `from_bytes` applies the same checks, naming what it was given.
    let text = SafeTensors::from_bytes("net.safetensors", b"\x04\0\0\0\0\0\0\0{}")
        .err()
        .unwrap()
        .to_string();
    assert!(
        text.contains("net.safetensors") && text.contains("header length 4"),
        "{text}"
    );
}

/// NaN and infinite weights are data: the file loads, and `non_finite` reports each affected tensor with
/// its counts and first index, for every floating-point dtype; integer tensors are never listed.
#[test]
fn non_finite_weights_load_and_are_reported() {
    let dir = scratch("non-finite");
    let path = dir.join("nan.safetensors");
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    let w = Tensor::from_vec(vec![1.0, nan, inf, -inf, nan, 2.0], &[2, 3]).unwrap();
    let clean = Tensor::from_vec(vec![1.0, -0.0, f32::MAX, 1e-45], &[4]).unwrap();
    let h = Tensor::from_vec(vec![0.5, 1e9, -1e9], &[3])
        .unwrap()
        .to_dtype(DType::F16); // +-inf in f16
    let b = Tensor::from_vec(vec![nan, 3.0], &[2])
        .unwrap()
        .to_dtype(DType::BF16);
    let q = Tensor::from_vec(vec![1.0, -2.0], &[1, 2])
        .unwrap()
        .to_dtype(DType::I8);
    save(
        &path,
        &[
            ("w", &w),
            ("clean", &clean),
            ("h", &h),
            ("b", &b),
            ("q", &q),
        ],
        &[],
    )
    .unwrap();
    let st = SafeTensors::open(&path).unwrap();
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert_eq!(bits(st.tensor("w").unwrap().to_vec()), bits(w.to_vec()));
    let report: Vec<_> = st
        .non_finite()
        .into_iter()
        .map(|r| (r.name, r.dtype, r.nan, r.pos_inf, r.neg_inf, r.first))
        .collect();
    assert_eq!(
        report,
        [
            ("w".to_string(), FileDtype::F32, 2, 1, 1, 1),
            ("h".to_string(), FileDtype::F16, 0, 1, 1, 1),
            ("b".to_string(), FileDtype::BF16, 1, 0, 0, 0),
        ]
    );
    // F64 and both f8 formats by bit pattern; bytes of an I8/U8 tensor that look like NaN are not NaN.
    let path = dir.join("raw.safetensors");
    let mut data = f64::NEG_INFINITY.to_le_bytes().to_vec();
    data.extend([0x7F, 0x7E, 0x7C, 0xFF, 0xFB, 0xFF]);
    let header = r#"{"d":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"e4":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[8,10]},"e5":{"dtype":"F8_E5M2","shape":[3],"data_offsets":[10,13]},"u":{"dtype":"U8","shape":[1],"data_offsets":[13,14]}}"#;
    std::fs::write(&path, file_bytes(header, &data)).unwrap();
    let report: Vec<_> = SafeTensors::open(&path)
        .unwrap()
        .non_finite()
        .into_iter()
        .map(|r| (r.name, r.nan, r.pos_inf, r.neg_inf, r.first))
        .collect();
    let s = String::from;
    assert_eq!(
        report,
        [
            (s("d"), 0, 0, 1, 0),
            (s("e4"), 1, 0, 0, 0),
            (s("e5"), 1, 1, 0, 0)
        ]
    );
}
