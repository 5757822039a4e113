//! Error sweeps of the shared elementary functions against f64, on every tier the host has.

use super::scalar;
use crate::{Isa, Kernels};

/// Maximum errors the module docs promise (ulp of the correctly rounded f32 result).
const EXP_MAX_ULP_FMA: f64 = 1.0;
const EXP_MAX_ULP_SCALAR: f64 = 1.5;
const SIGMOID_MAX_ULP: f64 = 3.0;
/// Relative; the erfc fit (1.2e-7) plus the rounding of exp's argument `-x^2/2 + P(t)`, which
/// exp turns into a relative error of `|x^2/2| * eps`: about 100 * 6e-8 at x = -14.
const NORM_CDF_MAX_REL: f64 = 1e-5;

fn tiers() -> Vec<Isa> {
    Kernels::available()
        .unwrap()
        .into_iter()
        .map(|k| k.isa())
        .collect()
}

/// Evaluates `f` (given per tier) on `xs`.
fn eval(isa: Isa, xs: &[f32], which: &str) -> Vec<f32> {
    let mut out = vec![0.0f32; xs.len()];
    match isa {
        Isa::Scalar => scalar::map([xs], [&mut out], false, |[x]| {
            [match which {
                "exp" => scalar::exp(x),
                "sig" => scalar::sigmoid(x).0,
                "sig1m" => scalar::sigmoid(x).1,
                "cdf_g" => scalar::norm_cdf_gauss(x, scalar::exp(-0.5 * (x * x))),
                _ => scalar::norm_cdf(x),
            }]
        }),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            use super::avx2 as m;
            use std::arch::x86_64::*;
            // SAFETY: the tier is supported on this CPU (from `Kernels::available`).
            unsafe {
                m::map([xs], [&mut out], false, |[x]| {
                    [match which {
                        "exp" => m::exp(x),
                        "sig" => m::sigmoid(x).0,
                        "sig1m" => m::sigmoid(x).1,
                        "cdf_g" => m::norm_cdf_gauss(
                            x,
                            m::exp(_mm256_mul_ps(_mm256_set1_ps(-0.5), _mm256_mul_ps(x, x))),
                        ),
                        _ => m::norm_cdf(x),
                    }]
                })
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            use super::avx512 as m;
            use std::arch::x86_64::*;
            // SAFETY: the tier is supported on this CPU (from `Kernels::available`).
            unsafe {
                m::map([xs], [&mut out], false, |[x]| {
                    [match which {
                        "exp" => m::exp(x),
                        "sig" => m::sigmoid(x).0,
                        "sig1m" => m::sigmoid(x).1,
                        "cdf_g" => m::norm_cdf_gauss(
                            x,
                            m::exp(_mm512_mul_ps(_mm512_set1_ps(-0.5), _mm512_mul_ps(x, x))),
                        ),
                        _ => m::norm_cdf(x),
                    }]
                })
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!(),
    }
    out
}

/// Error of `got` in ulps of the f32 nearest `want` (subnormal results count in subnormal steps).
fn ulps(got: f32, want: f64) -> f64 {
    let w = want as f32;
    if got == w {
        return 0.0;
    }
    let ulp = (f32::from_bits(w.abs().to_bits() + 1) - w.abs()) as f64;
    (got as f64 - want).abs() / ulp
}

fn sweep(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..=n)
        .map(|i| lo + (hi - lo) * (i as f32 / n as f32))
        .collect()
}

#[test]
fn exp_error_and_specials() {
    let xs = sweep(-104.5, 89.0, 2_000_000);
    for isa in tiers() {
        let got = eval(isa, &xs, "exp");
        let mut worst = 0.0f64;
        for (&x, &g) in xs.iter().zip(&got) {
            worst = worst.max(ulps(g, (x as f64).exp()));
        }
        let bound = if isa == Isa::Scalar {
            EXP_MAX_ULP_SCALAR
        } else {
            EXP_MAX_ULP_FMA
        };
        eprintln!("exp {isa}: max {worst:.3} ulp");
        assert!(worst <= bound, "exp on {isa}: {worst} ulp");
        let sp = [
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            0.0,
            -0.0,
            88.72,
            88.73,
            -200.0,
            1e30,
        ];
        let g = eval(isa, &sp, "exp");
        assert_eq!(g[0], 0.0);
        assert_eq!(g[1], f32::INFINITY);
        assert!(g[2].is_nan());
        assert_eq!((g[3], g[4]), (1.0, 1.0));
        assert!(g[5].is_finite() && g[6] == f32::INFINITY);
        assert_eq!((g[7], g[8]), (0.0, f32::INFINITY));
    }
}

#[test]
fn sigmoid_error() {
    let xs = sweep(-100.0, 100.0, 1_000_000);
    for isa in tiers() {
        for (which, sign) in [("sig", 1.0f64), ("sig1m", -1.0)] {
            let got = eval(isa, &xs, which);
            let mut worst = 0.0f64;
            for (&x, &g) in xs.iter().zip(&got) {
                worst = worst.max(ulps(g, 1.0 / (1.0 + (-sign * x as f64).exp())));
            }
            eprintln!("{which} {isa}: max {worst:.3} ulp");
            assert!(worst <= SIGMOID_MAX_ULP, "{which} on {isa}: {worst} ulp");
        }
        let g = eval(isa, &[f32::INFINITY, f32::NEG_INFINITY, f32::NAN], "sig");
        assert_eq!((g[0], g[1]), (1.0, 0.0));
        assert!(g[2].is_nan());
    }
}

#[test]
fn norm_cdf_error() {
    let xs = sweep(-14.0, 8.0, 1_000_000);
    for isa in tiers() {
        // `cdf_g` is `norm_cdf_gauss` (exp(-x^2/2) supplied, as GELU's backward does).
        for which in ["cdf", "cdf_g"] {
            let got = eval(isa, &xs, which);
            let mut worst = 0.0f64;
            for (&x, &g) in xs.iter().zip(&got) {
                let want = crate::gelu::reference::norm_cdf_f64(x as f64);
                if want > f32::MIN_POSITIVE as f64 {
                    worst = worst.max((g as f64 - want).abs() / want);
                }
            }
            eprintln!("norm_cdf ({which}) {isa}: max rel {worst:.3e}");
            assert!(worst <= NORM_CDF_MAX_REL, "{which} on {isa}: {worst}");
            let g = eval(
                isa,
                &[
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    f32::NAN,
                    -30.0,
                    200.0,
                    -200.0,
                ],
                which,
            );
            assert_eq!((g[0], g[1], g[3], g[4], g[5]), (1.0, 0.0, 0.0, 1.0, 0.0));
            assert!(g[2].is_nan());
        }
    }
}
