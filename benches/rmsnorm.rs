//! RMSNorm forward and backward on a (4096, 768) activation.
//!
//! Bytes counted (f32): forward reads x and writes y (2 * rows * cols) plus w and rstd;
//! backward reads x, dy, dx and writes dx (4 * rows * cols) plus w, rstd, dw (r+w).
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
    let (x, w, dy) = (data(n, 1), data(COLS, 2), data(n, 4));
    let (mut y, mut rstd) = (vec![0.0; n], vec![0.0; ROWS]);
    let (mut dx, mut dw) = (vec![0.0; n], vec![0.0; COLS]);
    let mut g = c.benchmark_group("rmsnorm");
    for k in Kernels::available().unwrap() {
        let isa = k.isa();
        g.throughput(Throughput::Bytes(f * (2 * n + COLS + ROWS) as u64));
        g.bench_function(format!("fwd/{isa}/{ROWS}x{COLS}"), |bn| {
            bn.iter(|| {
                k.rmsnorm_fwd(&x, &w, &mut y, &mut rstd, ROWS, COLS, 1e-6)
                    .unwrap();
                black_box(&y);
            })
        });
        g.throughput(Throughput::Bytes(f * (4 * n + 3 * COLS + ROWS) as u64));
        g.bench_function(format!("bwd/{isa}/{ROWS}x{COLS}"), |bn| {
            bn.iter(|| {
                k.rmsnorm_bwd(&x, &w, &rstd, &dy, &mut dx, &mut dw, ROWS, COLS)
                    .unwrap();
                black_box(&dx);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
