//! The ops, one family per file: each holds its forwards (methods on [`Graph`](super::Graph))
//! and their handwritten backward rules, which ADD into the input gradients.

pub mod attention;
pub mod cross_entropy;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod gather;
pub mod gelu;
pub mod grouped;
pub mod layernorm;
pub mod matmul;
pub mod qlinear;
pub mod reduce;
pub mod rmsnorm;
pub mod rope;
pub mod shape;
pub mod silu;
pub mod softmax;

use super::shape_err;
use crate::tensor::Result;

/// Checks that two shapes are equal.
pub(crate) fn same_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(shape_err(op, format!("shapes {a:?} and {b:?} differ")))
    }
}

/// `(rows, cols)` of a shape read as rows of its last axis: `(..., C) -> (prod(...), C)`.
pub(crate) fn rows_cols(op: &'static str, shape: &[usize]) -> Result<(usize, usize)> {
    match shape.split_last() {
        Some((&c, lead)) => Ok((lead.iter().product(), c)),
        None => Err(shape_err(
            op,
            "needs at least one axis, got a scalar".into(),
        )),
    }
}

/// `(outer, dim, inner)` around `axis`: the shape read as `(outer, dim, inner)`.
pub(crate) fn around(
    op: &'static str,
    shape: &[usize],
    axis: usize,
) -> Result<(usize, usize, usize)> {
    if axis >= shape.len() {
        return Err(shape_err(
            op,
            format!("axis {axis} out of range for shape {shape:?}"),
        ));
    }
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    Ok((outer, shape[axis], inner))
}

/// From this many elements (256 KiB of f32) the tape's memory-bound passes (gradient
/// accumulation, the binary element-wise ops, zeroed gradient buffers, `narrow` and its backward)
/// are split between the rayon threads, in tasks of [`PAR_CHUNK`] elements; below it they run on
/// the calling thread, where a fork would cost more than it saves (the thresholds of the kernels'
/// own element-wise split, `anvil_kernels::par`, which is private to that crate). Each element
/// is computed alone, so the split changes no bit. Measured in one process, the same step with and without the split
/// alternated (2 threads): tiny-GPT training 1.012-1.043x, GPT-2 124M training 1.015-1.019x, the
/// tiny MoE 1.002x, the block bench at B4xT64 1.011-1.012x and at B4xT256 1.010x. (An earlier
/// split, judged by the block bench's tape-overhead figure from run to run, had looked like a loss
/// at B4xT64.)
const PAR_MIN: usize = 64 * 1024;

/// Elements per task of a split pass (64 KiB of f32).
pub(crate) const PAR_CHUNK: usize = 16 * 1024;

/// Whether a pass over `n` elements is split between threads (see [`PAR_MIN`]).
pub(crate) fn split_pass(n: usize) -> bool {
    n >= PAR_MIN && rayon::current_num_threads() > 1
}

/// Zeroes `g` (split between threads from [`PAR_MIN`] elements).
pub(crate) fn zero_fill(g: &mut [f32]) {
    if split_pass(g.len()) {
        use rayon::prelude::*;
        g.par_chunks_mut(PAR_CHUNK).for_each(|c| c.fill(0.0));
    } else {
        g.fill(0.0);
    }
}

/// `f(&mut dst[i], src[i])` for every `i` (split between threads from [`PAR_MIN`] elements).
pub(crate) fn zip_apply(dst: &mut [f32], src: &[f32], f: impl Fn(&mut f32, f32) + Sync) {
    if split_pass(dst.len()) {
        use rayon::prelude::*;
        dst.par_chunks_mut(PAR_CHUNK)
            .zip(src.par_chunks(PAR_CHUNK))
            .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &s)| f(d, s)));
        return;
    }
    dst.iter_mut().zip(src).for_each(|(d, &s)| f(d, s));
}

/// `y[i] = f(a[i], b[i])` (split between threads from [`PAR_MIN`] elements).
pub(crate) fn zip_map(y: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    if split_pass(y.len()) {
        use rayon::prelude::*;
        y.par_chunks_mut(PAR_CHUNK)
            .zip(a.par_chunks(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK)))
            .for_each(|(y, (a, b))| {
                y.iter_mut()
                    .zip(a.iter().zip(b))
                    .for_each(|(y, (&a, &b))| *y = f(a, b))
            });
        return;
    }
    y.iter_mut()
        .zip(a.iter().zip(b))
        .for_each(|(y, (&a, &b))| *y = f(a, b));
}

/// `dst += src`, element by element.
pub(crate) fn add_into(dst: &mut [f32], src: &[f32]) {
    zip_apply(dst, src, |d, s| *d += s);
}
