//! Measurement for `anvil bench`: timing with interleaved repetitions and medians, the machine's
//! roofline, and one function per kernel family returning records (the library never prints).

pub mod block;
pub mod decode;
pub mod embed;
pub mod gemm;
pub mod llmc;
#[cfg(feature = "peers")]
pub mod peers;
pub mod qgemm;
pub mod rows;
pub mod train;

pub use block::{BLOCK_CONFIGS, BlockTimes, Gpt2Block, RawBlock, measure_block};
pub use decode::{DecodeModel, decode_models, decode_records};
pub use gemm::{GEMM_SHAPES, GemmShape, gemm_ours, gemm_packed_ours};
pub use qgemm::{CONVERT_LEN, ConvertRun, QGEMM_SHAPES, QRun, convert_runs, qgemm_runs};
pub use rows::{RowBench, row_benches};
pub use train::{TrainBench, train_benches, train_step};

use std::time::{Duration, Instant};

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Record {
    /// What ran, e.g. `anvil/sgemm_nn` or `matrixmultiply/sgemm_nn`.
    pub name: String,
    /// The problem, e.g. `256x768x3072` (m x k x n).
    pub shape: String,
    pub threads: usize,
    /// The figure's unit key: `gflops`, `gbps`, `gops`, `tokens_per_s` or `sentences_per_s`.
    pub unit: &'static str,
    /// Median over the repetitions.
    pub value: f64,
    /// Median seconds per run.
    pub seconds: f64,
}

impl Record {
    /// The record as one JSON object (the `--json` line format).
    pub fn to_json(&self) -> String {
        format!(
            "{{\"name\":\"{}\",\"shape\":\"{}\",\"threads\":{},\"{}\":{:.3},\"seconds\":{:.9}}}",
            self.name, self.shape, self.threads, self.unit, self.value, self.seconds
        )
    }
}

/// Runs each closure in turn, round after round, until `budget` has passed (at least `min_rounds`
/// rounds), and returns each one's median seconds. Interleaving spreads the host's noise evenly.
pub fn interleaved(runs: &mut [&mut dyn FnMut()], budget: Duration, min_rounds: usize) -> Vec<f64> {
    for r in runs.iter_mut() {
        r(); // warm-up: page faults, packing buffers, thread pools
    }
    let mut samples = vec![Vec::new(); runs.len()];
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < min_rounds || (start.elapsed() < budget && rounds < 10_000) {
        for (r, s) in runs.iter_mut().zip(&mut samples) {
            let t = Instant::now();
            r();
            s.push(t.elapsed().as_secs_f64());
        }
        rounds += 1;
    }
    samples.into_iter().map(median).collect()
}

/// The median of `v` (the upper one for an even count); 0 for an empty `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// This machine's ceilings on `threads` threads.
#[derive(Clone, Copy, Debug)]
pub struct Roofline {
    /// Peak FMA throughput of the best ISA tier, GFLOP/s.
    pub peak_gflops: f64,
    /// Large-buffer copy bandwidth, GB/s counting bytes read plus bytes written.
    pub copy_gbps: f64,
}

/// Measures the roofline on `threads` threads of the current rayon pool.
pub fn roofline(threads: usize) -> Roofline {
    use rayon::prelude::*;
    let kern = anvil_kernels::Kernels::best();
    let iters = 2_000_000;
    let mut fma = || {
        (0..threads).into_par_iter().for_each(|_| {
            std::hint::black_box(kern.fma_peak_probe(iters));
        })
    };
    let flops = kern.fma_peak_probe(iters) * threads as f64;
    // 64 MiB a thread: far past the last-level cache share, so this is DRAM bandwidth.
    let per = 16 << 20;
    let src = vec![1.0f32; per * threads];
    let mut dst = vec![0.0f32; per * threads];
    let mut copy = || {
        dst.par_chunks_mut(per)
            .zip(src.par_chunks(per))
            .for_each(|(d, s)| d.copy_from_slice(s));
    };
    let t = interleaved(&mut [&mut fma, &mut copy], Duration::from_millis(600), 5);
    Roofline {
        peak_gflops: flops / t[0] / 1e9,
        copy_gbps: (2 * 4 * per * threads) as f64 / t[1] / 1e9,
    }
}
