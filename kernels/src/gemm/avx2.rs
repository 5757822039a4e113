//! AVX2 + FMA micro-kernel: 6 x 16 (12 accumulators of 8 lanes, 2 B loads and 6 broadcasts per k),
//! reading A packed or, when A's rows are contiguous, in place.

use super::kernel::MicroKernel;
use std::arch::x86_64::*;

pub(crate) struct Avx2;

const MR: usize = 6;
const NR: usize = 16;

impl MicroKernel for Avx2 {
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
        // SAFETY: forwarded trait contract (which includes AVX2 and FMA on this CPU).
        unsafe {
            if lda == 0 {
                kernel::<false>(kc, alpha, a, 0, b, beta, bias, c, ldc, mr, nr)
            } else {
                kernel::<true>(kc, alpha, a, lda, b, beta, bias, c, ldc, mr, nr)
            }
        }
    }
}

/// Lane mask (all bits set in a lane to keep it) for the first `n` of 8 columns.
#[inline(always)]
pub(crate) fn mask8(n: usize) -> __m256i {
    const IOTA: [i32; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
    // SAFETY: IOTA is 8 readable i32s.
    let iota = unsafe { _mm256_loadu_si256(IOTA.as_ptr().cast()) };
    // SAFETY: only called from AVX2 code; the comparison is a plain lane-wise n > i.
    unsafe { _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), iota) }
}

/// The kernel, reading A packed or, `DIRECT`, in place (row `i` at `a + i * lda`; rows past `mr`
/// read row `mr - 1` again and are never stored): the same arithmetic either way.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const DIRECT: bool>(
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
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    // Row i of the A micro-panel at k step q: packed `rows[i] + q * MR`, direct `rows[i] + q`.
    let rows: [*const f32; MR] = std::array::from_fn(|i| {
        if DIRECT {
            a.wrapping_add(i.min(mr.max(1) - 1) * lda)
        } else {
            a.wrapping_add(i)
        }
    });
    let step = if DIRECT { 1 } else { MR };
    let mut b = b;
    for q in 0..kc {
        // SAFETY: both panels hold kc steps; b advances one k step each.
        unsafe {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*rows[i].add(q * step));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
            b = b.add(NR);
        }
    }
    let (m0, m1) = (mask8(nr), mask8(nr.saturating_sub(8)));
    let (va, vb) = (_mm256_set1_ps(alpha), _mm256_set1_ps(beta));
    let (bias0, bias1) = if bias.is_null() {
        (_mm256_setzero_ps(), _mm256_setzero_ps())
    } else {
        // SAFETY: a non-null bias holds nr values; the masks keep the loads to them.
        unsafe {
            (
                _mm256_maskload_ps(bias, m0),
                _mm256_maskload_ps(bias.wrapping_add(8), m1),
            )
        }
    };
    for (i, row) in acc.iter().enumerate().take(mr) {
        // SAFETY: row i < mr of the C block; the masks keep loads and stores to its first nr columns.
        unsafe {
            let ci = c.add(i * ldc);
            let mut r0 = _mm256_mul_ps(va, row[0]);
            let mut r1 = _mm256_mul_ps(va, row[1]);
            if beta != 0.0 {
                r0 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(ci, m0), r0);
                r1 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(ci.add(8), m1), r1);
            }
            if !bias.is_null() {
                r0 = _mm256_add_ps(r0, bias0);
                r1 = _mm256_add_ps(r1, bias1);
            }
            _mm256_maskstore_ps(ci, m0, r0);
            _mm256_maskstore_ps(ci.add(8), m1, r1);
        }
    }
}

/// AVX2 vectors for the skinny kernels.
pub(crate) struct V256;

impl super::skinny::Simd for V256 {
    type V = __m256;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: only called from AVX2 code (trait contract).
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: as above.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: p holds 8 readable values (caller's contract).
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f32, n: usize) -> __m256 {
        // SAFETY: the mask keeps the load to the n readable values.
        unsafe { _mm256_maskload_ps(p, mask8(n)) }
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut f32, n: usize, v: __m256) {
        // SAFETY: the mask keeps the store to the n writable values.
        unsafe { _mm256_maskstore_ps(p, mask8(n), v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: only called from AVX2+FMA code.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: only called from AVX2 code.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: only called from AVX2 code. A fixed pairwise tree: 8 -> 4 -> 2 -> 1.
        unsafe {
            let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2));
            _mm_cvtss_f32(s1)
        }
    }
}

super::skinny::skinny_entry!(V256, "avx2,fma", skinny_axpy, skinny_dot);
