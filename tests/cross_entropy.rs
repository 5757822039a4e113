//! Fused cross-entropy kernels against the f64 reference on every tier, ignored rows, finite
//! differences, bad targets and lengths.

mod common;

use anvil::kernels::cross_entropy::reference;
use anvil::kernels::{IGNORE_INDEX, KernelError, Kernels};
use common::{cols, noise, tiers, value};
use proptest::prelude::*;

const EPS: f64 = f32::EPSILON as f64;
/// Roundings in one row's log-sum-exp: the f32 sum of `v` positive terms in lane partial sums
/// (v/8 + 16, each relative to the sum, so absolute after ln), exp (1.5 ulp), ln and the adds.
fn lse_ulps(v: usize) -> f64 {
    (v / 8 + 16) as f64 + 6.0
}
/// The f32 difference `x - lse` feeding exp is rounded relative to its size; the test logits
/// keep |x - lse| below 30 + 30 + ln(1000) < 70, which bounds the resulting relative error of p.
const DIFF_ULPS: f64 = 70.0;

#[derive(Debug, Clone)]
struct Case {
    rows: usize,
    v: usize,
    logits: Vec<f32>,
    targets: Vec<u32>,
}

fn case(range: f32) -> impl Strategy<Value = Case> {
    (1usize..5, cols().prop_map(|c| c.max(1))).prop_flat_map(move |(rows, v)| {
        let t = prop_oneof![3 => 0..v as u32, 1 => Just(IGNORE_INDEX)];
        (
            prop::collection::vec(value(range), rows * v),
            prop::collection::vec(t, rows),
        )
            .prop_map(move |(logits, targets)| Case {
                rows,
                v,
                logits,
                targets,
            })
    })
}

fn run(k: Kernels, c: &Case, d0: &[f32], dloss: f32) -> (f32, Vec<f32>) {
    let mut lse = vec![0.0; c.rows];
    let loss = k
        .cross_entropy_fwd(&c.logits, &c.targets, &mut lse, c.rows, c.v, IGNORE_INDEX)
        .unwrap();
    let mut d = d0.to_vec();
    k.cross_entropy_bwd(
        &c.logits,
        &c.targets,
        &lse,
        dloss,
        &mut d,
        c.rows,
        c.v,
        IGNORE_INDEX,
    )
    .unwrap();
    (loss, d)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn matches_reference(c in case(30.0), seed in any::<u64>()) {
        let (rows, v) = (c.rows, c.v);
        let x64: Vec<f64> = c.logits.iter().map(|&x| x as f64).collect();
        let (loss, grad) = reference::cross_entropy_f64(&x64, &c.targets, rows, v, IGNORE_INDEX);
        let max_abs = c.logits.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
        let d0 = noise(seed, rows * v);
        let dloss = 0.75;
        for k in tiers() {
            let (got, d) = run(k, &c, &d0, dloss);
            let tol = lse_ulps(v) * EPS * (1.0 + loss.abs() + max_abs);
            prop_assert!((got as f64 - loss).abs() <= tol, "{:?} loss {got} vs {loss}", k.isa());
            for r in 0..rows {
                let ignored = c.targets[r] == IGNORE_INDEX;
                for i in r * v..(r + 1) * v {
                    if ignored {
                        prop_assert!(d[i].to_bits() == d0[i].to_bits(), "ignored row {r} changed");
                        continue;
                    }
                    let want = d0[i] as f64 + dloss as f64 * grad[i];
                    let p_term = (dloss as f64 * grad[i]).abs() + dloss as f64; // covers the one-hot
                    let tol = (lse_ulps(v) + DIFF_ULPS) * EPS * (d0[i].abs() as f64 + p_term);
                    prop_assert!((d[i] as f64 - want).abs() <= tol, "{:?} ({rows}, {v}) at {i}: {} vs {want}", k.isa(), d[i]);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The overwriting backward gives what the adding one gives onto zeros (ignored rows and
    /// an all-ignored batch included), never reads its output (NaN there would spread) and
    /// writes nothing past `rows x v`.
    #[test]
    fn bwd_overwrite_equals_adding_onto_zeros(c in case(30.0), ignore_all in any::<bool>()) {
        let (rows, v) = (c.rows, c.v);
        let mut c = c;
        if ignore_all {
            c.targets.fill(IGNORE_INDEX);
        }
        for k in tiers() {
            let (_, added) = run(k, &c, &vec![0.0; rows * v], 0.75);
            let mut lse = vec![0.0; rows];
            k.cross_entropy_fwd(&c.logits, &c.targets, &mut lse, rows, v, IGNORE_INDEX).unwrap();
            let mut written = vec![f32::NAN; rows * v + 3];
            written[rows * v..].fill(7.0);
            k.cross_entropy_bwd_overwrite(
                &c.logits, &c.targets, &lse, 0.75, &mut written, rows, v, IGNORE_INDEX,
            )
            .unwrap();
            prop_assert!(written[rows * v..].iter().all(|&x| x == 7.0), "stray write");
            for (i, (w, a)) in written.iter().zip(&added).enumerate() {
                prop_assert!(w == a, "{:?} ({rows}, {v}) at {i}: wrote {w} added {a}", k.isa());
            }
        }
    }
}

#[test]
fn bwd_matches_finite_differences() {
    let (rows, v) = (3, 37);
    let logits: Vec<f32> = noise(11, rows * v).iter().map(|x| x * 5.0).collect();
    let targets = [4u32, IGNORE_INDEX, 36];
    let x64: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
    let h = 1e-6;
    let c = Case {
        rows,
        v,
        logits,
        targets: targets.to_vec(),
    };
    for k in tiers() {
        let (_, d) = run(k, &c, &vec![0.0; rows * v], 1.0);
        for i in 0..rows * v {
            let (mut a, mut b) = (x64.clone(), x64.clone());
            a[i] += h;
            b[i] -= h;
            let fa = reference::cross_entropy_f64(&a, &targets, rows, v, IGNORE_INDEX).0;
            let fb = reference::cross_entropy_f64(&b, &targets, rows, v, IGNORE_INDEX).0;
            let fd = (fa - fb) / (2.0 * h);
            assert!(
                (d[i] as f64 - fd).abs() < 1e-6,
                "{:?} {i}: {} vs {fd}",
                k.isa(),
                d[i]
            );
        }
        // Used twice: a second backward adds the same gradient.
        let (_, d1) = run(k, &c, &d, 1.0);
        assert!(d1.iter().zip(&d).all(|(a, b)| (a - 2.0 * b).abs() <= 1e-6));
    }
}

#[test]
fn all_ignored_is_zero_loss_and_no_gradient() {
    let c = Case {
        rows: 2,
        v: 5,
        logits: vec![1.0; 10],
        targets: vec![IGNORE_INDEX; 2],
    };
    for k in tiers() {
        let (loss, d) = run(k, &c, &[0.5; 10], 1.0);
        assert_eq!(loss, 0.0);
        assert!(d.iter().all(|&x| x == 0.5));
    }
}

#[test]
fn uniform_logits_give_ln_v() {
    let (rows, v) = (4, 50257);
    let c = Case {
        rows,
        v,
        logits: vec![0.25; rows * v],
        targets: vec![0, 1, 2, 50256],
    };
    for k in tiers() {
        let (loss, _) = run(k, &c, &vec![0.0; rows * v], 1.0);
        assert!(
            (loss as f64 - (v as f64).ln()).abs() < 1e-5,
            "{:?}: {loss}",
            k.isa()
        );
    }
}

#[test]
fn bad_targets_and_lengths_are_errors() {
    for k in tiers() {
        let x = vec![0.0; 12];
        let mut lse = vec![0.0; 3];
        let e = k
            .cross_entropy_fwd(&x, &[0, 4, 1], &mut lse, 3, 4, IGNORE_INDEX)
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, KernelError::BadShape { .. })
                && msg.contains("row 1")
                && msg.contains("id 4"),
            "{msg}"
        );
        assert!(
            k.cross_entropy_fwd(&x, &[0, 1], &mut lse, 3, 4, IGNORE_INDEX)
                .is_err()
        );
        assert!(
            k.cross_entropy_fwd(&x[..11], &[0, 1, 2], &mut lse, 3, 4, IGNORE_INDEX)
                .is_err()
        );
        assert!(
            k.cross_entropy_fwd(&x, &[0, 1, 2], &mut lse[..2], 3, 4, IGNORE_INDEX)
                .is_err()
        );
        let mut d = vec![0.0; 11];
        assert!(matches!(
            k.cross_entropy_bwd(&x, &[0, 1, 2], &lse, 1.0, &mut d, 3, 4, IGNORE_INDEX),
            Err(KernelError::BadLength { arg: "dlogits", .. })
        ));
        // A custom ignore id (PyTorch's -100 as u32, or any id) is honoured.
        assert!(
            k.cross_entropy_fwd(&x, &[0, 7, 1], &mut lse, 3, 4, 7)
                .is_ok()
        );
    }
}
