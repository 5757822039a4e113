//! [`QWeights`]: int8 weights (n, k) packed once into the layout every kernel reads.
//!
//! Columns of C (rows of W) are grouped in panels of 16; within a panel, k is cut into groups of
//! 4 consecutive values, and group `g` of the 16 columns is 64 contiguous bytes:
//! `panel[g * 64 + j * 4 + (k % 4)] = W[16 * p + j][4 * g + k % 4]`. That is at once the operand of
//! `vpdpbusd` against 4 broadcast activation bytes (16 lanes, or 2 x 8 for 256-bit) and the AMX
//! B-tile layout (16 rows of k-groups x 64 bytes), so one copy serves every path. k is zero-padded
//! to a multiple of 64 (one AMX tile depth) and n to a multiple of 32 (two panels); zero weights
//! make the padding contribute nothing whatever the activations hold there.

use super::quant::{self, QK};
use super::{MAX_K, NB, mul};
use crate::error::check_len;
use crate::{KernelError, Kernels, Result};
use half::f16;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// Bytes of k per AMX tile row; k is padded to a multiple of it.
pub(crate) const KP_MULTIPLE: usize = 64;

/// How the weights are scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QFormat {
    /// One f32 scale per output channel (row of W).
    PerChannel,
    /// One f16 scale per block of 32 along k per output channel (ggml Q8_0).
    Block32,
}

/// Quantized, packed weights of a Linear layer: W (n, k).
#[derive(Clone, Debug)]
pub struct QWeights {
    n: usize,
    k: usize,
    kp: usize,
    format: QFormat,
    /// `n.next_multiple_of(32) / 16` panels of `kp * 16` bytes (see the module docs).
    pub(crate) panels: Aligned<i8>,
    /// Per channel: (np) f32 scales (0 past n). Block format: (np / 16, kp / 32, 16) f32 values
    /// of the f16 scales, panel-major so a kernel loads 16 columns' scales of one block at once.
    pub(crate) scales: Vec<f32>,
    /// `128 * sum_k W[j][k]`, (np): what the +128 activation offset adds to column j.
    pub(crate) comp: Vec<i32>,
    /// Block format: the same per block, laid out as `scales`.
    pub(crate) block_comp: Vec<i32>,
    /// Block format: the f16 scales as given, (n, ceil(k / 32)).
    block_scales: Vec<f16>,
}

impl QWeights {
    /// Quantizes w: (n, k) f32 per output channel (row) and packs it.
    ///
    /// # Errors
    /// [`KernelError::BadLength`] when `w` is shorter than (n, k); [`KernelError::BadShape`] when
    /// k exceeds [`MAX_K`](super::MAX_K).
    pub fn per_channel(kernels: &Kernels, w: &[f32], n: usize, k: usize) -> Result<Self> {
        check_len(
            "QWeights::per_channel",
            "w",
            w.len(),
            mul("QWeights", n, k)?,
        )?;
        let mut q = vec![0i8; n * k];
        let mut s = vec![0.0f32; n];
        for j in 0..n {
            s[j] = kernels.quantize_row_i8(&w[j * k..(j + 1) * k], &mut q[j * k..(j + 1) * k])?;
        }
        Self::from_per_channel(&q, &s, n, k)
    }

    /// Quantizes w: (n, k) f32 per block of 32 along k (f16 scales) and packs it.
    ///
    /// # Errors
    /// As [`QWeights::per_channel`].
    pub fn block32(kernels: &Kernels, w: &[f32], n: usize, k: usize) -> Result<Self> {
        check_len("QWeights::block32", "w", w.len(), mul("QWeights", n, k)?)?;
        let nb = k.div_ceil(QK);
        let mut q = vec![0i8; n * k];
        let mut s = vec![f16::ZERO; n * nb];
        for j in 0..n {
            let (wr, qr) = (&w[j * k..(j + 1) * k], &mut q[j * k..(j + 1) * k]);
            kernels.quantize_blocks_q8(wr, qr, &mut s[j * nb..(j + 1) * nb])?;
        }
        Self::from_blocks(&q, &s, n, k)
    }

    /// Packs already-quantized weights q: (n, k) i8 with per-channel scales: (n).
    ///
    /// # Errors
    /// [`KernelError::BadLength`] for short slices; [`KernelError::BadShape`] when `q` holds
    /// -128 or k exceeds [`MAX_K`](super::MAX_K).
    pub fn from_per_channel(q: &[i8], scales: &[f32], n: usize, k: usize) -> Result<Self> {
        const OP: &str = "QWeights::from_per_channel";
        check_len(OP, "scales", scales.len(), n)?;
        let mut w = Self::pack(OP, q, n, k, QFormat::PerChannel)?;
        w.scales[..n].copy_from_slice(&scales[..n]);
        Ok(w)
    }

    /// Packs already-quantized weights q: (n, k) i8 with block scales: (n, ceil(k / 32)) f16.
    ///
    /// # Errors
    /// As [`QWeights::from_per_channel`].
    pub fn from_blocks(q: &[i8], scales: &[f16], n: usize, k: usize) -> Result<Self> {
        const OP: &str = "QWeights::from_blocks";
        let nb = k.div_ceil(QK);
        check_len(OP, "scales", scales.len(), mul(OP, n, nb)?)?;
        let mut w = Self::pack(OP, q, n, k, QFormat::Block32)?;
        let bpp = w.kp / QK; // blocks per panel row, padding included
        w.scales = vec![0.0; n.next_multiple_of(NB) / 16 * bpp * 16];
        w.block_comp = vec![0; w.scales.len()];
        for j in 0..n {
            let (p, c) = (j / 16, j % 16);
            for b in 0..nb {
                let e = (p * bpp + b) * 16 + c;
                w.scales[e] = scales[j * nb + b].to_f32();
                let r = b * QK..((b + 1) * QK).min(k);
                w.block_comp[e] = 128 * q[j * k..][r].iter().map(|&v| v as i32).sum::<i32>();
            }
        }
        w.block_scales = scales[..n * nb].to_vec();
        Ok(w)
    }

    fn pack(op: &'static str, q: &[i8], n: usize, k: usize, format: QFormat) -> Result<Self> {
        check_len(op, "q", q.len(), mul(op, n, k)?)?;
        if k > MAX_K {
            return Err(KernelError::BadShape {
                op,
                detail: format!("k = {k} exceeds {MAX_K}: i32 dot products could overflow"),
            });
        }
        if q[..n * k].contains(&i8::MIN) {
            return Err(KernelError::BadShape {
                op,
                detail: "`q` holds -128, outside the symmetric [-127, 127] format".into(),
            });
        }
        let kp = k.next_multiple_of(KP_MULTIPLE);
        // n is bounded by `q` only when k > 0: refuse sizes whose padded buffers cannot exist.
        let np = n
            .checked_next_multiple_of(NB)
            .filter(|np| {
                np.checked_mul(kp.max(KP_MULTIPLE))
                    .is_some_and(|b| b <= isize::MAX as usize)
            })
            .ok_or_else(|| KernelError::BadShape {
                op,
                detail: format!("n = {n} output channels overflow the packed buffers"),
            })?;
        let mut panels = Aligned::zeroed(np * kp);
        let mut comp = vec![0i32; np];
        for j in 0..n {
            let base = (j / 16) * kp * 16 + (j % 16) * 4;
            let row = &q[j * k..(j + 1) * k];
            for (kk, &v) in row.iter().enumerate() {
                panels[base + (kk / 4) * 64 + kk % 4] = v;
            }
            comp[j] = 128 * row.iter().map(|&v| v as i32).sum::<i32>();
        }
        Ok(Self {
            n,
            k,
            kp,
            format,
            panels,
            scales: vec![0.0; np],
            comp,
            block_comp: Vec::new(),
            block_scales: Vec::new(),
        })
    }

    /// Output channels (rows of W).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (columns of W).
    pub fn k(&self) -> usize {
        self.k
    }

    /// k padded to a multiple of 64.
    pub(crate) fn kp(&self) -> usize {
        self.kp
    }

    pub fn format(&self) -> QFormat {
        self.format
    }

    /// Per-channel scales (n), or `None` for the block format.
    pub fn channel_scales(&self) -> Option<&[f32]> {
        (self.format == QFormat::PerChannel).then(|| &self.scales[..self.n])
    }

    /// Block scales (n, ceil(k / 32)), or `None` for the per-channel format.
    pub fn block_scales(&self) -> Option<&[f16]> {
        (self.format == QFormat::Block32).then_some(&self.block_scales[..])
    }

    /// The quantized weights back in (n, k) order.
    pub fn unpack(&self) -> Vec<i8> {
        let mut q = vec![0i8; self.n * self.k];
        for j in 0..self.n {
            let base = (j / 16) * self.kp * 16 + (j % 16) * 4;
            for kk in 0..self.k {
                q[j * self.k + kk] = self.panels[base + (kk / 4) * 64 + kk % 4];
            }
        }
        q
    }

    /// Dequantized weights (n, k), as f32.
    pub fn dequantize(&self) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        let q = self.unpack();
        let mut w = vec![0.0f32; n * k];
        for j in 0..n {
            let (qr, wr) = (&q[j * k..(j + 1) * k], &mut w[j * k..(j + 1) * k]);
            match self.format {
                QFormat::PerChannel => quant::reference::dequantize_row(qr, self.scales[j], wr),
                QFormat::Block32 => {
                    let nb = k.div_ceil(QK);
                    let s = &self.block_scales[j * nb..(j + 1) * nb];
                    quant::reference::dequantize_blocks(qr, s, wr);
                }
            }
        }
        w
    }

    /// A per-channel view of the same bytes (scales unused): what the exact-i32 entry runs.
    pub(crate) fn as_per_channel(&self) -> std::borrow::Cow<'_, QWeights> {
        match self.format {
            QFormat::PerChannel => std::borrow::Cow::Borrowed(self),
            QFormat::Block32 => std::borrow::Cow::Owned(Self {
                format: QFormat::PerChannel,
                scales: vec![0.0; self.comp.len()],
                block_comp: Vec::new(),
                block_scales: Vec::new(),
                ..self.clone()
            }),
        }
    }
}

/// One cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// The two byte types a buffer may hold.
pub(crate) trait Byte: Copy {}
impl Byte for u8 {}
impl Byte for i8 {}

/// A zero-initialized byte buffer that starts on a cache line. AMX reads 64-byte tile rows: from
/// a `Vec`'s 16-byte-aligned block every row straddles two lines, and the tile loop ran about
/// 2.7x slower (measured on 256 x 768 x 3072).
#[derive(Clone)]
pub(crate) struct Aligned<T> {
    lines: Vec<Line>,
    len: usize,
    byte: PhantomData<T>,
}

impl<T: Byte> Aligned<T> {
    /// `len` zero bytes.
    pub(crate) fn zeroed(len: usize) -> Self {
        Self {
            lines: vec![Line([0; 64]); len.div_ceil(64)],
            len,
            byte: PhantomData,
        }
    }
}

impl<T: Byte> Aligned<T> {
    /// This buffer resized to `len` bytes, reusing its lines: contents are unspecified (old
    /// bytes, or zeros where it grew), for callers that write every byte.
    pub(crate) fn resized(mut self, len: usize) -> Self {
        self.lines.resize(len.div_ceil(64), Line([0; 64]));
        self.len = len;
        self
    }
}

impl<T: Byte> Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `lines` holds at least `len` initialized bytes, and u8 / i8 (the only `Byte`s) have size and alignment 1 and no invalid values.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }
}

impl<T: Byte> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, borrowed uniquely through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
}

impl<T> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Aligned({} bytes)", self.len)
    }
}
