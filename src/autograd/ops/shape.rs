//! Shape ops: reshape, narrow / split / concat along any axis, and transpose of the last two
//! axes. Values are copied into fresh buffers (the tape owns one buffer per node).

use super::{add_into, around};
use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var, shape_err};
use crate::tensor::Result;

impl Graph {
    /// The same values under `shape`. `// x: (...) -> shape`, equal element counts.
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when the element counts differ or the handle is stale.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let n = crate::tensor::numel("reshape", shape)?;
        let xs = self.shape(x)?;
        if xs.iter().product::<usize>() != n {
            return Err(shape_err(
                "reshape",
                format!("cannot reshape {xs:?} into {shape:?}"),
            ));
        }
        let n = self.arg("reshape", x)?.0.len();
        let mut y = self.pool().take(n);
        y.copy_from_slice(self.arg("reshape", x)?.0);
        Ok(self.push(y, shape.to_vec(), Op::Reshape { x }))
    }

    /// Indices `start..start + len` of `axis`. `// x: (..., D, ...) -> (..., len, ...)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `axis` or the range is out of bounds or the handle is
    /// stale.
    pub fn narrow(&mut self, x: Var, axis: usize, start: usize, len: usize) -> Result<Var> {
        const OP: &str = "narrow";
        let xs = self.shape(x)?.to_vec();
        let (outer, dim, inner) = around(OP, &xs, axis)?;
        if start.checked_add(len).is_none_or(|e| e > dim) {
            let end = start.saturating_add(len);
            return Err(shape_err(
                OP,
                format!("{start}..{end} of axis {axis} in {xs:?}"),
            ));
        }
        let mut y = self.pool().take(outer * len * inner);
        let xv = self.arg(OP, x)?.0;
        let part = len * inner;
        let row = |(o, y): (usize, &mut [f32])| {
            y.copy_from_slice(&xv[(o * dim + start) * inner..][..part]);
        };
        if part > 0 && super::split_pass(outer * part) {
            use rayon::prelude::*;
            y.par_chunks_exact_mut(part)
                .enumerate()
                .take(outer)
                .for_each(row);
        } else if part > 0 {
            y.chunks_exact_mut(part)
                .enumerate()
                .take(outer)
                .for_each(row);
        }
        let mut shape = xs;
        shape[axis] = len;
        Ok(self.push(y, shape, Op::Narrow { x, axis, start }))
    }

    /// Consecutive pieces of `axis` with the given sizes (which must sum to its length).
    ///
    /// # Errors
    /// As [`Graph::narrow`], and when the sizes do not sum to the axis length.
    pub fn split(&mut self, x: Var, axis: usize, sizes: &[usize]) -> Result<Vec<Var>> {
        let xs = self.shape(x)?.to_vec();
        let (_, dim, _) = around("split", &xs, axis)?;
        if sizes.iter().sum::<usize>() != dim {
            return Err(shape_err(
                "split",
                format!("sizes {sizes:?} for axis {axis} of {xs:?}"),
            ));
        }
        let mut start = 0;
        let mut out = Vec::with_capacity(sizes.len());
        for &s in sizes {
            out.push(self.narrow(x, axis, start, s)?);
            start += s;
        }
        Ok(out)
    }

    /// The parts joined along `axis`. `// parts[i]: (..., D_i, ...) -> (..., sum D_i, ...)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when there are no parts, shapes differ off `axis`, or a
    /// handle is stale.
    pub fn concat(&mut self, parts: &[Var], axis: usize) -> Result<Var> {
        const OP: &str = "concat";
        let Some(&first) = parts.first() else {
            return Err(shape_err(OP, "no parts to concatenate".into()));
        };
        let mut shape = self.shape(first)?.to_vec();
        let (outer, _, inner) = around(OP, &shape, axis)?;
        let mut total = 0;
        for &p in parts {
            let ps = self.shape(p)?;
            let same_rank = ps.len() == shape.len();
            if !same_rank
                || ps
                    .iter()
                    .zip(&shape)
                    .enumerate()
                    .any(|(i, (a, b))| i != axis && a != b)
            {
                return Err(shape_err(
                    OP,
                    format!("part {ps:?} does not fit {shape:?} off axis {axis}"),
                ));
            }
            total += ps[axis];
        }
        let mut y = self.pool().take(outer * total * inner);
        let mut off = 0;
        for &p in parts {
            let (pv, ps) = self.arg(OP, p)?;
            let d = ps[axis];
            for o in 0..outer {
                y[(o * total + off) * inner..][..d * inner]
                    .copy_from_slice(&pv[o * d * inner..][..d * inner]);
            }
            off += d;
        }
        shape[axis] = total;
        Ok(self.push(
            y,
            shape,
            Op::Concat {
                parts: parts.to_vec(),
                axis,
            },
        ))
    }

    /// The axes reordered: output axis `i` is input axis `axes[i]`.
    /// `// x: (d_0, .., d_{n-1}) -> (d_axes[0], .., d_axes[n-1])`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `axes` is not a permutation of `0..rank` or the handle
    /// is stale.
    pub fn permute(&mut self, x: Var, axes: &[usize]) -> Result<Var> {
        let xs = self.shape(x)?.to_vec();
        let mut seen = vec![false; xs.len()];
        let valid = axes.len() == xs.len()
            && axes
                .iter()
                .all(|&a| a < xs.len() && !std::mem::replace(&mut seen[a], true));
        if !valid {
            return Err(shape_err(
                "permute",
                format!("axes {axes:?} are not a permutation for {xs:?}"),
            ));
        }
        let mut y = self.pool().take(xs.iter().product());
        permute_into(self.arg("permute", x)?.0, &xs, axes, &mut y, false);
        let shape = axes.iter().map(|&a| xs[a]).collect();
        Ok(self.push(
            y,
            shape,
            Op::Permute {
                x,
                axes: axes.to_vec(),
            },
        ))
    }

    /// Swaps the last two axes. `// x: (..., R, C) -> (..., C, R)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] for fewer than two axes or a stale handle.
    pub fn transpose(&mut self, x: Var) -> Result<Var> {
        let xs = self.shape(x)?.to_vec();
        let r = xs.len();
        if r < 2 {
            return Err(shape_err(
                "transpose",
                format!("needs two axes, got {xs:?}"),
            ));
        }
        let (rows, cols) = (xs[r - 2], xs[r - 1]);
        let mut y = self.pool().take(xs.iter().product());
        transpose_into(self.arg("transpose", x)?.0, &mut y, rows, cols, false);
        let mut shape = xs;
        shape.swap(r - 2, r - 1);
        Ok(self.push(y, shape, Op::Transpose { x }))
    }
}

/// `dst (=|+=) src` with its axes reordered: `dst` axis `i` is `src` axis `axes[i]`. Walks `dst`
/// in order with an odometer over the source strides; the innermost axis is a strided run.
fn permute_into(src: &[f32], shape: &[usize], axes: &[usize], dst: &mut [f32], add: bool) {
    let rank = shape.len();
    if dst.is_empty() {
        return;
    }
    if rank == 0 {
        dst[0] = if add { dst[0] + src[0] } else { src[0] };
        return;
    }
    let mut stride = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * shape[i + 1];
    }
    let out_shape: Vec<usize> = axes.iter().map(|&a| shape[a]).collect();
    let out_stride: Vec<usize> = axes.iter().map(|&a| stride[a]).collect();
    let (inner, inner_stride) = (out_shape[rank - 1], out_stride[rank - 1]);
    let mut idx = vec![0usize; rank];
    let mut base = 0usize;
    for run in dst.chunks_exact_mut(inner) {
        for (j, d) in run.iter_mut().enumerate() {
            let v = src[base + j * inner_stride];
            *d = if add { *d + v } else { v };
        }
        // Advance the odometer over the outer axes.
        for ax in (0..rank - 1).rev() {
            idx[ax] += 1;
            base += out_stride[ax];
            if idx[ax] < out_shape[ax] {
                break;
            }
            base -= out_stride[ax] * out_shape[ax];
            idx[ax] = 0;
        }
    }
}

/// `dx += dy` with `permute`'s axes undone.
pub(crate) fn permute_backward(c: &mut Ctx, x: Var, axes: &[usize], dy: &[f32]) -> Result<()> {
    let xs = c.v.shape(x);
    let out_shape: Vec<usize> = axes.iter().map(|&a| xs[a]).collect();
    let mut inverse = vec![0; axes.len()];
    axes.iter().enumerate().for_each(|(i, &a)| inverse[a] = i);
    if let Some(g) = c.g.slot(x) {
        permute_into(dy, &out_shape, &inverse, g, true);
    }
    Ok(())
}

/// `dst[b, j, i] (=|+=) src[b, i, j]`. `// src: (B, rows, cols) -> dst: (B, cols, rows)`
/// In square tiles that stay in L1, so a large matrix is not written one cache line per value.
pub(crate) fn transpose_into(src: &[f32], dst: &mut [f32], rows: usize, cols: usize, add: bool) {
    const TILE: usize = 32;
    let m = rows * cols;
    if m == 0 {
        return;
    }
    for (s, d) in src.chunks_exact(m).zip(dst.chunks_exact_mut(m)) {
        for i0 in (0..rows).step_by(TILE) {
            for j0 in (0..cols).step_by(TILE) {
                for i in i0..(i0 + TILE).min(rows) {
                    for j in j0..(j0 + TILE).min(cols) {
                        let v = s[i * cols + j];
                        let o = &mut d[j * rows + i];
                        *o = if add { *o + v } else { v };
                    }
                }
            }
        }
    }
}

/// `dx += dy`.
pub(crate) fn reshape_backward(c: &mut Ctx, x: Var, dy: &[f32]) -> Result<()> {
    c.g.accumulate(x, dy);
    Ok(())
}

/// `dx[.., start..start + len, ..] += dy`.
pub(crate) fn narrow_backward(
    c: &mut Ctx,
    x: Var,
    axis: usize,
    start: usize,
    out: Var,
    dy: &[f32],
) -> Result<()> {
    let (outer, dim, inner) = around("narrow", c.v.shape(x), axis)?;
    let len = c.v.shape(out)[axis];
    if dim * inner == 0 {
        return Ok(());
    }
    let Some((g, fresh)) = c.g.slot_or_fresh(x) else {
        return Ok(());
    };
    let row = |(o, gx): (usize, &mut [f32])| {
        let (before, rest) = gx.split_at_mut(start * inner);
        let (part, after) = rest.split_at_mut(len * inner);
        let src = &dy[o * len * inner..][..len * inner];
        if fresh {
            // A fresh slot holds stale values: write every element once (zeros outside the part).
            before.fill(0.0);
            part.copy_from_slice(src);
            after.fill(0.0);
        } else {
            add_into(part, src);
        }
    };
    if super::split_pass(outer * dim * inner) {
        use rayon::prelude::*;
        g.par_chunks_exact_mut(dim * inner)
            .enumerate()
            .take(outer)
            .for_each(row);
    } else {
        g.chunks_exact_mut(dim * inner)
            .enumerate()
            .take(outer)
            .for_each(row);
    }
    Ok(())
}

/// Each part gets its slice of `dy` added.
pub(crate) fn concat_backward(c: &mut Ctx, parts: &[Var], axis: usize, dy: &[f32]) -> Result<()> {
    let total: usize = parts.iter().map(|&p| c.v.shape(p)[axis]).sum();
    let mut off = 0;
    for &p in parts {
        let (outer, d, inner) = around("concat", c.v.shape(p), axis)?;
        if let Some(g) = c.g.slot(p) {
            for o in 0..outer {
                let src = &dy[(o * total + off) * inner..][..d * inner];
                add_into(&mut g[o * d * inner..][..d * inner], src);
            }
        }
        off += d;
    }
    Ok(())
}

/// `dx += dy^T` (per leading index).
pub(crate) fn transpose_backward(c: &mut Ctx, x: Var, dy: &[f32]) -> Result<()> {
    let xs = c.v.shape(x);
    let (rows, cols) = (xs[xs.len() - 2], xs[xs.len() - 1]);
    if let Some(g) = c.g.slot(x) {
        // dy is (..., cols, rows): transposing it back adds into (..., rows, cols).
        transpose_into(dy, g, cols, rows, true);
    }
    Ok(())
}
