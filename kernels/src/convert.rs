//! Half-precision storage to f32: f16 (IEEE binary16) and bf16, read as little-endian bytes.
//!
//! Both conversions are exact (every f16 and bf16 value is an f32); a NaN keeps its payload and gets the
//! quiet bit set, which is what F16C's `vcvtph2ps` does and what `half` does, so every tier is bit-exact
//! against the reference and against `half`. Sources are bytes because a mapped file region promises no
//! 2-byte alignment; the vector tiers use unaligned loads and finish the tail with the reference.

use crate::error::check_len;
use crate::{Isa, Kernels, Result};

impl Kernels {
    /// f16 to f32. `// src: (2 n) little-endian bytes -> dst: (n)`
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when `src` holds fewer than `2 * dst.len()` bytes.
    pub fn f16_to_f32(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        check_len("f16_to_f32", "src", src.len(), 2 * dst.len())?;
        let src = &src[..2 * dst.len()];
        match self.isa() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX-512 F.
            Isa::Avx512 => unsafe { avx512::f16(src, dst) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 by the tier, F16C checked on the same line (std caches the detection).
            Isa::Avx2 if std::arch::is_x86_feature_detected!("f16c") => unsafe {
                avx2::f16(src, dst)
            },
            _ => reference::f16_slice(src, dst),
        }
        Ok(())
    }

    /// bf16 to f32. `// src: (2 n) little-endian bytes -> dst: (n)`
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when `src` holds fewer than `2 * dst.len()` bytes.
    pub fn bf16_to_f32(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        check_len("bf16_to_f32", "src", src.len(), 2 * dst.len())?;
        let src = &src[..2 * dst.len()];
        match self.isa() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX-512 F.
            Isa::Avx512 => unsafe { avx512::bf16(src, dst) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX2.
            Isa::Avx2 => unsafe { avx2::bf16(src, dst) },
            _ => reference::bf16_slice(src, dst),
        }
        Ok(())
    }
}

/// The scalar reference: per-element bit manipulation, branch-free so the slice loops vectorise.
pub mod reference {
    /// IEEE binary16 bits to f32, exactly.
    ///
    /// Exponent and mantissa are moved into f32 position (`<< 13`); read as an f32 that is the true value
    /// times 2^(15 - 127), so one multiplication by 2^112 (exact: a power of two, result in range) rebiases
    /// normals and turns f16 subnormals into f32 normals. Infinities and NaNs keep the all-ones exponent.
    #[inline(always)]
    pub fn f16_to_f32(h: u16) -> f32 {
        let h = u32::from(h);
        let sign = (h & 0x8000) << 16;
        let em = h & 0x7fff;
        let shifted = em << 13;
        let finite = (f32::from_bits(shifted) * f32::from_bits(0x7780_0000)).to_bits(); // * 2^112
        let quiet = if em > 0x7c00 { 0x0040_0000 } else { 0 };
        let special = shifted | 0x7f80_0000 | quiet;
        let bits = if em >= 0x7c00 { special } else { finite };
        f32::from_bits(bits | sign)
    }

    /// bfloat16 bits to f32, exactly: bf16 is the top half of an f32.
    #[inline(always)]
    pub fn bf16_to_f32(h: u16) -> f32 {
        let quiet = if h & 0x7fff > 0x7f80 { 0x0040 } else { 0 };
        f32::from_bits(u32::from(h | quiet) << 16)
    }

    /// `// src: (2 n) bytes -> dst: (n)`; extra bytes or elements beyond the shorter side are untouched.
    pub fn f16_slice(src: &[u8], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
            *d = f16_to_f32(u16::from_le_bytes([s[0], s[1]]));
        }
    }

    /// `// src: (2 n) bytes -> dst: (n)`; extra bytes or elements beyond the shorter side are untouched.
    pub fn bf16_slice(src: &[u8], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
            *d = bf16_to_f32(u16::from_le_bytes([s[0], s[1]]));
        }
    }
}

/// AVX2 (+ F16C for f16): 8 lanes.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::reference;
    use std::arch::x86_64::*;

    /// `src.len() == 2 * dst.len()` (checked by the entry point).
    #[target_feature(enable = "avx2,f16c")]
    pub(super) fn f16(src: &[u8], dst: &mut [f32]) {
        let full = dst.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            // SAFETY: i + 8 <= dst.len(), so bytes 2i..2i + 16 of `src` and floats i..i + 8 of `dst` are in bounds; both are unaligned accesses.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(2 * i).cast());
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
        }
        reference::f16_slice(&src[2 * full..], &mut dst[full..]);
    }

    /// `src.len() == 2 * dst.len()` (checked by the entry point).
    #[target_feature(enable = "avx2")]
    pub(super) fn bf16(src: &[u8], dst: &mut [f32]) {
        let full = dst.len() / 8 * 8;
        let abs = _mm256_set1_epi32(0x7fff_0000);
        let inf = _mm256_set1_epi32(0x7f80_0000);
        let quiet = _mm256_set1_epi32(0x0040_0000);
        for i in (0..full).step_by(8) {
            // SAFETY: as in `f16`.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(2 * i).cast());
                let f = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
                // |f| > inf (as integers: both non-negative) is a NaN: set its quiet bit.
                let nan = _mm256_cmpgt_epi32(_mm256_and_si256(f, abs), inf);
                let f = _mm256_or_si256(f, _mm256_and_si256(nan, quiet));
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_castsi256_ps(f));
            }
        }
        reference::bf16_slice(&src[2 * full..], &mut dst[full..]);
    }
}

/// AVX-512 F: 16 lanes.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::reference;
    use std::arch::x86_64::*;

    /// `src.len() == 2 * dst.len()` (checked by the entry point).
    #[target_feature(enable = "avx512f")]
    pub(super) fn f16(src: &[u8], dst: &mut [f32]) {
        let full = dst.len() / 16 * 16;
        for i in (0..full).step_by(16) {
            // SAFETY: i + 16 <= dst.len(), so bytes 2i..2i + 32 of `src` and floats i..i + 16 of `dst` are in bounds; both are unaligned accesses.
            unsafe {
                let h = _mm256_loadu_si256(src.as_ptr().add(2 * i).cast());
                _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
            }
        }
        reference::f16_slice(&src[2 * full..], &mut dst[full..]);
    }

    /// `src.len() == 2 * dst.len()` (checked by the entry point).
    #[target_feature(enable = "avx512f")]
    pub(super) fn bf16(src: &[u8], dst: &mut [f32]) {
        let full = dst.len() / 16 * 16;
        let abs = _mm512_set1_epi32(0x7fff_0000);
        let inf = _mm512_set1_epi32(0x7f80_0000);
        let quiet = _mm512_set1_epi32(0x0040_0000);
        for i in (0..full).step_by(16) {
            // SAFETY: as in `f16`.
            unsafe {
                let h = _mm256_loadu_si256(src.as_ptr().add(2 * i).cast());
                let f = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h));
                let nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(f, abs), inf);
                let f = _mm512_mask_or_epi32(f, nan, f, quiet);
                _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_castsi512_ps(f));
            }
        }
        reference::bf16_slice(&src[2 * full..], &mut dst[full..]);
    }
}
