//! GELU (tanh and erf) forward and backward on an MLP activation, (4096, 768).
use anvil::kernels::{Gelu, kernels};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let k = kernels().expect("ANVIL_ISA");
    let n = 4096 * 768;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 5.0)
        .collect();
    let mut y = vec![0.0f32; n];
    let mut g = c.benchmark_group(format!("gelu/{}", k.isa()));
    for kind in [Gelu::Tanh, Gelu::Erf] {
        // Forward reads x and writes y.
        g.throughput(Throughput::Bytes((8 * n) as u64));
        g.bench_function(format!("{kind:?} fwd (4096, 768)"), |b| {
            b.iter(|| k.gelu_fwd(kind, &x, &mut y, n).unwrap())
        });
        // Backward reads x, dy, dx and writes dx.
        let mut dx = vec![0.0f32; n];
        g.throughput(Throughput::Bytes((16 * n) as u64));
        g.bench_function(format!("{kind:?} bwd (4096, 768)"), |b| {
            b.iter(|| k.gelu_bwd(kind, &x, &y, &mut dx, n).unwrap())
        });
    }
    g.throughput(Throughput::Bytes((8 * n) as u64));
    g.bench_function("copy (4096, 768)", |b| b.iter(|| y.copy_from_slice(&x)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
