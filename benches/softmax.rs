//! Softmax forward and backward on attention-score rows, (49152, 256): B*NH*T rows of T keys.
use anvil::kernels::kernels;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let k = kernels().expect("ANVIL_ISA");
    let (rows, cols) = (49152, 256);
    let n = rows * cols;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 5.0)
        .collect();
    let mut y = vec![0.0f32; n];
    let mut g = c.benchmark_group(format!("softmax/{}", k.isa()));
    // Forward reads x and writes y.
    g.throughput(Throughput::Bytes((8 * n) as u64));
    g.bench_function("fwd (49152, 256)", |b| {
        b.iter(|| k.softmax_fwd(&x, &mut y, rows, cols).unwrap())
    });
    let dy = x.clone();
    let mut dx = vec![0.0f32; n];
    // Backward reads y, dy, dx and writes dx.
    g.throughput(Throughput::Bytes((16 * n) as u64));
    g.bench_function("bwd (49152, 256)", |b| {
        b.iter(|| k.softmax_bwd(&y, &dy, &mut dx, rows, cols).unwrap())
    });
    // The copy-bandwidth yardstick: read n floats, write n floats.
    g.throughput(Throughput::Bytes((8 * n) as u64));
    g.bench_function("copy (49152, 256)", |b| b.iter(|| y.copy_from_slice(&x)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
