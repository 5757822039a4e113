//! Int8 GEMM throughput in GOP/s (2 * m * n * k integer ops per call, activation quantization
//! included) per path, on 1 and 2 threads, for the shapes of a GPT-2-small MLP: a 256-token
//! prefill (256 x 768 x 3072) and one decode step (1 x 768 x 3072). Criterion reports the ops as
//! "elem/s": read Gelem/s as GOP/s.

use anvil::kernels::Kernels;
use anvil::kernels::qgemm::{QPath, QWeights};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::Duration;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            (((i as u32).wrapping_mul(2654435761) ^ seed) >> 8) as f32 / (1 << 24) as f32 - 0.5
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let kern = Kernels::best();
    for &(m, k, n) in &[(256usize, 768usize, 3072usize), (1, 768, 3072)] {
        let x = data(m * k, 1);
        let w = QWeights::per_channel(&kern, &data(n * k, 2), n, k).expect("weights");
        let mut y = vec![0.0f32; m * n];
        let mut g = c.benchmark_group(format!("qgemm_{m}x{k}x{n}"));
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        g.warm_up_time(Duration::from_millis(500));
        g.measurement_time(Duration::from_secs(2));
        g.sample_size(20);
        for path in QPath::available(kern) {
            if path == QPath::Scalar {
                continue;
            }
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("pool");
                let id = BenchmarkId::new(format!("{path:?}"), format!("{threads}t"));
                g.bench_function(id, |b| {
                    pool.install(|| {
                        b.iter(|| kern.qgemm_i8_on(path, &x, m, &w, &mut y).expect("qgemm"))
                    })
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
