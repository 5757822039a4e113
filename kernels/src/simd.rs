//! Safe masked loads and stores over slices for the row kernels' `#[target_feature]` leaves.
//!
//! `load(s, i)` reads the vector starting at `s[i]`, with lanes past the end of `s` read as 0;
//! `store(s, i, v)` writes only the lanes inside `s`. Loops step `i` by the lane count over
//! `0..s.len()`, so the last step is the row's tail.

/// `sum(f(j))` over `0..n` in eight interleaved partial sums, then added pairwise.
#[inline(always)]
pub(crate) fn sum8(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    const L: usize = 8;
    let mut acc = [0.0f32; L];
    let full = n / L * L;
    for i in (0..full).step_by(L) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(i + l);
        }
    }
    for (j, a) in (full..n).zip(acc.iter_mut()) {
        *a += f(j);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// 8-lane helpers (AVX2; maskload/maskstore are AVX, the integer compare AVX2).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    /// All-ones in the first `min(rem, 8)` lanes, as floats (for `and`) .
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn mask(rem: usize) -> __m256 {
        let n = rem.min(8) as i32;
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn load(s: &[f32], i: usize) -> __m256 {
        let i = i.min(s.len());
        let k = _mm256_castps_si256(mask(s.len() - i));
        // SAFETY: `i <= s.len()`; the mask enables only lanes below `s.len() - i`, all in `s`.
        unsafe { _mm256_maskload_ps(s.as_ptr().add(i), k) }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn store(s: &mut [f32], i: usize, v: __m256) {
        let i = i.min(s.len());
        let k = _mm256_castps_si256(mask(s.len() - i));
        // SAFETY: `i <= s.len()`; the mask enables only lanes below `s.len() - i`, all in `s`.
        unsafe { _mm256_maskstore_ps(s.as_mut_ptr().add(i), k, v) }
    }

    /// Sum of the 8 lanes: halves added pairwise (a fixed order).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn hsum(v: __m256) -> f32 {
        let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)))
    }

    /// As [`super::avx512::sum_by`] with 8 lanes; the mask is all-ones floats in live lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn sum_by(s: &[f32], f: impl Fn(__m256, __m256) -> __m256) -> __m256 {
        let mut a = [_mm256_setzero_ps(); 4];
        let full = mask(8);
        let mut i = 0;
        while i + 32 <= s.len() {
            for (k, acc) in a.iter_mut().enumerate() {
                *acc = _mm256_add_ps(*acc, f(load(s, i + 8 * k), full));
            }
            i += 32;
        }
        while i < s.len() {
            a[0] = _mm256_add_ps(a[0], f(load(s, i), mask(s.len() - i)));
            i += 8;
        }
        _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]))
    }
}

/// 16-lane helpers (AVX-512 F).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// The first `min(rem, 16)` lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn mask(rem: usize) -> __mmask16 {
        if rem >= 16 {
            0xffff
        } else {
            ((1u32 << rem) - 1) as __mmask16
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn load(s: &[f32], i: usize) -> __m512 {
        let i = i.min(s.len());
        // SAFETY: `i <= s.len()`; the mask enables only lanes below `s.len() - i`, all in `s`.
        unsafe { _mm512_maskz_loadu_ps(mask(s.len() - i), s.as_ptr().add(i)) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn store(s: &mut [f32], i: usize, v: __m512) {
        let i = i.min(s.len());
        // SAFETY: `i <= s.len()`; the mask enables only lanes below `s.len() - i`, all in `s`.
        unsafe { _mm512_mask_storeu_ps(s.as_mut_ptr().add(i), mask(s.len() - i), v) }
    }

    /// Sum of the 16 lanes: 256-bit halves added, then as [`super::avx2::hsum`] (a fixed order).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn hsum(v: __m512) -> f32 {
        let lo = _mm512_castps512_ps256(v);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        super::avx2::hsum(_mm256_add_ps(lo, hi))
    }

    /// `sum(f(s[i..i + 16], lanes))` over a row in four accumulators (four independent add
    /// chains instead of one), the masked tail into the first, then `(a0 + a1) + (a2 + a3)`:
    /// a fixed order for a given length. `f` gets each vector (zero past the end) and its lane
    /// mask, and must return 0 in masked-off lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn sum_by(s: &[f32], f: impl Fn(__m512, __mmask16) -> __m512) -> __m512 {
        let mut a = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= s.len() {
            for (k, acc) in a.iter_mut().enumerate() {
                *acc = _mm512_add_ps(*acc, f(load(s, i + 16 * k), 0xffff));
            }
            i += 64;
        }
        while i < s.len() {
            a[0] = _mm512_add_ps(a[0], f(load(s, i), mask(s.len() - i)));
            i += 16;
        }
        _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]))
    }
}
