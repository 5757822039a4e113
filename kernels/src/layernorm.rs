//! LayerNorm over the last dimension of row-major `(rows, cols)` data: forward and backward.
//!
//! Forward: `y = (x - mean) * rstd * w + b`, `rstd = 1 / sqrt(var + eps)`, `var` the biased
//! (divide by `cols`) variance, as `torch.nn.functional.layer_norm`. Per-row `mean` and `rstd` are
//! saved (f32) for the backward.
//!
//! Statistics: two passes over the row in f32, first `mean = sum(x) / cols`, then
//! `var = sum((x - mean)^2) / cols`, each sum in four vector accumulators. Chosen over `E[x^2] - mean^2`, which cancels catastrophically
//! when `|mean| >> std`, and over Welford, which needs a division per element and a serial chain
//! that does not vectorise; a model's row (768..4096 floats) stays in L1/L2 between the passes, so
//! the second pass costs no memory traffic. Squares overflow f32 for `|x - mean| > ~1.8e19`: then
//! `var = inf`, `rstd = 0` and `y = b` (documented in `docs/numerics.md`).
//!
//! Backward (with `norm = (x - mean) * rstd`, `g = dy * w`):
//! `dx += rstd * (g - mean(g) - norm * mean(g * norm))`, `dw += sum_rows(dy * norm)`,
//! `db += sum_rows(dy)`. The sums over rows are taken in fixed row chunks (see [`chunk_rows`]) whose
//! partials are added in chunk order, so results are bit-identical for any thread count.
//!
//! Empty rows (`cols == 0`) get `mean = 0`, `rstd = 1 / sqrt(eps)`.

use crate::error::check_len;
use crate::{Isa, KernelError, Kernels, Result};
use rayon::prelude::*;

/// Below this many elements (256 KiB of f32 per operand) rows run on the calling thread.
const PAR_MIN_ELEMS: usize = 64 * 1024;
/// Rows per forward rayon task aim at about this many elements.
const TASK_ELEMS: usize = 16 * 1024;
/// Backward row chunks hold at least this many rows ...
const MIN_CHUNK_ROWS: usize = 32;
/// ... and there are at most this many of them (bounds the partial dw/db buffer).
const MAX_CHUNKS: usize = 256;

/// Rows per backward chunk: a function of the shape only, never of the thread count.
pub(crate) fn chunk_rows(rows: usize) -> usize {
    MIN_CHUNK_ROWS.max(rows.div_ceil(MAX_CHUNKS))
}

/// `rows * cols`, or `BadShape` when it overflows.
pub(crate) fn elems(op: &'static str, rows: usize, cols: usize) -> Result<usize> {
    rows.checked_mul(cols).ok_or_else(|| KernelError::BadShape {
        op,
        detail: format!("{rows} x {cols} elements overflow usize"),
    })
}

/// Checks each `(name, len, needed)`.
pub(crate) fn check_all(op: &'static str, args: &[(&'static str, usize, usize)]) -> Result<()> {
    args.iter()
        .try_for_each(|&(arg, got, needed)| check_len(op, arg, got, needed))
}

/// Rows per forward task.
pub(crate) fn task_rows(cols: usize) -> usize {
    (TASK_ELEMS / cols.max(1)).max(1)
}

/// Whether a problem of `n` elements is worth the rayon pool.
pub(crate) fn parallel(n: usize) -> bool {
    n >= PAR_MIN_ELEMS
}

/// One forward task: its index and its rows of `y`, `mean`, `rstd`.
type FwdTask<'a> = (usize, ((&'a mut [f32], &'a mut [f32]), &'a mut [f32]));

impl Kernels {
    /// LayerNorm forward.
    /// `// x: (rows, cols), w: (cols), b: (cols) -> y: (rows, cols), mean: (rows), rstd: (rows)`
    ///
    /// Rows are independent; above 256 KiB the rows are spread over the current rayon pool.
    ///
    /// # Errors
    /// [`KernelError::BadLength`] when a slice is shorter than its shape, and
    /// [`KernelError::BadShape`] when `rows * cols` overflows.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_fwd(
        &self,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<()> {
        const OP: &str = "layernorm_fwd";
        let n = elems(OP, rows, cols)?;
        check_all(
            OP,
            &[
                ("x", x.len(), n),
                ("w", w.len(), cols),
                ("b", b.len(), cols),
                ("y", y.len(), n),
                ("mean", mean.len(), rows),
                ("rstd", rstd.len(), rows),
            ],
        )?;
        let (x, w, b, y) = (&x[..n], &w[..cols], &b[..cols], &mut y[..n]);
        let (mean, rstd) = (&mut mean[..rows], &mut rstd[..rows]);
        if cols == 0 {
            mean.fill(0.0);
            rstd.fill(1.0 / eps.sqrt());
            return Ok(());
        }
        let isa = self.isa();
        let per = task_rows(cols);
        let run = |(t, ((yc, mc), rc)): FwdTask| {
            let x = &x[t * per * cols..][..yc.len()];
            fwd_rows(isa, x, w, b, yc, mc, rc, cols, eps);
        };
        if parallel(n) {
            y.par_chunks_mut(per * cols)
                .zip(mean.par_chunks_mut(per))
                .zip(rstd.par_chunks_mut(per))
                .enumerate()
                .for_each(run);
        } else {
            run((0, ((y, mean), rstd)));
        }
        Ok(())
    }

    /// LayerNorm backward: ADDS into `dx`, `dw`, `db`.
    /// `// x, dy: (rows, cols), w: (cols), mean, rstd: (rows) -> dx += (rows, cols), dw, db += (cols)`
    ///
    /// `mean` and `rstd` are those saved by [`Kernels::layernorm_fwd`]. Bit-identical for any
    /// rayon pool size.
    ///
    /// # Errors
    /// As [`Kernels::layernorm_fwd`].
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_bwd(
        &self,
        x: &[f32],
        w: &[f32],
        mean: &[f32],
        rstd: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        dw: &mut [f32],
        db: &mut [f32],
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        const OP: &str = "layernorm_bwd";
        let n = elems(OP, rows, cols)?;
        check_all(
            OP,
            &[
                ("x", x.len(), n),
                ("w", w.len(), cols),
                ("mean", mean.len(), rows),
                ("rstd", rstd.len(), rows),
                ("dy", dy.len(), n),
                ("dx", dx.len(), n),
                ("dw", dw.len(), cols),
                ("db", db.len(), cols),
            ],
        )?;
        if n == 0 {
            return Ok(());
        }
        let isa = self.isa();
        let cr = chunk_rows(rows);
        let mut partial = vec![0.0f32; rows.div_ceil(cr) * 2 * cols];
        let run = |(c, (dxc, pc)): (usize, (&mut [f32], &mut [f32]))| {
            let (r0, nr) = (c * cr, dxc.len() / cols);
            let (pw, pb) = pc.split_at_mut(cols);
            let rs = r0 * cols..(r0 + nr) * cols;
            let (x, dy) = (&x[rs.clone()], &dy[rs]);
            let (m, r) = (&mean[r0..r0 + nr], &rstd[r0..r0 + nr]);
            bwd_rows(isa, x, &w[..cols], m, r, dy, dxc, pw, pb, cols);
        };
        let dx = &mut dx[..n];
        if parallel(n) {
            let it = dx
                .par_chunks_mut(cr * cols)
                .zip(partial.par_chunks_mut(2 * cols));
            it.enumerate().for_each(run);
        } else {
            let it = dx.chunks_mut(cr * cols).zip(partial.chunks_mut(2 * cols));
            it.enumerate().for_each(run);
        }
        // Partials in chunk order: the one reduction whose order could depend on threads.
        for pc in partial.chunks_exact(2 * cols) {
            dw[..cols]
                .iter_mut()
                .zip(&pc[..cols])
                .for_each(|(d, p)| *d += p);
            db[..cols]
                .iter_mut()
                .zip(&pc[cols..])
                .for_each(|(d, p)| *d += p);
        }
        Ok(())
    }
}

/// Forward over whole rows on `isa`. `x`, `y`: `(rows, cols)`; `mean`, `rstd`: `(rows)`.
#[allow(clippy::too_many_arguments)]
fn fwd_rows(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    cols: usize,
    eps: f32,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX-512 F/BW/VL.
        Isa::Avx512 => unsafe { avx512::fwd(x, w, b, y, mean, rstd, cols, eps) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { avx2::fwd(x, w, b, y, mean, rstd, cols, eps) },
        _ => scalar::fwd(x, w, b, y, mean, rstd, cols, eps),
    }
}

/// Backward over whole rows on `isa`, adding `dy * norm` and `dy` into the chunk's `pw`, `pb`.
#[allow(clippy::too_many_arguments)]
fn bwd_rows(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    pw: &mut [f32],
    pb: &mut [f32],
    cols: usize,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX-512 F/BW/VL.
        Isa::Avx512 => unsafe { avx512::bwd(x, w, mean, rstd, dy, dx, pw, pb, cols) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { avx2::bwd(x, w, mean, rstd, dy, dx, pw, pb, cols) },
        _ => scalar::bwd(x, w, mean, rstd, dy, dx, pw, pb, cols),
    }
}

/// `1 / sqrt(var + eps)`, the same expression on every tier.
#[inline]
fn inv_std(var: f32, eps: f32) -> f32 {
    1.0 / (var + eps).sqrt()
}

/// The scalar reference and test oracle: one row at a time, element-wise f32 arithmetic as the
/// tiers do (squares included, so they overflow where the tiers' do), but the row sums
/// accumulated in f64 (then rounded to f32), so that a tier's error against it is the tier's
/// own; sums over rows (dw, db) in row order in f32.
// Index loops on purpose: the oracle reads as the formula.
#[allow(clippy::needless_range_loop)]
pub mod reference {
    use super::{check_all, elems, inv_std};
    use crate::Result;

    /// As [`crate::Kernels::layernorm_fwd`].
    /// `// x: (rows, cols), w: (cols), b: (cols) -> y: (rows, cols), mean: (rows), rstd: (rows)`
    ///
    /// # Errors
    /// As [`crate::Kernels::layernorm_fwd`].
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_fwd(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<()> {
        const OP: &str = "layernorm_fwd";
        let n = elems(OP, rows, cols)?;
        let lens = [
            ("x", x.len(), n),
            ("w", w.len(), cols),
            ("b", b.len(), cols),
        ];
        check_all(OP, &lens)?;
        let outs = [("y", y.len(), n), ("mean", mean.len(), rows)];
        check_all(OP, &outs)?;
        check_all(OP, &[("rstd", rstd.len(), rows)])?;
        for r in 0..rows {
            let xr = &x[r * cols..(r + 1) * cols];
            let mut m = 0.0f32;
            if cols > 0 {
                m = (xr.iter().map(|&v| v as f64).sum::<f64>() / cols as f64) as f32;
            }
            let mut var = 0.0f32;
            if cols > 0 {
                let ss = xr.iter().map(|&v| ((v - m) * (v - m)) as f64).sum::<f64>();
                var = (ss / cols as f64) as f32;
            }
            let rs = inv_std(var, eps);
            for j in 0..cols {
                y[r * cols + j] = (xr[j] - m) * rs * w[j] + b[j];
            }
            mean[r] = m;
            rstd[r] = rs;
        }
        Ok(())
    }

    /// As [`crate::Kernels::layernorm_bwd`]: adds into `dx`, `dw`, `db`.
    /// `// x, dy: (rows, cols), w: (cols), mean, rstd: (rows) -> dx += (rows, cols), dw, db += (cols)`
    ///
    /// # Errors
    /// As [`crate::Kernels::layernorm_bwd`].
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_bwd(
        x: &[f32],
        w: &[f32],
        mean: &[f32],
        rstd: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        dw: &mut [f32],
        db: &mut [f32],
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        const OP: &str = "layernorm_bwd";
        let n = elems(OP, rows, cols)?;
        let ins = [("x", x.len(), n), ("w", w.len(), cols), ("dy", dy.len(), n)];
        check_all(OP, &ins)?;
        check_all(
            OP,
            &[("mean", mean.len(), rows), ("rstd", rstd.len(), rows)],
        )?;
        let outs = [
            ("dx", dx.len(), n),
            ("dw", dw.len(), cols),
            ("db", db.len(), cols),
        ];
        check_all(OP, &outs)?;
        for r in 0..rows {
            let o = r * cols;
            let norm = |j: usize| (x[o + j] - mean[r]) * rstd[r];
            let (mut sg, mut sgn) = (0.0f64, 0.0f64);
            for j in 0..cols {
                let g = dy[o + j] * w[j];
                sg += g as f64;
                sgn += (g * norm(j)) as f64;
            }
            let (mg, mgn) = ((sg / cols as f64) as f32, (sgn / cols as f64) as f32);
            for j in 0..cols {
                let g = dy[o + j] * w[j];
                dx[o + j] += (g - mg - norm(j) * mgn) * rstd[r];
                dw[j] += dy[o + j] * norm(j);
                db[j] += dy[o + j];
            }
        }
        Ok(())
    }
}

/// Portable tier: eight independent partial sums per row (which the compiler may keep in one
/// vector register without reassociating), no FMA.
mod scalar {
    use super::inv_std;
    use crate::simd::sum8;

    #[allow(clippy::too_many_arguments)]
    pub(super) fn fwd(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        cols: usize,
        eps: f32,
    ) {
        for (r, yr) in y.chunks_exact_mut(cols).enumerate() {
            let xr = &x[r * cols..][..cols];
            let m = sum8(cols, |j| xr[j]) / cols as f32;
            let var = sum8(cols, |j| (xr[j] - m) * (xr[j] - m)) / cols as f32;
            let rs = inv_std(var, eps);
            for j in 0..cols {
                yr[j] = (xr[j] - m) * rs * w[j] + b[j];
            }
            mean[r] = m;
            rstd[r] = rs;
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn bwd(
        x: &[f32],
        w: &[f32],
        mean: &[f32],
        rstd: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        pw: &mut [f32],
        pb: &mut [f32],
        cols: usize,
    ) {
        for (r, dxr) in dx.chunks_exact_mut(cols).enumerate() {
            let (xr, dyr) = (&x[r * cols..][..cols], &dy[r * cols..][..cols]);
            let (m, rs) = (mean[r], rstd[r]);
            let mg = sum8(cols, |j| dyr[j] * w[j]) / cols as f32;
            let mgn = sum8(cols, |j| dyr[j] * w[j] * ((xr[j] - m) * rs)) / cols as f32;
            for j in 0..cols {
                let norm = (xr[j] - m) * rs;
                dxr[j] += (dyr[j] * w[j] - mg - norm * mgn) * rs;
                pw[j] += dyr[j] * norm;
                pb[j] += dyr[j];
            }
        }
    }
}

/// AVX2 + FMA: 8 lanes, masked loads and stores for the row tail.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::inv_std;
    use crate::simd::avx2::{hsum, load, mask, store, sum_by};
    use std::arch::x86_64::*;

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fwd(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        cols: usize,
        eps: f32,
    ) {
        for (r, yr) in y.chunks_exact_mut(cols).enumerate() {
            let xr = &x[r * cols..][..cols];
            let m = hsum(sum_by(xr, |v, _| v)) / cols as f32;
            let vm = _mm256_set1_ps(m);
            let ss = sum_by(xr, |v, k| {
                let d = _mm256_and_ps(_mm256_sub_ps(v, vm), k);
                _mm256_mul_ps(d, d)
            });
            let rs = inv_std(hsum(ss) / cols as f32, eps);
            let vr = _mm256_set1_ps(rs);
            for i in (0..cols).step_by(8) {
                let norm = _mm256_mul_ps(_mm256_sub_ps(load(xr, i), vm), vr);
                store(yr, i, _mm256_fmadd_ps(norm, load(w, i), load(b, i)));
            }
            mean[r] = m;
            rstd[r] = rs;
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn bwd(
        x: &[f32],
        w: &[f32],
        mean: &[f32],
        rstd: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        pw: &mut [f32],
        pb: &mut [f32],
        cols: usize,
    ) {
        for (r, dxr) in dx.chunks_exact_mut(cols).enumerate() {
            let (xr, dyr) = (&x[r * cols..][..cols], &dy[r * cols..][..cols]);
            let (vm, vr) = (_mm256_set1_ps(mean[r]), _mm256_set1_ps(rstd[r]));
            let (mut sg, mut sgn) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            // Tail lanes: dy = 0 and norm masked to 0, so they add nothing to either sum.
            for i in (0..cols).step_by(8) {
                let dyv = load(dyr, i);
                let norm = _mm256_mul_ps(_mm256_sub_ps(load(xr, i), vm), vr);
                let norm = _mm256_and_ps(norm, mask(cols - i));
                let g = _mm256_mul_ps(dyv, load(w, i));
                sg = _mm256_add_ps(sg, g);
                sgn = _mm256_fmadd_ps(g, norm, sgn);
                store(pw, i, _mm256_fmadd_ps(dyv, norm, load(pw, i)));
                store(pb, i, _mm256_add_ps(dyv, load(pb, i)));
            }
            let mg = _mm256_set1_ps(hsum(sg) / cols as f32);
            let mgn = _mm256_set1_ps(hsum(sgn) / cols as f32);
            for i in (0..cols).step_by(8) {
                let norm = _mm256_mul_ps(_mm256_sub_ps(load(xr, i), vm), vr);
                let g = _mm256_sub_ps(_mm256_mul_ps(load(dyr, i), load(w, i)), mg);
                let t = _mm256_fnmadd_ps(norm, mgn, g);
                store(dxr, i, _mm256_fmadd_ps(t, vr, load(dxr, i)));
            }
        }
    }
}

/// AVX-512: 16 lanes, masked loads and stores for the row tail.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::inv_std;
    use crate::simd::avx512::{hsum, load, mask, store, sum_by};
    use std::arch::x86_64::*;

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) fn fwd(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        cols: usize,
        eps: f32,
    ) {
        for (r, yr) in y.chunks_exact_mut(cols).enumerate() {
            let xr = &x[r * cols..][..cols];
            let m = hsum(sum_by(xr, |v, _| v)) / cols as f32;
            let vm = _mm512_set1_ps(m);
            let ss = sum_by(xr, |v, k| {
                let d = _mm512_maskz_sub_ps(k, v, vm);
                _mm512_mul_ps(d, d)
            });
            let rs = inv_std(hsum(ss) / cols as f32, eps);
            let vr = _mm512_set1_ps(rs);
            for i in (0..cols).step_by(16) {
                let norm = _mm512_mul_ps(_mm512_sub_ps(load(xr, i), vm), vr);
                store(yr, i, _mm512_fmadd_ps(norm, load(w, i), load(b, i)));
            }
            mean[r] = m;
            rstd[r] = rs;
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) fn bwd(
        x: &[f32],
        w: &[f32],
        mean: &[f32],
        rstd: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        pw: &mut [f32],
        pb: &mut [f32],
        cols: usize,
    ) {
        for (r, dxr) in dx.chunks_exact_mut(cols).enumerate() {
            let (xr, dyr) = (&x[r * cols..][..cols], &dy[r * cols..][..cols]);
            let (vm, vr) = (_mm512_set1_ps(mean[r]), _mm512_set1_ps(rstd[r]));
            let (mut sg, mut sgn) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            for i in (0..cols).step_by(16) {
                let k = mask(cols - i);
                let dyv = load(dyr, i);
                let norm = _mm512_maskz_mul_ps(k, _mm512_sub_ps(load(xr, i), vm), vr);
                let g = _mm512_mul_ps(dyv, load(w, i));
                sg = _mm512_add_ps(sg, g);
                sgn = _mm512_fmadd_ps(g, norm, sgn);
                store(pw, i, _mm512_fmadd_ps(dyv, norm, load(pw, i)));
                store(pb, i, _mm512_add_ps(dyv, load(pb, i)));
            }
            let mg = _mm512_set1_ps(hsum(sg) / cols as f32);
            let mgn = _mm512_set1_ps(hsum(sgn) / cols as f32);
            for i in (0..cols).step_by(16) {
                let norm = _mm512_mul_ps(_mm512_sub_ps(load(xr, i), vm), vr);
                let g = _mm512_sub_ps(_mm512_mul_ps(load(dyr, i), load(w, i)), mg);
                let t = _mm512_fnmadd_ps(norm, mgn, g);
                store(dxr, i, _mm512_fmadd_ps(t, vr, load(dxr, i)));
            }
        }
    }
}
