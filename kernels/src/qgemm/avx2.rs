//! AVX2 kernels: `vpmaddubsw` + `vpmaddwd` with the sign trick (4 rows x 16 columns; 2 rows for
//! the block format), and the AVX2 epilogue (also used by AVX-VNNI).
//!
//! `vpmaddubsw(u, s)` multiplies unsigned bytes `u` by signed bytes `s` and adds adjacent pairs
//! into i16 with saturation. We feed `u = |w|` and `s = a * sign(w)` (`vpsignb`), whose product is
//! `a * w`. The format excludes -128, so `|w| <= 127` and `|a * sign(w)| <= 127`: each pair sum is
//! at most `2 * 127 * 127 = 32258 < 32767`, and never saturates. `vpmaddwd` by ones then adds the
//! two pairs of a column's 4 bytes into i32 (at most 64516), and the accumulation over k fits
//! i32 while `k * 127 * 127 < 2^31` (`MAX_K`).
#![cfg(target_arch = "x86_64")]

use super::pack::QFormat;
use super::quant::QK;
use super::{Ctx, NB, Out};
use std::arch::x86_64::*;
use std::ops::Range;

/// Rows per micro-tile: 4 x 2 accumulators, 2 weight and 2 |weight| vectors, broadcast, ones.
const MR: usize = 4;
/// Rows per block-format micro-tile: 2 x 2 i32 and 2 x 2 f32 accumulators besides the above.
const MR_BLOCKS: usize = 2;

/// Column blocks `blocks` of C, per-channel format, i8 activations.
///
/// # Safety
/// The CPU has AVX2; `ctx` is a valid problem.
pub(crate) unsafe fn run(ctx: &Ctx, blocks: Range<usize>) {
    // SAFETY: forwarded contract.
    unsafe { run_tf(ctx, blocks) }
}

#[target_feature(enable = "avx2")]
unsafe fn run_tf(ctx: &Ctx, blocks: Range<usize>) {
    let (kp, m) = (ctx.w.kp(), ctx.m);
    let a = ctx.a.data.as_ptr();
    if ctx.w.format() == QFormat::Block32 && matches!(ctx.out, Out::F32(_)) {
        for jb in blocks {
            let mut i0 = 0;
            while i0 < m {
                let mr = (m - i0).min(MR_BLOCKS);
                let mut tile = [0.0f32; MR_BLOCKS * NB];
                for p in 0..2 {
                    let t = &mut tile[16 * p..];
                    // SAFETY: rows i0..i0+mr < m; panel 2jb+p exists (n padded to 32).
                    unsafe {
                        match mr {
                            1 => blocks_sign::<1>(ctx, i0, 2 * jb + p, t),
                            _ => blocks_sign::<2>(ctx, i0, 2 * jb + p, t),
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
            let mr = (m - i0).min(MR);
            let mut tile = [0i32; MR * NB];
            for p in 0..2 {
                // SAFETY: rows i0..i0+mr < m of A and panel 2jb+p exist (n padded to 32).
                unsafe {
                    let (ai, b) = (
                        a.add(i0 * kp),
                        ctx.w.panels.as_ptr().add((2 * jb + p) * kp * 16),
                    );
                    let t = &mut tile[16 * p..];
                    match mr {
                        1 => tile_sign::<1>(ai, kp, b, t),
                        2 => tile_sign::<2>(ai, kp, b, t),
                        3 => tile_sign::<3>(ai, kp, b, t),
                        _ => tile_sign::<4>(ai, kp, b, t),
                    }
                }
            }
            // SAFETY: rows i0..i0+mr < m, block jb inside n (forwarded contract).
            unsafe { store256(ctx, &tile, i0, mr, jb * NB, false) };
            i0 += mr;
        }
    }
}

/// tile[r * NB + 0..16] = i8 rows `a` (R, kp) x one panel (16 columns) at `b`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn tile_sign<const R: usize>(a: *const u8, kp: usize, b: *const i8, tile: &mut [i32]) {
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    // SAFETY: forwarded contract: R rows of kp bytes at `a`, a panel of kp * 16 bytes at `b`.
    unsafe { dot_sign::<R>(a, kp, b, 0..kp / 4, &mut acc) };
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: the tile holds rows of NB i32 from its start.
        unsafe {
            _mm256_storeu_si256(tile.as_mut_ptr().add(r * NB).cast(), row[0]);
            _mm256_storeu_si256(tile.as_mut_ptr().add(r * NB + 8).cast(), row[1]);
        }
    }
}

/// `acc[r][h] += a[r][4g..4g+4] . panel group g, columns 8h..8h+8` for groups `gs`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dot_sign<const R: usize>(
    a: *const u8,
    kp: usize,
    b: *const i8,
    gs: Range<usize>,
    acc: &mut [[__m256i; 2]; R],
) {
    let ones = _mm256_set1_epi16(1);
    for g in gs {
        // SAFETY: group g < kp / 4 of the panel and of R rows (caller's contract).
        unsafe {
            let w = [0, 32].map(|o| _mm256_loadu_si256(b.add(g * 64 + o).cast()));
            let u = w.map(|v| _mm256_abs_epi8(v));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_epi32(a.add(r * kp + g * 4).cast::<i32>().read_unaligned());
                for h in 0..2 {
                    let s = _mm256_sign_epi8(av, w[h]);
                    let pairs = _mm256_maddubs_epi16(u[h], s);
                    row[h] = _mm256_add_epi32(row[h], _mm256_madd_epi16(pairs, ones));
                }
            }
        }
    }
}

/// Block format, one panel `pi`: tile[r * NB + 0..16] f32 = sum over blocks of 32 k, in order,
/// of `dot_b as f32 * (sa[r][b] * sw[b][c])`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn blocks_sign<const R: usize>(ctx: &Ctx, i0: usize, pi: usize, tile: &mut [f32]) {
    let kp = ctx.w.kp();
    let bpp = kp / QK;
    // SAFETY: rows i0..i0+R < m and panel pi exist (caller's contract).
    let (a, b) = unsafe {
        (
            ctx.a.data.as_ptr().add(i0 * kp),
            ctx.w.panels.as_ptr().add(pi * kp * 16),
        )
    };
    let mut y = [[_mm256_setzero_ps(); 2]; R];
    for blk in 0..bpp {
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        // SAFETY: forwarded contract; scales hold (panels, bpp, 16) values.
        unsafe {
            dot_sign::<R>(a, kp, b, blk * QK / 4..(blk + 1) * QK / 4, &mut acc);
            let e = (pi * bpp + blk) * 16;
            let sw = [0, 8].map(|o| _mm256_loadu_ps(ctx.w.scales.as_ptr().add(e + o)));
            for (r, (yr, ar)) in y.iter_mut().zip(&acc).enumerate() {
                let sa = _mm256_set1_ps(ctx.a.scales[(i0 + r) * bpp + blk]);
                for h in 0..2 {
                    let d = _mm256_cvtepi32_ps(ar[h]);
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

/// The AVX2 epilogue: as [`Ctx::store_scalar`], 8 columns at a time with masked stores.
///
/// # Safety
/// As [`Ctx::store_scalar`]; the CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn store256(
    ctx: &Ctx,
    tile: &[i32],
    i0: usize,
    rows: usize,
    j0: usize,
    offset: bool,
) {
    let (n, w) = (ctx.w.n(), ctx.w);
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for r in 0..rows {
        let i = i0 + r;
        for h in 0..NB / 8 {
            let j = j0 + 8 * h;
            if j >= n {
                break;
            }
            let k = _mm256_cmpgt_epi32(_mm256_set1_epi32((n - j).min(8) as i32), lanes);
            // SAFETY: comp and scales hold np >= j + 8 values; the mask keeps stores in row i of C below column n.
            unsafe {
                let mut v = _mm256_loadu_si256(tile.as_ptr().add(r * NB + 8 * h).cast());
                if offset {
                    v = _mm256_sub_epi32(v, _mm256_loadu_si256(w.comp.as_ptr().add(j).cast()));
                }
                match ctx.out {
                    Out::I32(p) => _mm256_maskstore_epi32(p.add(i * n + j), k, v),
                    Out::F32(p) => {
                        let s = _mm256_mul_ps(
                            _mm256_set1_ps(ctx.a.scales[i]),
                            _mm256_loadu_ps(w.scales.as_ptr().add(j)),
                        );
                        let y = _mm256_mul_ps(_mm256_cvtepi32_ps(v), s);
                        _mm256_maskstore_ps(p.add(i * n + j), k, y);
                    }
                }
            }
        }
    }
}
