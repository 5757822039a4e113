//! Row softmax, forward and backward, plain and with a causal (optionally sliding-window) mask.
//!
//! Forward, per row: `m = max(x)`, `e = exp(x - m)`, `y = e * (1 / sum(e))`; max and sum in f32
//! (the sum in 16 / 8 / 8 vector-lane partial sums per tier, then added across lanes).
//! Backward, per row: `dx += y * (dy - sum(dy * y))`, the dot product in f32 lane partial sums.
//!
//! Special rows: a row whose entries are all `-inf` (or an empty kept range of a masked row) gives
//! all zeros; a row holding a NaN or a `+inf` gives all NaN (as `exp(inf - inf)` does).

use crate::error::check_len;
use crate::par::{SendPtr, for_ranges};
use crate::{Isa, KernelError, Kernels, Result};

/// A causal mask for rows that are query positions of attention blocks.
///
/// Row `r` is query position `q = r % block_rows` (scores laid out `(B, NH, T, Tk)` with
/// `block_rows = T`). Column `c` is kept iff `c <= q + offset` and, with `Some(w)` window, also
/// `c > q + offset - w` (the `w` most recent keys, the query's own included). Masked entries are
/// exactly 0. `offset = Tk - T` aligns the last query with the last key (a KV cache); `offset = 0`
/// is the square causal mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CausalMask {
    pub block_rows: usize,
    pub offset: usize,
    pub window: Option<usize>,
}

impl CausalMask {
    /// Square causal mask over blocks of `t` rows, no window.
    pub fn causal(t: usize) -> Self {
        Self {
            block_rows: t,
            offset: 0,
            window: None,
        }
    }

    /// The kept columns `lo..hi` of row `r` (empty when `lo >= hi`).
    pub fn kept(&self, r: usize, cols: usize) -> std::ops::Range<usize> {
        let end = (r % self.block_rows.max(1))
            .saturating_add(self.offset)
            .saturating_add(1);
        let lo = self.window.map_or(0, |w| end.saturating_sub(w));
        let hi = end.min(cols);
        lo.min(hi)..hi
    }
}

/// `rows * cols`, or an error when it overflows.
pub(crate) fn numel(op: &'static str, rows: usize, cols: usize) -> Result<usize> {
    rows.checked_mul(cols).ok_or_else(|| KernelError::BadShape {
        op,
        detail: format!("({rows}, {cols}) overflows the address space"),
    })
}

/// The scalar oracle: f64 arithmetic after rounding `x - max` to f32 as the kernels do.
pub mod reference {
    use super::CausalMask;

    /// One row's softmax in f64 (the finite-difference oracle). Same special rows as the kernels.
    pub fn softmax_row_f64(x: &[f64], y: &mut [f64]) {
        let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if x.iter().any(|v| v.is_nan()) {
            y.fill(f64::NAN);
        } else if m == f64::NEG_INFINITY {
            y.fill(0.0);
        } else {
            let s: f64 = x.iter().map(|&v| (v - m).exp()).sum();
            for (y, &v) in y.iter_mut().zip(x) {
                *y = (v - m).exp() / s;
            }
        }
    }

    fn row_fwd(x: &[f32], y: &mut [f32]) {
        let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if x.iter().any(|v| v.is_nan()) || m == f32::INFINITY {
            y.fill(f32::NAN);
        } else if m == f32::NEG_INFINITY {
            y.fill(0.0);
        } else {
            // The kernels' one rounding before exp: the f32 difference `x - m`.
            let d: Vec<f64> = x.iter().map(|&v| (v - m) as f64).collect();
            let mut o = vec![0.0; x.len()];
            softmax_row_f64(&d, &mut o);
            for (y, o) in y.iter_mut().zip(o) {
                *y = o as f32;
            }
        }
    }

    /// x: (rows, cols) -> y: (rows, cols).
    ///
    /// # Panics
    /// If a slice is shorter than `rows * cols`.
    pub fn softmax_fwd(x: &[f32], y: &mut [f32], rows: usize, cols: usize) {
        for r in 0..rows {
            row_fwd(&x[r * cols..][..cols], &mut y[r * cols..][..cols]);
        }
    }

    /// y, dy: (rows, cols); dx: (rows, cols) += y * (dy - sum(dy * y)), in f64.
    ///
    /// # Panics
    /// If a slice is shorter than `rows * cols`.
    pub fn softmax_bwd(y: &[f32], dy: &[f32], dx: &mut [f32], rows: usize, cols: usize) {
        for r in 0..rows {
            let (y, dy) = (&y[r * cols..][..cols], &dy[r * cols..][..cols]);
            let s: f64 = y.iter().zip(dy).map(|(&a, &b)| a as f64 * b as f64).sum();
            for ((d, &y), &g) in dx[r * cols..][..cols].iter_mut().zip(y).zip(dy) {
                *d = (*d as f64 + y as f64 * (g as f64 - s)) as f32;
            }
        }
    }

    /// As [`softmax_fwd`] with `mask` applied (masked entries exactly 0).
    ///
    /// # Panics
    /// If a slice is shorter than `rows * cols`.
    pub fn softmax_masked_fwd(
        x: &[f32],
        y: &mut [f32],
        rows: usize,
        cols: usize,
        mask: CausalMask,
    ) {
        for r in 0..rows {
            let k = mask.kept(r, cols);
            let y = &mut y[r * cols..][..cols];
            y.fill(0.0);
            row_fwd(&x[r * cols..][k.clone()], &mut y[k]);
        }
    }
}

impl Kernels {
    /// Row softmax. x: (rows, cols) -> y: (rows, cols). See the module docs for special rows.
    ///
    /// # Errors
    /// [`KernelError::BadLength`] when `x` or `y` holds fewer than `rows * cols` elements.
    pub fn softmax_fwd(&self, x: &[f32], y: &mut [f32], rows: usize, cols: usize) -> Result<()> {
        self.softmax_fwd_impl("softmax_fwd", x, y, rows, cols, None)
    }

    /// Row softmax with a causal mask. x: (rows, cols) -> y: (rows, cols); masked entries are 0
    /// and a row with nothing kept is all zeros.
    ///
    /// # Errors
    /// As [`Kernels::softmax_fwd`].
    pub fn softmax_masked_fwd(
        &self,
        x: &[f32],
        y: &mut [f32],
        rows: usize,
        cols: usize,
        mask: CausalMask,
    ) -> Result<()> {
        self.softmax_fwd_impl("softmax_masked_fwd", x, y, rows, cols, Some(mask))
    }

    fn softmax_fwd_impl(
        &self,
        op: &'static str,
        x: &[f32],
        y: &mut [f32],
        rows: usize,
        cols: usize,
        mask: Option<CausalMask>,
    ) -> Result<()> {
        let n = numel(op, rows, cols)?;
        check_len(op, "x", x.len(), n)?;
        check_len(op, "y", y.len(), n)?;
        let (isa, yp) = (self.isa(), SendPtr::new(&mut y[..n]));
        for_ranges(rows, 8 * cols, |rr| {
            for r in rr {
                // SAFETY: row r lies inside y[..n]; each row is handed to one call only.
                let y = unsafe { yp.slice(r * cols..(r + 1) * cols) };
                let k = mask.map_or(0..cols, |m| m.kept(r, cols));
                y[..k.start].fill(0.0);
                y[k.end..].fill(0.0);
                fwd_row(isa, &x[r * cols..][k.clone()], &mut y[k]);
            }
        });
        Ok(())
    }

    /// Softmax backward: y, dy: (rows, cols); dx: (rows, cols) `+= y * (dy - sum(dy * y))`.
    /// Serves the masked forward too (its masked y are 0, so their dx gets `+0`).
    ///
    /// # Errors
    /// [`KernelError::BadLength`] when a slice holds fewer than `rows * cols` elements.
    pub fn softmax_bwd(
        &self,
        y: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let op = "softmax_bwd";
        let n = numel(op, rows, cols)?;
        check_len(op, "y", y.len(), n)?;
        check_len(op, "dy", dy.len(), n)?;
        check_len(op, "dx", dx.len(), n)?;
        let (isa, dxp) = (self.isa(), SendPtr::new(&mut dx[..n]));
        for_ranges(rows, 16 * cols, |rr| {
            // SAFETY: these rows lie inside dx[..n]; ranges are disjoint.
            let dx = unsafe { dxp.slice(rr.start * cols..rr.end * cols) };
            for (i, dx) in dx.chunks_exact_mut(cols.max(1)).enumerate() {
                let o = (rr.start + i) * cols;
                bwd_row(isa, &y[o..o + cols], &dy[o..o + cols], dx);
            }
        });
        Ok(())
    }
}

fn fwd_row(isa: Isa, x: &[f32], y: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` holds a tier only when the CPU supports it.
        Isa::Avx512 => unsafe { avx512::fwd_row(x, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { avx2::fwd_row(x, y) },
        _ => scalar::fwd_row(x, y),
    }
}

fn bwd_row(isa: Isa, y: &[f32], dy: &[f32], dx: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` holds a tier only when the CPU supports it.
        Isa::Avx512 => unsafe { avx512::bwd_row(y, dy, dx) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { avx2::bwd_row(y, dy, dx) },
        _ => scalar::bwd_row(y, dy, dx),
    }
}

/// The rare rows whose maximum is `-inf`: all `-inf` gives zeros, any NaN gives NaN.
fn degenerate_row(x: &[f32], y: &mut [f32]) {
    let fill = if x.iter().any(|v| v.is_nan()) {
        f32::NAN
    } else {
        0.0
    };
    y.fill(fill);
}

/// Portable tier: 8 partial sums, like the AVX2 lanes.
mod scalar {
    use crate::math::scalar::exp;

    pub(super) fn fwd_row(x: &[f32], y: &mut [f32]) {
        let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if m == f32::NEG_INFINITY {
            return super::degenerate_row(x, y);
        }
        let mut acc = [0.0f32; 8];
        for (i, (y, &v)) in y.iter_mut().zip(x).enumerate() {
            *y = exp(v - m);
            acc[i % 8] += *y;
        }
        let inv = 1.0 / acc.iter().sum::<f32>();
        y.iter_mut().for_each(|v| *v *= inv);
    }

    pub(super) fn bwd_row(y: &[f32], dy: &[f32], dx: &mut [f32]) {
        let mut acc = [0.0f32; 8];
        for (i, (&a, &b)) in y.iter().zip(dy).enumerate() {
            acc[i % 8] += a * b;
        }
        let s: f32 = acc.iter().sum();
        for ((d, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
            *d += y * (g - s);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::math::avx2::{exp, hsum, row_max};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fwd_row(x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let main = n - n % 8;
        let m = row_max(&x[..n]);
        if m == f32::NEG_INFINITY {
            return super::degenerate_row(&x[..n], &mut y[..n]);
        }
        let (vmax, mut vs) = (_mm256_set1_ps(m), _mm256_setzero_ps());
        for (xc, yc) in x[..main].chunks_exact(8).zip(y[..main].chunks_exact_mut(8)) {
            // SAFETY: both chunks hold 8 elements.
            unsafe {
                let e = exp(_mm256_sub_ps(_mm256_loadu_ps(xc.as_ptr()), vmax));
                _mm256_storeu_ps(yc.as_mut_ptr(), e);
                vs = _mm256_add_ps(vs, e);
            }
        }
        let mut tail = [0.0f32; 8];
        tail[..n - main].copy_from_slice(&x[main..n]);
        // SAFETY: tail holds 8 elements.
        let t = unsafe { _mm256_loadu_ps(tail.as_ptr()) };
        let e = exp(_mm256_sub_ps(t, vmax));
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(tail.as_mut_ptr(), e) };
        let mut s = hsum(vs);
        for (y, &e) in y[main..n].iter_mut().zip(&tail) {
            *y = e;
            s += e;
        }
        let inv = _mm256_set1_ps(1.0 / s);
        for yc in y[..main].chunks_exact_mut(8) {
            // SAFETY: yc holds 8 elements.
            unsafe {
                _mm256_storeu_ps(
                    yc.as_mut_ptr(),
                    _mm256_mul_ps(_mm256_loadu_ps(yc.as_ptr()), inv),
                )
            };
        }
        y[main..n].iter_mut().for_each(|v| *v *= 1.0 / s);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn bwd_row(y: &[f32], dy: &[f32], dx: &mut [f32]) {
        let n = y.len().min(dy.len()).min(dx.len());
        let main = n - n % 8;
        let mut vs = _mm256_setzero_ps();
        for (a, b) in y[..main].chunks_exact(8).zip(dy[..main].chunks_exact(8)) {
            // SAFETY: both chunks hold 8 elements.
            vs = unsafe {
                _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr()), _mm256_loadu_ps(b.as_ptr()), vs)
            };
        }
        let s = y[main..n]
            .iter()
            .zip(&dy[main..n])
            .fold(hsum(vs), |acc, (a, b)| acc + a * b);
        let vsum = _mm256_set1_ps(s);
        for ((a, b), d) in y[..main]
            .chunks_exact(8)
            .zip(dy[..main].chunks_exact(8))
            .zip(dx[..main].chunks_exact_mut(8))
        {
            // SAFETY: all three chunks hold 8 elements.
            unsafe {
                let g = _mm256_sub_ps(_mm256_loadu_ps(b.as_ptr()), vsum);
                let r =
                    _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr()), g, _mm256_loadu_ps(d.as_ptr()));
                _mm256_storeu_ps(d.as_mut_ptr(), r);
            }
        }
        for ((d, &a), &b) in dx[main..n].iter_mut().zip(&y[main..n]).zip(&dy[main..n]) {
            *d += a * (b - s);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::math::avx512::{exp, mask16, row_max};
    use std::arch::x86_64::*;

    /// Rows up to this long prefetch the next row (16 KiB of x and y, well inside L1 + L2).
    const PREFETCH_MAX_COLS: usize = 2048;

    #[target_feature(enable = "avx512f")]
    pub(super) fn fwd_row(x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
        let m = row_max(&x[..n]);
        if m == f32::NEG_INFINITY {
            return super::degenerate_row(&x[..n], &mut y[..n]);
        }
        let vmax = _mm512_set1_ps(m);
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        // Short rows are usually followed by the next row in memory: fetch its x (and y, for
        // writing) while this row's exps compute, so the next max pass does not wait on memory.
        // A prefetch is a hint that never faults, so the addresses may lie past the slices.
        let ahead = if n <= PREFETCH_MAX_COLS { n } else { 0 };
        let mut i = 0;
        while i + 32 <= n {
            if ahead > 0 {
                _mm_prefetch::<_MM_HINT_T0>(xp.wrapping_add(i + ahead) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(xp.wrapping_add(i + 16 + ahead) as *const i8);
                _mm_prefetch::<_MM_HINT_ET0>(yp.wrapping_add(i + ahead) as *const i8);
                _mm_prefetch::<_MM_HINT_ET0>(yp.wrapping_add(i + 16 + ahead) as *const i8);
            }
            // SAFETY: i + 32 <= n.
            unsafe {
                let e0 = exp(_mm512_sub_ps(_mm512_loadu_ps(xp.add(i)), vmax));
                let e1 = exp(_mm512_sub_ps(_mm512_loadu_ps(xp.add(i + 16)), vmax));
                _mm512_storeu_ps(yp.add(i), e0);
                _mm512_storeu_ps(yp.add(i + 16), e1);
                s0 = _mm512_add_ps(s0, e0);
                s1 = _mm512_add_ps(s1, e1);
            }
            i += 32;
        }
        while i < n {
            let k = mask16(n - i);
            // SAFETY: the mask limits loads and stores to the n - i elements left.
            unsafe {
                let e = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, xp.add(i)), vmax));
                _mm512_mask_storeu_ps(yp.add(i), k, e);
                s0 = _mm512_mask_add_ps(s0, k, s0, e);
            }
            i += 16;
        }
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)));
        i = 0;
        while i < n {
            let k = mask16(n - i);
            // SAFETY: the mask limits loads and stores to the n - i elements left.
            unsafe {
                let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, yp.add(i)), inv);
                _mm512_mask_storeu_ps(yp.add(i), k, v);
            }
            i += 16;
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn bwd_row(y: &[f32], dy: &[f32], dx: &mut [f32]) {
        let n = y.len().min(dy.len()).min(dx.len());
        let (yp, gp, dp) = (y.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 32 <= n {
            // SAFETY: i + 32 <= n.
            unsafe {
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(yp.add(i)), _mm512_loadu_ps(gp.add(i)), s0);
                s1 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(yp.add(i + 16)),
                    _mm512_loadu_ps(gp.add(i + 16)),
                    s1,
                );
            }
            i += 32;
        }
        while i < n {
            let k = mask16(n - i);
            // SAFETY: the mask limits the loads to the n - i elements left.
            unsafe {
                s0 = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(k, yp.add(i)),
                    _mm512_maskz_loadu_ps(k, gp.add(i)),
                    s0,
                );
            }
            i += 16;
        }
        let vsum = _mm512_set1_ps(_mm512_reduce_add_ps(_mm512_add_ps(s0, s1)));
        i = 0;
        while i < n {
            let k = mask16(n - i);
            // SAFETY: the mask limits loads and stores to the n - i elements left.
            unsafe {
                let g = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, gp.add(i)), vsum);
                let r = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(k, yp.add(i)),
                    g,
                    _mm512_maskz_loadu_ps(k, dp.add(i)),
                );
                _mm512_mask_storeu_ps(dp.add(i), k, r);
            }
            i += 16;
        }
    }
}
