//! Half-precision storage and f32: f16 (IEEE binary16) and bf16 as little-endian bytes, both ways.
//!
//! To f32 both conversions are exact (every f16 and bf16 value is an f32); a NaN keeps its payload and
//! gets the quiet bit set, which is what F16C's `vcvtph2ps` does and what `half` does. From f32 both round
//! to nearest, ties to even, overflow to infinity, f16 subnormals kept; a NaN keeps the top bits of its
//! payload with the quiet bit set (`vcvtps2ph`, `vcvtneps2bf16` and `half` agree). Every tier is
//! bit-exact against the reference and against `half`. Byte slices because a mapped file region promises
//! no 2-byte alignment; the vector tiers use unaligned accesses and finish the tail with the reference.

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

impl Kernels {
    /// f32 to f16, rounding to nearest even. `// src: (n) -> dst: (2 n) little-endian bytes`
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when `dst` holds fewer than `2 * src.len()` bytes.
    pub fn f32_to_f16(&self, src: &[f32], dst: &mut [u8]) -> Result<()> {
        check_len("f32_to_f16", "dst", dst.len(), 2 * src.len())?;
        let dst = &mut dst[..2 * src.len()];
        match self.isa() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX-512 F.
            Isa::Avx512 => unsafe { avx512::to_f16(src, dst) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 by the tier, F16C checked on the same line (std caches the detection).
            Isa::Avx2 if std::arch::is_x86_feature_detected!("f16c") => unsafe {
                avx2::to_f16(src, dst)
            },
            _ => reference::to_f16_slice(src, dst),
        }
        Ok(())
    }

    /// f32 to bf16, rounding to nearest even. `// src: (n) -> dst: (2 n) little-endian bytes`
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when `dst` holds fewer than `2 * src.len()` bytes.
    pub fn f32_to_bf16(&self, src: &[f32], dst: &mut [u8]) -> Result<()> {
        check_len("f32_to_bf16", "dst", dst.len(), 2 * src.len())?;
        let dst = &mut dst[..2 * src.len()];
        match self.isa() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512 F by the tier, AVX512-BF16 checked on the same line.
            Isa::Avx512 if std::arch::is_x86_feature_detected!("avx512bf16") => unsafe {
                avx512::to_bf16_native(src, dst)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX-512 F.
            Isa::Avx512 => unsafe { avx512::to_bf16(src, dst) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX2.
            Isa::Avx2 => unsafe { avx2::to_bf16(src, dst) },
            _ => reference::to_bf16_slice(src, dst),
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

    /// f32 to IEEE binary16 bits, rounding to nearest, ties to even.
    ///
    /// The f16 result is the f32's top bits: exponent rebiased (127 to 15) and 13 mantissa bits
    /// dropped, then one added when the dropped bits exceed half a step or equal it with an odd
    /// result; a carry out of the mantissa lands in the exponent, which is the right rounding
    /// (up to infinity). Below the normal range the implicit bit joins the mantissa and more bits
    /// drop; below half the smallest subnormal (2^-25) the result is a signed zero.
    pub fn f32_to_f16(x: f32) -> u16 {
        let x = x.to_bits();
        let sign = ((x >> 16) & 0x8000) as u16;
        let exp = (x >> 23) & 0xff;
        let man = x & 0x007f_ffff;
        if exp == 0xff {
            let quiet = if man != 0 { 0x0200 } else { 0 };
            return sign | 0x7c00 | quiet | (man >> 13) as u16;
        }
        let e = exp as i32 - 127 + 15;
        if e >= 0x1f {
            return sign | 0x7c00;
        }
        let (q, rem, half) = if e > 0 {
            (((e as u32) << 10) | (man >> 13), man & 0x1fff, 0x1000)
        } else if e >= -11 {
            // f16 subnormal: value = m * 2^(e - 38), a step is 2^-24, so drop 14 - e bits.
            let m = man | 0x0080_0000;
            let shift = (14 - e) as u32;
            (m >> shift, m & ((1 << shift) - 1), 1 << (shift - 1))
        } else {
            return sign;
        };
        let up = rem > half || (rem == half && q & 1 == 1);
        sign | (q + u32::from(up)) as u16
    }

    /// f32 to bfloat16 bits, rounding to nearest, ties to even: adding `0x7fff` plus the kept
    /// lowest bit carries into the kept half exactly when the dropped half rounds up.
    pub fn f32_to_bf16(x: f32) -> u16 {
        let x = x.to_bits();
        if x & 0x7fff_ffff > 0x7f80_0000 {
            return ((x >> 16) | 0x0040) as u16;
        }
        ((x + 0x7fff + ((x >> 16) & 1)) >> 16) as u16
    }

    /// `// src: (n) -> dst: (2 n) bytes`; extra bytes or elements beyond the shorter side are untouched.
    pub fn to_f16_slice(src: &[f32], dst: &mut [u8]) {
        for (d, &s) in dst.chunks_exact_mut(2).zip(src) {
            d.copy_from_slice(&f32_to_f16(s).to_le_bytes());
        }
    }

    /// `// src: (n) -> dst: (2 n) bytes`; extra bytes or elements beyond the shorter side are untouched.
    pub fn to_bf16_slice(src: &[f32], dst: &mut [u8]) {
        for (d, &s) in dst.chunks_exact_mut(2).zip(src) {
            d.copy_from_slice(&f32_to_bf16(s).to_le_bytes());
        }
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

    /// `dst.len() == 2 * src.len()` (checked by the entry point).
    #[target_feature(enable = "avx2,f16c")]
    pub(super) fn to_f16(src: &[f32], dst: &mut [u8]) {
        let full = src.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            // SAFETY: i + 8 <= src.len(), so floats i..i + 8 of `src` and bytes 2i..2i + 16 of `dst` are in bounds; both are unaligned accesses.
            unsafe {
                let f = _mm256_loadu_ps(src.as_ptr().add(i));
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(f);
                _mm_storeu_si128(dst.as_mut_ptr().add(2 * i).cast(), h);
            }
        }
        reference::to_f16_slice(&src[full..], &mut dst[2 * full..]);
    }

    /// `dst.len() == 2 * src.len()` (checked by the entry point). The reference's integer
    /// rounding on 8 lanes; the 32-bit results are packed to 16 bits by `vpackusdw` (in range:
    /// each is below 2^16), which interleaves 128-bit halves, undone by one permute.
    #[target_feature(enable = "avx2")]
    pub(super) fn to_bf16(src: &[f32], dst: &mut [u8]) {
        let full = src.len() / 16 * 16;
        for i in (0..full).step_by(16) {
            // SAFETY: i + 16 <= src.len(), so floats i..i + 16 of `src` and bytes 2i..2i + 32 of `dst` are in bounds; both are unaligned accesses.
            unsafe {
                let a = round_bf16(_mm256_loadu_si256(src.as_ptr().add(i).cast()));
                let b = round_bf16(_mm256_loadu_si256(src.as_ptr().add(i + 8).cast()));
                let p = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(a, b));
                _mm256_storeu_si256(dst.as_mut_ptr().add(2 * i).cast(), p);
            }
        }
        reference::to_bf16_slice(&src[full..], &mut dst[2 * full..]);
    }

    /// 8 f32 bit patterns to bf16 bits in the low half of each lane (see `reference::f32_to_bf16`).
    #[target_feature(enable = "avx2")]
    fn round_bf16(x: __m256i) -> __m256i {
        let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(x), _mm256_set1_epi32(1));
        let bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff));
        let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(x, bias));
        let abs = _mm256_and_si256(x, _mm256_set1_epi32(0x7fff_ffff));
        let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
        let quiet = _mm256_or_si256(_mm256_srli_epi32::<16>(x), _mm256_set1_epi32(0x0040));
        _mm256_blendv_epi8(rounded, quiet, nan)
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
    /// `dst.len() == 2 * src.len()` (checked by the entry point).
    #[target_feature(enable = "avx512f")]
    pub(super) fn to_f16(src: &[f32], dst: &mut [u8]) {
        let full = src.len() / 16 * 16;
        for i in (0..full).step_by(16) {
            // SAFETY: i + 16 <= src.len(), so floats i..i + 16 of `src` and bytes 2i..2i + 32 of `dst` are in bounds; both are unaligned accesses.
            unsafe {
                let f = _mm512_loadu_ps(src.as_ptr().add(i));
                let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(f);
                _mm256_storeu_si256(dst.as_mut_ptr().add(2 * i).cast(), h);
            }
        }
        reference::to_f16_slice(&src[full..], &mut dst[2 * full..]);
    }

    /// `dst.len() == 2 * src.len()` (checked by the entry point).
    #[target_feature(enable = "avx512f")]
    pub(super) fn to_bf16(src: &[f32], dst: &mut [u8]) {
        let full = src.len() / 16 * 16;
        for i in (0..full).step_by(16) {
            // SAFETY: i + 16 <= src.len(), so floats i..i + 16 of `src` and bytes 2i..2i + 32 of `dst` are in bounds; both are unaligned accesses.
            unsafe {
                let x = _mm512_loadu_si512(src.as_ptr().add(i).cast());
                _mm256_storeu_si256(dst.as_mut_ptr().add(2 * i).cast(), round_bf16(x));
            }
        }
        reference::to_bf16_slice(&src[full..], &mut dst[2 * full..]);
    }

    /// The reference's integer rounding on 16 lanes, narrowed to 16 bits by `vpmovdw`.
    #[target_feature(enable = "avx512f")]
    fn round_bf16(x: __m512i) -> __m256i {
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(1));
        let bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff));
        let r = _mm512_srli_epi32::<16>(_mm512_add_epi32(x, bias));
        let abs = _mm512_and_si512(x, _mm512_set1_epi32(0x7fff_ffff));
        let nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
        let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(0x0040));
        _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(r, nan, quiet))
    }

    /// `dst.len() == 2 * src.len()` (checked by the entry point). AVX512-BF16's
    /// `vcvtneps2bf16` rounds to nearest even and quiets NaNs like the reference, but treats
    /// f32 subnormal inputs as zero (measured here: `0x0000_8001` gives 0, not the bf16
    /// subnormal 1); a vector holding one takes the integer rounding instead.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) fn to_bf16_native(src: &[f32], dst: &mut [u8]) {
        let full = src.len() / 16 * 16;
        let exp = _mm512_set1_epi32(0x7f80_0000);
        let man = _mm512_set1_epi32(0x007f_ffff);
        for i in (0..full).step_by(16) {
            // SAFETY: i + 16 <= src.len(), so floats i..i + 16 of `src` and bytes 2i..2i + 32 of `dst` are in bounds; both are unaligned accesses; `__m256bh` and `__m256i` are both 256 plain bits.
            unsafe {
                let f = _mm512_loadu_ps(src.as_ptr().add(i));
                let x = _mm512_castps_si512(f);
                let subnormal =
                    _mm512_mask_test_epi32_mask(_mm512_testn_epi32_mask(x, exp), x, man);
                let h: __m256i = if subnormal == 0 {
                    std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(f))
                } else {
                    round_bf16(x)
                };
                _mm256_storeu_si256(dst.as_mut_ptr().add(2 * i).cast(), h);
            }
        }
        reference::to_bf16_slice(&src[full..], &mut dst[2 * full..]);
    }
}
