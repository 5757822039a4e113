//! Probes of this machine's ceilings: peak FMA throughput of the best tier, for the roofline that
//! `anvil bench` prints beside every figure.

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
}

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
    use super::CHAINS;
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
}
