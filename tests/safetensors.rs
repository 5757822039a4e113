//! The safetensors reader and writer: round trips per dtype, zero-copy mapping, the shared fixtures, and
//! random bytes never panicking. The malformed-file suite is `tests/malformed/`.

use anvil::io::Error;
use anvil::io::safetensors::{FileDtype, SafeTensors, parse_header, save};
use anvil::tensor::{DType, Tensor};
use half::f16;
use proptest::prelude::*;
use std::path::{Path, PathBuf};

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("safetensors-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A safetensors file from a header text and a data region.
fn file_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn sample_tensors() -> Vec<(&'static str, Tensor)> {
    let x: Vec<f32> = (0..60).map(|i| (i as f32 * 0.731).sin() * 3.0).collect();
    let f32t = Tensor::from_vec(x.clone(), &[5, 12]).unwrap();
    vec![
        ("w.f32", f32t.clone()),
        ("w.f16", f32t.to_dtype(DType::F16)),
        ("w.bf16", f32t.to_dtype(DType::BF16)),
        ("w.i8", f32t.to_dtype(DType::I8)),
        (
            "odd.f32",
            Tensor::from_vec(vec![1.0, f32::NAN, -0.0], &[3]).unwrap(),
        ),
        (
            "odd.f16",
            Tensor::from_f16(vec![f16::from_bits(0x7d01); 3], &[1, 3]).unwrap(),
        ),
        ("scalar", Tensor::scalar(-7.25)),
        ("empty", Tensor::zeros(&[0, 4]).unwrap()),
        (
            "i8.scalar",
            Tensor::from_i8(vec![-3], vec![0.5], &[]).unwrap(),
        ),
    ]
}

#[test]
fn round_trip_is_bit_identical_for_every_dtype() {
    let dir = scratch("round-trip");
    let path = dir.join("all.safetensors");
    let tensors = sample_tensors();
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    save(&path, &refs, &[("format", "anvil"), ("note", "ünïcode")]).unwrap();

    let st = SafeTensors::open(&path).unwrap();
    assert_eq!(
        st.metadata(),
        &[
            ("format".into(), "anvil".into()),
            ("note".into(), "ünïcode".into())
        ]
    );
    for (name, t) in &tensors {
        let back = st.tensor(name).unwrap();
        assert_eq!(back.dtype(), t.dtype(), "{name}");
        assert_eq!(back.shape(), t.shape(), "{name}");
        assert_eq!(back.raw_bytes(), t.raw_bytes(), "{name}");
        assert_eq!(back.i8_scales(), t.i8_scales(), "{name}");
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(back.to_vec()), bits(t.to_vec()), "{name}");
        assert!(back.is_mapped(), "{name} was copied");
    }
    // Every tensor starts aligned to its element size, f32 data 4-byte aligned.
    for info in st.infos() {
        assert_eq!(info.range.start % info.dtype.size(), 0, "{}", info.name);
    }
    assert_eq!(st.info("w.i8:scales").unwrap().shape, vec![5]);
}

#[test]
fn narrowed_and_reshaped_views_save_their_own_values() {
    let dir = scratch("views");
    let path = dir.join("v.safetensors");
    let t = Tensor::from_vec((0..12).map(|i| i as f32).collect(), &[4, 3]).unwrap();
    let q = t.to_dtype(DType::I8);
    let odd = q.reshape(&[6, 2]).unwrap().narrow(1, 2).unwrap(); // rows no longer match the scales
    let views = [
        ("a", t.narrow(1, 2).unwrap()),
        ("q", q.narrow(2, 2).unwrap()),
        ("odd", odd.clone()),
    ];
    let refs: Vec<(&str, &Tensor)> = views.iter().map(|(n, t)| (*n, t)).collect();
    save(&path, &refs, &[]).unwrap();
    let st = SafeTensors::open(&path).unwrap();
    assert_eq!(
        st.tensor("a").unwrap().as_slice(),
        &[3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    );
    assert_eq!(st.tensor("q").unwrap().raw_bytes(), views[1].1.raw_bytes());
    let back = st.tensor("odd").unwrap().to_vec();
    for (u, v) in back.iter().zip(odd.to_vec()) {
        assert!((u - v).abs() < 0.05, "{u} vs {v}");
    }
}

#[test]
fn f32_tensors_are_mapped_without_a_copy_and_narrow_stays_mapped() {
    let dir = scratch("zero-copy");
    let path = dir.join("z.safetensors");
    let t = Tensor::from_vec((0..64).map(|i| i as f32).collect(), &[8, 8]).unwrap();
    save(&path, &[("t", &t)], &[]).unwrap();
    let st = SafeTensors::open(&path).unwrap();
    let file = st.mapped_bytes().as_ptr_range();
    let inside = |p: *const f32| file.contains(&(p as *const u8));
    let m = st.tensor("t").unwrap();
    assert!(m.is_mapped() && inside(m.as_slice().as_ptr()));
    let rows = m.narrow(3, 2).unwrap();
    assert!(rows.is_mapped() && inside(rows.as_slice().as_ptr()));
    assert_eq!(rows.as_slice(), &t.as_slice()[24..40]);
    drop(st); // tensors keep the mapping alive on their own
    assert_eq!(rows.to_vec(), t.as_slice()[24..40].to_vec());
}

#[test]
fn misaligned_f32_data_is_copied_once_and_still_correct() {
    let dir = scratch("misaligned");
    let path = dir.join("m.safetensors");
    // The data region starts 4-aligned, so an f32 tensor at data offset 1 is misaligned in the mapping.
    let mut header =
        r#"{"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"t":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}}"#
            .to_string();
    while !(8 + header.len()).is_multiple_of(4) {
        header.push(' ');
    }
    let mut data = vec![7u8];
    data.extend(1.5f32.to_le_bytes());
    data.extend((-2.0f32).to_le_bytes());
    std::fs::write(&path, file_bytes(&header, &data)).unwrap();
    let st = SafeTensors::open(&path).unwrap();
    let t = st.tensor("t").unwrap();
    assert!(!t.is_mapped(), "misaligned f32 must be copied");
    assert_eq!(t.as_slice(), &[1.5, -2.0]);
    assert_eq!(st.bytes("u").unwrap(), &[7]);
}

#[test]
fn a_failed_save_leaves_the_old_file_intact() {
    let dir = scratch("atomic");
    let path = dir.join("keep.safetensors");
    let t = Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap();
    save(&path, &[("t", &t)], &[]).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = save(&path, &[("t", &t), ("t", &t)], &[]).unwrap_err();
    assert!(
        matches!(err, Error::DuplicateName { ref name, .. } if name == "t"),
        "{err}"
    );
    assert!(matches!(
        save(&path, &[("__metadata__", &t)], &[]),
        Err(Error::InvalidEntry { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // Saving into a missing directory fails cleanly.
    assert!(matches!(
        save(dir.join("no/such/x.safetensors"), &[("t", &t)], &[]),
        Err(Error::Io { .. })
    ));
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

fn fixtures_dir() -> PathBuf {
    std::env::var_os("ANVIL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
}

#[test]
fn loads_every_fixture_file() {
    let Ok(dirs) = std::fs::read_dir(fixtures_dir()) else {
        eprintln!("no fixtures at {}: skipped", fixtures_dir().display());
        return;
    };
    let mut checked = 0;
    for dir in dirs.map(|d| d.unwrap().path()) {
        let (model, expected) = (
            dir.join("model.safetensors"),
            dir.join("expected.safetensors"),
        );
        if !model.exists() {
            continue;
        }
        let model = SafeTensors::open(&model).unwrap();
        for info in model.infos() {
            let t = model.tensor(&info.name).unwrap();
            assert_eq!(t.shape(), &info.shape[..]);
            assert!(t.is_mapped(), "{}", info.name);
            assert!(t.as_slice().iter().all(|v| v.is_finite()), "{}", info.name);
        }
        let vocab = model
            .infos()
            .iter()
            .find(|i| i.name.ends_with("wte.weight") || i.name.ends_with("embed_tokens.weight"))
            .map(|i| i.shape[0])
            .unwrap();

        let exp = SafeTensors::open(&expected).unwrap();
        let ids_info = exp.info("input_ids").unwrap();
        assert_eq!(ids_info.dtype, FileDtype::I64);
        let (b, t) = (ids_info.shape[0], ids_info.shape[1]);
        let ids = exp.i64s("input_ids").unwrap();
        assert_eq!(ids.len(), b * t);
        assert!(ids.iter().all(|&i| (0..vocab as i64).contains(&i)));
        assert_eq!(exp.tensor("logits").unwrap().shape(), &[b, t, vocab]);
        assert_eq!(exp.tensor("loss").unwrap().shape(), &[] as &[usize]);
        for info in exp.infos().iter().filter(|i| i.name.starts_with("grad.")) {
            let param = model.info(&info.name["grad.".len()..]).unwrap();
            assert_eq!(param.shape, info.shape, "{}", info.name);
        }
        assert!(matches!(
            exp.tensor("input_ids"),
            Err(Error::UnsupportedDtype { .. })
        ));
        checked += 1;
    }
    assert!(
        checked >= 1,
        "no model.safetensors under {}",
        fixtures_dir().display()
    );
}

#[test]
fn lookups_of_missing_or_unsupported_tensors_name_them() {
    let dir = scratch("lookups");
    let path = dir.join("l.safetensors");
    let header = r#"{"n":{"dtype":"I8","shape":[2],"data_offsets":[0,2]},"d":{"dtype":"F64","shape":[1],"data_offsets":[8,16]}}"#;
    std::fs::write(&path, file_bytes(header, &[0; 16])).unwrap();
    let st = SafeTensors::open(&path).unwrap();
    for (name, err) in [
        ("zz", st.tensor("zz")),
        ("n", st.tensor("n")),
        ("d", st.tensor("d")),
    ] {
        let text = err.err().unwrap().to_string();
        assert!(
            text.contains(&format!("`{name}`")) && text.contains("l.safetensors"),
            "{text}"
        );
    }
    assert!(st.i64s("d").is_err());
    assert_eq!(st.names(), vec!["n", "d"]);
}

/// Loads everything in a file the reader accepted, touching every value.
fn touch_all(st: &SafeTensors) {
    for name in st.names() {
        if let Ok(t) = st.tensor(name) {
            let _ = t.to_vec();
            let _ = t.to_string();
        }
        let _ = st.i64s(name);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_header(Path::new("random"), &bytes);
        let mut framed = ((bytes.len() as u64).saturating_sub(3)).to_le_bytes().to_vec();
        framed.extend(&bytes);
        let _ = parse_header(Path::new("random"), &framed);
    }

    #[test]
    fn mutated_valid_files_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("safetensors-mutations");
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join(format!("src-{:?}.safetensors", std::thread::current().id()));
        if !src.exists() {
            let tensors = sample_tensors();
            let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
            save(&src, &refs, &[("k", "v")]).unwrap();
        }
        let mut bytes = std::fs::read(&src).unwrap();
        // Most edits land in the header, where the parser does its work.
        let header_end = (8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize).min(bytes.len());
        for (at, v) in edits {
            let i = at.index(header_end);
            bytes[i] = v;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(h) = parse_header(Path::new("mutated"), &bytes) {
            prop_assert!(h.tensors.iter().all(|t| t.range.end <= bytes.len()));
        }
        let path = dir.join(format!("m-{:?}.safetensors", std::thread::current().id()));
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(st) = SafeTensors::open(&path) {
            touch_all(&st);
        }
    }
}

#[test]
fn header_is_padded_so_data_starts_8_aligned() {
    let dir = scratch("padding");
    for n in 0..9 {
        let path = dir.join(format!("p{n}.safetensors"));
        let t = Tensor::from_vec(vec![0.5; n], &[n]).unwrap();
        save(&path, &[(&"x".repeat(n + 1), &t)], &[]).unwrap();
        let h = parse_header(&path, &std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(h.data_start % 8, 0);
        assert_eq!(h.tensors[0].dtype, FileDtype::F32);
    }
}
