//! `vpdpbusd` kernels: AVX512-VNNI (8 rows x 32 columns, 16 zmm accumulators) and AVX-VNNI
//! (6 rows x 16 columns, 12 ymm accumulators), plus the AVX-512 epilogue (also used by AMX).
//!
//! `vpdpbusd` multiplies *unsigned* by signed bytes, so activations arrive offset as
//! `u = a + 128` (in 0..=254) and each column's sum is corrected by `- 128 * sum_k w[j][k]`
//! (precomputed in [`QWeights`](super::QWeights)). Each instruction adds 4 products of at most
//! 254 * 127 to an i32 lane and wraps; since the corrected total `sum a * w` fits i32 (k is at
//! most `MAX_K`), the wrapped intermediate gives the exact result after the correction.
#![cfg(target_arch = "x86_64")]

use super::pack::QFormat;
use super::quant::QK;
use super::{Ctx, NB, Out};
use crate::math::avx512::mask16;
use std::arch::x86_64::*;
use std::ops::Range;

/// Rows per AVX512-VNNI micro-tile (8 x 2 accumulators, 2 weight vectors, 1 broadcast).
const MR512: usize = 8;
/// Rows per block-format AVX512-VNNI micro-tile (6 x 2 i32 + 6 x 2 f32 accumulators).
const MR512B: usize = 6;
/// Rows per AVX-VNNI micro-tile (6 x 2 ymm accumulators of 16 available registers).
const MR256: usize = 6;
/// Rows per block-format AVX-VNNI micro-tile (3 x 2 i32 + 3 x 2 f32 accumulators).
const MR256B: usize = 3;

/// From this many bytes of packed weights a one-row product prefetches the next panel pair while
/// it reads one: the weights then stream from DRAM (or L3), and each pair would otherwise start a
/// cold stream.
const PREFETCH_MIN_BYTES: usize = 512 * 1024;

/// AVX512-VNNI over column blocks `blocks`.
///
/// # Safety
/// The CPU has AVX512-F/BW/VL and AVX512-VNNI; `ctx` is a valid problem with +128 activations.
pub(crate) unsafe fn run512(ctx: &Ctx, blocks: Range<usize>) {
    // SAFETY: forwarded contract.
    unsafe { run512_tf(ctx, blocks) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn run512_tf(ctx: &Ctx, blocks: Range<usize>) {
    let (kp, m) = (ctx.w.kp(), ctx.m);
    let blockwise = ctx.w.format() == QFormat::Block32 && matches!(ctx.out, Out::F32(_));
    let mr_max = if blockwise { MR512B } else { MR512 };
    let a = ctx.a.data.as_ptr();
    let prefetch = ctx.w.panels.len() >= PREFETCH_MIN_BYTES;
    let last = blocks.end;
    for jb in blocks {
        // SAFETY: panel pair 2jb, 2jb+1 exists (n is padded to a multiple of 32).
        let b = unsafe { ctx.w.panels.as_ptr().add(2 * jb * kp * 16) };
        // The pair this call reads next, if any (prefetching never faults, but past this call's
        // blocks it would fetch another thread's weights).
        let next = (prefetch && jb + 1 < last).then(|| b.wrapping_add(2 * kp * 16));
        let mut i0 = 0;
        while i0 < m {
            let mr = (m - i0).min(mr_max);
            // SAFETY: rows i0..i0+mr < m of A, each kp bytes; the panels hold kp * 16 bytes.
            unsafe {
                let ai = a.add(i0 * kp);
                if blockwise {
                    let mut tile = [0.0f32; MR512B * NB];
                    match mr {
                        1 => blocks512::<1>(ctx, ai, b, i0, jb, &mut tile),
                        2 => blocks512::<2>(ctx, ai, b, i0, jb, &mut tile),
                        3 => blocks512::<3>(ctx, ai, b, i0, jb, &mut tile),
                        4 => blocks512::<4>(ctx, ai, b, i0, jb, &mut tile),
                        5 => blocks512::<5>(ctx, ai, b, i0, jb, &mut tile),
                        _ => blocks512::<6>(ctx, ai, b, i0, jb, &mut tile),
                    }
                    store512_f32(ctx, &tile, i0, mr, jb * NB);
                } else {
                    let mut tile = [0i32; MR512 * NB];
                    match mr {
                        1 => row512(ai, kp, b, next, &mut tile),
                        2 => tile512::<2>(ai, kp, b, &mut tile),
                        3 => tile512::<3>(ai, kp, b, &mut tile),
                        4 => tile512::<4>(ai, kp, b, &mut tile),
                        5 => tile512::<5>(ai, kp, b, &mut tile),
                        6 => tile512::<6>(ai, kp, b, &mut tile),
                        7 => tile512::<7>(ai, kp, b, &mut tile),
                        _ => tile512::<8>(ai, kp, b, &mut tile),
                    }
                    store512(ctx, &tile, i0, mr, jb * NB, true);
                }
            }
            i0 += mr;
        }
    }
}

/// tile (MR, 32) = sum over all kp of u8 rows `a` (MR, kp) x the panel pair at `b`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn tile512<const MR: usize>(a: *const u8, kp: usize, b: *const i8, tile: &mut [i32]) {
    let mut acc = [[_mm512_setzero_si512(); 2]; MR];
    // SAFETY: the caller's contract: MR rows of kp bytes at `a`, two panels of kp * 16 at `b`.
    unsafe {
        dot512::<MR>(a, kp, b, 0..kp / 4, &mut acc);
        for (r, row) in acc.iter().enumerate() {
            _mm512_storeu_si512(tile.as_mut_ptr().add(r * NB).cast(), row[0]);
            _mm512_storeu_si512(tile.as_mut_ptr().add(r * NB + 16).cast(), row[1]);
        }
    }
}

/// One row (GEMV): as [`tile512`] with MR = 1, but over 4 independent accumulator chains per
/// panel, since a single chain would wait on `vpdpbusd`'s latency every group. `next`: a panel
/// pair to prefetch, line for line, while this one is read.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn row512(a: *const u8, kp: usize, b: *const i8, next: Option<*const i8>, tile: &mut [i32]) {
    let mut acc = [[_mm512_setzero_si512(); 2]; 4];
    let pstride = kp * 16;
    // kp is a multiple of 64, so the groups come in fours.
    for g4 in (0..kp / 4).step_by(4) {
        if let Some(nb) = next {
            // Four groups of 64 bytes: four lines of each panel.
            for line in 0..4 {
                let off = (g4 + line) * 64;
                _mm_prefetch::<_MM_HINT_T0>(nb.wrapping_add(off));
                _mm_prefetch::<_MM_HINT_T0>(nb.wrapping_add(pstride + off));
            }
        }
        for (u, chain) in acc.iter_mut().enumerate() {
            let g = g4 + u;
            // SAFETY: group g < kp / 4 of both panels and of the row (caller's contract).
            unsafe {
                let av = _mm512_set1_epi32(a.add(g * 4).cast::<i32>().read_unaligned());
                let w0 = _mm512_loadu_si512(b.add(g * 64).cast());
                let w1 = _mm512_loadu_si512(b.add(pstride + g * 64).cast());
                chain[0] = _mm512_dpbusd_epi32(chain[0], av, w0);
                chain[1] = _mm512_dpbusd_epi32(chain[1], av, w1);
            }
        }
    }
    // Integer sums: the order of the chains does not change the result.
    let sum = |p: usize| {
        let s01 = _mm512_add_epi32(acc[0][p], acc[1][p]);
        _mm512_add_epi32(s01, _mm512_add_epi32(acc[2][p], acc[3][p]))
    };
    // SAFETY: the tile holds at least NB i32.
    unsafe {
        _mm512_storeu_si512(tile.as_mut_ptr().cast(), sum(0));
        _mm512_storeu_si512(tile.as_mut_ptr().add(16).cast(), sum(1));
    }
}

/// `acc[r][p] += u8 a[r][4g..4g+4] . panel p, group g` for groups `gs`: the inner loop.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn dot512<const MR: usize>(
    a: *const u8,
    lda: usize,
    b: *const i8,
    gs: Range<usize>,
    acc: &mut [[__m512i; 2]; MR],
) {
    let pstride = lda * 16;
    for g in gs {
        // SAFETY: group g < kp / 4 of both panels and of MR rows (caller's contract).
        unsafe {
            let w0 = _mm512_loadu_si512(b.add(g * 64).cast());
            let w1 = _mm512_loadu_si512(b.add(pstride + g * 64).cast());
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_epi32(a.add(r * lda + g * 4).cast::<i32>().read_unaligned());
                row[0] = _mm512_dpbusd_epi32(row[0], av, w0);
                row[1] = _mm512_dpbusd_epi32(row[1], av, w1);
            }
        }
    }
}

/// Block format: tile (MR, 32) f32 = sum over blocks of 32 k, in order, of
/// `(dot_b - 128 * sum_b w) as f32 * (sa[r][b] * sw[b][c])`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn blocks512<const MR: usize>(
    ctx: &Ctx,
    a: *const u8,
    b: *const i8,
    i0: usize,
    jb: usize,
    tile: &mut [f32],
) {
    let kp = ctx.w.kp();
    let bpp = kp / QK;
    let mut y = [[_mm512_setzero_ps(); 2]; MR];
    for blk in 0..bpp {
        let mut acc = [[_mm512_setzero_si512(); 2]; MR];
        // SAFETY: caller's contract; scales and block_comp hold (panels, bpp, 16) values.
        unsafe {
            dot512::<MR>(a, kp, b, blk * QK / 4..(blk + 1) * QK / 4, &mut acc);
            let e = |p: usize| ((2 * jb + p) * bpp + blk) * 16;
            let sw = [0, 1].map(|p| _mm512_loadu_ps(ctx.w.scales.as_ptr().add(e(p))));
            let cw = [0, 1].map(|p| _mm512_loadu_si512(ctx.w.block_comp.as_ptr().add(e(p)).cast()));
            for r in 0..MR {
                let sa = _mm512_set1_ps(ctx.a.scales[(i0 + r) * bpp + blk]);
                for p in 0..2 {
                    let d = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][p], cw[p]));
                    y[r][p] = _mm512_add_ps(y[r][p], _mm512_mul_ps(d, _mm512_mul_ps(sa, sw[p])));
                }
            }
        }
    }
    for (r, row) in y.iter().enumerate() {
        // SAFETY: the tile holds MR * NB f32.
        unsafe {
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * NB), row[0]);
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * NB + 16), row[1]);
        }
    }
}

/// The AVX-512 epilogue: as [`Ctx::store_scalar`], 16 columns at a time with masked stores.
///
/// # Safety
/// As [`Ctx::store_scalar`]; the CPU has AVX-512 F/BW/VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn store512(
    ctx: &Ctx,
    tile: &[i32],
    i0: usize,
    rows: usize,
    j0: usize,
    offset: bool,
) {
    let (n, w) = (ctx.w.n(), ctx.w);
    for r in 0..rows {
        let i = i0 + r;
        for h in 0..NB / 16 {
            let j = j0 + 16 * h;
            if j >= n {
                break;
            }
            let k = mask16(n - j);
            // SAFETY: comp and scales hold np >= j + 16 values; the mask keeps stores in row i of C below column n.
            unsafe {
                let mut v = _mm512_loadu_si512(tile.as_ptr().add(r * NB + 16 * h).cast());
                if offset {
                    v = _mm512_sub_epi32(v, _mm512_loadu_si512(w.comp.as_ptr().add(j).cast()));
                }
                match ctx.out {
                    Out::I32(p) => _mm512_mask_storeu_epi32(p.add(i * n + j), k, v),
                    Out::F32(p) => {
                        let s = _mm512_mul_ps(
                            _mm512_set1_ps(ctx.a.scales[i]),
                            _mm512_loadu_ps(w.scales.as_ptr().add(j)),
                        );
                        let y = _mm512_mul_ps(_mm512_cvtepi32_ps(v), s);
                        _mm512_mask_storeu_ps(p.add(i * n + j), k, y);
                    }
                }
            }
        }
    }
}

/// Masked store of an f32 tile (rows, NB) to C (block format).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn store512_f32(ctx: &Ctx, tile: &[f32], i0: usize, rows: usize, j0: usize) {
    let n = ctx.w.n();
    let Out::F32(p) = ctx.out else { return };
    for r in 0..rows {
        for h in 0..NB / 16 {
            let j = j0 + 16 * h;
            if j >= n {
                break;
            }
            // SAFETY: the mask keeps the store in row i0 + r of C below column n.
            unsafe {
                let v = _mm512_loadu_ps(tile.as_ptr().add(r * NB + 16 * h));
                _mm512_mask_storeu_ps(p.add((i0 + r) * n + j), mask16(n - j), v);
            }
        }
    }
}

/// AVX-VNNI (256-bit) over column blocks `blocks`.
///
/// # Safety
/// The CPU has AVX2 and AVX-VNNI; `ctx` is a valid problem with +128 activations.
pub(crate) unsafe fn run256(ctx: &Ctx, blocks: Range<usize>) {
    // SAFETY: forwarded contract.
    unsafe { run256_tf(ctx, blocks) }
}

#[target_feature(enable = "avx2,avxvnni")]
unsafe fn run256_tf(ctx: &Ctx, blocks: Range<usize>) {
    let (kp, m) = (ctx.w.kp(), ctx.m);
    let a = ctx.a.data.as_ptr();
    if ctx.w.format() == QFormat::Block32 && matches!(ctx.out, Out::F32(_)) {
        for jb in blocks {
            let mut i0 = 0;
            while i0 < m {
                let mr = (m - i0).min(MR256B);
                let mut tile = [0.0f32; MR256B * NB];
                for p in 0..2 {
                    let t = &mut tile[16 * p..];
                    // SAFETY: rows i0..i0+mr < m; panel 2jb+p exists (n padded to 32).
                    unsafe {
                        match mr {
                            1 => blocks256::<1>(ctx, i0, 2 * jb + p, t),
                            2 => blocks256::<2>(ctx, i0, 2 * jb + p, t),
                            _ => blocks256::<3>(ctx, i0, 2 * jb + p, t),
                        }
                    }
                }
                // SAFETY: rows i0..i0+mr < m, block jb inside n (forwarded contract).
                unsafe { ctx.store_f32(&tile, i0, mr, jb * NB) };
                i0 += mr;
            }
        }
        return;
    }
    for jb in blocks {
        let mut i0 = 0;
        while i0 < m {
            let mr = (m - i0).min(MR256);
            let mut tile = [0i32; MR256 * NB];
            for p in 0..2 {
                // SAFETY: rows i0..i0+mr < m of A and panel 2jb+p exist (n padded to 32).
                unsafe {
                    let (ai, b) = (
                        a.add(i0 * kp),
                        ctx.w.panels.as_ptr().add((2 * jb + p) * kp * 16),
                    );
                    let t = &mut tile[16 * p..];
                    match mr {
                        1 => tile256::<1>(ai, kp, b, t),
                        2 => tile256::<2>(ai, kp, b, t),
                        3 => tile256::<3>(ai, kp, b, t),
                        4 => tile256::<4>(ai, kp, b, t),
                        5 => tile256::<5>(ai, kp, b, t),
                        _ => tile256::<6>(ai, kp, b, t),
                    }
                }
            }
            // SAFETY: rows i0..i0+mr < m, block jb inside n (forwarded contract).
            unsafe { super::avx2::store256(ctx, &tile, i0, mr, jb * NB, true) };
            i0 += mr;
        }
    }
}

/// tile[r * NB + 0..16] = u8 rows `a` (MR, kp) x one panel (16 columns) at `b`.
#[target_feature(enable = "avx2,avxvnni")]
#[inline]
unsafe fn tile256<const MR: usize>(a: *const u8, kp: usize, b: *const i8, tile: &mut [i32]) {
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    // SAFETY: forwarded contract: MR rows of kp bytes at `a`, a panel of kp * 16 bytes at `b`.
    unsafe { dot256::<MR>(a, kp, b, 0..kp / 4, &mut acc) };
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: the tile holds rows of NB i32 from its start.
        unsafe {
            _mm256_storeu_si256(tile.as_mut_ptr().add(r * NB).cast(), row[0]);
            _mm256_storeu_si256(tile.as_mut_ptr().add(r * NB + 8).cast(), row[1]);
        }
    }
}

/// `acc[r][h] += u8 a[r][4g..4g+4] . panel group g, columns 8h..8h+8` for groups `gs`.
#[target_feature(enable = "avx2,avxvnni")]
#[inline]
unsafe fn dot256<const MR: usize>(
    a: *const u8,
    kp: usize,
    b: *const i8,
    gs: Range<usize>,
    acc: &mut [[__m256i; 2]; MR],
) {
    for g in gs {
        // SAFETY: group g < kp / 4 of the panel and of MR rows (caller's contract).
        unsafe {
            let w0 = _mm256_loadu_si256(b.add(g * 64).cast());
            let w1 = _mm256_loadu_si256(b.add(g * 64 + 32).cast());
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_epi32(a.add(r * kp + g * 4).cast::<i32>().read_unaligned());
                row[0] = _mm256_dpbusd_avx_epi32(row[0], av, w0);
                row[1] = _mm256_dpbusd_avx_epi32(row[1], av, w1);
            }
        }
    }
}

/// Block format, one panel `pi`: tile[r * NB + 0..16] f32 = sum over blocks of 32 k, in order,
/// of `(dot_b - 128 * sum_b w) as f32 * (sa[r][b] * sw[b][c])`.
#[target_feature(enable = "avx2,avxvnni")]
#[inline]
unsafe fn blocks256<const MR: usize>(ctx: &Ctx, i0: usize, pi: usize, tile: &mut [f32]) {
    let kp = ctx.w.kp();
    let bpp = kp / QK;
    // SAFETY: rows i0..i0+MR < m and panel pi exist (caller's contract).
    let (a, b) = unsafe {
        (
            ctx.a.data.as_ptr().add(i0 * kp),
            ctx.w.panels.as_ptr().add(pi * kp * 16),
        )
    };
    let mut y = [[_mm256_setzero_ps(); 2]; MR];
    for blk in 0..bpp {
        let mut acc = [[_mm256_setzero_si256(); 2]; MR];
        // SAFETY: forwarded contract; scales and block_comp hold (panels, bpp, 16) values.
        unsafe {
            dot256::<MR>(a, kp, b, blk * QK / 4..(blk + 1) * QK / 4, &mut acc);
            let e = (pi * bpp + blk) * 16;
            let sw = [0, 8].map(|o| _mm256_loadu_ps(ctx.w.scales.as_ptr().add(e + o)));
            let cw =
                [0, 8].map(|o| _mm256_loadu_si256(ctx.w.block_comp.as_ptr().add(e + o).cast()));
            for (r, (yr, ar)) in y.iter_mut().zip(&acc).enumerate() {
                let sa = _mm256_set1_ps(ctx.a.scales[(i0 + r) * bpp + blk]);
                for h in 0..2 {
                    let d = _mm256_cvtepi32_ps(_mm256_sub_epi32(ar[h], cw[h]));
                    yr[h] = _mm256_add_ps(yr[h], _mm256_mul_ps(d, _mm256_mul_ps(sa, sw[h])));
                }
            }
        }
    }
    for (r, row) in y.iter().enumerate() {
        // SAFETY: the tile holds rows of NB f32 from its start.
        unsafe {
            _mm256_storeu_ps(tile.as_mut_ptr().add(r * NB), row[0]);
            _mm256_storeu_ps(tile.as_mut_ptr().add(r * NB + 8), row[1]);
        }
    }
}
