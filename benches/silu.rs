//! SiLU and SwiGLU forward and backward on an MLP activation, (4096, 2048).
use anvil::kernels::kernels;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let k = kernels().expect("ANVIL_ISA");
    let n = 4096 * 2048;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 5.0)
        .collect();
    let up = x.clone();
    let mut y = vec![0.0f32; n];
    let (mut d1, mut d2) = (vec![0.0f32; n], vec![0.0f32; n]);
    let mut g = c.benchmark_group(format!("silu/{}", k.isa()));
    g.throughput(Throughput::Bytes((8 * n) as u64));
    g.bench_function("silu fwd (4096, 2048)", |b| {
        b.iter(|| k.silu_fwd(&x, &mut y, n).unwrap())
    });
    g.throughput(Throughput::Bytes((16 * n) as u64));
    g.bench_function("silu bwd (4096, 2048)", |b| {
        b.iter(|| k.silu_bwd(&x, &up, &mut d1, n).unwrap())
    });
    g.throughput(Throughput::Bytes((12 * n) as u64));
    g.bench_function("swiglu fwd (4096, 2048)", |b| {
        b.iter(|| k.swiglu_fwd(&x, &up, &mut y, n).unwrap())
    });
    // Reads gate, up, dy, dgate, dup; writes dgate, dup.
    g.throughput(Throughput::Bytes((28 * n) as u64));
    g.bench_function("swiglu bwd (4096, 2048)", |b| {
        b.iter(|| k.swiglu_bwd(&x, &up, &y, &mut d1, &mut d2, n).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
