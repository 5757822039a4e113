//! GELU kernels (tanh and erf, forward and backward) against the f64 reference on every tier,
//! special values, finite differences, errors; the fused bias + GELU against GELU of the sum.

mod common;

use anvil::kernels::gelu::reference;
use anvil::kernels::{Gelu, KernelError};
use common::{close, cols, noise, tiers, value};
use proptest::prelude::*;

/// Forward, in ulps relative to |y|: sigmoid (3) or norm_cdf's fit, the polynomial and the
/// products.
const FWD_ULPS: f64 = 8.0;
/// The tails are ill-conditioned in f32: exp's argument (`-2|u|` or `-x^2/2 + P`) is rounded
/// (about 3 roundings on the way), and exp turns an absolute error there into a relative one, so
/// the bound grows by this many ulps per unit of |argument| (see `exp_arg`).
const ARG_ULPS: f64 = 3.0;
/// Below the smallest normal only absolute precision remains.
const ATOL: f32 = f32::MIN_POSITIVE;
/// Backward, relative to |dx0| + |dy| (|gelu'| + |x p'|) (the terms added, as `s + x s (1-s) u'`
/// cancels near its root): as the forward plus the derivative's products and the add.
const BWD_ULPS: f64 = 12.0;
/// Finite differences in f64 (h = 1e-6) against f32 kernels: f32 rounding of the gradient.
const FD_TOL: f64 = 2e-6;

const KINDS: [Gelu; 2] = [Gelu::Tanh, Gelu::Erf];

/// |argument of exp| for input x: 2|u| for tanh, x^2/2 for erf.
fn exp_arg(kind: Gelu, x: f32) -> f64 {
    let x = x as f64;
    match kind {
        Gelu::Tanh => (1.595_769_1 * (x + 0.044715 * x * x * x)).abs(),
        Gelu::Erf => 0.5 * x * x,
    }
}

fn data() -> impl Strategy<Value = Vec<f32>> {
    cols().prop_flat_map(|n| prop::collection::vec(value(12.0), n * 3))
}

fn check(kind: Gelu, x: &[f32], dy: &[f32], dx0: &[f32]) -> Result<(), TestCaseError> {
    let n = x.len();
    let mut y_want = vec![0.0; n];
    reference::gelu_fwd(kind, x, &mut y_want);
    let mut dx_want = dx0.to_vec();
    reference::gelu_bwd(kind, x, dy, &mut dx_want);
    for k in tiers() {
        let mut y = vec![7.0; n + 3];
        k.gelu_fwd(kind, x, &mut y, n).unwrap();
        let mut dx = dx0.to_vec();
        dx.extend([7.0; 3]);
        k.gelu_bwd(kind, x, dy, &mut dx, n).unwrap();
        prop_assert!(
            y[n..].iter().chain(&dx[n..]).all(|&v| v == 7.0),
            "stray write"
        );
        for i in 0..n {
            let cond = ARG_ULPS * exp_arg(kind, x[i]).min(200.0);
            let eps = f32::EPSILON as f64;
            let ok = close(
                y[i],
                y_want[i],
                ((FWD_ULPS + cond) * eps) as f32,
                y_want[i].abs(),
                ATOL,
            );
            prop_assert!(
                ok,
                "{:?} {kind:?} fwd x={}: got {} want {}",
                k.isa(),
                x[i],
                y[i],
                y_want[i]
            );
            let (xi, p) = (x[i] as f64, y_want[i] as f64 / x[i] as f64);
            let g = reference::gelu_f64(kind, xi).1;
            let terms = if p.is_finite() {
                p.abs() + (g - p).abs()
            } else {
                g.abs()
            };
            let scale = dx0[i].abs() + (dy[i] as f64 * terms).abs() as f32;
            let ok = close(
                dx[i],
                dx_want[i],
                ((BWD_ULPS + cond) * eps) as f32,
                scale,
                ATOL,
            );
            prop_assert!(
                ok,
                "{:?} {kind:?} bwd x={}: got {} want {}",
                k.isa(),
                x[i],
                dx[i],
                dx_want[i]
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn matches_reference(x in data(), seed in any::<u64>()) {
        let dy = noise(seed, x.len());
        let dx0 = noise(seed ^ 5, x.len());
        for kind in KINDS {
            check(kind, &x, &dy, &dx0)?;
        }
    }

    /// The overwriting backward gives what the adding one gives onto zeros (the same values:
    /// `0 + x` differs from `x` only in the sign of a zero), never reads its output (NaN
    /// there would spread) and writes nothing past `n`.
    #[test]
    fn bwd_overwrite_equals_adding_onto_zeros(x in data(), seed in any::<u64>()) {
        let n = x.len();
        let dy = noise(seed, n);
        for kind in KINDS {
            for k in tiers() {
                let mut added = vec![0.0; n];
                k.gelu_bwd(kind, &x, &dy, &mut added, n).unwrap();
                let mut written = vec![f32::NAN; n + 3];
                written[n..].fill(7.0);
                k.gelu_bwd_overwrite(kind, &x, &dy, &mut written, n).unwrap();
                prop_assert!(written[n..].iter().all(|&v| v == 7.0), "stray write");
                for i in 0..n {
                    prop_assert!(written[i] == added[i],
                        "{:?} {kind:?} x={}: wrote {} added {}", k.isa(), x[i], written[i], added[i]);
                }
            }
        }
    }
}

#[test]
fn dense_sweep() {
    let x: Vec<f32> = (0..200_001).map(|i| -20.0 + i as f32 * 2e-4).collect();
    let ones = vec![1.0; x.len()];
    let zeros = vec![0.0; x.len()];
    for kind in KINDS {
        check(kind, &x, &ones, &zeros).unwrap();
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
        for kind in KINDS {
            let mut y = [9.0; 8];
            k.gelu_fwd(kind, &x, &mut y, 8).unwrap();
            let mut d = [0.0; 8];
            k.gelu_bwd(kind, &x, &[1.0; 8], &mut d, 8).unwrap();
            assert_eq!(
                (y[0], y[1].to_bits(), y[3], y[4]),
                (f32::INFINITY, (-0.0f32).to_bits(), 0.0, 0.0)
            );
            assert!(y[2].is_nan() && d[2].is_nan(), "{:?} {kind:?}", k.isa());
            assert_eq!(
                (d[0], d[1], d[3], d[4]),
                (1.0, 0.0, 0.5, 0.5),
                "{:?} {kind:?}",
                k.isa()
            );
            assert_eq!(
                (y[5], y[6], y[7]),
                (0.5e-40, -0.0, 1e30),
                "{:?} {kind:?}",
                k.isa()
            );
            assert_eq!((d[6], d[7]), (0.0, 1.0));
        }
    }
}

#[test]
fn bwd_matches_finite_differences() {
    let x: Vec<f32> = noise(3, 200).iter().map(|v| v * 6.0).collect();
    let h = 1e-6;
    for kind in KINDS {
        for k in tiers() {
            let mut dx = vec![0.0; x.len()];
            k.gelu_bwd(kind, &x, &vec![1.0; x.len()], &mut dx, x.len())
                .unwrap();
            for (i, &xi) in x.iter().enumerate() {
                let xi = xi as f64;
                let fd = (reference::gelu_f64(kind, xi + h).0
                    - reference::gelu_f64(kind, xi - h).0)
                    / (2.0 * h);
                assert!(
                    (dx[i] as f64 - fd).abs() < FD_TOL * (1.0 + fd.abs()),
                    "{:?} {kind:?} x={xi}: {} vs {fd}",
                    k.isa(),
                    dx[i]
                );
            }
            // Used twice: the gradient adds up.
            let mut twice = dx.clone();
            k.gelu_bwd(kind, &x, &vec![1.0; x.len()], &mut twice, x.len())
                .unwrap();
            assert!(
                twice
                    .iter()
                    .zip(&dx)
                    .all(|(t, d)| (t - 2.0 * d).abs() <= 1e-6 * d.abs())
            );
        }
    }
}

#[test]
fn bad_lengths_are_errors() {
    for k in tiers() {
        let (x, mut y) = (vec![0.0; 4], vec![0.0; 5]);
        assert!(matches!(
            k.gelu_fwd(Gelu::Tanh, &x, &mut y, 5),
            Err(KernelError::BadLength { arg: "x", .. })
        ));
        assert!(k.gelu_fwd(Gelu::Erf, &y.clone(), &mut [0.0; 2], 5).is_err());
        assert!(k.gelu_bwd(Gelu::Erf, &y.clone(), &x, &mut y, 5).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The fused bias + GELU gives the bits of GELU of the sum, on every tier (tails, special
    /// values, NaN and infinities in the input included).
    #[test]
    fn bias_fwd_equals_fwd_of_the_sum(
        (c, rows, x, bias) in (cols(), 0usize..4).prop_flat_map(|(c, rows)| (
            Just(c),
            Just(rows),
            prop::collection::vec(
                prop_oneof![8 => value(12.0), 1 => prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY])],
                rows * c,
            ),
            prop::collection::vec(value(3.0), c),
        ))
    ) {
        let n = rows * c;
        let sum: Vec<f32> = x.iter().enumerate().map(|(i, &v)| v + bias[i % c.max(1)]).collect();
        for k in tiers() {
            for kind in KINDS {
                let mut want = vec![0.0; n];
                k.gelu_fwd(kind, &sum, &mut want, n).unwrap();
                let mut got = vec![7.0; n + 3];
                k.gelu_bias_fwd(kind, &x, &bias, &mut got, rows).unwrap();
                prop_assert!(got[n..].iter().all(|&v| v == 7.0), "stray write");
                for i in 0..n {
                    prop_assert!(
                        got[i].to_bits() == want[i].to_bits(),
                        "{:?} {kind:?} [{i}]: got {} want {}", k.isa(), got[i], want[i]
                    );
                }
            }
        }
    }
}

#[test]
fn bias_fwd_short_slices_are_errors() {
    let k = anvil::kernels::Kernels::best();
    let mut y = vec![0.0; 6];
    let r = k.gelu_bias_fwd(Gelu::Erf, &[0.0; 5], &[0.0; 3], &mut y, 2);
    assert!(matches!(r, Err(KernelError::BadLength { arg: "x", .. })));
    let r = k.gelu_bias_fwd(Gelu::Erf, &[0.0; 6], &[0.0; 3], &mut y[..5], 2);
    assert!(matches!(r, Err(KernelError::BadLength { arg: "y", .. })));
    assert!(
        k.gelu_bias_fwd(Gelu::Erf, &[0.0; 6], &[0.0; 3], &mut y, 2)
            .is_ok()
    );
}
