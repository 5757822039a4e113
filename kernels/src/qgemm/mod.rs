//! Int8 GEMM: `y (m, n) f32 = dequant(A_q (m, k) i8 x W_q (n, k)^T i8 -> i32)`, weights stored as
//! the rows of a Linear layer and packed once ([`QWeights`]), activations quantized per call.
//!
//! - `quant.rs`: the two formats (per row / per channel f32 scale; per block of 32 with an f16
//!   scale, as ggml's Q8_0), quantize / dequantize, reference and SIMD;
//! - `pack.rs`: [`QWeights`], the packed weight layout shared by every kernel;
//! - `scalar.rs`, `avx2.rs`, `vnni.rs` (AVX-VNNI 256 and AVX512-VNNI), `amx.rs` (its output side
//!   in `amx_store.rs`): one kernel each, chosen by [`QPath`].
//!
//! Every path computes the same i32 dot products exactly, and dequantizes each one with the same
//! f32 expression, `acc as f32 * (a_scale * w_scale)` (per block: summed over blocks in k order),
//! so results are bit-identical across paths and thread counts.
//!
//! Work is split over blocks of 32 columns of C (rows of W) on the rayon pool; GEMV shapes
//! (m = 1..8) run the same kernels with fewer rows (AVX512-VNNI has a 4-chain single-row
//! kernel), so decode is parallel over the output rows of W. [`Kernels::qgemm_i8`] picks
//! [`QPath::best`] (AMX > AVX512-VNNI > AVX-VNNI > AVX2 > scalar, within the tier's cap);
//! [`Kernels::qgemm_i8_on`] forces a path.

mod amx;
mod amx_store;
mod avx2;
mod pack;
pub mod quant;
mod scalar;
mod vnni;

pub use half::f16;
use pack::Aligned;
pub use pack::{QFormat, QWeights};
pub use quant::{MIN_AMAX, QK, QMAX};

use crate::error::check_len;
use crate::{Features, Isa, KernelError, Kernels, Result};
use std::ops::Range;
use std::sync::OnceLock;

/// Largest k accepted: `k * 127 * 127` must fit an i32 accumulator (2^17 * 16129 < 2^31).
pub const MAX_K: usize = 1 << 17;

/// Columns of C per unit of work: two panels of 16 (the AMX and AVX512-VNNI tile width).
pub(crate) const NB: usize = 32;

/// Problems of at least this many multiply-adds run on the rayon pool.
const PAR_MIN_MACS: usize = 1 << 20;

/// Rows of A from which [`QPath::Amx`] beats AVX512-VNNI (below, tiles would be mostly padding).
const AMX_MIN_M: usize = 16;

/// One integer-GEMM implementation. All of them produce identical results; they differ in speed
/// and in what the CPU must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QPath {
    /// Portable Rust over the packed layout.
    Scalar,
    /// AVX2 `vpmaddubsw` + `vpmaddwd` with the sign trick.
    Avx2,
    /// AVX-VNNI `vpdpbusd` on 256-bit vectors.
    AvxVnni,
    /// AVX512-VNNI `vpdpbusd` on 512-bit vectors.
    Avx512Vnni,
    /// AMX-INT8 `tdpbssd` on 16 x 16 tiles.
    Amx,
}

impl QPath {
    /// Every path, slowest first.
    pub const ALL: [QPath; 5] = [
        QPath::Scalar,
        QPath::Avx2,
        QPath::AvxVnni,
        QPath::Avx512Vnni,
        QPath::Amx,
    ];

    /// Whether `kernels` may run this path: the tier must reach the path's vector width (so
    /// `ANVIL_ISA=avx2` never runs AVX-512 or AMX code) and the CPU must have its features.
    pub fn is_available(self, kernels: Kernels) -> bool {
        let (isa, f) = (kernels.isa(), features());
        match self {
            QPath::Scalar => true,
            QPath::Avx2 => isa >= Isa::Avx2,
            QPath::AvxVnni => isa >= Isa::Avx2 && f.avx_vnni,
            QPath::Avx512Vnni => isa >= Isa::Avx512 && f.avx512_vnni,
            #[cfg(target_arch = "x86_64")]
            QPath::Amx => isa >= Isa::Avx512 && f.amx_int8 && amx::permitted(),
            #[cfg(not(target_arch = "x86_64"))]
            QPath::Amx => false,
        }
    }

    /// The paths `kernels` may run, slowest first.
    pub fn available(kernels: Kernels) -> Vec<QPath> {
        Self::ALL
            .into_iter()
            .filter(|p| p.is_available(kernels))
            .collect()
    }

    /// The fastest path for an `m`-row problem with weights in `format`: AMX > AVX512-VNNI >
    /// AVX-VNNI > AVX2 > scalar, with AMX only from `AMX_MIN_M` (16) rows, and among the paths
    /// that have a kernel for the format ([`QPath::supports`]).
    pub fn best(kernels: Kernels, m: usize, format: QFormat) -> QPath {
        Self::available(kernels)
            .into_iter()
            .filter(|p| p.supports(format))
            .rfind(|&p| p != QPath::Amx || m >= AMX_MIN_M)
            .unwrap_or(QPath::Scalar)
    }

    /// Whether the path has a dequantizing kernel for `format`. The block format (a float
    /// multiply and add per block of 32) runs on every path but AMX, whose 64-byte tile depth
    /// spans two blocks; every path computes the exact i32 product ([`Kernels::qgemm_i8_i32`])
    /// of either format.
    pub fn supports(self, format: QFormat) -> bool {
        format == QFormat::PerChannel || self != QPath::Amx
    }

    /// The activation buffer (rows, kp) row-major, in the layout this path reads.
    fn relayout(self, data: Aligned<u8>, rows: usize, kp: usize) -> Aligned<u8> {
        match self {
            #[cfg(target_arch = "x86_64")]
            QPath::Amx => amx::to_tiles(&data, rows, kp),
            _ => data,
        }
    }

    /// Whether the path feeds `vpdpbusd` activations offset by +128 (as u8).
    fn offsets_activations(self) -> bool {
        matches!(self, QPath::AvxVnni | QPath::Avx512Vnni)
    }

    /// Units of work per pool thread: several, so that a thread whose core is shared with other
    /// work leaves its remaining units to the others. AMX takes 2: each unit sets up the tiles
    /// and re-reads all of A, and on 256 x 768 x 3072 (2 threads) 2 measured ~4% faster than 4
    /// (median of 400 alternated calls, one core busy with other work) and 8 ~12% slower.
    fn parts_per_thread(self) -> usize {
        if self == QPath::Amx { 2 } else { 4 }
    }

    /// Rows of the activation buffer must be a multiple of this (AMX loads 2 x 16-row tiles).
    fn row_multiple(self) -> usize {
        if self == QPath::Amx { 32 } else { 1 }
    }
}

/// CPU features, detected once.
fn features() -> Features {
    static F: OnceLock<Features> = OnceLock::new();
    *F.get_or_init(Features::detect)
}

/// Where a kernel writes: C (m, n) row-major, as exact i32 or dequantized f32.
#[derive(Clone, Copy)]
pub(crate) enum Out {
    I32(*mut i32),
    F32(*mut f32),
}

/// Quantized activations: (rows, kp) bytes, zero-padded in k (and in rows for AMX), as i8 or,
/// for the VNNI paths, as u8 = i8 + 128. Scales per row, or per (row, block of 32) over kp.
pub(crate) struct Acts {
    pub data: Aligned<u8>,
    pub scales: Vec<f32>,
}

/// One problem as the kernels see it.
pub(crate) struct Ctx<'a> {
    pub a: &'a Acts,
    pub m: usize,
    pub w: &'a QWeights,
    pub out: Out,
}

// SAFETY: a Ctx borrows its inputs for the whole call; the output pointer is written by
// disjoint column blocks in different threads, never the same element twice.
unsafe impl Sync for Ctx<'_> {}

impl Ctx<'_> {
    /// Writes rows `i0..i0 + rows` and block columns `j0..j0 + NB` of C from `tile` (rows, NB),
    /// subtracting `128 * sum(w)` per column first when `offset` (the VNNI paths' +128 trick).
    /// The portable epilogue; the SIMD paths have their own with the same arithmetic.
    ///
    /// # Safety
    /// `i0 + rows <= m`, `j0 < n`, and `out` covers (m, n).
    pub(crate) unsafe fn store_scalar(
        &self,
        tile: &[i32],
        i0: usize,
        rows: usize,
        j0: usize,
        offset: bool,
    ) {
        let (n, w) = (self.w.n(), self.w);
        let cols = NB.min(n - j0);
        for r in 0..rows {
            let i = i0 + r;
            for c in 0..cols {
                let j = j0 + c;
                let mut v = tile[r * NB + c];
                if offset {
                    v = v.wrapping_sub(w.comp[j]);
                }
                // SAFETY: i < m and j < n, inside C by the caller's contract.
                unsafe {
                    match self.out {
                        Out::I32(p) => *p.add(i * n + j) = v,
                        Out::F32(p) => {
                            *p.add(i * n + j) = v as f32 * (self.a.scales[i] * w.scales[j])
                        }
                    }
                }
            }
        }
    }
}

impl Ctx<'_> {
    /// Writes f32 `tile` (rows, NB) to rows `i0..` and columns `j0..` of C (block format).
    ///
    /// # Safety
    /// As [`Ctx::store_scalar`], and `out` is [`Out::F32`].
    pub(crate) unsafe fn store_f32(&self, tile: &[f32], i0: usize, rows: usize, j0: usize) {
        let n = self.w.n();
        let Out::F32(p) = self.out else { return };
        for r in 0..rows {
            for c in 0..NB.min(n - j0) {
                // SAFETY: inside C (m, n) by the caller's contract.
                unsafe { *p.add((i0 + r) * n + j0 + c) = tile[r * NB + c] };
            }
        }
    }
}

thread_local! {
    /// The AMX activation buffer of this thread's last call, reused by its next: a fresh one
    /// costs zeroing and, past the allocator's cache, page faults on every call.
    static TILE_BUF: std::cell::Cell<Option<Aligned<u8>>> = const { std::cell::Cell::new(None) };
}

/// Quantizes activations x: (m, k) f32 into the layout `path` reads.
fn quantize_acts(isa: Isa, path: QPath, x: &[f32], m: usize, w: &QWeights) -> Acts {
    use rayon::prelude::*;
    #[cfg(target_arch = "x86_64")]
    if path == QPath::Amx && w.format() == QFormat::PerChannel {
        let buf = TILE_BUF.take().unwrap_or_else(|| Aligned::zeroed(0));
        return amx::quantize_tiles(quant::Leaves::new(isa), x, m, w.k(), w.kp(), buf);
    }
    let (k, kp) = (w.k(), w.kp());
    let rows = m.next_multiple_of(path.row_multiple());
    let mut data = Aligned::zeroed(rows * kp);
    let leaves = quant::Leaves::new(isa);
    let block = w.format() == QFormat::Block32;
    let spr = if block { kp / QK } else { 1 };
    let mut scales = vec![0.0f32; rows * spr];
    let xor = if path.offsets_activations() { 0x80 } else { 0 };
    let one = |(i, (d, s)): (usize, (&mut [u8], &mut [f32]))| {
        let q: &mut [i8] = bytemuck_i8(&mut d[..k]);
        let xr = &x[i * k..(i + 1) * k];
        if block {
            leaves.quantize_blocks_f32(xr, q, s);
        } else {
            s[0] = leaves.quantize_row(xr, q);
        }
        d.iter_mut().for_each(|b| *b ^= xor);
    };
    if kp == 0 {
        // k = 0: nothing to quantize (and no block scales); the products are all zero.
        return Acts { data, scales };
    }
    let rows_iter = data.chunks_mut(kp).zip(scales.chunks_mut(spr));
    if m * k >= PAR_MIN_MACS / 16 {
        let v: Vec<_> = rows_iter.take(m).enumerate().collect();
        v.into_par_iter().for_each(one);
    } else {
        rows_iter.take(m).enumerate().for_each(one);
    }
    // Padding rows (AMX only) stay i8 zero: AMX takes no +128 offset.
    debug_assert!(xor == 0 || rows == m);
    Acts {
        data: path.relayout(data, rows, kp),
        scales,
    }
}

/// Reinterprets bytes as i8 (same size and alignment).
fn bytemuck_i8(b: &mut [u8]) -> &mut [i8] {
    // SAFETY: u8 and i8 have the same size, alignment and validity.
    unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr().cast(), b.len()) }
}

/// Runs `path` over every column block of C, on the rayon pool when the problem is large.
fn drive(path: QPath, ctx: &Ctx) {
    use rayon::prelude::*;
    let (m, n, k) = (ctx.m, ctx.w.n(), ctx.w.k());
    if m == 0 || n == 0 {
        return;
    }
    let blocks = n.div_ceil(NB);
    let threads = rayon::current_num_threads();
    let run = |r: Range<usize>| {
        // SAFETY: `path` was checked available, and `ctx` covers the (m, n) problem.
        unsafe {
            match path {
                #[cfg(target_arch = "x86_64")]
                QPath::Avx2 => avx2::run(ctx, r),
                #[cfg(target_arch = "x86_64")]
                QPath::AvxVnni => vnni::run256(ctx, r),
                #[cfg(target_arch = "x86_64")]
                QPath::Avx512Vnni => vnni::run512(ctx, r),
                #[cfg(target_arch = "x86_64")]
                QPath::Amx => amx::run(ctx, r),
                _ => scalar::run(ctx, r),
            }
        }
    };
    if threads > 1 && m * n * k >= PAR_MIN_MACS && blocks > 1 {
        let parts = (threads * path.parts_per_thread()).min(blocks);
        (0..parts)
            .into_par_iter()
            .for_each(|p| run(p * blocks / parts..(p + 1) * blocks / parts));
    } else {
        run(0..blocks);
    }
}

fn check_path(op: &'static str, kernels: &Kernels, path: QPath) -> Result<()> {
    if path.is_available(*kernels) {
        Ok(())
    } else {
        Err(KernelError::BadShape {
            op,
            detail: format!(
                "path {path:?} is not available on tier {} of this CPU (available: {:?})",
                kernels.isa(),
                QPath::available(*kernels)
            ),
        })
    }
}

impl Kernels {
    /// `y = x * W^T` through int8: x: (m, k) f32, w: packed (n, k) -> y: (m, n) f32, on the
    /// fastest path for this tier and CPU ([`QPath::best`]). Each row of x is quantized per row
    /// (or per block of 32, matching `w`'s format) before the integer product.
    ///
    /// # Errors
    /// [`KernelError::BadLength`] when `x` or `y` is shorter than its shape.
    ///
    /// # Examples
    /// ```
    /// use anvil_kernels::{kernels, qgemm::QWeights};
    /// let k = kernels().unwrap();
    /// let w = QWeights::per_channel(&k, &[1.0, -2.0, 0.5, 4.0], 2, 2).unwrap(); // W: (2, 2)
    /// let mut y = [0.0f32; 2];
    /// k.qgemm_i8(&[1.0, 1.0], 1, &w, &mut y).unwrap(); // x: (1, 2) -> y: (1, 2)
    /// assert!((y[0] + 1.0).abs() < 0.05 && (y[1] - 4.5).abs() < 0.05);
    /// ```
    pub fn qgemm_i8(&self, x: &[f32], m: usize, w: &QWeights, y: &mut [f32]) -> Result<()> {
        self.qgemm_i8_on(QPath::best(*self, m, w.format()), x, m, w, y)
    }

    /// As [`Kernels::qgemm_i8`], forced onto `path`.
    ///
    /// # Errors
    /// As [`Kernels::qgemm_i8`], plus [`KernelError::BadShape`] when `path` is not available.
    pub fn qgemm_i8_on(
        &self,
        path: QPath,
        x: &[f32],
        m: usize,
        w: &QWeights,
        y: &mut [f32],
    ) -> Result<()> {
        const OP: &str = "qgemm_i8";
        check_path(OP, self, path)?;
        if !path.supports(w.format()) {
            return Err(KernelError::BadShape {
                op: OP,
                detail: format!("path {path:?} has no kernel for {:?} weights", w.format()),
            });
        }
        let (n, k) = (w.n(), w.k());
        check_len(OP, "x", x.len(), mul(OP, m, k)?)?;
        check_len(OP, "y", y.len(), mul(OP, m, n)?)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let acts = quantize_acts(self.isa(), path, x, m, w);
        let ctx = Ctx {
            a: &acts,
            m,
            w,
            out: Out::F32(y.as_mut_ptr()),
        };
        drive(path, &ctx);
        if path == QPath::Amx {
            TILE_BUF.set(Some(acts.data));
        }
        Ok(())
    }

    /// The exact integer product on `path`: a: (m, k) i8 (already quantized), w: packed (n, k)
    /// -> c: (m, n) i32, `c[i][j] = sum_k a[i][k] * w[j][k]`. For the block format the sum still
    /// runs over all of k (block scales play no part). What the tests compare bit for bit.
    ///
    /// # Errors
    /// [`KernelError::BadLength`] for short slices, [`KernelError::BadShape`] when `a` holds -128
    /// (outside the format) or `path` is not available.
    pub fn qgemm_i8_i32(
        &self,
        path: QPath,
        a: &[i8],
        m: usize,
        w: &QWeights,
        c: &mut [i32],
    ) -> Result<()> {
        const OP: &str = "qgemm_i8_i32";
        check_path(OP, self, path)?;
        let (n, k, kp) = (w.n(), w.k(), w.kp());
        check_len(OP, "a", a.len(), mul(OP, m, k)?)?;
        check_len(OP, "c", c.len(), mul(OP, m, n)?)?;
        if a[..m * k].contains(&i8::MIN) {
            return Err(KernelError::BadShape {
                op: OP,
                detail: "`a` holds -128, outside the symmetric [-127, 127] format".into(),
            });
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        let rows = m.next_multiple_of(path.row_multiple());
        let xor = if path.offsets_activations() { 0x80 } else { 0 };
        let mut data = Aligned::zeroed(rows * kp);
        data.fill(xor);
        for i in 0..m {
            for (d, &s) in data[i * kp..i * kp + k]
                .iter_mut()
                .zip(&a[i * k..(i + 1) * k])
            {
                *d = (s as u8) ^ xor;
            }
        }
        let acts = Acts {
            data: path.relayout(data, rows, kp),
            scales: Vec::new(),
        };
        // The block format's kernels apply scales per block; the exact sum over k is the
        // per-channel kernel's, which reads the same packed bytes.
        let flat = w.as_per_channel();
        let ctx = Ctx {
            a: &acts,
            m,
            w: &flat,
            out: Out::I32(c.as_mut_ptr()),
        };
        drive(path, &ctx);
        Ok(())
    }
}

/// `a * b`, or BadShape when it overflows.
pub(crate) fn mul(op: &'static str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| KernelError::BadShape {
        op,
        detail: format!("{a} x {b} overflows"),
    })
}

/// Plain triple loops on unpacked data: what every path is checked against.
pub mod reference {
    use super::QK;
    use half::f16;

    /// a: (m, k) i8, w: (n, k) i8 -> (m, n) i32, exact.
    pub fn qgemm_i32(a: &[i8], w: &[i8], m: usize, n: usize, k: usize) -> Vec<i32> {
        let mut c = vec![0i32; m * n];
        for i in 0..m {
            for j in 0..n {
                let (ar, wr) = (&a[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
                c[i * n + j] = ar.iter().zip(wr).map(|(&x, &y)| x as i32 * y as i32).sum();
            }
        }
        c
    }

    /// Per-channel dequantization of [`qgemm_i32`]: `c as f32 * (sa[i] * sw[j])`.
    pub fn dequant_per_channel(c: &[i32], sa: &[f32], sw: &[f32], m: usize, n: usize) -> Vec<f32> {
        (0..m * n)
            .map(|e| c[e] as f32 * (sa[e / n] * sw[e % n]))
            .collect()
    }

    /// Block format: a: (m, k) with f32 block scales sa: (m, ceil(k/32)), w: (n, k) with f16
    /// scales sw: (n, ceil(k/32)) -> (m, n): `sum_b dot_b as f32 * (sa[i][b] * sw[j][b])`,
    /// accumulated in f32 in block order.
    pub fn qgemm_blocks(
        a: &[i8],
        sa: &[f32],
        w: &[i8],
        sw: &[f16],
        (m, n, k): (usize, usize, usize),
    ) -> Vec<f32> {
        let nb = k.div_ceil(QK);
        let mut y = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                for b in 0..nb {
                    let r = b * QK..((b + 1) * QK).min(k);
                    let dot: i32 = a[i * k..][r.clone()]
                        .iter()
                        .zip(&w[j * k..][r])
                        .map(|(&x, &y)| x as i32 * y as i32)
                        .sum();
                    acc += dot as f32 * (sa[i * nb + b] * sw[j * nb + b].to_f32());
                }
                y[i * n + j] = acc;
            }
        }
        y
    }
}
