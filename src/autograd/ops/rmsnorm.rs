//! RMSNorm over the last axis, on the `rmsnorm_fwd/bwd` kernels (per-row rstd saved in f32).

use super::rows_cols;
use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var, shape_err};
use crate::tensor::Result;

/// What the backward needs: the inputs and the per-row rstd.
#[derive(Debug)]
pub(crate) struct Saved {
    pub(crate) x: Var,
    pub(crate) w: Var,
    pub(crate) rstd: Vec<f32>,
}

impl Graph {
    /// `y = x * rstd * w`, `rstd = 1 / sqrt(mean(x^2) + eps)` per row.
    /// `// x: (..., C), w: (C) -> (..., C)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `w` is not `(C)` or a handle is stale.
    pub fn rmsnorm(&mut self, x: Var, w: Var, eps: f32) -> Result<Var> {
        const OP: &str = "rmsnorm";
        let xs = self.shape(x)?.to_vec();
        let (rows, cols) = rows_cols(OP, &xs)?;
        let s = self.shape(w)?;
        if s != [cols] {
            return Err(shape_err(
                OP,
                format!("x {xs:?} needs w [{cols}], got {s:?}"),
            ));
        }
        let mut y = self.pool().take(rows * cols);
        let mut rstd = self.pool().take(rows);
        let (xv, wv) = (self.arg(OP, x)?.0, self.arg(OP, w)?.0);
        self.kernels()
            .rmsnorm_fwd(xv, wv, &mut y, &mut rstd, rows, cols, eps)?;
        if !self.records(&[x, w]) {
            self.pool().give(rstd);
            return Ok(self.push(y, xs, Op::Leaf));
        }
        Ok(self.push(y, xs, Op::RmsNorm(Saved { x, w, rstd })))
    }
}

/// The kernel adds into `dx` (the slot, or scratch) and into a zeroed scratch `dw`.
pub(crate) fn backward(c: &mut Ctx, s: &Saved, dy: &[f32]) -> Result<()> {
    let (rows, cols) = rows_cols("rmsnorm", c.v.shape(s.x))?;
    let mut dw = c.g.scratch(cols);
    dw.fill(0.0);
    let (xv, wv, r) = (c.v.get(s.x), c.v.get(s.w), &s.rstd);
    match c.g.slot(s.x) {
        Some(dx) => c.k.rmsnorm_bwd(xv, wv, r, dy, dx, &mut dw, rows, cols)?,
        None => {
            let mut dx = c.g.scratch(rows * cols);
            c.k.rmsnorm_bwd(xv, wv, r, dy, &mut dx, &mut dw, rows, cols)?;
            c.g.give(dx);
        }
    }
    if let Some(g) = c.g.slot(s.w) {
        super::add_into(g, &dw);
    }
    c.g.give(dw);
    Ok(())
}
