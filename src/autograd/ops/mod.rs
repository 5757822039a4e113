//! The ops, one family per file: each holds its forwards (methods on [`Graph`](super::Graph))
//! and their handwritten backward rules, which ADD into the input gradients.

pub mod attention;
pub mod cross_entropy;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod gather;
pub mod gelu;
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

/// Below this many elements an element-wise pass runs on the calling thread (a rayon fork costs
/// a few microseconds; 64 Ki elements is 256 KiB per operand).
const PAR_MIN: usize = 64 * 1024;
/// Elements per rayon task once split.
const PAR_CHUNK: usize = 16 * 1024;

/// `f(&mut dst[i], src[i])` for every `i`, split over the rayon pool for long slices. Each
/// element is computed the same way whichever thread runs it: the same bits for any thread
/// count.
pub(crate) fn zip_apply(dst: &mut [f32], src: &[f32], f: impl Fn(&mut f32, f32) + Sync) {
    use rayon::prelude::*;
    let run = |d: &mut [f32], s: &[f32]| d.iter_mut().zip(s).for_each(|(d, &s)| f(d, s));
    if dst.len() < PAR_MIN || rayon::current_num_threads() <= 1 {
        run(dst, src);
    } else {
        dst.par_chunks_mut(PAR_CHUNK)
            .zip(src.par_chunks(PAR_CHUNK))
            .for_each(|(d, s)| run(d, s));
    }
}

/// `y[i] = f(a[i], b[i])`, split over the rayon pool as [`zip_apply`].
pub(crate) fn zip_map(y: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    use rayon::prelude::*;
    let run = |y: &mut [f32], a: &[f32], b: &[f32]| {
        y.iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(y, (&a, &b))| *y = f(a, b))
    };
    if y.len() < PAR_MIN || rayon::current_num_threads() <= 1 {
        run(y, a, b);
    } else {
        y.par_chunks_mut(PAR_CHUNK)
            .zip(a.par_chunks(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK)))
            .for_each(|(y, (a, b))| run(y, a, b));
    }
}

/// `dst += src`, element by element.
pub(crate) fn add_into(dst: &mut [f32], src: &[f32]) {
    zip_apply(dst, src, |d, s| *d += s);
}

/// `dst += column sums of src`: `src: (rows, cols)`, `dst: (cols)`. Each column is summed over
/// the rows in order by one thread (columns are split between threads, never rows), so the
/// result does not depend on the thread count.
pub(crate) fn add_col_sums(dst: &mut [f32], src: &[f32], cols: usize) {
    use rayon::prelude::*;
    /// Columns per task: 1 KiB of each row.
    const COLS: usize = 256;
    if cols == 0 {
        return;
    }
    let sum = |d: &mut [f32], c0: usize| {
        let w = d.len();
        for row in src.chunks_exact(cols) {
            d.iter_mut()
                .zip(&row[c0..c0 + w])
                .for_each(|(d, s)| *d += s);
        }
    };
    if src.len() < PAR_MIN || cols <= COLS || rayon::current_num_threads() <= 1 {
        sum(dst, 0);
    } else {
        dst.par_chunks_mut(COLS)
            .enumerate()
            .for_each(|(i, d)| sum(d, i * COLS));
    }
}
