//! Vectorised elementary functions shared by the row kernels (`exp`, the sigmoid pair, the normal
//! CDF through `erfc`), one module per instruction set with the same functions in each, plus the
//! element-wise loop drivers (`map`) that apply a vector function over slices with tail handling.
//!
//! Maximum errors, measured by the tests at the bottom of this file against f64 over a dense sweep
//! (see `docs/numerics.md`):
//! - `exp`: <= 1 ulp (AVX2/AVX-512, FMA Horner; measured 0.90) and <= 1.5 ulp (scalar, no FMA;
//!   measured 1.19) for results that are normal; subnormal results are within one subnormal step; exp(x) = +inf for x > 88.7228,
//!   exactly 0 for x < -103.98, exp(-inf) = 0, exp(+inf) = +inf, NaN -> NaN.
//! - `sigmoid`: <= 3 ulp on both `s` and `1 - s` (the SIMD tiers' reciprocal is an estimate
//!   refined by Newton steps; no cancellation: both come from `t = exp(-|x|)`).
//! - `norm_cdf`: relative error <= 1e-5 over x in [-14, 8] (measured 7.8e-6 scalar; the erfc fit
//!   is 1.2e-7, but exp's argument `-x^2/2 + P` is rounded to f32 and exp turns that into a
//!   relative error of up to `|x^2/2| eps`, which dominates for large |x|). The SIMD tiers take
//!   `t = 1/(1 + z/2)` as the reciprocal estimate plus Newton steps (as `sigmoid`), not a division;
//!   measured 7.8e-6 on every tier. `norm_cdf_gauss(x, exp(-x^2/2))`, GELU-erf's backward, reuses
//!   the Gaussian factor (`t exp(P) g`, one exp fewer): measured 4.1e-6, same bound.
//!
//! Range reduction for exp: `n = round(x * log2(e))`, `r = x - n ln2` in two Cody-Waite steps
//! (`LN2_HI` has 9 significant bits so `n * LN2_HI` is exact for |n| < 2^15), `exp(r)` by its
//! degree-7 Taylor polynomial on |r| <= ln2/2 (truncation 5e-9 relative, under 0.05 ulp), then the
//! result is scaled by 2^n in one correctly rounded step (`scalef`, or two exact power-of-two
//! multiplies whose second one alone rounds), so subnormal results are right too.

/// Inputs are clamped to this range before reduction: below it exp rounds to 0, above it to +inf.
const EXP_LO: f32 = -104.0;
const EXP_HI: f32 = 89.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4; // 355/512, exact in 9 bits
const LN2_LO: f32 = -2.121_944_4e-4; // ln2 - LN2_HI
/// 1/k! for k = 7..=2, highest first (Horner order).
const EXP_POLY: [f32; 6] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
];
/// Chebyshev fit of `ln(erfc(z) / t) + z^2` in `t = 1 / (1 + z/2)`, z >= 0, highest first
/// (Numerical Recipes, 2nd ed., section 6.2, `erfcc`: fractional error below 1.2e-7 for all z >= 0).
#[allow(clippy::excessive_precision)] // the published coefficients, verbatim
const ERFC_POLY: [f32; 10] = [
    0.170_872_77,
    -0.822_152_23,
    1.488_515_87,
    -1.135_203_98,
    0.278_868_07,
    -0.186_288_06,
    0.096_784_18,
    0.374_091_96,
    1.000_023_68,
    -1.265_512_23,
];
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// Cap on `d = 1 + |x|/(2 sqrt2)` before the SIMD tiers' reciprocal estimate. It binds only for
/// |x| > 178, where `exp(P - x^2/2)` is exactly 0 whatever `t` is.
const D_MAX: f32 = 64.0;
/// 2^-25: below it, `1 / (1 + t)` is exactly 1 in f32.
const TINY_T: f32 = 2.980_232_2e-8;

/// Portable versions: the `Isa::Scalar` tier. Same algorithms, no FMA.
pub(crate) mod scalar {
    use super::*;

    /// 2^k for k in [-126, 127], built from its bits.
    #[inline(always)]
    fn pow2i(k: i32) -> f32 {
        f32::from_bits(((k + 127) as u32) << 23)
    }

    /// e^x; see the module docs for the error bound and special values.
    #[inline(always)]
    pub(crate) fn exp(x: f32) -> f32 {
        // `clamp` keeps NaN (unlike `max`/`min`).
        let x = x.clamp(EXP_LO, EXP_HI);
        // Round to nearest even by the 1.5 * 2^23 trick (|x * log2e| < 2^22 after the clamp).
        const SHIFTER: f32 = 12_582_912.0;
        let n = (x * LOG2E + SHIFTER) - SHIFTER;
        let r = x - n * LN2_HI;
        let r = r - n * LN2_LO;
        let mut p = EXP_POLY[0];
        for c in &EXP_POLY[1..] {
            p = p * r + c;
        }
        p = p * r + 1.0;
        p = p * r + 1.0;
        if x.is_nan() {
            return x;
        }
        let ni = n as i32;
        let n1 = ni >> 1;
        // p * 2^n1 is exact (a normal number); the second multiply rounds once, to a subnormal
        // or to infinity as needed.
        p * pow2i(n1) * pow2i(ni - n1)
    }

    /// `(s, 1 - s)` for `s = 1 / (1 + e^-x)`, both without cancellation.
    #[inline(always)]
    pub(crate) fn sigmoid(x: f32) -> (f32, f32) {
        let t = exp(-x.abs());
        let p = 1.0 / (1.0 + t);
        let q = t * p;
        if x >= 0.0 { (p, q) } else { (q, p) }
    }

    /// `(t, P(t))` of the erfc fit at `z = |x| / sqrt2`: `erfc(z) = t exp(P - z^2)`.
    #[inline(always)]
    fn erfc_fit(x: f32) -> (f32, f32) {
        let z = x.abs() * FRAC_1_SQRT_2;
        let t = 1.0 / (1.0 + 0.5 * z);
        let mut p = ERFC_POLY[0];
        for c in &ERFC_POLY[1..] {
            p = p * t + c;
        }
        (t, p)
    }

    /// Phi(x), the standard normal CDF, as `erfc(-x/sqrt2) / 2`.
    #[inline(always)]
    pub(crate) fn norm_cdf(x: f32) -> f32 {
        let (t, p) = erfc_fit(x);
        let half_erfc = 0.5 * t * exp(p - 0.5 * (x * x));
        if x > 0.0 { 1.0 - half_erfc } else { half_erfc }
    }

    /// Phi(x) given `g = exp(-x^2/2)` (which GELU's backward needs anyway): one exp fewer.
    #[inline(always)]
    pub(crate) fn norm_cdf_gauss(x: f32, g: f32) -> f32 {
        let (t, p) = erfc_fit(x);
        let half_erfc = 0.5 * t * exp(p) * g;
        if x > 0.0 { 1.0 - half_erfc } else { half_erfc }
    }

    /// `m = max(x)` (NaN ignored) and `sum(exp(x - m))` in 8 f32 partial sums; `(-inf, 0)` when
    /// `x` is empty or all `-inf`.
    pub(crate) fn max_sum_exp(x: &[f32]) -> (f32, f32) {
        let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if m == f32::NEG_INFINITY {
            return (m, 0.0);
        }
        let mut acc = [0.0f32; 8];
        for (i, &v) in x.iter().enumerate() {
            acc[i % 8] += exp(v - m);
        }
        (m, acc.iter().sum())
    }

    /// Applies `f` to each element of `ins`, writing (or, with `acc`, adding) into `outs`.
    /// All slices have the same length.
    #[inline(always)]
    pub(crate) fn map<const NI: usize, const NO: usize>(
        ins: [&[f32]; NI],
        mut outs: [&mut [f32]; NO],
        acc: bool,
        f: impl Fn([f32; NI]) -> [f32; NO],
    ) {
        let n = outs.first().map_or(0, |o| o.len());
        for i in 0..n {
            let v = f(ins.map(|s| s[i]));
            for (o, v) in outs.iter_mut().zip(v) {
                o[i] = if acc { o[i] + v } else { v };
            }
        }
    }
}

/// AVX2 + FMA versions (8 lanes).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// e^x per lane; see the module docs.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn exp(x: __m256) -> __m256 {
        // min/max return their second operand when either is NaN: that keeps a NaN x.
        let x = _mm256_min_ps(_mm256_set1_ps(EXP_HI), x);
        let x = _mm256_max_ps(_mm256_set1_ps(EXP_LO), x);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        // NaN lanes convert to i32::MIN, whose "power" is finite: p (NaN) still propagates.
        let ni = _mm256_cvtps_epi32(n);
        let n1 = _mm256_srai_epi32::<1>(ni);
        let n2 = _mm256_sub_epi32(ni, n1);
        let bias = _mm256_set1_epi32(127);
        let s1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
        let s2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
        _mm256_mul_ps(_mm256_mul_ps(p, s1), s2)
    }

    /// `(s, 1 - s)` for the logistic sigmoid, per lane.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn sigmoid(x: __m256) -> (__m256, __m256) {
        let sign = _mm256_set1_ps(-0.0);
        let t = exp(_mm256_or_ps(x, sign)); // e^-|x|
        // 1/d for d = 1 + t in [1, 2]: the 12-bit estimate and two Newton steps (a division
        // would bound the throughput of every sigmoid-based kernel).
        let one = _mm256_set1_ps(1.0);
        let d = _mm256_add_ps(one, t);
        let r = _mm256_rcp_ps(d);
        let r = _mm256_fmadd_ps(_mm256_fnmadd_ps(d, r, one), r, r);
        let p = _mm256_fmadd_ps(_mm256_fnmadd_ps(d, r, one), r, r);
        // Below 2^-25, 1/(1+t) rounds to exactly 1; the estimate would leave it 1 ulp under.
        let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(t, _mm256_set1_ps(TINY_T));
        let p = _mm256_blendv_ps(p, one, tiny);
        let q = _mm256_mul_ps(t, p);
        let pos = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_setzero_ps());
        (_mm256_blendv_ps(q, p, pos), _mm256_blendv_ps(p, q, pos))
    }

    /// `(t, P(t))` of the erfc fit at `z = |x| / sqrt2`, per lane: `erfc(z) = t exp(P - z^2)`.
    #[target_feature(enable = "avx2,fma")]
    fn erfc_fit(x: __m256) -> (__m256, __m256) {
        let one = _mm256_set1_ps(1.0);
        let z = _mm256_mul_ps(
            _mm256_andnot_ps(_mm256_set1_ps(-0.0), x),
            _mm256_set1_ps(FRAC_1_SQRT_2),
        );
        // t = 1/d, d = 1 + z/2 >= 1: the 12-bit estimate and two Newton steps, as in `sigmoid`
        // (the division bounded GELU-erf's throughput). d is capped at D_MAX so the estimate
        // stays finite at x = +-inf (there `exp` gives 0 and t does not matter); min keeps NaN.
        let d = _mm256_fmadd_ps(_mm256_set1_ps(0.5), z, one);
        let d = _mm256_min_ps(_mm256_set1_ps(D_MAX), d);
        let r = _mm256_rcp_ps(d);
        let r = _mm256_fmadd_ps(_mm256_fnmadd_ps(d, r, one), r, r);
        let t = _mm256_fmadd_ps(_mm256_fnmadd_ps(d, r, one), r, r);
        let mut p = _mm256_set1_ps(ERFC_POLY[0]);
        for c in &ERFC_POLY[1..] {
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(*c));
        }
        (t, p)
    }

    /// Phi(x), the standard normal CDF, per lane.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn norm_cdf(x: __m256) -> __m256 {
        let (t, p) = erfc_fit(x);
        let e = exp(_mm256_fnmadd_ps(
            _mm256_set1_ps(0.5),
            _mm256_mul_ps(x, x),
            p,
        ));
        let half_erfc = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5), t), e);
        let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_setzero_ps());
        _mm256_blendv_ps(
            half_erfc,
            _mm256_sub_ps(_mm256_set1_ps(1.0), half_erfc),
            pos,
        )
    }

    /// Phi(x) given `g = exp(-x^2/2)` per lane (GELU's backward has it): one exp fewer.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn norm_cdf_gauss(x: __m256, g: __m256) -> __m256 {
        let (t, p) = erfc_fit(x);
        let half_erfc = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5), t), exp(p));
        let half_erfc = _mm256_mul_ps(half_erfc, g);
        let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_setzero_ps());
        _mm256_blendv_ps(
            half_erfc,
            _mm256_sub_ps(_mm256_set1_ps(1.0), half_erfc),
            pos,
        )
    }

    /// Sum of the 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Maximum of the 8 lanes (NaN lanes may be dropped; callers detect NaN separately).
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn hmax(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_max_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// The largest element of `x` (-inf for an empty row), 8 lanes at a time.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn row_max(x: &[f32]) -> f32 {
        let main = x.len() - x.len() % 8;
        let mut vm = _mm256_set1_ps(f32::NEG_INFINITY);
        for c in x[..main].chunks_exact(8) {
            // SAFETY: c holds 8 elements.
            vm = _mm256_max_ps(vm, unsafe { _mm256_loadu_ps(c.as_ptr()) });
        }
        x[main..].iter().fold(hmax(vm), |a, &b| a.max(b))
    }

    /// As [`super::scalar::max_sum_exp`], 8 lanes at a time.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn max_sum_exp(x: &[f32]) -> (f32, f32) {
        let m = row_max(x);
        if m == f32::NEG_INFINITY {
            return (m, 0.0);
        }
        let (vmax, mut s0, mut s1) = (_mm256_set1_ps(m), _mm256_setzero_ps(), _mm256_setzero_ps());
        let main2 = x.len() - x.len() % 16;
        for c in x[..main2].chunks_exact(16) {
            // SAFETY: c holds 16 elements.
            unsafe {
                s0 = _mm256_add_ps(s0, exp(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), vmax)));
                s1 = _mm256_add_ps(
                    s1,
                    exp(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr().add(8)), vmax)),
                );
            }
        }
        let mut tail = [f32::NEG_INFINITY; 16];
        tail[..x.len() - main2].copy_from_slice(&x[main2..]);
        // SAFETY: tail holds 16 elements.
        unsafe {
            s0 = _mm256_add_ps(s0, exp(_mm256_sub_ps(_mm256_loadu_ps(tail.as_ptr()), vmax)));
            s1 = _mm256_add_ps(
                s1,
                exp(_mm256_sub_ps(_mm256_loadu_ps(tail.as_ptr().add(8)), vmax)),
            );
        }
        (m, hsum(_mm256_add_ps(s0, s1)))
    }

    /// As [`super::scalar::map`], 8 lanes at a time; the tail goes through zero-padded buffers.
    ///
    /// # Panics
    /// If the slices differ in length (a bug in the caller, which checks lengths first).
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn map<const NI: usize, const NO: usize>(
        ins: [&[f32]; NI],
        mut outs: [&mut [f32]; NO],
        acc: bool,
        f: impl Fn([__m256; NI]) -> [__m256; NO],
    ) {
        let n = outs.first().map_or(0, |o| o.len());
        assert!(ins.iter().all(|s| s.len() == n) && outs.iter().all(|s| s.len() == n));
        let main = n - n % 8;
        let mut i = 0;
        while i < main {
            // SAFETY: i + 8 <= n and every slice holds n elements.
            let v = f(ins.map(|s| unsafe { _mm256_loadu_ps(s.as_ptr().add(i)) }));
            for (o, v) in outs.iter_mut().zip(v) {
                let p = o[i..i + 8].as_mut_ptr();
                // SAFETY: p points at 8 elements of `o`.
                unsafe {
                    let v = if acc {
                        _mm256_add_ps(_mm256_loadu_ps(p), v)
                    } else {
                        v
                    };
                    _mm256_storeu_ps(p, v);
                }
            }
            i += 8;
        }
        if main < n {
            let rem = n - main;
            let v = f(ins.map(|s| {
                let mut b = [0.0f32; 8];
                b[..rem].copy_from_slice(&s[main..]);
                // SAFETY: b holds 8 elements.
                unsafe { _mm256_loadu_ps(b.as_ptr()) }
            }));
            for (o, v) in outs.iter_mut().zip(v) {
                let mut b = [0.0f32; 8];
                // SAFETY: b holds 8 elements.
                unsafe { _mm256_storeu_ps(b.as_mut_ptr(), v) };
                for (d, s) in o[main..].iter_mut().zip(b) {
                    *d = if acc { *d + s } else { s };
                }
            }
        }
    }
}

/// AVX-512 versions (16 lanes); tails use masked loads and stores.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// Lane mask for the first `n` of 16 lanes.
    #[inline(always)]
    pub(crate) fn mask16(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// e^x per lane; see the module docs.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn exp(x: __m512) -> __m512 {
        // min/max return their second operand when either is NaN: that keeps a NaN x.
        let x = _mm512_min_ps(_mm512_set1_ps(EXP_HI), x);
        let x = _mm512_max_ps(_mm512_set1_ps(EXP_LO), x);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
        // p * 2^n rounded once, including to subnormals and to +inf.
        _mm512_scalef_ps(p, n)
    }

    /// `(s, 1 - s)` for the logistic sigmoid, per lane.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn sigmoid(x: __m512) -> (__m512, __m512) {
        let t = exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x))); // e^-|x|
        // 1/d for d = 1 + t in [1, 2]: the 14-bit estimate and one Newton step (a division
        // would bound the throughput of every sigmoid-based kernel).
        let one = _mm512_set1_ps(1.0);
        let d = _mm512_add_ps(one, t);
        let r = _mm512_rcp14_ps(d);
        let p = _mm512_fmadd_ps(_mm512_fnmadd_ps(d, r, one), r, r);
        // Below 2^-25, 1/(1+t) rounds to exactly 1; the estimate would leave it 1 ulp under.
        let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(t, _mm512_set1_ps(TINY_T));
        let p = _mm512_mask_blend_ps(tiny, p, one);
        let q = _mm512_mul_ps(t, p);
        let pos = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_setzero_ps());
        (
            _mm512_mask_blend_ps(pos, q, p),
            _mm512_mask_blend_ps(pos, p, q),
        )
    }

    /// `(t, P(t))` of the erfc fit at `z = |x| / sqrt2`, per lane: `erfc(z) = t exp(P - z^2)`.
    #[target_feature(enable = "avx512f")]
    fn erfc_fit(x: __m512) -> (__m512, __m512) {
        let one = _mm512_set1_ps(1.0);
        let z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(FRAC_1_SQRT_2));
        // t = 1/d, d = 1 + z/2 >= 1: the 14-bit estimate and one Newton step, as in `sigmoid`
        // (the division bounded GELU-erf's throughput). d is capped at D_MAX so the estimate
        // stays finite at x = +-inf (there `exp` gives 0 and t does not matter); min keeps NaN.
        let d = _mm512_fmadd_ps(_mm512_set1_ps(0.5), z, one);
        let d = _mm512_min_ps(_mm512_set1_ps(D_MAX), d);
        let r = _mm512_rcp14_ps(d);
        let t = _mm512_fmadd_ps(_mm512_fnmadd_ps(d, r, one), r, r);
        let mut p = _mm512_set1_ps(ERFC_POLY[0]);
        for c in &ERFC_POLY[1..] {
            p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(*c));
        }
        (t, p)
    }

    /// Phi(x), the standard normal CDF, per lane.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn norm_cdf(x: __m512) -> __m512 {
        let (t, p) = erfc_fit(x);
        let e = exp(_mm512_fnmadd_ps(
            _mm512_set1_ps(0.5),
            _mm512_mul_ps(x, x),
            p,
        ));
        let half_erfc = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), t), e);
        let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_setzero_ps());
        _mm512_mask_blend_ps(
            pos,
            half_erfc,
            _mm512_sub_ps(_mm512_set1_ps(1.0), half_erfc),
        )
    }

    /// Phi(x) given `g = exp(-x^2/2)` per lane (GELU's backward has it): one exp fewer.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn norm_cdf_gauss(x: __m512, g: __m512) -> __m512 {
        let (t, p) = erfc_fit(x);
        let half_erfc = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), t), exp(p));
        let half_erfc = _mm512_mul_ps(half_erfc, g);
        let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_setzero_ps());
        _mm512_mask_blend_ps(
            pos,
            half_erfc,
            _mm512_sub_ps(_mm512_set1_ps(1.0), half_erfc),
        )
    }

    /// Rows up to this long (512 KiB) have the next row prefetched into L2 by `max_sum_exp`.
    const PREFETCH_MAX_LEN: usize = 1 << 17;

    /// The largest element of `x` (-inf for an empty row), 16 lanes at a time.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn row_max(x: &[f32]) -> f32 {
        let (n, xp) = (x.len(), x.as_ptr());
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        let (mut m0, mut m1) = (ninf, ninf);
        let mut i = 0;
        while i + 32 <= n {
            // SAFETY: i + 32 <= n.
            unsafe {
                m0 = _mm512_max_ps(m0, _mm512_loadu_ps(xp.add(i)));
                m1 = _mm512_max_ps(m1, _mm512_loadu_ps(xp.add(i + 16)));
            }
            i += 32;
        }
        while i < n {
            // SAFETY: the mask limits the load to the n - i elements left.
            m0 = _mm512_max_ps(m0, unsafe {
                _mm512_mask_loadu_ps(ninf, mask16(n - i), xp.add(i))
            });
            i += 16;
        }
        _mm512_reduce_max_ps(_mm512_max_ps(m0, m1))
    }

    /// As [`super::scalar::max_sum_exp`], 16 lanes at a time.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn max_sum_exp(x: &[f32]) -> (f32, f32) {
        let (n, xp) = (x.len(), x.as_ptr());
        let m = row_max(x);
        if m == f32::NEG_INFINITY {
            return (m, 0.0);
        }
        let (vmax, ninf) = (_mm512_set1_ps(m), _mm512_set1_ps(f32::NEG_INFINITY));
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        // Rows are usually followed by the next row in memory: fetch it into L2 while this row's
        // exps compute, so the next max pass does not wait on memory. A prefetch is a hint that
        // never faults, so the addresses may lie past the slice.
        let ahead = if n <= PREFETCH_MAX_LEN { n } else { 0 };
        let mut i = 0;
        while i + 32 <= n {
            if ahead > 0 {
                _mm_prefetch::<_MM_HINT_T1>(xp.wrapping_add(i + ahead) as *const i8);
                _mm_prefetch::<_MM_HINT_T1>(xp.wrapping_add(i + 16 + ahead) as *const i8);
            }
            // SAFETY: i + 32 <= n.
            unsafe {
                s0 = _mm512_add_ps(s0, exp(_mm512_sub_ps(_mm512_loadu_ps(xp.add(i)), vmax)));
                s1 = _mm512_add_ps(
                    s1,
                    exp(_mm512_sub_ps(_mm512_loadu_ps(xp.add(i + 16)), vmax)),
                );
            }
            i += 32;
        }
        while i < n {
            // SAFETY: the mask limits the load to the n - i elements left; the others are -inf.
            let v = unsafe { _mm512_mask_loadu_ps(ninf, mask16(n - i), xp.add(i)) };
            s0 = _mm512_add_ps(s0, exp(_mm512_sub_ps(v, vmax)));
            i += 16;
        }
        (m, _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)))
    }

    /// As [`super::scalar::map`], 16 lanes at a time with a masked tail.
    ///
    /// # Panics
    /// If the slices differ in length (a bug in the caller, which checks lengths first).
    #[target_feature(enable = "avx512f")]
    pub(crate) fn map<const NI: usize, const NO: usize>(
        ins: [&[f32]; NI],
        mut outs: [&mut [f32]; NO],
        acc: bool,
        f: impl Fn([__m512; NI]) -> [__m512; NO],
    ) {
        let n = outs.first().map_or(0, |o| o.len());
        assert!(ins.iter().all(|s| s.len() == n) && outs.iter().all(|s| s.len() == n));
        let mut i = 0;
        while i < n {
            let m = mask16(n - i);
            // SAFETY: the mask limits the load to the n - i elements left in each slice.
            let v = f(ins.map(|s| unsafe { _mm512_maskz_loadu_ps(m, s.as_ptr().add(i)) }));
            for (o, v) in outs.iter_mut().zip(v) {
                // SAFETY: as above, for the output slice.
                unsafe {
                    let p = o.as_mut_ptr().add(i);
                    let v = if acc {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(m, p), v)
                    } else {
                        v
                    };
                    _mm512_mask_storeu_ps(p, m, v);
                }
            }
            i += 16;
        }
    }
}

#[cfg(test)]
mod tests;
