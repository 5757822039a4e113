//! RoPE kernels against the f64 reference on every tier, decode positions, errors.

mod common;

use anvil::kernels::KernelError;
use anvil::kernels::rope::{RopeDims, reference, tables};
use common::{noise, tiers};
use proptest::prelude::*;

/// Each output is `a c - b s` (or `+`) in f32: two rounded products and a rounded sum, so the
/// error is at most 1.5 ulp of `|a c| + |b s|` against the same products in f64.
const RTOL: f64 = 1.5 * f32::EPSILON as f64;

fn dims() -> impl Strategy<Value = (RopeDims, bool)> {
    (1usize..3, 1usize..9, 1usize..4, 0usize..=40, any::<bool>())
        .prop_map(|(n, t, h, hd, per)| (RopeDims { n, t, h, d: 2 * hd }, per))
}

fn positions(d: RopeDims, per_token: bool, seed: u64) -> Vec<u32> {
    let len = if per_token { d.n * d.t } else { d.t };
    noise(seed, len)
        .iter()
        .map(|v| ((v + 1.0) * 3000.0) as u32)
        .collect()
}

/// `|got - want| <= RTOL * (|a c| + |b s|)` elementwise, the magnitudes from the input pair.
fn check(got: &[f32], want: &[f32], x: &[f32], d: RopeDims) -> Result<(), TestCaseError> {
    let half = d.d / 2;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let j = i % d.d.max(1);
        let partner = if j < half { i + half } else { i - half };
        let mag = x[i].abs() as f64 + x[partner].abs() as f64;
        let err = (g as f64 - w as f64).abs();
        prop_assert!(err <= RTOL * mag, "at {i}: got {g} want {w}");
    }
    Ok(())
}

proptest! {
    #[test]
    fn every_tier_matches_the_reference((d, per) in dims(), seed in any::<u64>(), theta in prop::sample::select(vec![10000.0f32, 500000.0, 1e6])) {
        let len = d.n * d.t * d.h * d.d;
        let x = noise(seed, len);
        let pos = positions(d, per, seed ^ 9);
        let (mut want, mut want_b) = (vec![0.0; len], vec![0.0; len]);
        reference::rope_fwd(&x, &mut want, d, &pos, theta);
        reference::rope_bwd(&x, &mut want_b, d, &pos, theta);
        for k in tiers() {
            let mut y = vec![f32::NAN; len + 2];
            k.rope_fwd(&x, &mut y, d, &pos, theta).unwrap();
            prop_assert!(y[len..].iter().all(|v| v.is_nan()), "wrote past the end");
            check(&y[..len], &want, &x, d)?;
            let mut dx = vec![0.0; len];
            k.rope_bwd(&x, &mut dx, d, &pos, theta).unwrap();
            check(&dx, &want_b, &x, d)?;
        }
    }
}

#[test]
fn backward_inverts_forward_and_adds() {
    let d = RopeDims {
        n: 2,
        t: 5,
        h: 3,
        d: 16,
    };
    let len = 2 * 5 * 3 * 16;
    let x = noise(3, len);
    let pos: Vec<u32> = (0..5).collect();
    for k in tiers() {
        let mut y = vec![0.0; len];
        k.rope_fwd(&x, &mut y, d, &pos, 10000.0).unwrap();
        let mut back = vec![1.0; len];
        k.rope_bwd(&y, &mut back, d, &pos, 10000.0).unwrap();
        for (b, x) in back.iter().zip(&x) {
            // cos^2 + sin^2 = 1 up to the tables' rounding and 4 more roundings.
            assert!((b - 1.0 - x).abs() < 8.0 * f32::EPSILON, "{b} vs 1 + {x}");
        }
    }
}

#[test]
fn a_decode_step_equals_that_row_of_the_full_sequence() {
    let full = RopeDims {
        n: 1,
        t: 9,
        h: 2,
        d: 8,
    };
    let x = noise(5, 9 * 2 * 8);
    let pos: Vec<u32> = (100..109).collect();
    for k in tiers() {
        let mut y = vec![0.0; x.len()];
        k.rope_fwd(&x, &mut y, full, &pos, 10000.0).unwrap();
        let step = RopeDims { t: 1, ..full };
        let mut y1 = vec![0.0; 16];
        k.rope_fwd(&x[7 * 16..8 * 16], &mut y1, step, &[107], 10000.0)
            .unwrap();
        assert_eq!(&y[7 * 16..8 * 16], &y1[..]);
    }
}

#[test]
fn position_zero_is_the_identity_and_tables_follow_hf() {
    let (c, s) = tables(&[0, 1], 4, 10000.0);
    assert_eq!(&c[..2], &[1.0, 1.0]);
    assert_eq!(&s[..2], &[0.0, 0.0]);
    // inv_freq = [1, 10000^-0.5 = 0.01]; angle 1 and 0.01.
    assert_eq!(c[2], 1.0f64.cos() as f32);
    assert_eq!(s[3], (0.01f32 as f64).sin() as f32);
}

#[test]
fn bad_shapes_are_errors() {
    let k = tiers()[0];
    let d = RopeDims {
        n: 2,
        t: 3,
        h: 1,
        d: 4,
    };
    let (x, mut y) = (vec![0.0; 24], vec![0.0; 24]);
    let shape = |r| matches!(r, Err(KernelError::BadShape { .. }));
    assert!(shape(k.rope_fwd(
        &x,
        &mut y,
        RopeDims { d: 3, ..d },
        &[0, 1, 2],
        1e4
    )));
    assert!(shape(k.rope_fwd(&x, &mut y, d, &[0, 1], 1e4)));
    let short = k.rope_fwd(&x[..5], &mut y, d, &[0, 1, 2], 1e4);
    assert!(matches!(
        short,
        Err(KernelError::BadLength { arg: "x", .. })
    ));
    assert!(k.rope_fwd(&x, &mut y, d, &[0, 1, 2, 3, 4, 5], 1e4).is_ok());
}
