//! Gradient-check harness shared by the autograd tests (`tests/autograd*.rs`).
//!
//! `check` builds `y = f(inputs)` on a graph, takes `loss = sum(y * probe)` for a fixed
//! pseudo-random probe, and compares the analytic gradient of every input with a central finite
//! difference of the same loss. The loss for the differences is evaluated in f64 from the f32
//! values of `y` (computed with recording off), so the only f32 error is the forward's own.

#![allow(dead_code)]

use anvil::autograd::{Graph, Var};
use anvil::tensor::{Result, Tensor};

/// Finite-difference step. Inputs are O(1); the f32 rounding of the forward (~6e-8 relative on
/// a loss of O(1..10)) divided by `2 * H` stays near 1e-5, and the truncation error
/// (`H^2 / 6` times the third derivative) of the smooth ops here is of the same order.
pub const H: f32 = 4e-3;
/// Absolute tolerance: covers the rounding term above with a margin of ~10 for the larger sums.
pub const ATOL: f64 = 2e-4;
/// Relative tolerance: the analytic gradient is accumulated in f32 through GEMMs and
/// normalisation statistics (good to ~1e-5 here); 1e-3 still fails a gradient that is off by
/// 1% (checked by mutating a backward rule while writing these tests).
pub const RTOL: f64 = 1e-3;

/// Deterministic values in [-1, 1) from a seed (a small LCG, so tests need no RNG crate).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A tensor of `values` with `shape`.
pub fn tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(values(shape.iter().product(), seed), shape).unwrap()
}

/// Builds `y = f(vars)` with the inputs on the tape as trainable leaves; returns the graph
/// result, the input vars and `y`.
fn run<F>(g: &mut Graph, inputs: &[Tensor], f: &F, rg: bool) -> Result<(Vec<Var>, Var)>
where
    F: Fn(&mut Graph, &[Var]) -> Result<Var>,
{
    let vars: Vec<Var> = inputs.iter().map(|t| g.input(t, rg)).collect();
    let y = f(g, &vars)?;
    Ok((vars, y))
}

/// `sum(y * probe)` in f64, `y` computed with recording off.
fn loss_f64<F>(g: &mut Graph, inputs: &[Tensor], f: &F, probe: &[f32]) -> f64
where
    F: Fn(&mut Graph, &[Var]) -> Result<Var>,
{
    let out = g.no_grad(|g| {
        let (_, y) = run(g, inputs, f, true).unwrap();
        g.value(y).unwrap().to_vec()
    });
    assert_eq!(g.recorded_ops(), 0, "no-grad forward recorded ops");
    g.clear();
    out.iter()
        .zip(probe)
        .map(|(&y, &p)| f64::from(y) * f64::from(p))
        .sum()
}

/// Analytic gradients of `sum(y * probe)` for each input.
pub fn analytic<F>(g: &mut Graph, inputs: &[Tensor], f: &F) -> Vec<Vec<f32>>
where
    F: Fn(&mut Graph, &[Var]) -> Result<Var>,
{
    let (vars, y) = run(g, inputs, f, true).unwrap();
    let n = g.value(y).unwrap().len();
    let probe = Tensor::from_vec(values(n, 99), &[n]).unwrap();
    let yflat = g.reshape(y, &[n]).unwrap();
    let p = g.input(&probe, false);
    let prod = g.mul(yflat, p).unwrap();
    let loss = g.sum(prod).unwrap();
    let grads = g.backward(loss).unwrap();
    vars.iter()
        .zip(inputs)
        .map(|(v, t)| {
            grads
                .get(*v)
                .map_or_else(|| vec![0.0; t.numel()], <[f32]>::to_vec)
        })
        .collect()
}

/// Gradient check of `f` at `inputs`: finite differences, plus backward twice on freshly built
/// graphs giving identical bits.
pub fn check<F>(name: &str, inputs: &[Tensor], f: F)
where
    F: Fn(&mut Graph, &[Var]) -> Result<Var>,
{
    let mut g = Graph::new().unwrap();
    let got = analytic(&mut g, inputs, &f);
    let again = analytic(&mut g, inputs, &f);
    for (a, b) in got.iter().zip(&again) {
        let (a, b): (Vec<u32>, Vec<u32>) = (
            a.iter().map(|x| x.to_bits()).collect(),
            b.iter().map(|x| x.to_bits()).collect(),
        );
        assert_eq!(a, b, "{name}: second backward differs");
    }
    let n = {
        let (_, y) = run(&mut g, inputs, &f, false).unwrap();
        let n = g.value(y).unwrap().len();
        g.clear();
        n
    };
    let probe = values(n, 99);
    for (i, t) in inputs.iter().enumerate() {
        for (j, &a) in got[i].iter().enumerate() {
            let mut ins = inputs.to_vec();
            let base = t.as_slice()[j];
            ins[i].make_mut()[j] = base + H;
            let up = loss_f64(&mut g, &ins, &f, &probe);
            ins[i].make_mut()[j] = base - H;
            let down = loss_f64(&mut g, &ins, &f, &probe);
            let fd = (up - down) / (2.0 * f64::from(H));
            let a = f64::from(a);
            assert!(
                (a - fd).abs() <= ATOL + RTOL * fd.abs(),
                "{name}: input {i} element {j}: analytic {a} vs finite difference {fd}"
            );
        }
    }
}
