//! GELU (tanh approximation or exact erf), element-wise, on the `gelu_fwd/bwd` kernels.

use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var};
use crate::kernels::gelu::Gelu;
use crate::tensor::Result;

impl Graph {
    /// `x * Phi(x)` (or its tanh approximation). `// x: (...) -> (...)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when the handle is stale.
    pub fn gelu(&mut self, x: Var, kind: Gelu) -> Result<Var> {
        let shape = self.shape(x)?.to_vec();
        let n = shape.iter().product();
        let mut y = self.pool().take(n);
        let xv = self.arg("gelu", x)?.0;
        self.kernels().gelu_fwd(kind, xv, &mut y, n)?;
        Ok(self.push(y, shape, Op::Gelu { x, kind }))
    }
}

/// `dx += dy * gelu'(x)`; written instead when `x` has no gradient yet (no zeroing pass).
pub(crate) fn backward(c: &mut Ctx, x: Var, kind: Gelu, dy: &[f32]) -> Result<()> {
    if let Some((g, fresh)) = c.g.slot_or_fresh(x) {
        let n = g.len();
        if fresh {
            c.k.gelu_bwd_overwrite(kind, c.v.get(x), dy, g, n)?;
        } else {
            c.k.gelu_bwd(kind, c.v.get(x), dy, g, n)?;
        }
    }
    Ok(())
}
