//! Tensor storage dtypes: f16/bf16 decoding bit-exact against `half` over every input, int8 rows, packed
//! views, conversions, and the summarising `Debug`/`Display`.

use anvil::tensor::{DType, Tensor, bf16_to_f32, f16_to_f32};
use half::{bf16, f16};

#[test]
fn f16_decoding_is_bit_exact_for_every_input() {
    for bits in 0..=u16::MAX {
        let ours = f16_to_f32(bits).to_bits();
        let theirs = f16::from_bits(bits).to_f32().to_bits();
        assert_eq!(ours, theirs, "f16 bits {bits:#06x}");
    }
}

#[test]
fn bf16_decoding_is_bit_exact_for_every_input() {
    for bits in 0..=u16::MAX {
        let ours = bf16_to_f32(bits).to_bits();
        let theirs = bf16::from_bits(bits).to_f32().to_bits();
        assert_eq!(ours, theirs, "bf16 bits {bits:#06x}");
    }
}

#[test]
fn packed_slices_decode_every_input_like_the_scalar_path() {
    // The loop over bytes (what the compiler vectorises) against the scalar conversion, every length tail.
    let all: Vec<u16> = (0..=u16::MAX).collect();
    let h: Vec<f16> = all.iter().map(|&b| f16::from_bits(b)).collect();
    let b: Vec<bf16> = all.iter().map(|&b| bf16::from_bits(b)).collect();
    let th = Tensor::from_f16(h.clone(), &[all.len()]).unwrap();
    let tb = Tensor::from_bf16(b.clone(), &[all.len()]).unwrap();
    assert_eq!(th.dtype(), DType::F16);
    assert_eq!(tb.dtype(), DType::BF16);
    for (i, (&x, &y)) in th.as_slice().iter().zip(tb.as_slice()).enumerate() {
        assert_eq!(x.to_bits(), h[i].to_f32().to_bits());
        assert_eq!(y.to_bits(), b[i].to_f32().to_bits());
    }
    for len in 0..=19 {
        let v = th.narrow(31_000, len).unwrap().to_vec();
        let want: Vec<u32> = h[31_000..31_000 + len]
            .iter()
            .map(|x| x.to_f32().to_bits())
            .collect();
        assert_eq!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
    }
}

#[test]
fn int8_rows_dequantize_with_their_own_scale() {
    // q: (3, 4), scales: (3)
    let q: Vec<i8> = vec![1, -2, 3, 127, -128, 0, 5, 6, 7, 8, 9, 10];
    let scales = vec![0.5, 2.0, -1.0];
    let t = Tensor::from_i8(q.clone(), scales.clone(), &[3, 4]).unwrap();
    assert_eq!(t.dtype(), DType::I8);
    let want: Vec<f32> = q
        .iter()
        .enumerate()
        .map(|(i, &v)| v as f32 * scales[i / 4])
        .collect();
    assert_eq!(t.as_slice(), &want[..]);
    let mid = t.narrow(1, 2).unwrap();
    assert_eq!(mid.to_vec(), &want[4..]);
    assert_eq!(mid.i8_scales(), Some(&scales[1..]));
    assert_eq!(mid.raw_bytes().len(), 8);
    assert!(Tensor::from_i8(q, vec![1.0; 2], &[3, 4]).is_err());
}

#[test]
fn constructors_refuse_mismatched_lengths() {
    assert!(Tensor::from_f16(vec![f16::ONE; 3], &[2, 2]).is_err());
    assert!(Tensor::from_bf16(vec![bf16::ONE; 5], &[2, 2]).is_err());
    assert!(Tensor::from_i8(vec![0; 4], vec![1.0; 2], &[usize::MAX, 3]).is_err());
}

#[test]
fn to_dtype_round_trips_through_half_and_int8() {
    let x: Vec<f32> = (0..24).map(|i| (i as f32 - 11.5) * 0.37).collect();
    let t = Tensor::from_vec(x.clone(), &[4, 6]).unwrap();
    let h = t.to_dtype(DType::F16);
    assert_eq!(h.dtype(), DType::F16);
    let want: Vec<f32> = x.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    assert_eq!(h.to_f32().as_slice(), &want[..]);
    let b = t.to_dtype(DType::BF16);
    let want: Vec<f32> = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
    assert_eq!(b.to_vec(), want);

    let q = t.to_dtype(DType::I8);
    assert_eq!(q.i8_scales().map(<[f32]>::len), Some(4));
    for (row, (a, b)) in x.chunks(6).zip(q.to_vec().chunks(6)).enumerate() {
        let amax = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        // Symmetric per-row int8: error at most half a step of amax / 127.
        for (u, v) in a.iter().zip(b) {
            assert!(
                (u - v).abs() <= amax / 127.0 * 0.5 + 1e-6,
                "row {row}: {u} vs {v}"
            );
        }
    }
    assert_eq!(q.to_dtype(DType::I8).raw_bytes(), q.raw_bytes());
    assert_eq!(t.to_dtype(DType::F32).as_slice(), t.as_slice());
}

#[test]
fn packed_tensors_keep_the_f32_api() {
    let t =
        Tensor::from_bf16((0..12).map(|i| bf16::from_f32(i as f32)).collect(), &[3, 4]).unwrap();
    let r = t.reshape(&[4, 3]).unwrap();
    assert_eq!(r.dtype(), DType::BF16);
    assert_eq!(r.narrow(1, 1).unwrap().as_slice(), &[3.0, 4.0, 5.0]);
    let mut m = t.narrow(2, 1).unwrap();
    m.make_mut()[0] = -1.0;
    assert_eq!(m.dtype(), DType::F32);
    assert_eq!(m.as_slice(), &[-1.0, 9.0, 10.0, 11.0]);
    assert_eq!(t.as_slice()[8], 8.0, "the original is untouched");
    assert!(!t.is_mapped());
}

#[test]
fn display_and_debug_summarise_large_tensors() {
    let big = Tensor::from_vec((0..1000).map(|i| i as f32).collect(), &[10, 100]).unwrap();
    let s = big.to_string();
    assert!(s.contains("[10, 100]") && s.contains("f32"), "{s}");
    assert!(s.contains("0.0, 1.0, 2.0, ..., 997.0, 998.0, 999.0"), "{s}");
    let d = format!("{big:?}");
    assert!(d.contains("...") && d.len() < 200, "{d}");
    let small = Tensor::from_vec(vec![1.5, -2.0], &[2]).unwrap();
    assert_eq!(small.to_string(), "Tensor[2] f32 [1.5, -2.0]");
    let half = Tensor::from_f16(vec![f16::from_f32(0.5); 9], &[9]).unwrap();
    assert_eq!(
        half.to_string(),
        "Tensor[9] f16 [0.5, 0.5, 0.5, ..., 0.5, 0.5, 0.5]"
    );
    assert_eq!(Tensor::scalar(3.0).to_string(), "Tensor[] f32 [3.0]");
    assert_eq!(
        Tensor::zeros(&[0, 4]).unwrap().to_string(),
        "Tensor[0, 4] f32 []"
    );
}

#[test]
fn huge_page_tensors_keep_values_and_copy_on_write() {
    let n = 3 << 20;
    let vals: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 - 500.0).collect();
    let t = Tensor::from_vec(vals.clone(), &[3, 1 << 20]).unwrap();
    let h = t.in_huge_pages().unwrap();
    assert_eq!(h.shape(), t.shape());
    assert_eq!(h.as_slice(), &vals[..]);
    assert_eq!(
        h.as_slice().as_ptr() as usize % anvil::tensor::HUGE_PAGE,
        0,
        "starts on a huge page"
    );
    assert!(!h.is_mapped(), "our own memory, not a file's");
    assert!(format!("{:?}", h.storage()).contains("huge pages"));
    let row = h.narrow(1, 1).unwrap();
    assert_eq!(row.as_slice(), &vals[1 << 20..2 << 20]);
    let mut w = h.clone();
    w.make_mut()[0] = 7.0;
    assert_eq!(w.as_slice()[0], 7.0);
    assert_eq!(h.as_slice()[0], vals[0], "the mapped original is untouched");
    assert!(format!("{:?}", w.storage()).contains("owned"));
}
