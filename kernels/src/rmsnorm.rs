//! RMSNorm over the last dimension of row-major `(rows, cols)` data: forward and backward.
//!
//! Forward: `y = (x * rstd) * w`, `rstd = 1 / sqrt(mean(x^2) + eps)`, the LLaMA / Hugging Face
//! `LlamaRMSNorm` convention (eps 1e-6 there); per-row `rstd` (f32) is saved for the backward.
//! One pass for the sum of squares in f32 (four vector accumulators) (no mean to subtract, so no cancellation); squares
//! overflow for `|x| > ~1.8e19`, giving `rstd = 0` and `y = 0` for finite x.
//!
//! Backward (with `norm = x * rstd`, `g = dy * w`):
//! `dx += rstd * (g - norm * mean(g * norm))`, `dw += sum_rows(dy * norm)`; the sum over rows uses
//! the same fixed row chunks as LayerNorm, so it is bit-identical for any thread count.
//!
//! Empty rows (`cols == 0`) get `rstd = 1 / sqrt(eps)`.

use crate::layernorm::{check_all, chunk_rows, elems, parallel, task_rows};
use crate::{Isa, Kernels, Result};
use rayon::prelude::*;

impl Kernels {
    /// RMSNorm forward.
    /// `// x: (rows, cols), w: (cols) -> y: (rows, cols), rstd: (rows)`
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when a slice is shorter than its shape, and
    /// [`crate::KernelError::BadShape`] when `rows * cols` overflows.
    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_fwd(
        &self,
        x: &[f32],
        w: &[f32],
        y: &mut [f32],
        rstd: &mut [f32],
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<()> {
        const OP: &str = "rmsnorm_fwd";
        let n = elems(OP, rows, cols)?;
        let lens = [("x", x.len(), n), ("w", w.len(), cols), ("y", y.len(), n)];
        check_all(OP, &lens)?;
        check_all(OP, &[("rstd", rstd.len(), rows)])?;
        let (x, w, y, rstd) = (&x[..n], &w[..cols], &mut y[..n], &mut rstd[..rows]);
        if cols == 0 {
            rstd.fill(1.0 / eps.sqrt());
            return Ok(());
        }
        let isa = self.isa();
        let per = task_rows(cols);
        let run = |(t, (yc, rc)): (usize, (&mut [f32], &mut [f32]))| {
            let x = &x[t * per * cols..][..yc.len()];
            fwd_rows(isa, x, w, yc, rc, cols, eps);
        };
        if parallel(n) {
            let it = y.par_chunks_mut(per * cols).zip(rstd.par_chunks_mut(per));
            it.enumerate().for_each(run);
        } else {
            run((0, (y, rstd)));
        }
        Ok(())
    }

    /// RMSNorm backward: ADDS into `dx` and `dw`.
    /// `// x, dy: (rows, cols), w: (cols), rstd: (rows) -> dx += (rows, cols), dw += (cols)`
    ///
    /// `rstd` is the one saved by [`Kernels::rmsnorm_fwd`]. Bit-identical for any pool size.
    ///
    /// # Errors
    /// As [`Kernels::rmsnorm_fwd`].
    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_bwd(
        &self,
        x: &[f32],
        w: &[f32],
        rstd: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        dw: &mut [f32],
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        const OP: &str = "rmsnorm_bwd";
        let n = elems(OP, rows, cols)?;
        let ins = [
            ("x", x.len(), n),
            ("w", w.len(), cols),
            ("rstd", rstd.len(), rows),
        ];
        check_all(OP, &ins)?;
        let outs = [
            ("dy", dy.len(), n),
            ("dx", dx.len(), n),
            ("dw", dw.len(), cols),
        ];
        check_all(OP, &outs)?;
        if n == 0 {
            return Ok(());
        }
        let isa = self.isa();
        let cr = chunk_rows(rows);
        let mut partial = vec![0.0f32; rows.div_ceil(cr) * cols];
        let run = |(c, (dxc, pw)): (usize, (&mut [f32], &mut [f32]))| {
            let (r0, nr) = (c * cr, dxc.len() / cols);
            let rs = r0 * cols..(r0 + nr) * cols;
            let (x, dy) = (&x[rs.clone()], &dy[rs]);
            bwd_rows(isa, x, &w[..cols], &rstd[r0..r0 + nr], dy, dxc, pw, cols);
        };
        let dx = &mut dx[..n];
        if parallel(n) {
            let it = dx
                .par_chunks_mut(cr * cols)
                .zip(partial.par_chunks_mut(cols));
            it.enumerate().for_each(run);
        } else {
            let it = dx.chunks_mut(cr * cols).zip(partial.chunks_mut(cols));
            it.enumerate().for_each(run);
        }
        // Partials in chunk order: the one reduction whose order could depend on threads.
        for pw in partial.chunks_exact(cols) {
            dw[..cols].iter_mut().zip(pw).for_each(|(d, p)| *d += p);
        }
        Ok(())
    }
}

/// Forward over whole rows on `isa`. `x`, `y`: `(rows, cols)`; `rstd`: `(rows)`.
fn fwd_rows(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    rstd: &mut [f32],
    cols: usize,
    eps: f32,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX-512 F/BW/VL.
        Isa::Avx512 => unsafe { avx512::fwd(x, w, y, rstd, cols, eps) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { avx2::fwd(x, w, y, rstd, cols, eps) },
        _ => scalar::fwd(x, w, y, rstd, cols, eps),
    }
}

/// Backward over whole rows on `isa`, adding `dy * norm` into the chunk's partial `pw`.
#[allow(clippy::too_many_arguments)]
fn bwd_rows(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    pw: &mut [f32],
    cols: usize,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX-512 F/BW/VL.
        Isa::Avx512 => unsafe { avx512::bwd(x, w, rstd, dy, dx, pw, cols) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { avx2::bwd(x, w, rstd, dy, dx, pw, cols) },
        _ => scalar::bwd(x, w, rstd, dy, dx, pw, cols),
    }
}

/// `1 / sqrt(ms + eps)`, the same expression on every tier.
#[inline]
fn inv_rms(ms: f32, eps: f32) -> f32 {
    1.0 / (ms + eps).sqrt()
}

/// The scalar reference and test oracle: one row at a time, element-wise f32 arithmetic as the
/// tiers do, but the row sums accumulated in f64 (then rounded to f32), so that a tier's error
/// against it is the tier's own; sums over rows (dw) in row order in f32.
// Index loops on purpose: the oracle reads as the formula.
#[allow(clippy::needless_range_loop)]
pub mod reference {
    use super::inv_rms;
    use crate::Result;
    use crate::layernorm::{check_all, elems};

    /// As [`crate::Kernels::rmsnorm_fwd`].
    /// `// x: (rows, cols), w: (cols) -> y: (rows, cols), rstd: (rows)`
    ///
    /// # Errors
    /// As [`crate::Kernels::rmsnorm_fwd`].
    pub fn rmsnorm_fwd(
        x: &[f32],
        w: &[f32],
        y: &mut [f32],
        rstd: &mut [f32],
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<()> {
        const OP: &str = "rmsnorm_fwd";
        let n = elems(OP, rows, cols)?;
        let lens = [("x", x.len(), n), ("w", w.len(), cols), ("y", y.len(), n)];
        check_all(OP, &lens)?;
        check_all(OP, &[("rstd", rstd.len(), rows)])?;
        for r in 0..rows {
            let xr = &x[r * cols..(r + 1) * cols];
            let mut ms = 0.0f32;
            if cols > 0 {
                ms = (xr.iter().map(|&v| (v * v) as f64).sum::<f64>() / cols as f64) as f32;
            }
            let rs = inv_rms(ms, eps);
            for j in 0..cols {
                y[r * cols + j] = xr[j] * rs * w[j];
            }
            rstd[r] = rs;
        }
        Ok(())
    }

    /// As [`crate::Kernels::rmsnorm_bwd`]: adds into `dx` and `dw`.
    /// `// x, dy: (rows, cols), w: (cols), rstd: (rows) -> dx += (rows, cols), dw += (cols)`
    ///
    /// # Errors
    /// As [`crate::Kernels::rmsnorm_bwd`].
    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_bwd(
        x: &[f32],
        w: &[f32],
        rstd: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        dw: &mut [f32],
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        const OP: &str = "rmsnorm_bwd";
        let n = elems(OP, rows, cols)?;
        let ins = [
            ("x", x.len(), n),
            ("w", w.len(), cols),
            ("rstd", rstd.len(), rows),
        ];
        check_all(OP, &ins)?;
        let outs = [
            ("dy", dy.len(), n),
            ("dx", dx.len(), n),
            ("dw", dw.len(), cols),
        ];
        check_all(OP, &outs)?;
        for r in 0..rows {
            let o = r * cols;
            let mut sgn = 0.0f64;
            for j in 0..cols {
                sgn += (dy[o + j] * w[j] * (x[o + j] * rstd[r])) as f64;
            }
            let mgn = (sgn / cols as f64) as f32;
            for j in 0..cols {
                let norm = x[o + j] * rstd[r];
                dx[o + j] += (dy[o + j] * w[j] - norm * mgn) * rstd[r];
                dw[j] += dy[o + j] * norm;
            }
        }
        Ok(())
    }
}

/// Portable tier: eight interleaved partial sums per row, no FMA.
mod scalar {
    use super::inv_rms;
    use crate::simd::sum8;

    pub(super) fn fwd(
        x: &[f32],
        w: &[f32],
        y: &mut [f32],
        rstd: &mut [f32],
        cols: usize,
        eps: f32,
    ) {
        for (r, yr) in y.chunks_exact_mut(cols).enumerate() {
            let xr = &x[r * cols..][..cols];
            let rs = inv_rms(sum8(cols, |j| xr[j] * xr[j]) / cols as f32, eps);
            for j in 0..cols {
                yr[j] = xr[j] * rs * w[j];
            }
            rstd[r] = rs;
        }
    }

    pub(super) fn bwd(
        x: &[f32],
        w: &[f32],
        rstd: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        pw: &mut [f32],
        cols: usize,
    ) {
        for (r, dxr) in dx.chunks_exact_mut(cols).enumerate() {
            let (xr, dyr, rs) = (&x[r * cols..][..cols], &dy[r * cols..][..cols], rstd[r]);
            let mgn = sum8(cols, |j| dyr[j] * w[j] * (xr[j] * rs)) / cols as f32;
            for j in 0..cols {
                let norm = xr[j] * rs;
                dxr[j] += (dyr[j] * w[j] - norm * mgn) * rs;
                pw[j] += dyr[j] * norm;
            }
        }
    }
}

/// AVX2 + FMA: 8 lanes, masked loads and stores for the row tail (tail lanes load 0).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::inv_rms;
    use crate::simd::avx2::{hsum, load, store, sum_by};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fwd(
        x: &[f32],
        w: &[f32],
        y: &mut [f32],
        rstd: &mut [f32],
        cols: usize,
        eps: f32,
    ) {
        for (r, yr) in y.chunks_exact_mut(cols).enumerate() {
            let xr = &x[r * cols..][..cols];
            let rs = inv_rms(
                hsum(sum_by(xr, |v, _| _mm256_mul_ps(v, v))) / cols as f32,
                eps,
            );
            let vr = _mm256_set1_ps(rs);
            for i in (0..cols).step_by(8) {
                store(
                    yr,
                    i,
                    _mm256_mul_ps(_mm256_mul_ps(load(xr, i), vr), load(w, i)),
                );
            }
            rstd[r] = rs;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn bwd(
        x: &[f32],
        w: &[f32],
        rstd: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        pw: &mut [f32],
        cols: usize,
    ) {
        for (r, dxr) in dx.chunks_exact_mut(cols).enumerate() {
            let (xr, dyr) = (&x[r * cols..][..cols], &dy[r * cols..][..cols]);
            let vr = _mm256_set1_ps(rstd[r]);
            let mut sgn = _mm256_setzero_ps();
            for i in (0..cols).step_by(8) {
                let dyv = load(dyr, i);
                let norm = _mm256_mul_ps(load(xr, i), vr);
                sgn = _mm256_fmadd_ps(_mm256_mul_ps(dyv, load(w, i)), norm, sgn);
                store(pw, i, _mm256_fmadd_ps(dyv, norm, load(pw, i)));
            }
            let mgn = _mm256_set1_ps(hsum(sgn) / cols as f32);
            for i in (0..cols).step_by(8) {
                let norm = _mm256_mul_ps(load(xr, i), vr);
                let g = _mm256_mul_ps(load(dyr, i), load(w, i));
                let t = _mm256_fnmadd_ps(norm, mgn, g);
                store(dxr, i, _mm256_fmadd_ps(t, vr, load(dxr, i)));
            }
        }
    }
}

/// AVX-512: 16 lanes, masked loads and stores for the row tail (tail lanes load 0).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::inv_rms;
    use crate::simd::avx512::{hsum, load, store, sum_by};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) fn fwd(
        x: &[f32],
        w: &[f32],
        y: &mut [f32],
        rstd: &mut [f32],
        cols: usize,
        eps: f32,
    ) {
        for (r, yr) in y.chunks_exact_mut(cols).enumerate() {
            let xr = &x[r * cols..][..cols];
            let rs = inv_rms(
                hsum(sum_by(xr, |v, _| _mm512_mul_ps(v, v))) / cols as f32,
                eps,
            );
            let vr = _mm512_set1_ps(rs);
            for i in (0..cols).step_by(16) {
                store(
                    yr,
                    i,
                    _mm512_mul_ps(_mm512_mul_ps(load(xr, i), vr), load(w, i)),
                );
            }
            rstd[r] = rs;
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn bwd(
        x: &[f32],
        w: &[f32],
        rstd: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        pw: &mut [f32],
        cols: usize,
    ) {
        for (r, dxr) in dx.chunks_exact_mut(cols).enumerate() {
            let (xr, dyr) = (&x[r * cols..][..cols], &dy[r * cols..][..cols]);
            let vr = _mm512_set1_ps(rstd[r]);
            let mut sgn = _mm512_setzero_ps();
            for i in (0..cols).step_by(16) {
                let dyv = load(dyr, i);
                let norm = _mm512_mul_ps(load(xr, i), vr);
                sgn = _mm512_fmadd_ps(_mm512_mul_ps(dyv, load(w, i)), norm, sgn);
                store(pw, i, _mm512_fmadd_ps(dyv, norm, load(pw, i)));
            }
            let mgn = _mm512_set1_ps(hsum(sgn) / cols as f32);
            for i in (0..cols).step_by(16) {
                let norm = _mm512_mul_ps(load(xr, i), vr);
                let g = _mm512_mul_ps(load(dyr, i), load(w, i));
                let t = _mm512_fnmadd_ps(norm, mgn, g);
                store(dxr, i, _mm512_fmadd_ps(t, vr, load(dxr, i)));
            }
        }
    }
}
