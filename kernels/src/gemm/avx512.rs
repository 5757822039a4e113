//! AVX-512 micro-kernel: 12 x 32 (24 accumulators of 16 lanes, 2 B loads and 12 broadcasts per
//! k step; the shape BLIS uses on Skylake-X, transposed for row-major C).

use super::kernel::MicroKernel;
use std::arch::x86_64::*;

pub(crate) struct Avx512;

const MR: usize = 12;
const NR: usize = 32;

impl MicroKernel for Avx512 {
    const MR: usize = MR;
    const NR: usize = NR;

    unsafe fn run(
        kc: usize,
        alpha: f32,
        a: *const f32,
        b: *const f32,
        beta: f32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
    ) {
        // SAFETY: forwarded trait contract (which includes AVX-512 F on this CPU).
        unsafe { kernel(kc, alpha, a, b, beta, c, ldc, mr, nr) }
    }
}

/// Lane mask for the first `n` of 16 columns.
#[inline(always)]
pub(crate) fn mask16(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    kc: usize,
    alpha: f32,
    a: *const f32,
    b: *const f32,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // SAFETY: the panels hold kc * MR and kc * NR values; a and b advance one k step each.
        unsafe {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    let (m0, m1) = (mask16(nr), mask16(nr.saturating_sub(16)));
    let (va, vb) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
    for (i, row) in acc.iter().enumerate().take(mr) {
        // SAFETY: row i < mr of the C block; the masks keep the stores to its first nr columns.
        unsafe {
            let ci = c.add(i * ldc);
            let mut r0 = _mm512_mul_ps(va, row[0]);
            let mut r1 = _mm512_mul_ps(va, row[1]);
            if beta != 0.0 {
                r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), r0);
                r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci.add(16)), r1);
            }
            _mm512_mask_storeu_ps(ci, m0, r0);
            _mm512_mask_storeu_ps(ci.add(16), m1, r1);
        }
    }
}
