//! Storage dtypes (f32, f16, bf16, int8 with per-row scales) and their conversion loops to f32.
//!
//! Compute is always f32; the narrower types exist so weights can stay in their file's format until used.
//! The decoders read little-endian bytes (a mapped file region has no alignment promise for 2-byte types)
//! and are branch-free per element, so the compiler vectorises them; `tests/tensor.rs` checks them
//! bit-exactly against `half` over all 65536 inputs.

use std::fmt;

/// The element type a tensor's storage holds. Compute sees f32 whatever the storage dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// Signed 8-bit integers with one f32 scale per row (last axis): `x = q * scale[row]`.
    I8,
}

impl DType {
    /// Bytes per element (the per-row scales of [`DType::I8`] not counted).
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 => 1,
        }
    }

    /// The lower-case name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I8 => "i8",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// IEEE binary16 bits to f32, exactly (every f16 is an f32).
///
/// Exponent and mantissa are moved into f32 position (`<< 13`); read as an f32 that is the true value
/// times 2^(15 - 127), so one multiplication by 2^112 (exact: a power of two, result in range) rebiases
/// normals and turns f16 subnormals into f32 normals. Infinities and NaNs keep the all-ones exponent; a
/// NaN gets the quiet bit set, as F16C's `vcvtph2ps` and `half` do.
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

/// bfloat16 bits to f32, exactly: bf16 is the top half of an f32. A NaN gets the quiet bit set, as `half`
/// does (and as any f32 arithmetic on it would).
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    let quiet = if h & 0x7fff > 0x7f80 { 0x0040 } else { 0 };
    f32::from_bits(u32::from(h | quiet) << 16)
}

/// Little-endian f16 bytes to f32. src: (2 n) bytes -> dst: (n).
///
/// # Panics
/// When `src.len() != 2 * dst.len()` (callers size both from one element count).
pub fn f16_le_to_f32(src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), 2 * dst.len(), "f16_le_to_f32: length mismatch");
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = f16_to_f32(u16::from_le_bytes([s[0], s[1]]));
    }
}

/// Little-endian bf16 bytes to f32. src: (2 n) bytes -> dst: (n).
///
/// # Panics
/// When `src.len() != 2 * dst.len()`.
pub fn bf16_le_to_f32(src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), 2 * dst.len(), "bf16_le_to_f32: length mismatch");
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = bf16_to_f32(u16::from_le_bytes([s[0], s[1]]));
    }
}

/// Little-endian f32 bytes to f32 (the copy taken when a mapped region is not 4-byte aligned).
///
/// # Panics
/// When `src.len() != 4 * dst.len()`.
pub fn f32_le_to_f32(src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), 4 * dst.len(), "f32_le_to_f32: length mismatch");
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

/// Int8 rows to f32: element `first + i` belongs to row `(first + i) / row_len` and is `q * scales[row]`.
/// q: (n) -> dst: (n); the rows touched must have scales.
///
/// # Panics
/// When `q.len() != dst.len()` or a touched row has no scale.
pub fn i8_to_f32(q: &[u8], scales: &[f32], row_len: usize, first: usize, dst: &mut [f32]) {
    assert_eq!(q.len(), dst.len(), "i8_to_f32: length mismatch");
    if dst.is_empty() {
        return;
    }
    let mut pos = 0;
    while pos < dst.len() {
        let idx = first + pos;
        let row = idx / row_len;
        let take = (row_len - idx % row_len).min(dst.len() - pos);
        let s = scales[row];
        // One scale per run of a row: the inner loop is a plain widen-and-multiply.
        for (d, &v) in dst[pos..pos + take].iter_mut().zip(&q[pos..pos + take]) {
            *d = f32::from(v as i8) * s;
        }
        pos += take;
    }
}
