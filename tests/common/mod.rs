//! Helpers shared by the row-kernel tests: the tiers to run, value strategies, comparisons.
#![allow(dead_code)]

use anvil::kernels::Kernels;
use proptest::prelude::*;

/// Every tier this process may use (`ANVIL_ISA` caps it), slowest first.
pub fn tiers() -> Vec<Kernels> {
    Kernels::available().expect("ANVIL_ISA names a tier this CPU has")
}

/// Row lengths: every length up to 4 AVX-512 vectors + 3, and some long rows.
pub fn cols() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0usize..=4 * 16 + 3, 1 => Just(1000usize), 1 => Just(257usize)]
}

/// Ordinary values with, one time in eight, a special one: zeros, tiny, subnormal, huge.
pub fn value(range: f32) -> impl Strategy<Value = f32> {
    prop_oneof![
        12 => -range..range,
        1 => prop::sample::select(vec![0.0f32, -0.0, 1e-30, -1e-30, 1e-40, -1e-40, 1e30, -1e30]),
    ]
}

/// `|got - want| <= rtol * scale + atol` (scale defaults to |want|), or both NaN.
pub fn close(got: f32, want: f32, rtol: f32, scale: f32, atol: f32) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got as f64 - want as f64).abs() <= (rtol as f64) * (scale as f64) + atol as f64
}

/// Deterministic pseudo-random values in [-1, 1) from a seed (xorshift), for the non-proptest
/// tests and benches.
pub fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

/// A rayon pool of `threads` threads, for comparing results across thread counts.
pub fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool")
}

/// Runs `f` on a one-thread rayon pool.
pub fn single_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool(1).install(f)
}

/// Whether two results agree bit for bit (NaN payloads and signed zeros included).
pub fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}
