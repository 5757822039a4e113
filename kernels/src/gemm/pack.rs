//! Packing of A and B blocks into the micro-panel layouts the micro-kernels read.

/// The largest MR of any micro-kernel.
pub(crate) const MAX_MR: usize = 16;

/// Packs the `mc x kc` block of A at `a` (strides `rs`, `cs`) into `mc.div_ceil(mr)` micro-panels
/// of `kc x MR` values each (`dst[panel][p * mr + i]`), zero-padding rows past `mc`.
///
/// # Safety
/// Every `a[i * rs + p * cs]` for `i < mc`, `p < kc` is readable, and `dst` holds at least
/// `mc.div_ceil(mr) * mr * kc` values.
pub(crate) unsafe fn pack_a(
    mr: usize,
    mc: usize,
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    dst: &mut [f32],
) {
    for (panel, out) in dst
        .chunks_exact_mut(mr * kc)
        .take(mc.div_ceil(mr))
        .enumerate()
    {
        let i0 = panel * mr;
        let rows = mr.min(mc - i0);
        if cs == 1 {
            // Rows of A are contiguous: read the panel's rows side by side (as many sequential
            // streams) and write the panel in order, one k step of `mr` values at a time.
            let mut src: [&[f32]; MAX_MR] = [&[]; MAX_MR];
            for (i, s) in src.iter_mut().enumerate().take(rows) {
                // SAFETY: row i0 + i < mc holds kc elements (caller's contract).
                *s = unsafe { std::slice::from_raw_parts(a.add((i0 + i) * rs), kc) };
            }
            for (p, dst) in out.chunks_exact_mut(mr).enumerate() {
                for (d, row) in dst.iter_mut().zip(&src[..rows]) {
                    *d = row[p];
                }
            }
        } else {
            for p in 0..kc {
                for i in 0..rows {
                    // SAFETY: i0 + i < mc and p < kc (caller's contract).
                    out[p * mr + i] = unsafe { *a.add((i0 + i) * rs + p * cs) };
                }
            }
        }
        if rows < mr {
            for p in 0..kc {
                out[p * mr + rows..(p + 1) * mr].fill(0.0);
            }
        }
    }
}

/// Packs the `kc x nc` block of B at `b` (strides `rs`, `cs`) into `nc.div_ceil(nr)` micro-panels
/// of `kc x NR` values each (`dst[panel][p * nr + j]`), zero-padding columns past `nc`.
///
/// # Safety
/// Every `b[p * rs + j * cs]` for `p < kc`, `j < nc` is readable, and `dst` holds at least
/// `nc.div_ceil(nr) * nr * kc` values.
pub(crate) unsafe fn pack_b(
    nr: usize,
    kc: usize,
    nc: usize,
    b: *const f32,
    rs: usize,
    cs: usize,
    dst: &mut [f32],
) {
    for (panel, out) in dst
        .chunks_exact_mut(nr * kc)
        .take(nc.div_ceil(nr))
        .enumerate()
    {
        let j0 = panel * nr;
        let cols = nr.min(nc - j0);
        if cs == 1 {
            for p in 0..kc {
                // SAFETY: row p < kc holds columns j0..j0 + cols < nc (caller's contract).
                let src = unsafe { std::slice::from_raw_parts(b.add(p * rs + j0), cols) };
                out[p * nr..p * nr + cols].copy_from_slice(src);
                out[p * nr + cols..(p + 1) * nr].fill(0.0);
            }
        } else {
            // Columns of B are contiguous (B is a transposed row-major matrix): read each column
            // once, in blocks of 16 k so the writes stay within a few cache lines.
            for p0 in (0..kc).step_by(16) {
                let pn = 16.min(kc - p0);
                for j in 0..cols {
                    for p in p0..p0 + pn {
                        // SAFETY: column j0 + j < nc and row p < kc (caller's contract).
                        out[p * nr + j] = unsafe { *b.add(p * rs + (j0 + j) * cs) };
                    }
                }
                for p in p0..p0 + pn {
                    out[p * nr + cols..(p + 1) * nr].fill(0.0);
                }
            }
        }
    }
}
