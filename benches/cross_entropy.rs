//! Fused cross-entropy forward + backward on GPT-2-sized logits, (512, 50257).
use anvil::kernels::{IGNORE_INDEX, kernels};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let k = kernels().expect("ANVIL_ISA");
    let (rows, v) = (512, 50257);
    let n = rows * v;
    let logits: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 5.0)
        .collect();
    let targets: Vec<u32> = (0..rows as u32).map(|r| (r * 97) % v as u32).collect();
    let mut lse = vec![0.0f32; rows];
    let mut d = vec![0.0f32; n];
    let mut g = c.benchmark_group(format!("cross_entropy/{}", k.isa()));
    // Forward reads the logits; backward reads logits and dlogits and writes dlogits.
    g.throughput(Throughput::Bytes((16 * n) as u64));
    g.bench_function("fwd+bwd (512, 50257)", |b| {
        b.iter(|| {
            let loss = k
                .cross_entropy_fwd(&logits, &targets, &mut lse, rows, v, IGNORE_INDEX)
                .unwrap();
            k.cross_entropy_bwd(&logits, &targets, &lse, 1.0, &mut d, rows, v, IGNORE_INDEX)
                .unwrap();
            loss
        })
    });
    g.throughput(Throughput::Bytes((4 * n) as u64));
    g.bench_function("fwd (512, 50257)", |b| {
        b.iter(|| {
            k.cross_entropy_fwd(&logits, &targets, &mut lse, rows, v, IGNORE_INDEX)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
