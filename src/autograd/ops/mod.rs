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

/// `f(&mut dst[i], src[i])` for every `i`.
///
/// Not threaded: splitting these memory-bound passes over the rayon pool was tried and, on the
/// shared 2-core box, raised the block bench's tape overhead at B4xT64 (each fork waits for a
/// descheduled worker) more than it saved at B4xT256.
pub(crate) fn zip_apply(dst: &mut [f32], src: &[f32], f: impl Fn(&mut f32, f32)) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| f(d, s));
}

/// `y[i] = f(a[i], b[i])`.
pub(crate) fn zip_map(y: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    y.iter_mut()
        .zip(a.iter().zip(b))
        .for_each(|(y, (&a, &b))| *y = f(a, b));
}

/// `dst += src`, element by element.
pub(crate) fn add_into(dst: &mut [f32], src: &[f32]) {
    zip_apply(dst, src, |d, s| *d += s);
}

/// `dst += column sums of src`: `src: (rows, cols)`, `dst: (cols)`, rows summed in order (so
/// the result does not depend on the thread count).
pub(crate) fn add_col_sums(dst: &mut [f32], src: &[f32], cols: usize) {
    if cols == 0 {
        return;
    }
    for row in src.chunks_exact(cols) {
        add_into(dst, row);
    }
}
