//! Autograd on an MLP block: `x (256, 768) -> linear 3072 -> GELU (tanh) -> linear 768 -> sum`,
//! forward + backward, against the same kernel calls made by hand on preallocated buffers.
//!
//! The difference between `tape/fwd+bwd` and `raw/fwd+bwd` is the tape's overhead: recording,
//! the pool, zeroing gradient buffers, copying the input on. FLOPs counted: 2 GEMMs forward and
//! 3 backward (`dW2`, `dh`, `dW1`; `x` needs no gradient), `2 * 256 * 768 * 3072` each.
//! `autograd_tape_overhead` measures the bookkeeping per op on values too small for the
//! arithmetic to matter. Runs on the global rayon pool; set RAYON_NUM_THREADS to pin it.

use anvil::autograd::{Gelu, Graph, ParamId};
use anvil::kernels::{Kernels, MatMut, MatRef};
use anvil::tensor::Tensor;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const ROWS: usize = 256;
const C: usize = 768;
const FF: usize = 3072;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0
                - 0.5
        })
        .collect()
}

/// Weights scaled by `1 / sqrt(fan_in)` as a model initialises them. Unscaled, the first
/// layer's outputs reach |y| ~ 10, GELU's left tail returns subnormals there (~1e-38), and every
/// GEMM reading them slows down up to 17x on microcode assists (measured: dW2 131 ms vs 7 ms).
fn weights(n: usize, fan_in: usize, seed: u32) -> Vec<f32> {
    let s = 1.0 / (fan_in as f32).sqrt();
    data(n, seed).into_iter().map(|v| v * s).collect()
}

fn tensor(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape).unwrap()
}

/// One training step on the tape; returns the loss.
fn tape_step(g: &mut Graph, ps: &[ParamId; 4], x: &Tensor) -> f32 {
    let x = g.input(x, false);
    let [w1, b1, w2, b2] = ps.map(|p| g.param(p).unwrap());
    let h = g.linear(x, w1, Some(b1)).unwrap();
    let h = g.gelu(h, Gelu::Tanh).unwrap();
    let y = g.linear(h, w2, Some(b2)).unwrap();
    let loss = g.sum(y).unwrap();
    let l = g.value(loss).unwrap()[0];
    g.backward(loss).unwrap();
    l
}

/// Buffers for the hand-written step.
struct Raw {
    x: Vec<f32>,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    y1: Vec<f32>,
    h: Vec<f32>,
    y2: Vec<f32>,
    dy2: Vec<f32>,
    dh: Vec<f32>,
    dy1: Vec<f32>,
    dw1: Vec<f32>,
    db1: Vec<f32>,
    dw2: Vec<f32>,
    db2: Vec<f32>,
}

fn col_sums(dst: &mut [f32], src: &[f32], cols: usize) {
    for row in src.chunks_exact(cols) {
        dst.iter_mut().zip(row).for_each(|(d, s)| *d += s);
    }
}

/// A row-major `(rows, cols)` view.
fn m(d: &[f32], rows: usize, cols: usize) -> MatRef<'_> {
    MatRef::new(d, rows, cols, cols)
}

/// The same step as direct kernel calls.
fn raw_step(k: Kernels, r: &mut Raw) -> f32 {
    r.y1.chunks_exact_mut(FF)
        .for_each(|row| row.copy_from_slice(&r.b1));
    let y1 = MatMut::new(&mut r.y1, ROWS, FF, FF);
    k.sgemm(1.0, m(&r.x, ROWS, C), m(&r.w1, FF, C).t(), 1.0, y1)
        .unwrap();
    k.gelu_fwd(Gelu::Tanh, &r.y1, &mut r.h, ROWS * FF).unwrap();
    r.y2.chunks_exact_mut(C)
        .for_each(|row| row.copy_from_slice(&r.b2));
    let y2 = MatMut::new(&mut r.y2, ROWS, C, C);
    k.sgemm(1.0, m(&r.h, ROWS, FF), m(&r.w2, C, FF).t(), 1.0, y2)
        .unwrap();
    let loss = r.y2.iter().map(|&v| f64::from(v)).sum::<f64>() as f32;
    // Backward of sum: dy2 = 1.
    r.dy2.fill(1.0);
    col_sums(&mut r.db2, &r.dy2, C);
    let dy2 = m(&r.dy2, ROWS, C);
    let dw2 = MatMut::new(&mut r.dw2, C, FF, FF);
    k.sgemm(1.0, dy2.t(), m(&r.h, ROWS, FF), 1.0, dw2).unwrap();
    let dh = MatMut::new(&mut r.dh, ROWS, FF, FF);
    k.sgemm(1.0, dy2, m(&r.w2, C, FF), 0.0, dh).unwrap();
    r.dy1.fill(0.0);
    k.gelu_bwd(Gelu::Tanh, &r.y1, &r.dh, &mut r.dy1, ROWS * FF)
        .unwrap();
    col_sums(&mut r.db1, &r.dy1, FF);
    let dw1 = MatMut::new(&mut r.dw1, FF, C, C);
    k.sgemm(1.0, m(&r.dy1, ROWS, FF).t(), m(&r.x, ROWS, C), 1.0, dw1)
        .unwrap();
    loss
}

fn bench(c: &mut Criterion) {
    let k = anvil::kernels::kernels().unwrap();
    let gemm_flops = 2 * ROWS * C * FF;
    let mut grp = c.benchmark_group("autograd_mlp");
    grp.sample_size(10);
    grp.throughput(Throughput::Elements((5 * gemm_flops) as u64));

    let mut g = Graph::with_kernels(k);
    let ps = [
        g.add_param("w1", &tensor(weights(FF * C, C, 2), &[FF, C]), true),
        g.add_param("b1", &tensor(data(FF, 3), &[FF]), true),
        g.add_param("w2", &tensor(weights(C * FF, FF, 4), &[C, FF]), true),
        g.add_param("b2", &tensor(data(C, 5), &[C]), true),
    ];
    let x = tensor(data(ROWS * C, 1), &[ROWS, C]);
    grp.bench_function(format!("tape/fwd+bwd/{ROWS}x{C}x{FF}"), |b| {
        b.iter(|| black_box(tape_step(&mut g, &ps, &x)))
    });

    let mut r = Raw {
        x: data(ROWS * C, 1),
        w1: weights(FF * C, C, 2),
        b1: data(FF, 3),
        w2: weights(C * FF, FF, 4),
        b2: data(C, 5),
        y1: vec![0.0; ROWS * FF],
        h: vec![0.0; ROWS * FF],
        y2: vec![0.0; ROWS * C],
        dy2: vec![0.0; ROWS * C],
        dh: vec![0.0; ROWS * FF],
        dy1: vec![0.0; ROWS * FF],
        dw1: vec![0.0; FF * C],
        db1: vec![0.0; FF],
        dw2: vec![0.0; C * FF],
        db2: vec![0.0; C],
    };
    grp.bench_function(format!("raw/fwd+bwd/{ROWS}x{C}x{FF}"), |b| {
        b.iter(|| black_box(raw_step(k, &mut r)))
    });

    grp.throughput(Throughput::Elements((2 * gemm_flops) as u64));
    grp.bench_function(format!("tape/no_grad_fwd/{ROWS}x{C}x{FF}"), |b| {
        b.iter(|| {
            let l = g.no_grad(|g| {
                let xv = g.input(&x, false);
                let [w1, b1, w2, b2] = ps.map(|p| g.param(p).unwrap());
                let h = g.linear(xv, w1, Some(b1)).unwrap();
                let h = g.gelu(h, Gelu::Tanh).unwrap();
                let y = g.linear(h, w2, Some(b2)).unwrap();
                let loss = g.sum(y).unwrap();
                g.value(loss).unwrap()[0]
            });
            g.clear();
            black_box(l)
        })
    });
    grp.finish();
    gemms(c, k, &r);
    per_op(c, k);
}

/// Bookkeeping cost per op: a chain of 100 `mul`s on 8-element values, forward and backward,
/// where the arithmetic is negligible (reported per op via the element count = ops).
fn per_op(c: &mut Criterion, k: Kernels) {
    const OPS: usize = 100;
    let mut grp = c.benchmark_group("autograd_tape_overhead");
    grp.throughput(Throughput::Elements(OPS as u64));
    let mut g = Graph::with_kernels(k);
    let p = g.add_param("p", &tensor(data(8, 6), &[8]), true);
    let x = tensor(data(8, 7), &[8]);
    grp.bench_function("mul chain fwd+bwd, per op", |b| {
        b.iter(|| {
            let mut v = g.input(&x, false);
            let pv = g.param(p).unwrap();
            for _ in 0..OPS - 1 {
                v = g.mul(v, pv).unwrap();
            }
            let loss = g.sum(v).unwrap();
            black_box(g.backward(loss).unwrap());
        })
    });
    grp.finish();
}

/// The five GEMMs of the step one by one, to show where the time goes.
fn gemms(c: &mut Criterion, k: Kernels, r: &Raw) {
    let mut grp = c.benchmark_group("autograd_mlp_gemms");
    grp.sample_size(10);
    grp.throughput(Throughput::Elements((2 * ROWS * C * FF) as u64));
    let mut out = vec![0.0f32; (ROWS + C) * FF];
    let mut cases: Vec<(&str, MatRef, MatRef, usize, usize)> = vec![
        (
            "fwd1 x*W1^T",
            m(&r.x, ROWS, C),
            m(&r.w1, FF, C).t(),
            ROWS,
            FF,
        ),
        (
            "fwd2 h*W2^T",
            m(&r.h, ROWS, FF),
            m(&r.w2, C, FF).t(),
            ROWS,
            C,
        ),
        (
            "dW2 dy2^T*h",
            m(&r.dy2, ROWS, C).t(),
            m(&r.h, ROWS, FF),
            C,
            FF,
        ),
        ("dh dy2*W2", m(&r.dy2, ROWS, C), m(&r.w2, C, FF), ROWS, FF),
        (
            "dW1 dy1^T*x",
            m(&r.dy1, ROWS, FF).t(),
            m(&r.x, ROWS, C),
            FF,
            C,
        ),
    ];
    for (name, a, b, rows, cols) in cases.drain(..) {
        grp.bench_function(name, |bn| {
            bn.iter(|| {
                let cm = MatMut::new(&mut out[..rows * cols], rows, cols, cols);
                k.sgemm(1.0, a, b, 1.0, cm).unwrap();
                black_box(&out);
            })
        });
    }
    grp.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
