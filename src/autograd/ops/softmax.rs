//! Softmax over the last axis, plain or with a causal (optionally sliding-window) mask, on the
//! `softmax_fwd` / `softmax_masked_fwd` / `softmax_bwd` kernels. The backward needs only the
//! output `y` (`dx += y * (dy - sum(dy * y))`), which is the node's own value: nothing is saved.

use super::rows_cols;
use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var};
use crate::kernels::softmax::CausalMask;
use crate::tensor::Result;

impl Graph {
    /// Row softmax. `// x: (..., C) -> (..., C)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] for a scalar or a stale handle.
    pub fn softmax(&mut self, x: Var) -> Result<Var> {
        self.softmax_impl(x, None)
    }

    /// Row softmax with a causal mask; masked entries are exactly 0.
    /// `// x: (B, NH, T, Tk) -> (B, NH, T, Tk)` with `mask.block_rows = T`.
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] for a scalar or a stale handle.
    pub fn softmax_causal(&mut self, x: Var, mask: CausalMask) -> Result<Var> {
        self.softmax_impl(x, Some(mask))
    }

    fn softmax_impl(&mut self, x: Var, mask: Option<CausalMask>) -> Result<Var> {
        let xs = self.shape(x)?.to_vec();
        let (rows, cols) = rows_cols("softmax", &xs)?;
        let mut y = self.pool().take(rows * cols);
        let xv = self.arg("softmax", x)?.0;
        let k = self.kernels();
        match mask {
            None => k.softmax_fwd(xv, &mut y, rows, cols)?,
            Some(m) => k.softmax_masked_fwd(xv, &mut y, rows, cols, m)?,
        }
        Ok(self.push(y, xs, Op::Softmax { x }))
    }
}

/// `dx += y * (dy - sum(dy * y))` per row, `y` the output `out`.
pub(crate) fn backward(c: &mut Ctx, x: Var, out: Var, dy: &[f32]) -> Result<()> {
    let (rows, cols) = rows_cols("softmax", c.v.shape(x))?;
    if let Some(g) = c.g.slot(x) {
        c.k.softmax_bwd(c.v.get(out), dy, g, rows, cols)?;
    }
    Ok(())
}
