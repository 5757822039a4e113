//! SiLU (`x * sigmoid(x)`) and SwiGLU (`silu(gate) * up`), element-wise, on the kernels.

use super::same_shape;
use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var};
use crate::tensor::Result;

impl Graph {
    /// `x * sigmoid(x)`. `// x: (...) -> (...)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when the handle is stale.
    pub fn silu(&mut self, x: Var) -> Result<Var> {
        let shape = self.shape(x)?.to_vec();
        let n = shape.iter().product();
        let mut y = self.pool().take(n);
        let xv = self.arg("silu", x)?.0;
        self.kernels().silu_fwd(xv, &mut y, n)?;
        Ok(self.push(y, shape, Op::Silu { x }))
    }

    /// `silu(gate) * up`. `// gate, up: (..., FF) -> (..., FF)`, equal shapes.
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when the shapes differ or a handle is stale.
    pub fn swiglu(&mut self, gate: Var, up: Var) -> Result<Var> {
        let shape = self.shape(gate)?.to_vec();
        same_shape("swiglu", &shape, self.shape(up)?)?;
        let n = shape.iter().product();
        let mut y = self.pool().take(n);
        let (gv, uv) = (self.arg("swiglu", gate)?.0, self.arg("swiglu", up)?.0);
        self.kernels().swiglu_fwd(gv, uv, &mut y, n)?;
        Ok(self.push(y, shape, Op::SwiGlu { gate, up }))
    }
}

/// `dx += dy * silu'(x)`.
pub(crate) fn silu_backward(c: &mut Ctx, x: Var, dy: &[f32]) -> Result<()> {
    if let Some(g) = c.g.slot(x) {
        let n = g.len();
        c.k.silu_bwd(c.v.get(x), dy, g, n)?;
    }
    Ok(())
}

/// `dgate += dy * up * silu'(gate)`, `dup += dy * silu(gate)`. The kernel writes both at once;
/// `dup` goes through a buffer of its own so that `gate` and `up` may be the same value.
pub(crate) fn swiglu_backward(c: &mut Ctx, gate: Var, up: Var, dy: &[f32]) -> Result<()> {
    let n = dy.len();
    // `up`'s part goes to a buffer of its own, then to its gradient (taken over when `up` has
    // none yet). When `gate` has no gradient yet either (the usual case: gate and up are fresh
    // products), both are written, with no zeroing pass and no read of zeros.
    let mut dup = c.g.scratch(n);
    let (gv, uv) = (c.v.get(gate), c.v.get(up));
    match c.g.slot_or_fresh(gate) {
        Some((dg, true)) => c.k.swiglu_bwd_overwrite(gv, uv, dy, dg, &mut dup, n)?,
        Some((dg, false)) => {
            dup.fill(0.0);
            c.k.swiglu_bwd(gv, uv, dy, dg, &mut dup, n)?;
        }
        None => {
            let mut dg = c.g.scratch(n);
            c.k.swiglu_bwd_overwrite(gv, uv, dy, &mut dg, &mut dup, n)?;
            c.g.give(dg);
        }
    }
    c.g.accumulate_owned(up, dup);
    Ok(())
}
