//! AVX-512 micro-kernel: 8 x 48 (24 accumulators of 16 lanes, 3 B loads and 8 broadcasts per k
//! step). The A micro-panel (8 x KC) is the one that stays in L1; B micro-panels stream from L2.
//! It reads A packed or, when A's rows are contiguous, in place (`DIRECT`): the broadcasts then
//! come from 8 row pointers instead of one panel, with the same arithmetic.

use super::kernel::MicroKernel;
use crate::math::avx512::mask16;
use std::arch::x86_64::*;

pub(crate) struct Avx512;

/// Rows of the micro-tile (broadcasts of A per k step).
const MR: usize = 8;
/// Vectors of 16 columns in the micro-tile (loads of B per k step).
const NV: usize = 3;
const NR: usize = 16 * NV;
/// Prefetch distance in k steps for the streaming B micro-panels (measured: 8 beat 0, 4 and 16).
const PF: usize = 8;

impl MicroKernel for Avx512 {
    const MR: usize = MR;
    const NR: usize = NR;

    const DIRECT_A: bool = true;

    unsafe fn run(
        kc: usize,
        alpha: f32,
        a: *const f32,
        lda: usize,
        b: *const f32,
        beta: f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
    ) {
        // SAFETY: forwarded trait contract (which includes AVX-512 F on this CPU).
        unsafe {
            if lda == 0 {
                kernel::<MR, NV, false>(kc, alpha, a, 0, b, beta, bias, c, ldc, mr, nr)
            } else {
                kernel::<MR, NV, true>(kc, alpha, a, lda, b, beta, bias, c, ldc, mr, nr)
            }
        }
    }
}

/// The `R x 16V` micro-kernel: `R * V` accumulators, V loads of B and R broadcasts of A per k.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const R: usize, const V: usize, const DIRECT: bool>(
    kc: usize,
    alpha: f32,
    a: *const f32,
    lda: usize,
    b: *const f32,
    beta: f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
) {
    // Bring the C tile towards L1 while the k loop runs: its rows are otherwise a burst of
    // cache misses at the store.
    for i in 0..mr {
        let ci = c.wrapping_add(i * ldc);
        for v in 0..V {
            _mm_prefetch::<_MM_HINT_T0>(ci.wrapping_add((16 * v).min(nr.max(1) - 1)).cast());
        }
    }
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    // Row i of the A micro-panel: packed, `a[k * R + i]`; direct, `a[i * lda + k]`, rows past mr
    // reading row mr - 1 again (their sums are never stored).
    let rows: [*const f32; R] = std::array::from_fn(|i| {
        if DIRECT {
            a.wrapping_add(i.min(mr.max(1) - 1) * lda)
        } else {
            a.wrapping_add(i)
        }
    });
    let at = |i: usize, k: usize| {
        if DIRECT {
            rows[i].wrapping_add(k)
        } else {
            rows[i].wrapping_add(k * R)
        }
    };
    let step = |acc: &mut [[__m512; V]; R], k: usize, b: *const f32| {
        // SAFETY: the caller keeps k inside the A micro-panel and b inside the B one.
        unsafe {
            let bv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(b.add(16 * v)));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*at(i, k));
                for v in 0..V {
                    row[v] = _mm512_fmadd_ps(ai, bv[v], row[v]);
                }
            }
        }
    };
    let mut b = b;
    let mut k = 0;
    // Four steps a round; the B micro-panels stream from L2 (the A micro-panel stays in L1 across
    // LOOP 1), so prefetch the B lines of the round after next.
    for _ in 0..kc / 4 {
        for line in 0..V * 4 {
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PF * 16 * V + 16 * line).cast());
        }
        // SAFETY: four more k steps remain in both panels.
        unsafe {
            for s in 0..4 {
                step(&mut acc, k + s, b.add(s * 16 * V));
            }
            b = b.add(4 * 16 * V);
        }
        k += 4;
    }
    for _ in 0..kc % 4 {
        step(&mut acc, k, b);
        // SAFETY: one more k step remains in both panels.
        unsafe {
            b = b.add(16 * V);
        }
        k += 1;
    }
    let masks: [__mmask16; V] = std::array::from_fn(|v| mask16(nr.saturating_sub(16 * v)));
    let (va, vb) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
    let bias_v: [__m512; V] = std::array::from_fn(|v| {
        if bias.is_null() {
            _mm512_setzero_ps()
        } else {
            // SAFETY: a non-null bias holds nr values; the mask keeps the load to them.
            unsafe { _mm512_maskz_loadu_ps(masks[v], bias.wrapping_add(16 * v)) }
        }
    });
    for (i, row) in acc.iter().enumerate().take(mr) {
        for v in 0..V {
            // SAFETY: row i < mr of the C block; the mask keeps loads and stores to its first nr columns.
            unsafe {
                let cv = c.add(i * ldc + 16 * v);
                let mut r = _mm512_mul_ps(va, row[v]);
                if beta != 0.0 {
                    r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(masks[v], cv), r);
                }
                if !bias.is_null() {
                    r = _mm512_add_ps(r, bias_v[v]);
                }
                _mm512_mask_storeu_ps(cv, masks[v], r);
            }
        }
    }
}

/// AVX-512 vectors for the skinny kernels.
pub(crate) struct V512;

impl super::skinny::Simd for V512 {
    type V = __m512;
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: only called from AVX-512 code (trait contract).
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: as above.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: p holds 16 readable values (caller's contract).
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f32, n: usize) -> __m512 {
        // SAFETY: the mask keeps the load to the n readable values.
        unsafe { _mm512_maskz_loadu_ps(mask16(n), p) }
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut f32, n: usize, v: __m512) {
        // SAFETY: the mask keeps the store to the n writable values.
        unsafe { _mm512_mask_storeu_ps(p, mask16(n), v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: only called from AVX-512 code.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        // SAFETY: only called from AVX-512 code.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn hsum(v: __m512) -> f32 {
        // SAFETY: only called from AVX-512 code. A fixed pairwise tree: 16 -> 8 -> 4 -> 1.
        unsafe {
            let lo = _mm512_castps512_ps256(v);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
            let s8 = _mm256_add_ps(lo, hi);
            let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2));
            _mm_cvtss_f32(s1)
        }
    }
}

super::skinny::skinny_entry!(V512, "avx512f", skinny_axpy, skinny_dot);
