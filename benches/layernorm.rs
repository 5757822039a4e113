//! LayerNorm forward and backward on GPT-2 small's activation shape (B*T = 4096, C = 768).
//!
//! Bytes counted (f32): forward reads x and writes y (2 * rows * cols) plus w, b, mean, rstd;
//! backward reads x, dy, dx and writes dx (4 * rows * cols) plus w, mean, rstd, dw, db (r+w).
//! Runs on the global rayon pool; set RAYON_NUM_THREADS=2 for the 2-thread figure.

use anvil::kernels::Kernels;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const ROWS: usize = 4096;
const COLS: usize = 768;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0
                - 0.5
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let (n, f) = (ROWS * COLS, 4u64);
    let (x, w, b, dy) = (data(n, 1), data(COLS, 2), data(COLS, 3), data(n, 4));
    let (mut y, mut mean, mut rstd) = (vec![0.0; n], vec![0.0; ROWS], vec![0.0; ROWS]);
    let (mut dx, mut dw, mut db) = (vec![0.0; n], vec![0.0; COLS], vec![0.0; COLS]);
    let mut g = c.benchmark_group("layernorm");
    for k in Kernels::available().unwrap() {
        let isa = k.isa();
        let fwd_bytes = f * (2 * n + 2 * COLS + 2 * ROWS) as u64;
        g.throughput(Throughput::Bytes(fwd_bytes));
        g.bench_function(format!("fwd/{isa}/{ROWS}x{COLS}"), |bn| {
            bn.iter(|| {
                k.layernorm_fwd(&x, &w, &b, &mut y, &mut mean, &mut rstd, ROWS, COLS, 1e-5)
                    .unwrap();
                black_box(&y);
            })
        });
        let bwd_bytes = f * (4 * n + 5 * COLS + 2 * ROWS) as u64;
        g.throughput(Throughput::Bytes(bwd_bytes));
        g.bench_function(format!("bwd/{isa}/{ROWS}x{COLS}"), |bn| {
            bn.iter(|| {
                k.layernorm_bwd(
                    &x, &w, &mean, &rstd, &dy, &mut dx, &mut dw, &mut db, ROWS, COLS,
                )
                .unwrap();
                black_box(&dx);
            })
        });
    }
    // Copy bandwidth for comparison: read n, write n.
    g.throughput(Throughput::Bytes(f * 2 * n as u64));
    g.bench_function(format!("copy/{ROWS}x{COLS}"), |bn| {
        bn.iter(|| {
            y.copy_from_slice(black_box(&x));
            black_box(&y);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
