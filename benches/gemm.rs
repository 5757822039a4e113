//! Criterion bench of f32 GEMM on the model shapes, beside the `gemm` and `matrixmultiply` crates.
//! Run with `cargo bench --features peers --bench gemm`; `anvil bench gemm` prints the same
//! comparison as a table with the machine's roofline.

use anvil::bench::{GEMM_SHAPES, gemm::operands, gemm_ours, peers};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let kern = anvil::kernels::kernels().expect("ANVIL_ISA names a tier this CPU has");
    let threads = rayon::current_num_threads();
    peers::init(threads);
    let mut group = c.benchmark_group("sgemm");
    group.sample_size(20);
    for s in GEMM_SHAPES {
        let (a, b, mut c) = operands(s);
        let id = format!("{}{}", s.label(), s.suffix());
        group.throughput(Throughput::Elements(s.flops() as u64));
        group.bench_with_input(BenchmarkId::new("anvil", &id), s, |bench, s| {
            bench.iter(gemm_ours(kern, *s, &a, &b, &mut c))
        });
        group.bench_with_input(BenchmarkId::new("gemm-crate", &id), s, |bench, s| {
            bench.iter(peers::gemm_crate(*s, threads, &a, &b, &mut c))
        });
        group.bench_with_input(BenchmarkId::new("matrixmultiply", &id), s, |bench, s| {
            bench.iter(peers::mm(*s, &a, &b, &mut c))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
