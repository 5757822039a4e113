//! SiLU and SwiGLU kernels against the f64 reference on every tier, special values, finite
//! differences, errors.

mod common;

use anvil::kernels::KernelError;
use anvil::kernels::silu::reference;
use common::{close, cols, noise, tiers, value};
use proptest::prelude::*;

/// Relative. sigmoid is <= 3 ulp (math.rs); the product and, in the left tail, the rounding of
/// the argument x (exact here: no arithmetic precedes exp(-|x|)) add 1-2 ulp.
const FWD_RTOL: f32 = 6.0 * f32::EPSILON;
/// Below the smallest normal only absolute precision remains.
const ATOL: f32 = f32::MIN_POSITIVE;
/// Backward, relative to |d0| + |dy * up * silu'| (the terms added): sigmoid (3 ulp) through
/// `s + x s (1 - s)` (which cancels near x = -1.28, hence relative to the terms' size) and the
/// products and the add.
const BWD_RTOL: f32 = 12.0 * f32::EPSILON;
/// Finite differences in f64 (h = 1e-6) against f32 kernels.
const FD_TOL: f64 = 2e-6;

/// |s| + |x s (1 - s)|: the size of the two terms of silu'(x), which cancel near x = -1.28.
fn grad_terms(x: f32) -> f64 {
    let x = x as f64;
    if x.is_infinite() {
        return 1.0;
    }
    let s = 1.0 / (1.0 + (-x).exp());
    s + (x * s * (1.0 - s)).abs()
}

fn data() -> impl Strategy<Value = Vec<f32>> {
    cols().prop_flat_map(|n| prop::collection::vec(value(40.0), n * 2))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn silu_matches_reference(x in data(), seed in any::<u64>()) {
        let n = x.len();
        let (dy, dx0) = (noise(seed, n), noise(seed ^ 9, n));
        let mut y_want = vec![0.0; n];
        reference::silu_fwd(&x, &mut y_want);
        let mut dx_want = dx0.clone();
        reference::silu_bwd(&x, &dy, &mut dx_want);
        for k in tiers() {
            let mut y = vec![7.0; n + 3];
            k.silu_fwd(&x, &mut y, n).unwrap();
            let mut dx = dx0.clone();
            dx.extend([7.0; 3]);
            k.silu_bwd(&x, &dy, &mut dx, n).unwrap();
            prop_assert!(y[n..].iter().chain(&dx[n..]).all(|&v| v == 7.0), "stray write");
            for i in 0..n {
                prop_assert!(close(y[i], y_want[i], FWD_RTOL, y_want[i].abs(), ATOL),
                    "{:?} fwd x={}: got {} want {}", k.isa(), x[i], y[i], y_want[i]);
                let scale = dx0[i].abs() + (dy[i] as f64 * grad_terms(x[i])).abs() as f32;
                prop_assert!(close(dx[i], dx_want[i], BWD_RTOL, scale, ATOL),
                    "{:?} bwd x={}: got {} want {}", k.isa(), x[i], dx[i], dx_want[i]);
            }
        }
    }

    #[test]
    fn swiglu_matches_reference(gu in data(), seed in any::<u64>()) {
        let n = gu.len() / 2;
        let (g, u) = gu.split_at(n);
        let u = &u[..n];
        let (dy, dg0, du0) = (noise(seed, n), noise(seed ^ 3, n), noise(seed ^ 4, n));
        let mut y_want = vec![0.0; n];
        reference::swiglu_fwd(g, u, &mut y_want);
        let (mut dg_want, mut du_want) = (dg0.clone(), du0.clone());
        reference::swiglu_bwd(g, u, &dy, &mut dg_want, &mut du_want);
        for k in tiers() {
            let mut y = vec![7.0; n];
            k.swiglu_fwd(g, u, &mut y, n).unwrap();
            let (mut dg, mut du) = (dg0.clone(), du0.clone());
            k.swiglu_bwd(g, u, &dy, &mut dg, &mut du, n).unwrap();
            for i in 0..n {
                let (v, d) = (reference::silu_f64(g[i] as f64).0, grad_terms(g[i]));
                prop_assert!(close(y[i], y_want[i], FWD_RTOL + f32::EPSILON, y_want[i].abs(), ATOL),
                    "{:?} fwd g={} u={}: got {} want {}", k.isa(), g[i], u[i], y[i], y_want[i]);
                let sg = dg0[i].abs() + (dy[i] as f64 * u[i] as f64 * d).abs() as f32;
                prop_assert!(close(dg[i], dg_want[i], BWD_RTOL + f32::EPSILON, sg, ATOL),
                    "{:?} dgate g={}: got {} want {}", k.isa(), g[i], dg[i], dg_want[i]);
                let su = du0[i].abs() + (dy[i] as f64 * v).abs() as f32;
                prop_assert!(close(du[i], du_want[i], BWD_RTOL, su, ATOL),
                    "{:?} dup g={}: got {} want {}", k.isa(), g[i], du[i], du_want[i]);
            }
        }
    }

    /// The overwriting backward gives what the adding one gives onto zeros (the same values:
    /// `0 + x` differs from `x` only in the sign of a zero), never reads its outputs (NaN
    /// there would spread) and writes nothing past `n`.
    #[test]
    fn swiglu_bwd_overwrite_equals_adding_onto_zeros(gu in data(), seed in any::<u64>()) {
        let n = gu.len() / 2;
        let (g, u) = gu.split_at(n);
        let dy = noise(seed, n);
        for k in tiers() {
            let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
            k.swiglu_bwd(g, &u[..n], &dy, &mut dg, &mut du, n).unwrap();
            let mut wg = vec![f32::NAN; n + 3];
            let mut wu = vec![f32::NAN; n + 3];
            wg[n..].fill(7.0);
            wu[n..].fill(7.0);
            k.swiglu_bwd_overwrite(g, &u[..n], &dy, &mut wg, &mut wu, n).unwrap();
            prop_assert!(wg[n..].iter().chain(&wu[n..]).all(|&v| v == 7.0), "stray write");
            for i in 0..n {
                prop_assert!(wg[i] == dg[i] && wu[i] == du[i],
                    "{:?} g={} u={}: wrote ({}, {}) added ({}, {})",
                    k.isa(), g[i], u[i], wg[i], wu[i], dg[i], du[i]);
            }
        }
    }
}

#[test]
fn special_values() {
    let x = [
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        0.0,
        -0.0,
        1e-40,
        -1e30,
        1e30,
    ];
    for k in tiers() {
        let mut y = [9.0; 8];
        k.silu_fwd(&x, &mut y, 8).unwrap();
        let mut d = [0.0; 8];
        k.silu_bwd(&x, &[1.0; 8], &mut d, 8).unwrap();
        assert_eq!(
            (y[0], y[1].to_bits(), y[3], y[4]),
            (f32::INFINITY, (-0.0f32).to_bits(), 0.0, 0.0)
        );
        assert!(y[2].is_nan() && d[2].is_nan());
        assert_eq!(
            (d[0], d[1], d[3], d[4], d[6], d[7]),
            (1.0, 0.0, 0.5, 0.5, 0.0, 1.0),
            "{:?}",
            k.isa()
        );
        assert_eq!((y[5], y[6], y[7]), (0.5e-40, -0.0, 1e30));
    }
}

#[test]
fn bwd_matches_finite_differences() {
    let n = 300;
    let g: Vec<f32> = noise(1, n).iter().map(|v| v * 8.0).collect();
    let u = noise(2, n);
    let h = 1e-6;
    let f = |x: f64| reference::silu_f64(x).0;
    for k in tiers() {
        let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
        k.swiglu_bwd(&g, &u, &vec![1.0; n], &mut dg, &mut du, n)
            .unwrap();
        let mut dx = vec![0.0; n];
        k.silu_bwd(&g, &vec![1.0; n], &mut dx, n).unwrap();
        for i in 0..n {
            let (gi, ui) = (g[i] as f64, u[i] as f64);
            let fd_g = (f(gi + h) * ui - f(gi - h) * ui) / (2.0 * h);
            let fd_u = (f(gi) * (ui + h) - f(gi) * (ui - h)) / (2.0 * h);
            let fd_x = (f(gi + h) - f(gi - h)) / (2.0 * h);
            assert!(
                (dg[i] as f64 - fd_g).abs() < FD_TOL * (1.0 + fd_g.abs()),
                "{:?} dgate {i}",
                k.isa()
            );
            assert!(
                (du[i] as f64 - fd_u).abs() < FD_TOL * (1.0 + fd_u.abs()),
                "{:?} dup {i}",
                k.isa()
            );
            assert!(
                (dx[i] as f64 - fd_x).abs() < FD_TOL * (1.0 + fd_x.abs()),
                "{:?} dx {i}",
                k.isa()
            );
        }
        // Used twice (gate == up): silu(x) * x has gradient silu'(x) x + silu(x), the sum of both.
        let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
        k.swiglu_bwd(&g, &g, &vec![1.0; n], &mut dg, &mut du, n)
            .unwrap();
        for i in 0..n {
            let gi = g[i] as f64;
            let fd = (f(gi + h) * (gi + h) - f(gi - h) * (gi - h)) / (2.0 * h);
            let got = dg[i] as f64 + du[i] as f64;
            assert!(
                (got - fd).abs() < 4.0 * FD_TOL * (1.0 + fd.abs()),
                "{:?} twice {i}: {got} vs {fd}",
                k.isa()
            );
        }
    }
}

#[test]
fn bad_lengths_are_errors() {
    for k in tiers() {
        let (x, mut y) = (vec![0.0; 4], vec![0.0; 5]);
        assert!(matches!(
            k.silu_fwd(&x, &mut y, 5),
            Err(KernelError::BadLength { arg: "x", .. })
        ));
        assert!(k.silu_bwd(&y.clone(), &x, &mut y, 5).is_err());
        assert!(
            k.swiglu_fwd(&y.clone(), &y.clone(), &mut [0.0; 4], 5)
                .is_err()
        );
        let (mut a, mut b) = (vec![0.0; 5], vec![0.0; 4]);
        assert!(matches!(
            k.swiglu_bwd(&y, &y, &y, &mut a, &mut b, 5),
            Err(KernelError::BadLength { arg: "dup", .. })
        ));
    }
}
