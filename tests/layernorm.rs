//! LayerNorm kernels: every tier against the scalar reference, finite differences in f64,
//! gradient accumulation, thread-count determinism, special values and error cases.

use anvil::kernels::layernorm::reference;
use anvil::kernels::{KernelError, Kernels};
use proptest::prelude::*;

/// Forward, tier vs reference, relative to max(1, |ref|): the reference sums rows in f64, the
/// tiers in f32 lanes (8 or 16) with FMA; the rest of the arithmetic is the same.
const FWD_TOL: f32 = 2e-5;
/// Forward, extra slack per unit of `sqrt(cols) * rstd * max|x_row| * |w|`: `mean` summed in f32
/// lanes is off by ~sqrt(cols) ulps of the row's largest |x| (a random walk; 8 ulps = 1e-6 is
/// several of its standard deviations), and `rstd` magnifies that in `x - mean` when |mean| >> std.
const FWD_COND_TOL: f32 = 1e-6;
/// Backward, tier vs reference, relative to max(1, |ref|): dx = rstd * (g - mean(g) - norm *
/// mean(g * norm)) subtracts two sums taken in f32 lanes (f64 in the reference), and dw/db add
/// up to 300 rows in chunks rather than in row order.
const BWD_TOL: f32 = 1e-4;
/// f32 kernel vs f64 central differences of the f64 forward (h = 1e-4 in f64 leaves
/// truncation error ~1e-8, so this is the f32 kernel's own rounding).
const FD_TOL: f64 = 2e-3;

/// xorshift64*: seeded test data without another dependency.
struct Rng(u64);
impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let u = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
        2.0 * u - 1.0
    }
    fn vec(&mut self, n: usize, offset: f32, scale: f32) -> Vec<f32> {
        (0..n).map(|_| offset + scale * self.f32()).collect()
    }
}

fn close(got: f32, want: f32, tol: f32) -> bool {
    (got.is_nan() && want.is_nan())
        || got == want
        || (got - want).abs() <= tol * want.abs().max(1.0)
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(close(g, w, tol), "{what}[{i}]: got {g:e}, want {w:e}");
    }
}

/// `y` against the reference, allowing for the row's conditioning (see [`FWD_COND_TOL`]).
fn assert_y_close(what: &str, c: &Case, y: &[f32], y0: &[f32], rstd: &[f32]) {
    for (i, (&g, &w)) in y.iter().zip(y0).enumerate() {
        let (r, j) = (i / c.cols, i % c.cols);
        let xmax = c.x[r * c.cols..(r + 1) * c.cols]
            .iter()
            .fold(0.0f32, |a, v| a.max(v.abs()));
        let slack = FWD_COND_TOL * (c.cols as f32).sqrt() * rstd[r] * xmax * c.w[j].abs();
        let ok = close(g, w, FWD_TOL) || (g - w).abs() <= slack + FWD_TOL * w.abs().max(1.0);
        assert!(ok, "{what}[{i}]: got {g:e}, want {w:e}");
    }
}

fn tiers() -> Vec<Kernels> {
    Kernels::available().expect("ANVIL_ISA names a tier this CPU has")
}

struct Case {
    rows: usize,
    cols: usize,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
}

impl Case {
    fn new(rows: usize, cols: usize, seed: u64, offset: f32, scale: f32) -> Self {
        let mut r = Rng(seed | 1);
        Case {
            rows,
            cols,
            x: r.vec(rows * cols, offset, scale),
            w: r.vec(cols, 1.0, 0.5),
            b: r.vec(cols, 0.0, 0.5),
            dy: r.vec(rows * cols, 0.0, 1.0),
        }
    }

    /// `(y, mean, rstd)` from `k`, or from the reference when `k` is None.
    fn fwd(&self, k: Option<Kernels>, eps: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (mut y, mut m, mut r) = (
            vec![0.0; self.x.len()],
            vec![0.0; self.rows],
            vec![0.0; self.rows],
        );
        let (x, w, b, n, c) = (&self.x, &self.w, &self.b, self.rows, self.cols);
        match k {
            Some(k) => k.layernorm_fwd(x, w, b, &mut y, &mut m, &mut r, n, c, eps),
            None => reference::layernorm_fwd(x, w, b, &mut y, &mut m, &mut r, n, c, eps),
        }
        .unwrap();
        (y, m, r)
    }

    /// `(dx, dw, db)` added onto `init` from `k` or the reference.
    fn bwd(&self, k: Option<Kernels>, mean: &[f32], rstd: &[f32], init: f32) -> [Vec<f32>; 3] {
        let mut dx = vec![init; self.x.len()];
        let (mut dw, mut db) = (vec![init; self.cols], vec![init; self.cols]);
        let (x, w, dy, n, c) = (&self.x, &self.w, &self.dy, self.rows, self.cols);
        match k {
            Some(k) => k.layernorm_bwd(x, w, mean, rstd, dy, &mut dx, &mut dw, &mut db, n, c),
            None => reference::layernorm_bwd(x, w, mean, rstd, dy, &mut dx, &mut dw, &mut db, n, c),
        }
        .unwrap();
        [dx, dw, db]
    }
}

/// Values planted at a random position of `x` in the property test: signed zeros, squares that
/// overflow f32 (whole row's statistics infinite), subnormals, and NaN/inf (row becomes NaN).
const SPECIALS: [f32; 7] = [0.0, -0.0, 1e20, -1e20, 1e-40, f32::NAN, f32::INFINITY];

fn cols_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0usize..=67, 1 => prop::sample::select(vec![255usize, 768, 1000, 4096])]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn tiers_match_reference(
        rows in 1usize..6,
        cols in cols_strategy(),
        seed in any::<u64>(),
        special in prop::option::of((any::<usize>(), prop::sample::select(SPECIALS.to_vec()))),
        offset in -4.0f32..4.0,
        scale in prop::sample::select(vec![1e-2f32, 1.0, 50.0]),
        eps in prop::sample::select(vec![1e-5f32, 1e-12]),
    ) {
        let mut c = Case::new(rows, cols, seed, offset, scale);
        if let (Some((at, v)), false) = (special, c.x.is_empty()) {
            let n = c.x.len();
            c.x[at % n] = v;
        }
        let (y0, m0, r0) = c.fwd(None, eps);
        let g0 = c.bwd(None, &m0, &r0, 0.25);
        for k in tiers() {
            let (y, m, r) = c.fwd(Some(k), eps);
            assert_y_close(&format!("{:?} y", k.isa()), &c, &y, &y0, &r0);
            assert_close(&format!("{:?} mean", k.isa()), &m, &m0, FWD_TOL);
            assert_close(&format!("{:?} rstd", k.isa()), &r, &r0, FWD_TOL);
            // Same saved statistics, so the backward is compared on its own.
            let g = c.bwd(Some(k), &m0, &r0, 0.25);
            for (name, i) in [("dx", 0), ("dw", 1), ("db", 2)] {
                assert_close(&format!("{:?} {name}", k.isa()), &g[i], &g0[i], BWD_TOL);
            }
        }
    }
}

/// The forward in f64, for finite differences. `x: (rows, cols)`, `w, b: (cols)`.
fn fwd_f64(x: &[f64], w: &[f64], b: &[f64], cols: usize, eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (xr, yr) in x.chunks(cols).zip(y.chunks_mut(cols)) {
        let m = xr.iter().sum::<f64>() / cols as f64;
        let var = xr.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / cols as f64;
        let rs = 1.0 / (var + eps).sqrt();
        for j in 0..cols {
            yr[j] = (xr[j] - m) * rs * w[j] + b[j];
        }
    }
    y
}

#[test]
fn backward_matches_finite_differences() {
    let (rows, cols, eps) = (3, 37, 1e-5);
    let c = Case::new(rows, cols, 7, 0.5, 1.0);
    let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
    let (x, w, b, dy) = (f64s(&c.x), f64s(&c.w), f64s(&c.b), f64s(&c.dy));
    // L = sum(y * dy), so dL/dy = dy.
    let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
        fwd_f64(x, w, b, cols, eps)
            .iter()
            .zip(&dy)
            .map(|(y, d)| y * d)
            .sum()
    };
    let h = 1e-4;
    let fd = |which: usize, i: usize| {
        let (mut a, mut z) = (
            [x.clone(), w.clone(), b.clone()],
            [x.clone(), w.clone(), b.clone()],
        );
        a[which][i] += h;
        z[which][i] -= h;
        (loss(&a[0], &a[1], &a[2]) - loss(&z[0], &z[1], &z[2])) / (2.0 * h)
    };
    for k in tiers() {
        let (_, m, r) = c.fwd(Some(k), eps as f32);
        let g = c.bwd(Some(k), &m, &r, 0.0);
        for (which, name) in [(0, "dx"), (1, "dw"), (2, "db")] {
            for (i, &got) in g[which].iter().enumerate() {
                let want = fd(which, i);
                let err = (got as f64 - want).abs();
                assert!(
                    err <= FD_TOL * want.abs().max(1.0),
                    "{:?} {name}[{i}]: {got} vs {want}",
                    k.isa()
                );
            }
        }
    }
}

#[test]
fn backward_adds_into_gradients() {
    let c = Case::new(40, 300, 11, 0.0, 1.0);
    for k in tiers() {
        let (_, m, r) = c.fwd(Some(k), 1e-5);
        let once = c.bwd(Some(k), &m, &r, 0.0);
        // A second call onto the first call's output: an input used twice sums its gradients.
        let (mut dx, mut dw, mut db) = (once[0].clone(), once[1].clone(), once[2].clone());
        k.layernorm_bwd(
            &c.x, &c.w, &m, &r, &c.dy, &mut dx, &mut dw, &mut db, c.rows, c.cols,
        )
        .unwrap();
        for (got, one) in [(&dx, &once[0]), (&dw, &once[1]), (&db, &once[2])] {
            let twice: Vec<f32> = one.iter().map(|v| 2.0 * v).collect();
            assert_close("twice", got, &twice, BWD_TOL);
        }
        assert_eq!(
            dx,
            once[0].iter().map(|v| v + v).collect::<Vec<_>>(),
            "dx doubles exactly"
        );
    }
}

#[test]
fn bit_identical_on_one_and_two_threads() {
    // 300 x 768 is above the parallel threshold and spans ten 32-row backward chunks.
    let c = Case::new(300, 768, 3, 0.1, 2.0);
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    for k in tiers() {
        let run = || {
            let (y, m, r) = c.fwd(Some(k), 1e-5);
            let g = c.bwd(Some(k), &m, &r, 0.5);
            (y, m, r, g)
        };
        let one = pool(1).install(run);
        let two = pool(2).install(run);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&one.0), bits(&two.0), "{:?} y", k.isa());
        assert_eq!(bits(&one.2), bits(&two.2), "{:?} rstd", k.isa());
        for i in 0..3 {
            assert_eq!(bits(&one.3[i]), bits(&two.3[i]), "{:?} grad {i}", k.isa());
        }
    }
}

#[test]
fn special_values() {
    let cols = 37;
    let mut c = Case::new(8, cols, 5, 0.0, 1.0);
    let row = |r: usize| r * cols..(r + 1) * cols;
    c.x[row(0)].fill(0.0);
    c.x[row(1)].fill(-0.0);
    c.x[row(2)].fill(3.5); // constant: variance exactly 0
    c.x[row(3)].iter_mut().for_each(|v| *v *= 1e20); // squares overflow: var inf, rstd 0
    c.x[row(4)].iter_mut().for_each(|v| *v *= 1e15); // large but representable statistics
    c.x[row(5)].iter_mut().for_each(|v| *v *= 1e-40); // subnormal: var underflows to 0
    c.x[6 * cols + 3] = f32::NAN;
    c.x[7 * cols + 5] = f32::INFINITY;
    let (y0, m0, r0) = c.fwd(None, 1e-5);
    for r in [0, 1, 2, 3, 5] {
        assert_eq!(&y0[row(r)], &c.b[..], "row {r}: y = b");
    }
    assert!(
        y0[row(6)].iter().chain(&y0[row(7)]).all(|v| v.is_nan()),
        "NaN/inf propagate"
    );
    for k in tiers() {
        let (y, m, r) = c.fwd(Some(k), 1e-5);
        assert_y_close(&format!("{:?} y", k.isa()), &c, &y, &y0, &r0);
        assert_close(&format!("{:?} mean", k.isa()), &m, &m0, FWD_TOL);
        assert_close(&format!("{:?} rstd", k.isa()), &r, &r0, FWD_TOL);
        let g0 = c.bwd(None, &m0, &r0, 0.0);
        let g = c.bwd(Some(k), &m0, &r0, 0.0);
        assert_close(&format!("{:?} dx", k.isa()), &g[0], &g0[0], BWD_TOL);
        assert!(
            g[0][row(6)].iter().all(|v| v.is_nan()),
            "NaN propagates into dx"
        );
    }
}

#[test]
fn errors_never_panic() {
    let (x, w, mut y, mut s) = (
        vec![0.0f32; 12],
        vec![1.0f32; 4],
        vec![0.0f32; 12],
        vec![0.0f32; 3],
    );
    let mut s2 = s.clone();
    for k in tiers() {
        let e = k.layernorm_fwd(&x[..11], &w, &w, &mut y, &mut s, &mut s2, 3, 4, 1e-5);
        assert!(
            matches!(e, Err(KernelError::BadLength { arg: "x", .. })),
            "{e:?}"
        );
        let e = k.layernorm_fwd(&x, &w[..3], &w, &mut y, &mut s, &mut s2, 3, 4, 1e-5);
        assert!(
            matches!(e, Err(KernelError::BadLength { arg: "w", .. })),
            "{e:?}"
        );
        let e = k.layernorm_fwd(&x, &w, &w, &mut y, &mut s[..2], &mut s2, 3, 4, 1e-5);
        assert!(
            matches!(e, Err(KernelError::BadLength { arg: "mean", .. })),
            "{e:?}"
        );
        let e = k.layernorm_fwd(&x, &w, &w, &mut y, &mut s, &mut s2, usize::MAX, 4, 1e-5);
        assert!(matches!(e, Err(KernelError::BadShape { .. })), "{e:?}");
        let (mut dx, mut dw, mut db) = (vec![0.0f32; 12], vec![0.0f32; 4], vec![0.0f32; 3]);
        let e = k.layernorm_bwd(&x, &w, &s, &s2, &x, &mut dx, &mut dw, &mut db, 3, 4);
        assert!(
            matches!(e, Err(KernelError::BadLength { arg: "db", .. })),
            "{e:?}"
        );
        // Zero rows or columns are fine and touch nothing they should not.
        k.layernorm_fwd(&[], &[], &[], &mut [], &mut s, &mut s2, 3, 0, 1e-5)
            .unwrap();
        assert!(s.iter().all(|&m| m == 0.0));
        k.layernorm_bwd(&[], &[], &s, &s2, &[], &mut [], &mut [], &mut [], 3, 0)
            .unwrap();
        k.layernorm_fwd(&[], &w, &w, &mut [], &mut [], &mut [], 0, 4, 1e-5)
            .unwrap();
    }
}
