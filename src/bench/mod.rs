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

pub use block::{BLOCK_CONFIGS, BlockTimes, Gpt2Block, RawBlock, block_flops, measure_block};
pub use decode::{DecodeModel, DecodePeer, decode_models, decode_records};
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
    /// The figure's unit key: `gflops`, `gbps`, `gops`, `tokens_per_s` or `sentences_per_s`;
    /// or `ratio` for a speed-up over a peer (see [`Rounds::speedup`]).
    pub unit: &'static str,
    /// Median over the repetitions.
    pub value: f64,
    /// Median seconds per run.
    pub seconds: f64,
    /// For a speed-up: how its per-round ratios spread.
    pub spread: Option<Spread>,
}

/// The spread of a speed-up's per-round ratios (see [`Rounds::spread`]): how far one reading of
/// the median can be trusted on a noisy host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// First and third quartiles of the ratios (nearest rank, as the median).
    pub q1: f64,
    pub q3: f64,
    /// How many rounds (ratios) there were.
    pub rounds: usize,
}

impl Record {
    /// The record as one JSON object (the `--json` line format); a speed-up with a spread adds
    /// `q1`, `q3` and `rounds`.
    pub fn to_json(&self) -> String {
        let spread = self.spread.map_or(String::new(), |s| {
            format!(
                ",\"q1\":{:.3},\"q3\":{:.3},\"rounds\":{}",
                s.q1, s.q3, s.rounds
            )
        });
        format!(
            "{{\"name\":\"{}\",\"shape\":\"{}\",\"threads\":{},\"{}\":{:.3},\"seconds\":{:.9}{spread}}}",
            self.name, self.shape, self.threads, self.unit, self.value, self.seconds
        )
    }
}

/// Runs each closure in turn, round after round, until `budget` has passed (at least `min_rounds`
/// rounds), and returns each one's median seconds. Interleaving spreads the host's noise evenly.
pub fn interleaved(runs: &mut [&mut dyn FnMut()], budget: Duration, min_rounds: usize) -> Vec<f64> {
    interleaved_with(runs, budget, min_rounds, false)
}

/// As [`interleaved`], but each timed call follows an untimed call of the same closure, so it
/// finds the caches as its own previous call left them (its weights and output warm), not as the
/// other contenders did: the terms of a peer timed in a back-to-back loop (PyTorch's
/// `median_seconds`).
pub fn interleaved_warm(
    runs: &mut [&mut dyn FnMut()],
    budget: Duration,
    min_rounds: usize,
) -> Vec<f64> {
    interleaved_with(runs, budget, min_rounds, true)
}

fn interleaved_with(
    runs: &mut [&mut dyn FnMut()],
    budget: Duration,
    min_rounds: usize,
    warm: bool,
) -> Vec<f64> {
    for r in runs.iter_mut() {
        r(); // warm-up: page faults, packing buffers, thread pools
    }
    let mut samples = vec![Vec::new(); runs.len()];
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < min_rounds || (start.elapsed() < budget && rounds < 10_000) {
        for (r, s) in runs.iter_mut().zip(&mut samples) {
            if warm {
                r();
            }
            let t = Instant::now();
            r();
            s.push(t.elapsed().as_secs_f64());
        }
        rounds += 1;
    }
    samples.into_iter().map(median).collect()
}

/// The median seconds of one call of `f` in a block of back-to-back calls: 3 untimed calls, then
/// calls until `block` has passed (at least 5), as PyTorch's `median_seconds` times its side. One
/// block is one figure of a [`rounds`] run, so blocks of ours and of a peer alternate.
pub fn back_to_back(f: &mut dyn FnMut(), block: Duration) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 5 || (start.elapsed() < block && samples.len() < 10_000) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
    }
    median(samples)
}

/// A run that reports the seconds of each of its figures (e.g. a peer process timing itself, or
/// a generation timing its prefill and its decode).
pub type Timed<'a> = &'a mut dyn FnMut() -> Result<Vec<f64>, String>;

/// Wraps `f` as a [`Timed`] run of one figure: its wall-clock seconds.
pub fn wall_clock(mut f: impl FnMut()) -> impl FnMut() -> Result<Vec<f64>, String> {
    move || {
        let t = Instant::now();
        f();
        Ok(vec![t.elapsed().as_secs_f64()])
    }
}

/// Every run's seconds, round after round: `samples[run][figure][round]`.
#[derive(Clone, Debug, Default)]
pub struct Rounds {
    pub samples: Vec<Vec<Vec<f64>>>,
}

impl Rounds {
    /// The median seconds of `run`'s figure `fig` (0 when it has none).
    pub fn median(&self, run: usize, fig: usize) -> f64 {
        median(self.figure(run, fig).to_vec())
    }

    /// How many times faster `ours` ran than `theirs` (each a `(run, figure)`): the median over
    /// rounds of `theirs / ours`, each round's pair measured side by side, so a slow spell of
    /// the host weighs on both sides of a ratio rather than on one engine's median.
    pub fn speedup(&self, ours: (usize, usize), theirs: (usize, usize)) -> f64 {
        median(self.ratios(ours, theirs))
    }

    /// The quartiles and count of the per-round ratios whose median is [`Rounds::speedup`].
    pub fn spread(&self, ours: (usize, usize), theirs: (usize, usize)) -> Spread {
        let mut r = self.ratios(ours, theirs);
        r.sort_by(f64::total_cmp);
        let at = |i: usize| r.get(i).copied().unwrap_or(0.0);
        Spread {
            q1: at(r.len() / 4),
            q3: at(3 * r.len() / 4),
            rounds: r.len(),
        }
    }

    fn ratios(&self, ours: (usize, usize), theirs: (usize, usize)) -> Vec<f64> {
        let a = self.figure(ours.0, ours.1);
        let b = self.figure(theirs.0, theirs.1);
        a.iter().zip(b).map(|(a, b)| b / a).collect()
    }

    /// As [`Rounds::speedup`], against whichever figure of run `theirs` was fastest in each round
    /// (a peer with several engines, each a figure: its best engine of that round).
    pub fn speedup_best(&self, ours: (usize, usize), theirs: usize) -> f64 {
        let figs = self.samples.get(theirs).map_or(&[][..], Vec::as_slice);
        let a = self.figure(ours.0, ours.1);
        median(
            a.iter()
                .enumerate()
                .map(|(round, a)| {
                    let fastest = figs
                        .iter()
                        .filter_map(|f| f.get(round))
                        .fold(f64::INFINITY, |m, &t| m.min(t));
                    fastest / a
                })
                .collect(),
        )
    }

    fn figure(&self, run: usize, fig: usize) -> &[f64] {
        self.samples
            .get(run)
            .and_then(|r| r.get(fig))
            .map_or(&[], Vec::as_slice)
    }
}

/// As [`interleaved`], for runs that report their own figures: each run once untimed (warm-up),
/// then all in turn, round after round, until `budget` has passed (at least `min_rounds`).
///
/// # Errors
/// The first error a run returns, or a run whose number of figures changes between rounds.
pub fn rounds(runs: &mut [Timed], budget: Duration, min_rounds: usize) -> Result<Rounds, String> {
    let mut samples: Vec<Vec<Vec<f64>>> = Vec::with_capacity(runs.len());
    for r in runs.iter_mut() {
        let figs = r()?.len();
        samples.push(vec![Vec::new(); figs]);
    }
    let start = Instant::now();
    let mut done = 0;
    while done < min_rounds || (start.elapsed() < budget && done < 10_000) {
        for (i, (r, s)) in runs.iter_mut().zip(&mut samples).enumerate() {
            let secs = r()?;
            if secs.len() != s.len() {
                return Err(format!(
                    "run {i} reported {} figures, then {}",
                    s.len(),
                    secs.len()
                ));
            }
            s.iter_mut().zip(secs).for_each(|(s, t)| s.push(t));
        }
        done += 1;
    }
    Ok(Rounds { samples })
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
    /// Large-buffer read bandwidth (nothing written), GB/s: see [`read_gbps`].
    pub read_gbps: f64,
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
    let mut read = || {
        src.par_chunks(per).for_each(|s| {
            std::hint::black_box(kern.read_probe(s));
        })
    };
    let t = interleaved(
        &mut [&mut fma, &mut copy, &mut read],
        Duration::from_millis(900),
        5,
    );
    Roofline {
        peak_gflops: flops / t[0] / 1e9,
        copy_gbps: (2 * 4 * per * threads) as f64 / t[1] / 1e9,
        read_gbps: (4 * per * threads) as f64 / t[2] / 1e9,
    }
}

/// A reader of a buffer of `bytes` on `threads` threads of the current rayon pool: each call
/// reads the whole buffer again and again, each thread its own contiguous part with
/// [`anvil_kernels::Kernels::read_probe`] (several prefetched streams), and returns the median
/// seconds of one pass (at least 3 passes, and at least 20 ms of them). This is the least time a
/// step that reads that many bytes of weights can take to stream them; a buffer that fits in
/// the caches reads faster than DRAM, as a small model's weights may from one decode step to the
/// next.
pub fn read_pass(bytes: usize, threads: usize) -> impl FnMut() -> f64 {
    use rayon::prelude::*;
    let kern = anvil_kernels::Kernels::best();
    let n = (bytes / 4).max(threads * 64);
    let buf = vec![1.0f32; n];
    let per = n.div_ceil(threads.max(1));
    move || {
        let pass = || {
            let t = Instant::now();
            buf.par_chunks(per).for_each(|s| {
                std::hint::black_box(kern.read_probe(s));
            });
            t.elapsed().as_secs_f64()
        };
        let start = Instant::now();
        let mut times = Vec::new();
        while times.len() < 3 || start.elapsed() < Duration::from_millis(20) {
            times.push(pass());
        }
        median(times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_pair_each_rounds_figures() {
        // Ours takes 1, 2, 3, ... seconds by round; the peer always twice ours, plus a second
        // figure: a speed-up of exactly 2 whatever the drift, which medians of each side would
        // also give here, and 3 against the second figure.
        let (mut a, mut b) = (0.0, 0.0);
        let mut ours = || -> Result<Vec<f64>, String> {
            a += 1.0;
            Ok(vec![a])
        };
        let mut peer = || -> Result<Vec<f64>, String> {
            b += 1.0;
            Ok(vec![2.0 * b, 3.0 * b])
        };
        let r = rounds(&mut [&mut ours, &mut peer], Duration::ZERO, 5).unwrap();
        // The warm-up call is not kept.
        assert_eq!(r.samples[0][0], [2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(r.samples[1].len(), 2);
        assert_eq!(r.speedup((0, 0), (1, 0)), 2.0);
        assert_eq!(r.speedup((0, 0), (1, 1)), 3.0);
        assert_eq!(r.median(1, 1), 12.0);
        assert_eq!(r.median(2, 0), 0.0);
    }

    #[test]
    fn speedup_best_takes_each_rounds_fastest_figure() {
        // Ours 1 s every round; the peer's two engines trade places: the fastest of each round
        // runs 3, 2, 4, 2, 5 s, whose median speed-up is 3 (either engine's alone is 4 or 5).
        let mut ours = || -> Result<Vec<f64>, String> { Ok(vec![1.0]) };
        let times = [
            [9.0, 9.0],
            [3.0, 6.0],
            [8.0, 2.0],
            [4.0, 7.0],
            [2.0, 5.0],
            [6.0, 5.0],
        ];
        let mut i = 0;
        let mut peer = || -> Result<Vec<f64>, String> {
            i += 1;
            Ok(times[i - 1].to_vec())
        };
        let r = rounds(&mut [&mut ours, &mut peer], Duration::ZERO, 5).unwrap();
        assert_eq!(r.speedup_best((0, 0), 1), 3.0);
        assert_eq!(r.speedup((0, 0), (1, 0)), 4.0);
        assert_eq!(r.speedup((0, 0), (1, 1)), 5.0);
    }

    #[test]
    fn spread_is_the_quartiles_of_the_per_round_ratios_and_json_carries_it() {
        // Ours 2 s every round; the peer's ratios are 1..=8 in shuffled rounds.
        let theirs = [6.0, 2.0, 4.0, 10.0, 8.0, 16.0, 14.0, 12.0];
        let r = Rounds {
            samples: vec![vec![vec![2.0; 8]], vec![theirs.to_vec()]],
        };
        assert_eq!(r.speedup((0, 0), (1, 0)), 5.0);
        let s = r.spread((0, 0), (1, 0));
        assert_eq!((s.q1, s.q3, s.rounds), (3.0, 7.0, 8));
        let mut rec = Record {
            name: "anvil/x/vs_torch".into(),
            shape: "s".into(),
            threads: 2,
            unit: "ratio",
            value: 5.0,
            seconds: 2.0,
            spread: None,
        };
        assert!(!rec.to_json().contains("q1"));
        rec.spread = Some(s);
        assert!(
            rec.to_json().ends_with(
                r#""ratio":5.000,"seconds":2.000000000,"q1":3.000,"q3":7.000,"rounds":8}"#
            ),
            "{}",
            rec.to_json()
        );
    }

    #[test]
    fn back_to_back_warms_then_times_at_least_five_calls() {
        let mut calls = 0;
        let t = back_to_back(&mut || calls += 1, Duration::ZERO);
        assert_eq!(calls, 8);
        assert!(t >= 0.0 && t.is_finite());
    }

    #[test]
    fn rounds_report_errors_and_changing_figures() {
        let mut bad = || -> Result<Vec<f64>, String> { Err("peer died".into()) };
        assert_eq!(
            rounds(&mut [&mut bad], Duration::ZERO, 1).unwrap_err(),
            "peer died"
        );
        let mut n = 0;
        let mut shifty = || -> Result<Vec<f64>, String> {
            n += 1;
            Ok(vec![1.0; n])
        };
        let e = rounds(&mut [&mut shifty], Duration::ZERO, 1).unwrap_err();
        assert!(e.contains("reported 1 figures, then 2"), "{e}");
    }
}
