//! Probes of this machine's ceilings: peak FMA throughput of the best tier and the rate at which
//! one core reads a buffer, for the roofline that `anvil bench` prints beside every figure.

use crate::{Isa, Kernels};

impl Kernels {
    /// Runs `iters` rounds of independent FMAs on this tier's widest vectors and returns the
    /// floating-point operations done (2 per lane per FMA). Time it to get the peak FLOP rate of
    /// one core; run it on every core for the machine's.
    pub fn fma_peak_probe(&self, iters: usize) -> f64 {
        match self.isa() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Kernels value exists for a tier only if the CPU supports it.
            Isa::Avx512 => unsafe { x86::avx512(iters) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { x86::avx2(iters) },
            _ => scalar(iters),
        }
    }

    /// Reads every value of `data` once and returns their sum: time it to get the rate at which
    /// one core reads a buffer of that size (run it on every core, over parts of one buffer, for
    /// the machine's). The vector tiers read [`READ_STREAMS`] parts of `data` side by side, each
    /// prefetched [`READ_AHEAD`] values ahead: measured here on a 48 MB buffer and 2 threads,
    /// one sequential stream per core read 22.5 GB/s, 8 streams 30, 8 prefetched streams 35. The
    /// sum is exact whenever every partial sum is (small integers), whatever the order.
    pub fn read_probe(&self, data: &[f32]) -> f32 {
        match self.isa() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Kernels value exists for a tier only if the CPU supports it.
            Isa::Avx512 => unsafe { x86::read512(data) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { x86::read256(data) },
            _ => data.iter().sum(),
        }
    }
}

/// Parts of the buffer the read probe walks side by side: several sequential streams keep more
/// cache-line misses in flight than one.
pub const READ_STREAMS: usize = 8;

/// How far ahead of each stream (values) the read probe prefetches.
pub const READ_AHEAD: usize = 1024;

/// Independent accumulator chains: enough to cover FMA latency (4 cycles) times 2 ports.
const CHAINS: usize = 12;

fn scalar(iters: usize) -> f64 {
    let mut acc = [1.0f32; CHAINS * 4];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = *v * 0.999_999 + 1e-7;
        }
    }
    std::hint::black_box(acc);
    (iters * CHAINS * 4 * 2) as f64
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{CHAINS, READ_AHEAD, READ_STREAMS};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(iters: usize) -> f64 {
        let (m, a) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, m, a);
            }
        }
        std::hint::black_box(acc);
        (iters * CHAINS * 16 * 2) as f64
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(iters: usize) -> f64 {
        let (m, a) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, m, a);
            }
        }
        std::hint::black_box(acc);
        (iters * CHAINS * 8 * 2) as f64
    }

    /// [`super::Kernels::read_probe`] on `L`-lane vectors: `READ_STREAMS` equal parts of whole
    /// vectors read side by side, then the rest one value at a time.
    #[inline(always)]
    unsafe fn read<const L: usize, V: Copy>(
        data: &[f32],
        zero: V,
        load: impl Fn(*const f32) -> V,
        add: impl Fn(V, V) -> V,
        sum: impl Fn(V) -> f32,
    ) -> f32 {
        let part = data.len() / (READ_STREAMS * L) * L;
        let base = data.as_ptr();
        let mut acc = [zero; READ_STREAMS];
        let mut i = 0;
        while i < part {
            for (s, a) in acc.iter_mut().enumerate() {
                let p = base.wrapping_add(s * part + i);
                // SAFETY: a prefetch never faults, so the address may lie past the buffer.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(READ_AHEAD).cast()) };
                *a = add(*a, load(p));
            }
            i += L;
        }
        let tail: f32 = data[READ_STREAMS * part..].iter().sum();
        acc.into_iter().map(sum).sum::<f32>() + tail
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn read512(data: &[f32]) -> f32 {
        // SAFETY: `read` loads whole vectors inside its streams' parts of `data`; AVX-512 F is on.
        unsafe {
            read::<16, __m512>(
                data,
                _mm512_setzero_ps(),
                |p| _mm512_loadu_ps(p),
                |a, b| _mm512_add_ps(a, b),
                |v| _mm512_reduce_add_ps(v),
            )
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn read256(data: &[f32]) -> f32 {
        // SAFETY: `read` loads whole vectors inside its streams' parts of `data`; AVX2 is on.
        unsafe {
            read::<8, __m256>(
                data,
                _mm256_setzero_ps(),
                |p| _mm256_loadu_ps(p),
                |a, b| _mm256_add_ps(a, b),
                |v| {
                    let mut l = [0.0f32; 8];
                    _mm256_storeu_ps(l.as_mut_ptr(), v);
                    l.iter().sum()
                },
            )
        }
    }
}
