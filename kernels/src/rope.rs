//! Rotary position embedding, rotate-half convention (HF LLaMA), forward and backward.
//!
//! Rows are `x: (N, T, H, D)`, `D` even; token `(n, t)` has position `pos` (from a list of `T`
//! positions shared by every `n`, or of `N * T`, one per token: any positions, so a KV-cache
//! decode step passes its absolute position). With `h = D / 2` and `i < h`:
//! `inv_freq[i] = 1 / theta^(2i / D)`, `angle = pos * inv_freq[i]`,
//! `y[i] = x[i] cos - x[i + h] sin`, `y[i + h] = x[i + h] cos + x[i] sin`
//! (`x * cos + rotate_half(x) * sin`, `rotate_half(x) = cat(-x[h:], x[:h])`). Backward rotates
//! by `-angle`: `dx[i] += dy[i] cos + dy[i + h] sin`, `dx[i + h] += dy[i + h] cos - dy[i] sin`.
//!
//! Rounding mimics PyTorch's f32 path in HF: the exponent `2i / D` is an f32 division,
//! `theta^e` is rounded to f32 (computed in f64, as a correctly rounded `powf` would give), the
//! reciprocal and `pos * inv_freq` are f32 operations (HF's f32 matmul with one term), and
//! `cos`, `sin` of that f32 angle are computed in f64 and rounded once (torch's f32 `cos` is
//! within an ulp of that). The rotation itself is two products and a sum, unfused, as torch.
//!
//! The op is memory-bound: it is one plain loop (which the compiler vectorises), the same on
//! every tier, so results are bit-identical across tiers and thread counts.

use crate::error::check_len;
use crate::par::{SendPtr, for_ranges};
use crate::{KernelError, Kernels, Result};

/// The shape of the rows: `(n, t, h, d)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RopeDims {
    pub n: usize,
    pub t: usize,
    pub h: usize,
    pub d: usize,
}

/// `(cos, sin)` for each of `positions`, `d / 2` values per position, rounded as the module
/// docs say.
pub fn tables(positions: &[u32], d: usize, theta: f32) -> (Vec<f32>, Vec<f32>) {
    let half = d / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| {
            let e = (2 * i) as f32 / d as f32;
            1.0 / ((theta as f64).powf(e as f64) as f32)
        })
        .collect();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for &f in &inv {
            let a = (p as f32 * f) as f64;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    (cos, sin)
}

/// The scalar oracle: the rotation in f64 from the same f32 tables, rounded once.
pub mod reference {
    use super::RopeDims;

    /// `y = rope(x)`; `positions` as [`crate::Kernels::rope_fwd`].
    ///
    /// # Panics
    /// If a slice is shorter than the dims need.
    pub fn rope_fwd(x: &[f32], y: &mut [f32], dims: RopeDims, positions: &[u32], theta: f32) {
        rotate(x, y, dims, positions, theta, 1.0);
    }

    /// `dx = rope^T(dy)` (overwrites; the kernels add).
    ///
    /// # Panics
    /// If a slice is shorter than the dims need.
    pub fn rope_bwd(dy: &[f32], dx: &mut [f32], dims: RopeDims, positions: &[u32], theta: f32) {
        rotate(dy, dx, dims, positions, theta, -1.0);
    }

    fn rotate(x: &[f32], y: &mut [f32], d: RopeDims, positions: &[u32], theta: f32, sign: f64) {
        let (cos, sin) = super::tables(positions, d.d, theta);
        let half = d.d / 2;
        for n in 0..d.n {
            for t in 0..d.t {
                let tok = if positions.len() == d.t {
                    t
                } else {
                    n * d.t + t
                };
                for hh in 0..d.h {
                    let o = ((n * d.t + t) * d.h + hh) * d.d;
                    for i in 0..half {
                        let (c, s) = (
                            cos[tok * half + i] as f64,
                            sign * sin[tok * half + i] as f64,
                        );
                        let (a, b) = (x[o + i] as f64, x[o + half + i] as f64);
                        y[o + i] = (a * c - b * s) as f32;
                        y[o + half + i] = (b * c + a * s) as f32;
                    }
                }
            }
        }
    }
}

impl Kernels {
    /// `y = rope(x)`: `x, y: (N, T, H, D)`, `positions` of length `T` (shared by every `n`) or
    /// `N * T` (one per token). See the module docs for the formula and its rounding.
    ///
    /// # Errors
    /// [`KernelError::BadShape`] for an odd `D` or a positions list of another length;
    /// [`KernelError::BadLength`] when `x` or `y` is too short.
    pub fn rope_fwd(
        &self,
        x: &[f32],
        y: &mut [f32],
        dims: RopeDims,
        positions: &[u32],
        theta: f32,
    ) -> Result<()> {
        let n = check("rope_fwd", dims, positions)?;
        check_len("rope_fwd", "x", x.len(), n)?;
        check_len("rope_fwd", "y", y.len(), n)?;
        apply(x, y, dims, positions, theta, false);
        Ok(())
    }

    /// Backward: `dx += rope^T(dy)` (the rotation by `-angle`), shapes as [`Kernels::rope_fwd`].
    ///
    /// # Errors
    /// As [`Kernels::rope_fwd`].
    pub fn rope_bwd(
        &self,
        dy: &[f32],
        dx: &mut [f32],
        dims: RopeDims,
        positions: &[u32],
        theta: f32,
    ) -> Result<()> {
        let n = check("rope_bwd", dims, positions)?;
        check_len("rope_bwd", "dy", dy.len(), n)?;
        check_len("rope_bwd", "dx", dx.len(), n)?;
        apply(dy, dx, dims, positions, theta, true);
        Ok(())
    }
}

/// Validates the dims and positions; returns the element count.
fn check(op: &'static str, d: RopeDims, positions: &[u32]) -> Result<usize> {
    let bad = |detail: String| Err(KernelError::BadShape { op, detail });
    if !d.d.is_multiple_of(2) {
        return bad(format!(
            "head size {} is odd (rotate-half needs it even)",
            d.d
        ));
    }
    if positions.len() != d.t && positions.len() != d.n * d.t {
        return bad(format!(
            "{} positions for (N, T) = ({}, {}): need T or N * T",
            positions.len(),
            d.n,
            d.t
        ));
    }
    d.n.checked_mul(d.t)
        .and_then(|x| x.checked_mul(d.h))
        .and_then(|x| x.checked_mul(d.d))
        .ok_or_else(|| KernelError::BadShape {
            op,
            detail: format!("{d:?} overflows the address space"),
        })
}

/// Forward (`y = R x`) or backward (`y += R^T x`) over all tokens, split between threads.
fn apply(x: &[f32], y: &mut [f32], d: RopeDims, positions: &[u32], theta: f32, bwd: bool) {
    let (cos, sin) = tables(positions, d.d, theta);
    let (half, row) = (d.d / 2, d.h * d.d);
    let tokens = d.n * d.t;
    let yp = SendPtr::new(&mut y[..tokens * row]);
    for_ranges(tokens, 8 * row, |r| {
        // SAFETY: the rows of tokens r lie inside y[..tokens * row]; ranges are disjoint.
        let y = unsafe { yp.slice(r.start * row..r.end * row) };
        for (k, yt) in r.clone().zip(y.chunks_exact_mut(row.max(1))) {
            let tok = if positions.len() == d.t {
                k % d.t.max(1)
            } else {
                k
            };
            let (c, s) = (&cos[tok * half..][..half], &sin[tok * half..][..half]);
            let xt = &x[k * row..][..row];
            for (xh, yh) in xt
                .chunks_exact(d.d.max(1))
                .zip(yt.chunks_exact_mut(d.d.max(1)))
            {
                let (x1, x2) = xh.split_at(half);
                let (y1, y2) = yh.split_at_mut(half);
                if bwd {
                    for i in 0..half {
                        y1[i] += x1[i] * c[i] + x2[i] * s[i];
                        y2[i] += x2[i] * c[i] - x1[i] * s[i];
                    }
                } else {
                    for i in 0..half {
                        y1[i] = x1[i] * c[i] - x2[i] * s[i];
                        y2[i] = x2[i] * c[i] + x1[i] * s[i];
                    }
                }
            }
        }
    });
}
