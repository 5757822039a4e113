//! Rotary position embedding (rotate-half, HF LLaMA) on the `rope_fwd/bwd` kernels. Heads stay
//! packed in the last axis as a `linear` gives them: `x: (B, T, H * D)` with the head size `D`
//! given. Saved: the positions (backward rotates `dy` by `-angle`).

use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var, shape_err};
use crate::kernels::rope::RopeDims;
use crate::tensor::Result;

/// What the backward needs.
#[derive(Debug)]
pub(crate) struct Saved {
    pub(crate) x: Var,
    pub(crate) dims: RopeDims,
    pub(crate) positions: Vec<u32>,
    pub(crate) theta: f32,
}

impl Graph {
    /// RoPE over heads of size `head_dim`. `// x: (B, T, H*D) -> (B, T, H*D)`; `positions` holds
    /// `T` positions (shared by the batch) or `B * T` (one per token); `theta` is the config's
    /// `rope_theta` (10000 for LLaMA 2).
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `x` is not 3-D, its last axis not a multiple of an
    /// even `head_dim`, or a handle is stale; [`crate::tensor::Error::Kernel`] for a positions
    /// list of another length.
    pub fn rope(&mut self, x: Var, head_dim: usize, positions: &[u32], theta: f32) -> Result<Var> {
        const OP: &str = "rope";
        let xs = self.shape(x)?.to_vec();
        let ok = xs.len() == 3 && head_dim > 0 && head_dim.is_multiple_of(2);
        if !ok || !xs[2].is_multiple_of(head_dim) {
            return Err(shape_err(
                OP,
                format!("x {xs:?} needs (B, T, H * D) with D = {head_dim} even"),
            ));
        }
        let dims = RopeDims {
            n: xs[0],
            t: xs[1],
            h: xs[2] / head_dim,
            d: head_dim,
        };
        let mut y = self.pool().take(xs.iter().product());
        let xv = self.arg(OP, x)?.0;
        self.kernels()
            .rope_fwd(xv, &mut y, dims, positions, theta)?;
        let op = Op::Rope(Saved {
            x,
            dims,
            positions: positions.to_vec(),
            theta,
        });
        Ok(self.push(y, xs, op))
    }
}

/// `dx += rope^T(dy)`.
pub(crate) fn backward(c: &mut Ctx, s: &Saved, dy: &[f32]) -> Result<()> {
    if let Some(g) = c.g.slot(s.x) {
        c.k.rope_bwd(dy, g, s.dims, &s.positions, s.theta)?;
    }
    Ok(())
}
