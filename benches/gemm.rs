//! Criterion bench of f32 GEMM on the model shapes, beside the `gemm` and `matrixmultiply` crates.
//! Run with `cargo bench --features peers --bench gemm`; `anvil bench gemm` prints the same
//! comparison as a table with the machine's roofline.

use anvil::bench::{GEMM_SHAPES, gemm::operands, gemm_ours};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let kern = anvil::kernels::kernels().expect("ANVIL_ISA names a tier this CPU has");
    let threads = rayon::current_num_threads();
    let mut group = c.benchmark_group("sgemm");
    group.sample_size(20);
    for s in GEMM_SHAPES {
        let (a, b, mut c) = operands(s);
        let id = format!("{}{}", s.label(), if s.bt { "_nt" } else { "_nn" });
        group.throughput(Throughput::Elements(s.flops() as u64));
        group.bench_with_input(BenchmarkId::new("anvil", &id), s, |bench, s| {
            let mut f = gemm_ours(kern, *s, &a, &b, &mut c);
            bench.iter(&mut f)
        });
        let (rbc, rbr) = if s.bt {
            (s.k as isize, 1)
        } else {
            (1, s.n as isize)
        };
        group.bench_with_input(BenchmarkId::new("gemm-crate", &id), s, |bench, s| {
            let par = if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            };
            bench.iter(|| {
                // SAFETY: pointers and strides describe the m x k, k x n and m x n buffers.
                unsafe {
                    gemm::gemm(
                        s.m,
                        s.n,
                        s.k,
                        c.as_mut_ptr(),
                        1,
                        s.n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        s.k as isize,
                        b.as_ptr(),
                        rbc,
                        rbr,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        par,
                    )
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("matrixmultiply", &id), s, |bench, s| {
            bench.iter(|| {
                // SAFETY: as above.
                unsafe {
                    matrixmultiply::sgemm(
                        s.m,
                        s.k,
                        s.n,
                        1.0,
                        a.as_ptr(),
                        s.k as isize,
                        1,
                        b.as_ptr(),
                        rbr,
                        rbc,
                        0.0,
                        c.as_mut_ptr(),
                        s.n as isize,
                        1,
                    )
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
