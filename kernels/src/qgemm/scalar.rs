//! Portable kernels over the packed layout: one row of A against a block of 32 columns of W.

use super::pack::QFormat;
use super::quant::QK;
use super::{Ctx, NB, Out};
use std::ops::Range;

/// Computes column blocks `blocks` (of [`NB`] columns) of C for every row of A.
///
/// # Safety
/// `ctx` describes a valid problem: its output covers (m, n) and its activations (m, kp).
pub(crate) unsafe fn run(ctx: &Ctx, blocks: Range<usize>) {
    let (kp, m) = (ctx.w.kp(), ctx.m);
    let blockwise = ctx.w.format() == QFormat::Block32 && matches!(ctx.out, Out::F32(_));
    for jb in blocks {
        for i in 0..m {
            let a = &ctx.a.data[i * kp..(i + 1) * kp];
            if blockwise {
                let y = row_blocks(ctx, a, i, jb);
                // SAFETY: row i < m, block jb < blocks of n; forwarded contract.
                unsafe { ctx.store_f32(&y, i, 1, jb * NB) };
            } else {
                let mut tile = [0i32; NB];
                for (p, t) in tile.chunks_mut(16).enumerate() {
                    dot_panel(a, panel(ctx, 2 * jb + p), 0..kp / 4, t);
                }
                // SAFETY: as above.
                unsafe { ctx.store_scalar(&tile, i, 1, jb * NB, false) };
            }
        }
    }
}

/// The bytes of panel `p` (16 columns x kp).
fn panel<'a>(ctx: &'a Ctx, p: usize) -> &'a [i8] {
    let kp = ctx.w.kp();
    &ctx.w.panels[p * kp * 16..(p + 1) * kp * 16]
}

/// `t[c] += sum over k-groups g of sum_b a[4g + b] * panel[g][c][b]`, a: i8 bytes.
fn dot_panel(a: &[u8], panel: &[i8], groups: Range<usize>, t: &mut [i32]) {
    for g in groups {
        for (c, tc) in t.iter_mut().enumerate() {
            let w = &panel[g * 64 + c * 4..g * 64 + c * 4 + 4];
            let s: i32 = (0..4)
                .map(|b| a[4 * g + b] as i8 as i32 * w[b] as i32)
                .sum();
            *tc += s;
        }
    }
}

/// Block format, one row: `y[c] = sum_b dot_b as f32 * (sa[b] * sw[b][c])` in block order.
fn row_blocks(ctx: &Ctx, a: &[u8], i: usize, jb: usize) -> [f32; NB] {
    let bpp = ctx.w.kp() / QK;
    let sa = &ctx.a.scales[i * bpp..(i + 1) * bpp];
    let mut y = [0.0f32; NB];
    for (p, yp) in y.chunks_mut(16).enumerate() {
        let (pi, pan) = (2 * jb + p, panel(ctx, 2 * jb + p));
        for (b, &s) in sa.iter().enumerate() {
            let mut dot = [0i32; 16];
            dot_panel(a, pan, b * QK / 4..(b + 1) * QK / 4, &mut dot);
            let sw = &ctx.w.scales[(pi * bpp + b) * 16..][..16];
            for c in 0..16 {
                yp[c] += dot[c] as f32 * (s * sw[c]);
            }
        }
    }
    y
}
