//! AdamW over 10M parameters.
//!
//! Bytes counted (f32): reads param, grad, m, v and writes param, m, v: 28 bytes per parameter.
//! Runs on the global rayon pool; set RAYON_NUM_THREADS=2 for the 2-thread figure.

use anvil::kernels::Kernels;
use anvil::kernels::adamw::AdamW;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const N: usize = 10_000_000;

fn bench(c: &mut Criterion) {
    let mut p: Vec<f32> = (0..N).map(|i| (i % 1000) as f32 * 1e-3 - 0.5).collect();
    let grad: Vec<f32> = (0..N).map(|i| (i % 777) as f32 * 1e-4 - 0.03).collect();
    let (mut m, mut v) = (vec![0.0f32; N], vec![0.0f32; N]);
    let h = AdamW::default();
    let mut g = c.benchmark_group("adamw");
    g.throughput(Throughput::Bytes(28 * N as u64));
    for k in Kernels::available().unwrap() {
        let mut t = 0u64;
        g.bench_function(format!("step/{}/{N}", k.isa()), |bn| {
            bn.iter(|| {
                t += 1;
                k.adamw(&mut p, &grad, &mut m, &mut v, &h, t).unwrap();
                black_box(&p);
            })
        });
    }
    // Copy bandwidth for comparison: read and write 4 bytes per element of a 7 * N buffer.
    let src = vec![1.0f32; 7 * N / 2];
    let mut dst = vec![0.0f32; 7 * N / 2];
    g.bench_function("copy/same-bytes", |bn| {
        bn.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
