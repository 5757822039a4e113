//! Softmax kernels (plain and masked, forward and backward) against the f64 reference on every
//! tier, special rows, finite differences, errors, thread-count independence.

mod common;

use anvil::kernels::softmax::reference;
use anvil::kernels::{CausalMask, KernelError};
use common::{close, cols, noise, single_thread, tiers, value};
use proptest::prelude::*;

const EPS: f32 = f32::EPSILON;
/// exp's worst error over the tiers (math.rs: 1.19 ulp scalar) plus the reciprocal and the
/// multiply by it (one rounding each).
const FWD_FIXED_ULP: f32 = 1.5 + 2.0;
/// Outputs below the smallest normal carry absolute precision only.
const FWD_ATOL: f32 = f32::MIN_POSITIVE;
/// Backward: the f32 dot product `sum(dy * y)` in lane partial sums, then `dy - s`, the FMA and
/// the add into dx; each rounding is relative to the sizes summed, not to the result.
const BWD_FIXED_ULP: f32 = 4.0;

/// Relative error bound of a forward row: the fixed part plus the f32 sum of `cols` positive
/// terms in >= 8 lane partial sums (each partial sum at most cols/8 roundings, then <= 16 more
/// combining lanes, each relative to the whole sum since the terms are positive).
fn fwd_rtol(cols: usize) -> f32 {
    (FWD_FIXED_ULP + (cols / 8 + 16) as f32) * EPS
}

fn bwd_rtol(cols: usize) -> f32 {
    (BWD_FIXED_ULP + (cols / 8 + 16) as f32) * EPS
}

/// Row-major data for `rows` rows of the given lengths.
fn rows_of(range: f32) -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
    (1usize..4, cols())
        .prop_flat_map(move |(r, c)| (Just(r), Just(c), prop::collection::vec(value(range), r * c)))
}

fn check_fwd(
    x: &[f32],
    rows: usize,
    cols: usize,
    mask: Option<CausalMask>,
) -> Result<(), TestCaseError> {
    let n = rows * cols;
    let mut want = vec![0.0; n];
    match mask {
        Some(m) => reference::softmax_masked_fwd(x, &mut want, rows, cols, m),
        None => reference::softmax_fwd(x, &mut want, rows, cols),
    }
    for k in tiers() {
        // Sentinels past the end catch stray writes.
        let mut got = vec![7.0f32; n + 3];
        match mask {
            Some(m) => k.softmax_masked_fwd(x, &mut got, rows, cols, m).unwrap(),
            None => k.softmax_fwd(x, &mut got, rows, cols).unwrap(),
        }
        prop_assert!(
            got[n..].iter().all(|&v| v == 7.0),
            "{:?}: wrote past the end",
            k.isa()
        );
        for i in 0..n {
            let ok = close(got[i], want[i], fwd_rtol(cols), want[i].abs(), FWD_ATOL);
            prop_assert!(
                ok,
                "{:?} ({rows}, {cols}) at {i}: got {} want {}",
                k.isa(),
                got[i],
                want[i]
            );
            if want[i] == 0.0
                && mask.is_some_and(|m| !m.kept(i / cols.max(1), cols).contains(&(i % cols)))
            {
                prop_assert!(got[i] == 0.0, "masked entry {i} is {}", got[i]);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn fwd_matches_reference((rows, cols, x) in rows_of(30.0)) {
        check_fwd(&x, rows, cols, None)?;
    }

    #[test]
    fn fwd_wide_range((rows, cols, x) in rows_of(100.0)) {
        check_fwd(&x, rows, cols, None)?;
    }

    #[test]
    fn masked_fwd_matches_reference(
        t in 1usize..40,
        offset in 0usize..30,
        window in prop::option::of(0usize..50),
        seed in any::<u64>(),
    ) {
        let (rows, cols) = (2 * t, t + offset);
        let x: Vec<f32> = noise(seed, rows * cols).iter().map(|v| v * 20.0).collect();
        check_fwd(&x, rows, cols, Some(CausalMask { block_rows: t, offset, window }))?;
    }

    #[test]
    fn bwd_matches_reference((rows, cols, x) in rows_of(10.0), seed in any::<u64>()) {
        let n = rows * cols;
        let mut y = vec![0.0; n];
        reference::softmax_fwd(&x, &mut y, rows, cols);
        let dy: Vec<f32> = noise(seed, n).iter().map(|v| v * 3.0).collect();
        let dx0 = noise(seed ^ 1, n);
        let mut want = dx0.clone();
        reference::softmax_bwd(&y, &dy, &mut want, rows, cols);
        for k in tiers() {
            let mut got = dx0.clone();
            got.extend([7.0; 3]);
            k.softmax_bwd(&y, &dy, &mut got, rows, cols).unwrap();
            prop_assert!(got[n..].iter().all(|&v| v == 7.0));
            for r in 0..rows {
                let o = r * cols;
                let dot: f32 = (0..cols).map(|c| (y[o + c] * dy[o + c]).abs()).sum();
                for i in o..o + cols {
                    let scale = dx0[i].abs() + y[i] * (dy[i].abs() + dot);
                    let ok = close(got[i], want[i], bwd_rtol(cols), scale, FWD_ATOL);
                    prop_assert!(ok, "{:?} ({rows}, {cols}) at {i}: got {} want {}", k.isa(), got[i], want[i]);
                }
            }
        }
    }
}

#[test]
fn special_rows() {
    let (inf, nan) = (f32::INFINITY, f32::NAN);
    let cases: [(&[f32], &str); 5] = [
        (&[1.0, inf, 2.0], "nan"),
        (&[nan, 1.0, 3.0], "nan"),
        (&[-inf, -inf, -inf], "zero"),
        (&[nan, -inf], "nan"),
        (&[-inf, 0.5, -inf], "onehot"),
    ];
    for k in tiers() {
        for (x, what) in cases {
            let mut y = vec![9.0; x.len()];
            k.softmax_fwd(x, &mut y, 1, x.len()).unwrap();
            match what {
                "nan" => assert!(y.iter().all(|v| v.is_nan()), "{:?} {x:?} -> {y:?}", k.isa()),
                "zero" => assert!(y.iter().all(|&v| v == 0.0), "{:?} {x:?} -> {y:?}", k.isa()),
                _ => assert_eq!(y, [0.0, 1.0, 0.0]),
            }
        }
        // Fully masked rows (an empty window) are all zeros, not NaN.
        let x = [1.0f32; 12];
        let mut y = vec![9.0; 12];
        let m = CausalMask {
            block_rows: 3,
            offset: 1,
            window: Some(0),
        };
        k.softmax_masked_fwd(&x, &mut y, 3, 4, m).unwrap();
        assert!(y.iter().all(|&v| v == 0.0));
    }
}

#[test]
fn mask_convention() {
    // Square causal: row r keeps 0..=r. Window 2 with offset 1: row r keeps r..=r+1.
    let m = CausalMask::causal(4);
    assert_eq!(m.kept(2, 4), 0..3);
    assert_eq!(m.kept(5, 4), 0..2); // row 5 is query 1 of the second block
    let w = CausalMask {
        block_rows: 4,
        offset: 1,
        window: Some(2),
    };
    assert_eq!(w.kept(0, 5), 0..2);
    assert_eq!(w.kept(3, 5), 3..5);
}

/// dL/dx for L = sum(w * softmax(x)) by central differences of the f64 reference.
fn fd_grad(x: &[f32], w: &[f32]) -> Vec<f64> {
    let h = 1e-5;
    let loss = |x: &[f64]| {
        let mut y = vec![0.0; x.len()];
        reference::softmax_row_f64(x, &mut y);
        y.iter().zip(w).map(|(y, &w)| y * w as f64).sum::<f64>()
    };
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    (0..x.len())
        .map(|i| {
            let (mut a, mut b) = (x64.clone(), x64.clone());
            a[i] += h;
            b[i] -= h;
            (loss(&a) - loss(&b)) / (2.0 * h)
        })
        .collect()
}

#[test]
fn bwd_matches_finite_differences() {
    // f32 y and dy feed the kernel, so agreement is to f32 precision of the terms.
    const FD_TOL: f64 = 1e-5;
    for cols in [1usize, 5, 17, 40] {
        let x: Vec<f32> = noise(cols as u64, cols).iter().map(|v| v * 4.0).collect();
        let w = noise(cols as u64 + 100, cols);
        let want = fd_grad(&x, &w);
        for k in tiers() {
            let mut y = vec![0.0; cols];
            k.softmax_fwd(&x, &mut y, 1, cols).unwrap();
            let mut dx = vec![0.0; cols];
            k.softmax_bwd(&y, &w, &mut dx, 1, cols).unwrap();
            // Used twice: the second call adds the same gradient again.
            let mut dx2 = dx.clone();
            k.softmax_bwd(&y, &w, &mut dx2, 1, cols).unwrap();
            for i in 0..cols {
                assert!(
                    (dx[i] as f64 - want[i]).abs() < FD_TOL,
                    "{:?} {cols} {i}: {} vs {}",
                    k.isa(),
                    dx[i],
                    want[i]
                );
                assert!((dx2[i] as f64 - 2.0 * want[i]).abs() < 2.0 * FD_TOL);
            }
        }
    }
}

#[test]
fn bad_lengths_are_errors() {
    for k in tiers() {
        let (x, mut y) = (vec![0.0; 11], vec![0.0; 12]);
        assert!(matches!(
            k.softmax_fwd(&x, &mut y, 3, 4),
            Err(KernelError::BadLength { arg: "x", .. })
        ));
        assert!(matches!(
            k.softmax_fwd(&y.clone(), &mut [0.0; 5], 3, 4),
            Err(KernelError::BadLength { arg: "y", .. })
        ));
        let m = CausalMask::causal(3);
        assert!(k.softmax_masked_fwd(&x, &mut y, 3, 4, m).is_err());
        let mut dx = vec![0.0; 12];
        assert!(k.softmax_bwd(&x, &y, &mut dx, 3, 4).is_err());
        assert!(matches!(
            k.softmax_fwd(&x, &mut y, usize::MAX, 2),
            Err(KernelError::BadShape { .. })
        ));
    }
}

#[test]
fn thread_count_does_not_change_results() {
    let (rows, cols) = (512, 300);
    let x: Vec<f32> = noise(7, rows * cols).iter().map(|v| v * 10.0).collect();
    for k in tiers() {
        let mut a = vec![0.0; rows * cols];
        let mut b = vec![0.0; rows * cols];
        k.softmax_fwd(&x, &mut a, rows, cols).unwrap();
        single_thread(|| k.softmax_fwd(&x, &mut b, rows, cols).unwrap());
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
    }
}
