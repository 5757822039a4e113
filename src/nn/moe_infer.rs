//! The mixture's experts for a few tokens when nothing is recorded (a decode step): the same
//! products as the graph path of [`Moe::forward`], without its gather, scale, concat and
//! index-add nodes, and with the gate and up weights of every chosen expert applied in one
//! parallel region, then every down weight in a second ([`Kernels::sgemm_many`]): two fork-joins
//! per layer instead of three per chosen expert. [`linears_no_grad`] does the same for an
//! attention's separate query, key and value projections.
//!
//! Bit-identical to the graph path: each product is the GEMM `Linear::forward` runs on the same
//! rows (`sgemm_many` computes every job as `sgemm` does), SwiGLU is the same kernel, each row is
//! scaled by its routing weight in its own rounding (as `scale_rows`), and the rows are added
//! into zeros expert by expert, each expert's slots in order (as `index_add` over the concat).

use super::{Linear, Moe};
use crate::autograd::{Graph, Var};
use crate::kernels::{GemmJob, MatMut, MatRef};
use crate::models::Result;

/// Tokens up to which the fast path runs: the GEMV-like products of a decode step (the kernels'
/// skinny path reads weights in place up to 8 rows). Longer inputs (a prompt) take the graph path.
const MAX_TOKENS: usize = 8;

/// `y: (n, d)`, the sum over the kept slots of each token of its routing weight times its
/// expert's output, or `None` when the fast path does not apply (ops recorded, more than
/// [`MAX_TOKENS`] tokens, no slot kept, `d == 0`, or an expert with a bias or int8 weights) and
/// the caller runs the graph path. `// flat: (n, d), weights: (n * k), kept[e]: slots t * k + j`
///
/// # Errors
/// Shape errors from the graph or the kernels.
pub(super) fn experts_no_grad(
    g: &mut Graph,
    moe: &Moe,
    flat: Var,
    weights: Var,
    kept: &[Vec<u32>],
) -> Result<Option<Var>> {
    let shape = g.shape(flat)?.to_vec();
    let (n, d) = (shape[0], shape[1]);
    let k = moe.routing.top_k.max(1);
    let used: Vec<usize> = (0..kept.len()).filter(|&e| !kept[e].is_empty()).collect();
    if g.grad_enabled()
        || n > MAX_TOKENS
        || d == 0
        || used.is_empty()
        || used.iter().any(|&e| {
            let x = &moe.experts[e];
            ![&x.gate, &x.up, &x.down].iter().all(|l| l.is_bare_f32())
        })
    {
        return Ok(None);
    }
    let xv = g.value(flat)?;
    // Each chosen expert's tokens, gathered: (m_e, d).
    let xs: Vec<Vec<f32>> = used
        .iter()
        .map(|&e| {
            kept[e]
                .iter()
                .flat_map(|&s| &xv[s as usize / k * d..][..d])
                .copied()
                .collect()
        })
        .collect();
    // Each chosen expert's width: (m_e, ff_e) for its gate, up and SwiGLU.
    let ffs = used
        .iter()
        .map(|&e| Ok(g.param_tensor(moe.experts[e].gate.w)?.numel() / d.max(1)))
        .collect::<Result<Vec<usize>>>()?;
    let sized = |w: &[usize]| -> Vec<Vec<f32>> {
        used.iter()
            .zip(w)
            .map(|(&e, &c)| vec![0.0; kept[e].len() * c])
            .collect()
    };
    let mut gates = sized(&ffs);
    let mut ups = gates.clone();
    let mut jobs = Vec::with_capacity(2 * used.len());
    for ((i, &e), (gate, up)) in used.iter().enumerate().zip(gates.iter_mut().zip(&mut ups)) {
        let (m, ex) = (kept[e].len(), &moe.experts[e]);
        jobs.push(job(g, &ex.gate, &xs[i], m, d, ffs[i], gate)?);
        jobs.push(job(g, &ex.up, &xs[i], m, d, ffs[i], up)?);
    }
    g.kernels().sgemm_many(&mut jobs)?;
    drop(jobs);
    let mut hs = Vec::with_capacity(used.len());
    for (gate, up) in gates.iter().zip(&ups) {
        let mut h = vec![0.0; gate.len()];
        g.kernels().swiglu_fwd(gate, up, &mut h, gate.len())?;
        hs.push(h);
    }
    let mut outs = sized(&vec![d; used.len()]);
    let mut jobs = Vec::with_capacity(used.len());
    for ((i, &e), out) in used.iter().enumerate().zip(&mut outs) {
        let m = kept[e].len();
        jobs.push(job(g, &moe.experts[e].down, &hs[i], m, ffs[i], d, out)?);
    }
    g.kernels().sgemm_many(&mut jobs)?;
    drop(jobs);
    let y = combine(g.value(weights)?, &used, kept, &outs, n, d, k);
    let y = g.pool().copy_of(&y);
    Ok(Some(g.leaf(y, vec![n, d], false)))
}

/// `y[t] = sum of w[s] * out_e[r]` over each used expert `e` in order and its slots `s` (of
/// token `t = s / k`) in order, `out_e[r]` the expert's row for the slot: every scaled row
/// rounds on its own before it is added into zeros, as `scale_rows` then `index_add`.
/// `// w: (n * k), outs[i]: (m_e, d) -> (n, d)`
fn combine(
    w: &[f32],
    used: &[usize],
    kept: &[Vec<u32>],
    outs: &[Vec<f32>],
    n: usize,
    d: usize,
    k: usize,
) -> Vec<f32> {
    let mut y = vec![0.0f32; n * d];
    for (&e, out) in used.iter().zip(outs) {
        for (&s, row) in kept[e].iter().zip(out.chunks_exact(d)) {
            let ws = w[s as usize];
            let dst = &mut y[s as usize / k * d..][..d];
            dst.iter_mut().zip(row).for_each(|(o, &v)| *o += ws * v);
        }
    }
    y
}

/// The job `c = x W^T` (or `x W` for a weight stored `(in, out)`), as `Linear::forward` runs it.
/// `// x: (m, inp), w: (out, inp) -> c: (m, out)`
fn job<'a>(
    g: &'a Graph,
    l: &Linear,
    x: &'a [f32],
    m: usize,
    inp: usize,
    out: usize,
    c: &'a mut [f32],
) -> Result<GemmJob<'a>> {
    let w = g.param_tensor(l.w)?.as_slice();
    let b = if l.in_out {
        MatRef::new(w, inp, out, out)
    } else {
        MatRef::new(w, out, inp, inp).t()
    };
    Ok(GemmJob {
        alpha: 1.0,
        a: MatRef::new(x, m, inp, inp),
        b,
        beta: 0.0,
        c: MatMut::new(c, m, out, out),
    })
}

/// `x W_i^T` for each Linear of `ls` when nothing is recorded and `x` has at most
/// [`MAX_TOKENS`] rows: every product in one parallel region ([`Kernels::sgemm_many`]), so an
/// attention's separate query, key and value projections of a decode step cost one fork-join, not
/// three. The bits of `Linear::forward` on each. `None` (nothing run) when recording, for more
/// rows, or when a Linear has a bias or int8 weights: the caller then runs each `forward`.
/// `// x: (..., in) -> [(..., out_i)]`
///
/// # Errors
/// Shape errors from the graph or the kernels.
///
/// [`Kernels::sgemm_many`]: crate::kernels::Kernels::sgemm_many
pub(super) fn linears_no_grad(g: &mut Graph, ls: &[&Linear], x: Var) -> Result<Option<Vec<Var>>> {
    let shape = g.shape(x)?.to_vec();
    let inp = shape.last().copied().unwrap_or(0);
    let rows = shape.iter().rev().skip(1).product::<usize>();
    if g.grad_enabled() || rows > MAX_TOKENS || inp == 0 || !ls.iter().all(|l| l.is_bare_f32()) {
        return Ok(None);
    }
    let outs = ls
        .iter()
        .map(|l| Ok(g.param_tensor(l.w)?.numel() / inp))
        .collect::<Result<Vec<usize>>>()?;
    let mut ys: Vec<Vec<f32>> = outs.iter().map(|&o| g.pool().take(rows * o)).collect();
    let xv = g.value(x)?;
    let mut jobs = Vec::with_capacity(ls.len());
    for ((l, &o), y) in ls.iter().zip(&outs).zip(&mut ys) {
        jobs.push(job(g, l, xv, rows, inp, o, y)?);
    }
    g.kernels().sgemm_many(&mut jobs)?;
    drop(jobs);
    Ok(Some(
        ys.into_iter()
            .zip(outs)
            .map(|(y, o)| {
                let mut s = shape.clone();
                if let Some(last) = s.last_mut() {
                    *last = o;
                }
                g.leaf(y, s, false)
            })
            .collect(),
    ))
}
