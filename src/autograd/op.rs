//! The op enum (inputs plus what each backward needs) and the backward dispatch: one line per
//! op, no math here; each rule lives beside its forward in `ops/<family>.rs`.

use super::ops::{
    attention, cross_entropy, dropout, elementwise, embedding, gather, gelu, grouped, layernorm,
    matmul, reduce, rmsnorm, rope, shape, silu, softmax,
};
use super::pool::Pool;
use super::{Grads, Vals, Var};
use crate::kernels::Kernels;
use crate::kernels::gelu::Gelu;
use crate::tensor::Result;

/// A recorded op. Shapes are read from the input nodes at backward time.
#[derive(Debug)]
pub(crate) enum Op {
    /// An input, a parameter, or a value computed without recording.
    Leaf,
    MatMul {
        a: Var,
        b: Var,
    },
    Linear {
        x: Var,
        w: Var,
        b: Option<Var>,
        /// `w` stored `(IN, OUT)` (GPT-2's `Conv1D`) rather than `(OUT, IN)`.
        in_out: bool,
    },
    Add {
        a: Var,
        b: Var,
    },
    Mul {
        a: Var,
        b: Var,
    },
    Scale {
        x: Var,
        s: f32,
    },
    AddBias {
        x: Var,
        b: Var,
    },
    Embedding {
        table: Var,
        ids: Vec<u32>,
    },
    LayerNorm(layernorm::Saved),
    RmsNorm(rmsnorm::Saved),
    Sum {
        x: Var,
    },
    Mean {
        x: Var,
    },
    Reshape {
        x: Var,
    },
    Narrow {
        x: Var,
        axis: usize,
        start: usize,
    },
    Concat {
        parts: Vec<Var>,
        axis: usize,
    },
    Transpose {
        x: Var,
    },
    Permute {
        x: Var,
        axes: Vec<usize>,
    },
    IndexSelect {
        x: Var,
        rows: Vec<u32>,
    },
    IndexAdd {
        src: Var,
        rows: Vec<u32>,
    },
    Take {
        x: Var,
        cols: Vec<u32>,
    },
    ScaleRows {
        x: Var,
        w: Var,
    },
    LinearGrouped {
        x: Var,
        ws: Vec<Var>,
        groups: Vec<usize>,
    },
    IndexAddScaled {
        parts: Vec<Var>,
        w: Var,
        slots: Vec<Vec<u32>>,
        k: usize,
    },
    Dropout {
        x: Var,
        mask: Vec<f32>,
    },
    Softmax {
        x: Var,
    },
    LogSumExp {
        x: Var,
    },
    CrossEntropy(cross_entropy::Saved),
    Gelu {
        x: Var,
        kind: Gelu,
    },
    Silu {
        x: Var,
    },
    SwiGlu {
        gate: Var,
        up: Var,
    },
    Attention(attention::Saved),
    Rope(rope::Saved),
}

impl Op {
    /// The inputs, for deciding whether the result needs a gradient.
    pub(crate) fn inputs(&self) -> Vec<Var> {
        match self {
            Op::Leaf => vec![],
            Op::MatMul { a, b } | Op::Add { a, b } | Op::Mul { a, b } => vec![*a, *b],
            Op::Linear { x, w, b, .. } => [Some(*x), Some(*w), *b].into_iter().flatten().collect(),
            Op::AddBias { x, b } => vec![*x, *b],
            Op::ScaleRows { x, w } => vec![*x, *w],
            Op::IndexAdd { src, .. } => vec![*src],
            Op::Embedding { table, .. } => vec![*table],
            Op::LayerNorm(s) => vec![s.x, s.w, s.b],
            Op::RmsNorm(s) => vec![s.x, s.w],
            Op::Scale { x, .. }
            | Op::Sum { x }
            | Op::Mean { x }
            | Op::Reshape { x }
            | Op::Narrow { x, .. }
            | Op::Transpose { x }
            | Op::Permute { x, .. }
            | Op::IndexSelect { x, .. }
            | Op::Take { x, .. }
            | Op::Dropout { x, .. }
            | Op::Softmax { x }
            | Op::LogSumExp { x }
            | Op::Gelu { x, .. }
            | Op::Silu { x } => vec![*x],
            Op::CrossEntropy(s) => vec![s.logits],
            Op::SwiGlu { gate, up } => vec![*gate, *up],
            Op::Concat { parts, .. } => parts.clone(),
            Op::LinearGrouped { x, ws, .. } => [x].into_iter().chain(ws).copied().collect(),
            Op::IndexAddScaled { parts, w, .. } => parts.iter().chain([w]).copied().collect(),
            Op::Attention(s) => vec![s.q, s.k, s.v],
            Op::Rope(s) => vec![s.x],
        }
    }

    /// Returns saved f32 buffers to the pool.
    pub(crate) fn recycle(self, pool: &mut Pool) {
        match self {
            Op::LayerNorm(s) => {
                pool.give(s.mean);
                pool.give(s.rstd);
            }
            Op::RmsNorm(s) => pool.give(s.rstd),
            Op::Dropout { mask, .. } => pool.give(mask),
            Op::CrossEntropy(s) => pool.give(s.lse),
            Op::Attention(s) => pool.give(s.lse),
            _ => {}
        }
    }
}

/// What every backward rule receives: the kernels, all values (read-only) and the gradient slots.
pub(crate) struct Ctx<'a, 'v, 'g> {
    pub(crate) k: Kernels,
    pub(crate) v: &'a Vals<'v>,
    pub(crate) g: &'a mut Grads<'g>,
}

/// Runs the backward of `op`, whose output `out` has gradient `dy`, adding into its inputs'.
pub(crate) fn backward(
    op: &Op,
    k: Kernels,
    v: &Vals,
    g: &mut Grads,
    out: Var,
    dy: &[f32],
) -> Result<()> {
    let c = &mut Ctx { k, v, g };
    match op {
        Op::Leaf => Ok(()),
        Op::MatMul { a, b } => matmul::matmul_backward(c, *a, *b, dy),
        Op::Linear { x, w, b, in_out } => matmul::linear_backward(c, *x, *w, *b, *in_out, dy),
        Op::Add { a, b } => elementwise::add_backward(c, *a, *b, dy),
        Op::Mul { a, b } => elementwise::mul_backward(c, *a, *b, dy),
        Op::Scale { x, s } => elementwise::scale_backward(c, *x, *s, dy),
        Op::AddBias { x, b } => elementwise::add_bias_backward(c, *x, *b, dy),
        Op::Embedding { table, ids } => embedding::backward(c, *table, ids, dy),
        Op::LayerNorm(s) => layernorm::backward(c, s, dy),
        Op::RmsNorm(s) => rmsnorm::backward(c, s, dy),
        Op::Sum { x } => reduce::sum_backward(c, *x, dy),
        Op::Mean { x } => reduce::mean_backward(c, *x, dy),
        Op::Reshape { x } => shape::reshape_backward(c, *x, dy),
        Op::Narrow { x, axis, start } => shape::narrow_backward(c, *x, *axis, *start, out, dy),
        Op::Concat { parts, axis } => shape::concat_backward(c, parts, *axis, dy),
        Op::Transpose { x } => shape::transpose_backward(c, *x, dy),
        Op::Permute { x, axes } => shape::permute_backward(c, *x, axes, dy),
        Op::IndexSelect { x, rows } => gather::index_select_backward(c, *x, rows, dy),
        Op::IndexAdd { src, rows } => gather::index_add_backward(c, *src, rows, dy),
        Op::Take { x, cols } => gather::take_backward(c, *x, cols, out, dy),
        Op::ScaleRows { x, w } => gather::scale_rows_backward(c, *x, *w, dy),
        Op::LinearGrouped { x, ws, groups } => {
            grouped::linear_grouped_backward(c, *x, ws, groups, dy)
        }
        Op::IndexAddScaled { parts, w, slots, k } => {
            gather::index_add_scaled_backward(c, parts, *w, slots, *k, dy)
        }
        Op::Dropout { x, mask } => dropout::backward(c, *x, mask, dy),
        Op::Softmax { x } => softmax::backward(c, *x, out, dy),
        Op::LogSumExp { x } => softmax::logsumexp_backward(c, *x, out, dy),
        Op::CrossEntropy(s) => cross_entropy::backward(c, s, dy),
        Op::Gelu { x, kind } => gelu::backward(c, *x, *kind, dy),
        Op::Silu { x } => silu::silu_backward(c, *x, dy),
        Op::SwiGlu { gate, up } => silu::swiglu_backward(c, *gate, *up, dy),
        Op::Attention(s) => attention::backward(c, s, out, dy),
        Op::Rope(s) => rope::backward(c, s, dy),
    }
}
