//! Storage dtypes (f32, f16, bf16, int8 with per-row scales) and their conversion loops to f32.
//!
//! Compute is always f32; the narrower types exist so weights can stay in their file's format until used.
//! The decoders read little-endian bytes (a mapped file region has no alignment promise for 2-byte types);
//! f16/bf16 go through the kernels' `convert` family (F16C / AVX-512 tiers, bit-exact against `half`, see
//! `tests/convert.rs`), int8 through a widen-and-multiply loop the compiler vectorises.

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

use anvil_kernels::convert::reference;
pub use anvil_kernels::convert::reference::{bf16_to_f32, f16_to_f32};

/// Little-endian f16 bytes to f32 on the process's kernel tier (F16C / AVX-512 where present).
/// src: (2 n) bytes -> dst: (n).
///
/// # Panics
/// When `src.len() != 2 * dst.len()` (callers size both from one element count).
pub fn f16_le_to_f32(src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), 2 * dst.len(), "f16_le_to_f32: length mismatch");
    if anvil_kernels::kernels()
        .and_then(|k| k.f16_to_f32(src, dst))
        .is_err()
    {
        // Only a malformed `ANVIL_ISA` gets here (the lengths match): the portable loop still works.
        reference::f16_slice(src, dst);
    }
}

/// Little-endian bf16 bytes to f32 on the process's kernel tier. src: (2 n) bytes -> dst: (n).
///
/// # Panics
/// When `src.len() != 2 * dst.len()`.
pub fn bf16_le_to_f32(src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), 2 * dst.len(), "bf16_le_to_f32: length mismatch");
    if anvil_kernels::kernels()
        .and_then(|k| k.bf16_to_f32(src, dst))
        .is_err()
    {
        reference::bf16_slice(src, dst);
    }
}

/// f32 to little-endian f16 (or bf16 when `bf16`) bytes, rounding to nearest even, on the process's
/// kernel tier (F16C / AVX-512 / AVX512-BF16 where present). src: (n) -> (2 n) bytes.
pub fn f32_to_half_le(src: &[f32], bf16: bool) -> Vec<u8> {
    let mut out = vec![0u8; 2 * src.len()];
    let done = anvil_kernels::kernels().and_then(|k| match bf16 {
        true => k.f32_to_bf16(src, &mut out),
        false => k.f32_to_f16(src, &mut out),
    });
    if done.is_err() {
        // Only a malformed `ANVIL_ISA` gets here (the lengths match): the portable loop still works.
        match bf16 {
            true => reference::to_bf16_slice(src, &mut out),
            false => reference::to_f16_slice(src, &mut out),
        }
    }
    out
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
