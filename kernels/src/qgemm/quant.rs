//! Symmetric int8 quantization: per row (one f32 scale) and per block of [`QK`] (one f16 scale,
//! as ggml's Q8_0), with the scalar reference first and then AVX2 and AVX-512 leaves.
//!
//! Both formats round `x * (1 / scale)` half to even and clamp to `[-QMAX, QMAX]`; -128 is never
//! produced, which is what lets the AVX2 GEMM negate activations and take `|w|` without overflow.
//! Every SIMD leaf performs the same f32 operations in the same order as the reference, so the
//! quantized bytes and scales are bit-identical on every tier.
//!
//! Inputs must be finite: NaN or infinity give unspecified (but memory-safe) bytes.

use crate::error::check_len;
use crate::{Isa, Kernels, Result};
use half::f16;

/// The largest quantized magnitude. -128 is excluded so that `|q|` and `-q` fit an i8.
pub const QMAX: i8 = 127;

/// Elements per block of the block format (ggml's `QK8_0`).
pub const QK: usize = 32;

/// Rows or blocks whose largest magnitude is below this quantize to all zeros with scale 0:
/// `QMAX / amax` would overflow f32 near the bottom of the normal range.
pub const MIN_AMAX: f32 = 1e-30;

/// `(scale, 1 / scale)` for a row whose largest magnitude is `amax`: `scale = amax / 127`, and the
/// inverse is computed as `127 / amax` (one rounding) rather than as `1 / scale` (two).
#[inline]
pub(crate) fn row_scales(amax: f32) -> (f32, f32) {
    if amax < MIN_AMAX {
        (0.0, 0.0)
    } else {
        (amax / QMAX as f32, QMAX as f32 / amax)
    }
}

/// `(f16 scale, its f32 value, 1 / that value)` for a block whose largest magnitude is `amax`.
/// The scale is rounded to f16 first and the inverse taken of the rounded value, so dequantizing
/// with the stored scale is what the rounding assumed. Scales above `f16::MAX` are clamped (the
/// block then saturates at `±QMAX * f16::MAX`); scales that underflow f16 give an all-zero block.
#[inline]
pub(crate) fn block_scales(amax: f32) -> (f16, f32, f32) {
    let d = f16::from_f32((amax / QMAX as f32).min(f16::MAX.to_f32()));
    let df = d.to_f32();
    if amax < MIN_AMAX || df == 0.0 {
        (f16::ZERO, 0.0, 0.0)
    } else {
        (d, df, 1.0 / df)
    }
}

/// One value: `round_half_even(x * inv)` clamped to `[-127, 127]`.
#[inline]
pub(crate) fn quant_one(x: f32, inv: f32) -> i8 {
    (x * inv)
        .round_ties_even()
        .clamp(-(QMAX as f32), QMAX as f32) as i8
}

/// The scalar reference of every quantization routine.
pub mod reference {
    use super::*;

    /// Largest `|x|` (0 for an empty slice).
    pub fn amax(x: &[f32]) -> f32 {
        x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
    }

    /// x: (k) -> q: (k); returns the row's scale, so that `x ≈ q * scale`.
    pub fn quantize_row(x: &[f32], q: &mut [i8]) -> f32 {
        let (scale, inv) = row_scales(amax(x));
        for (d, &v) in q.iter_mut().zip(x) {
            *d = quant_one(v, inv);
        }
        scale
    }

    /// q: (k) -> x: (k), `x = q * scale`.
    pub fn dequantize_row(q: &[i8], scale: f32, x: &mut [f32]) {
        for (d, &v) in x.iter_mut().zip(q) {
            *d = v as f32 * scale;
        }
    }

    /// x: (k) -> q: (k), scales: (ceil(k / QK)); the last block may be shorter than [`QK`].
    pub fn quantize_blocks(x: &[f32], q: &mut [i8], scales: &mut [f16]) {
        for ((xb, qb), s) in x.chunks(QK).zip(q.chunks_mut(QK)).zip(scales.iter_mut()) {
            let (d, _, inv) = block_scales(amax(xb));
            *s = d;
            for (o, &v) in qb.iter_mut().zip(xb) {
                *o = quant_one(v, inv);
            }
        }
    }

    /// q: (k), scales: (ceil(k / QK)) -> x: (k).
    pub fn dequantize_blocks(q: &[i8], scales: &[f16], x: &mut [f32]) {
        for ((qb, xb), s) in q.chunks(QK).zip(x.chunks_mut(QK)).zip(scales) {
            dequantize_row(qb, s.to_f32(), xb);
        }
    }
}

/// The three leaves every quantizer is built from, per tier.
#[derive(Clone, Copy)]
pub(crate) struct Leaves {
    isa: Isa,
}

impl Leaves {
    pub(crate) fn new(isa: Isa) -> Self {
        Self { isa }
    }

    pub(crate) fn amax(self, x: &[f32]) -> f32 {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernels` of this tier exists only on a CPU that has it.
            Isa::Avx512 => unsafe { x86::amax512(x) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { x86::amax256(x) },
            _ => reference::amax(x),
        }
    }

    /// `q[i] = quant_one(x[i], inv)` for `i < min(len)`.
    pub(crate) fn quant(self, x: &[f32], inv: f32, q: &mut [i8]) {
        let n = x.len().min(q.len());
        let (x, q) = (&x[..n], &mut q[..n]);
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `amax`; both slices hold `n` elements.
            Isa::Avx512 => unsafe { x86::quant512(x, inv, q) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { x86::quant256(x, inv, q) },
            _ => q
                .iter_mut()
                .zip(x)
                .for_each(|(d, &v)| *d = quant_one(v, inv)),
        }
    }

    /// `x[i] = q[i] * scale` for `i < min(len)`.
    pub(crate) fn dequant(self, q: &[i8], scale: f32, x: &mut [f32]) {
        let n = x.len().min(q.len());
        let (q, x) = (&q[..n], &mut x[..n]);
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `amax`; both slices hold `n` elements.
            Isa::Avx512 => unsafe { x86::dequant512(q, scale, x) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { x86::dequant256(q, scale, x) },
            _ => reference::dequantize_row(q, scale, x),
        }
    }

    /// Row format on this tier: x: (k) -> q: (k), returns the scale.
    pub(crate) fn quantize_row(self, x: &[f32], q: &mut [i8]) -> f32 {
        let (scale, inv) = row_scales(self.amax(x));
        self.quant(x, inv, q);
        scale
    }

    /// Block format on this tier, with the block scales as f32 values (what the kernels use).
    pub(crate) fn quantize_blocks_f32(self, x: &[f32], q: &mut [i8], scales: &mut [f32]) {
        for ((xb, qb), s) in x.chunks(QK).zip(q.chunks_mut(QK)).zip(scales.iter_mut()) {
            let (_, df, inv) = block_scales(self.amax(xb));
            *s = df;
            self.quant(xb, inv, qb);
        }
    }
}

impl Kernels {
    /// Quantizes one row: x: (k) -> q: (k), returning the scale `max|x| / 127` (`x ≈ q * scale`).
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when `q` is shorter than `x`.
    pub fn quantize_row_i8(&self, x: &[f32], q: &mut [i8]) -> Result<f32> {
        check_len("quantize_row_i8", "q", q.len(), x.len())?;
        Ok(Leaves::new(self.isa()).quantize_row(x, &mut q[..x.len()]))
    }

    /// q: (k) -> x: (k), `x = q * scale`.
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when `x` is shorter than `q`.
    pub fn dequantize_row_i8(&self, q: &[i8], scale: f32, x: &mut [f32]) -> Result<()> {
        check_len("dequantize_row_i8", "x", x.len(), q.len())?;
        Leaves::new(self.isa()).dequant(q, scale, x);
        Ok(())
    }

    /// Block format (Q8_0): x: (k) -> q: (k), scales: (ceil(k / 32)) f16.
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when `q` or `scales` is too short.
    pub fn quantize_blocks_q8(&self, x: &[f32], q: &mut [i8], scales: &mut [f16]) -> Result<()> {
        check_len("quantize_blocks_q8", "q", q.len(), x.len())?;
        check_len(
            "quantize_blocks_q8",
            "scales",
            scales.len(),
            x.len().div_ceil(QK),
        )?;
        let leaves = Leaves::new(self.isa());
        for ((xb, qb), s) in x.chunks(QK).zip(q.chunks_mut(QK)).zip(scales.iter_mut()) {
            let (d, _, inv) = block_scales(leaves.amax(xb));
            *s = d;
            leaves.quant(xb, inv, qb);
        }
        Ok(())
    }

    /// Block format: q: (k), scales: (ceil(k / 32)) -> x: (k).
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when `x` or `scales` is too short.
    pub fn dequantize_blocks_q8(&self, q: &[i8], scales: &[f16], x: &mut [f32]) -> Result<()> {
        check_len("dequantize_blocks_q8", "x", x.len(), q.len())?;
        check_len(
            "dequantize_blocks_q8",
            "scales",
            scales.len(),
            q.len().div_ceil(QK),
        )?;
        let leaves = Leaves::new(self.isa());
        for ((qb, xb), s) in q.chunks(QK).zip(x.chunks_mut(QK)).zip(scales) {
            leaves.dequant(qb, s.to_f32(), xb);
        }
        Ok(())
    }
}

/// AVX2 and AVX-512 leaves. Each does, per element, exactly the reference's f32 operations:
/// `cvtps2dq` rounds half to even under the default MXCSR, like `round_ties_even`.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::math::avx512::mask16;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) fn amax512(x: &[f32]) -> f32 {
        let mut m = _mm512_setzero_ps();
        for c in x.chunks(16) {
            // SAFETY: the mask covers exactly the `c.len()` elements of `c`.
            let v = unsafe { _mm512_maskz_loadu_ps(mask16(c.len()), c.as_ptr()) };
            m = _mm512_max_ps(m, _mm512_abs_ps(v));
        }
        _mm512_reduce_max_ps(m)
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn quant512(x: &[f32], inv: f32, q: &mut [i8]) {
        let (inv, lo, hi) = (
            _mm512_set1_ps(inv),
            _mm512_set1_ps(-127.0),
            _mm512_set1_ps(127.0),
        );
        for (c, d) in x.chunks(16).zip(q.chunks_mut(16)) {
            let k = mask16(c.len());
            // SAFETY: the mask covers exactly the `c.len()` elements of `c` and of `d`.
            unsafe {
                let v = _mm512_maskz_loadu_ps(k, c.as_ptr());
                // Clamp before converting (same result as the reference's clamp after rounding,
                // the bounds being integers): out-of-range floats would convert to i32::MIN.
                let f = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, inv), lo), hi);
                let i = _mm512_cvtps_epi32(f);
                _mm512_mask_cvtepi32_storeu_epi8(d.as_mut_ptr().cast(), k, i);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn dequant512(q: &[i8], scale: f32, x: &mut [f32]) {
        let s = _mm512_set1_ps(scale);
        for (c, d) in q.chunks(16).zip(x.chunks_mut(16)) {
            let k = mask16(c.len());
            // SAFETY: the mask covers exactly the `c.len()` elements of `c` and of `d`.
            unsafe {
                let b = _mm_maskz_loadu_epi8(k, c.as_ptr());
                let v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
                _mm512_mask_storeu_ps(d.as_mut_ptr(), k, _mm512_mul_ps(v, s));
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn amax256(x: &[f32]) -> f32 {
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let mut m = _mm256_setzero_ps();
        let mut it = x.chunks_exact(8);
        for c in &mut it {
            // SAFETY: `c` holds 8 f32.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            m = _mm256_max_ps(m, _mm256_and_ps(v, abs));
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
        let tail = it.remainder().iter().fold(0.0f32, |a, v| a.max(v.abs()));
        lanes.iter().fold(tail, |a, &v| a.max(v))
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn quant256(x: &[f32], inv: f32, q: &mut [i8]) {
        let (vinv, lo, hi) = (
            _mm256_set1_ps(inv),
            _mm256_set1_ps(-127.0),
            _mm256_set1_ps(127.0),
        );
        let n8 = x.len() / 8 * 8;
        for (c, d) in x[..n8].chunks_exact(8).zip(q.chunks_exact_mut(8)) {
            // SAFETY: `c` and `d` hold 8 elements each.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            // Clamp before converting, as in `quant512`.
            let f = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v, vinv), lo), hi);
            let i = _mm256_cvtps_epi32(f);
            // Two saturating packs narrow i32 -> i16 -> i8 (values already in range); the
            // 128-bit lanes interleave, so permute before the second pack.
            let w = _mm256_packs_epi32(i, i);
            let w = _mm256_permute4x64_epi64::<0b1000>(w);
            let b = _mm256_packs_epi16(w, w);
            let lo64 = _mm_cvtsi128_si64(_mm256_castsi256_si128(b));
            d.copy_from_slice(&lo64.to_le_bytes().map(|u| u as i8));
        }
        for (d, &v) in q[n8..].iter_mut().zip(&x[n8..]) {
            *d = super::quant_one(v, inv);
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn dequant256(q: &[i8], scale: f32, x: &mut [f32]) {
        let s = _mm256_set1_ps(scale);
        let n8 = q.len() / 8 * 8;
        for (c, d) in q[..n8].chunks_exact(8).zip(x.chunks_exact_mut(8)) {
            // SAFETY: `c` holds 8 bytes (one i64) and `d` 8 f32.
            unsafe {
                let b = _mm_loadl_epi64(c.as_ptr().cast());
                let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
                _mm256_storeu_ps(d.as_mut_ptr(), _mm256_mul_ps(v, s));
            }
        }
        super::reference::dequantize_row(&q[n8..], scale, &mut x[n8..]);
    }
}
