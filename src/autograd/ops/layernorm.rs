//! LayerNorm over the last axis, on the `layernorm_fwd/bwd` kernels (which save per-row mean and
//! rstd in f32 and add into `dx`, `dw`, `db`).

use super::rows_cols;
use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var, shape_err};
use crate::tensor::Result;

/// What the backward needs: the inputs and the per-row statistics.
#[derive(Debug)]
pub(crate) struct Saved {
    pub(crate) x: Var,
    pub(crate) w: Var,
    pub(crate) b: Var,
    pub(crate) mean: Vec<f32>,
    pub(crate) rstd: Vec<f32>,
}

impl Graph {
    /// `y = (x - mean) * rstd * w + b` per row. `// x: (..., C), w: (C), b: (C) -> (..., C)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `w` or `b` is not `(C)` or a handle is stale.
    pub fn layernorm(&mut self, x: Var, w: Var, b: Var, eps: f32) -> Result<Var> {
        const OP: &str = "layernorm";
        let xs = self.shape(x)?.to_vec();
        let (rows, cols) = rows_cols(OP, &xs)?;
        for (name, v) in [("w", w), ("b", b)] {
            let s = self.shape(v)?;
            if s != [cols] {
                return Err(shape_err(
                    OP,
                    format!("x {xs:?} needs {name} [{cols}], got {s:?}"),
                ));
            }
        }
        let mut y = self.pool().take(rows * cols);
        let mut mean = self.pool().take(rows);
        let mut rstd = self.pool().take(rows);
        let (xv, wv, bv) = (self.arg(OP, x)?.0, self.arg(OP, w)?.0, self.arg(OP, b)?.0);
        let k = self.kernels();
        k.layernorm_fwd(xv, wv, bv, &mut y, &mut mean, &mut rstd, rows, cols, eps)?;
        if !self.records(&[x, w, b]) {
            self.pool().give(mean);
            self.pool().give(rstd);
            return Ok(self.push(y, xs, Op::Leaf));
        }
        let s = Saved {
            x,
            w,
            b,
            mean,
            rstd,
        };
        Ok(self.push(y, xs, Op::LayerNorm(s)))
    }
}

/// The kernel adds into `dx` (the gradient slot, or scratch when `x` needs none) and into
/// zeroed scratch rows for `dw`, `db`, which are then added into their slots.
pub(crate) fn backward(c: &mut Ctx, s: &Saved, dy: &[f32]) -> Result<()> {
    let (rows, cols) = rows_cols("layernorm", c.v.shape(s.x))?;
    let mut dw = c.g.scratch(cols);
    let mut db = c.g.scratch(cols);
    dw.fill(0.0);
    db.fill(0.0);
    let (xv, wv) = (c.v.get(s.x), c.v.get(s.w));
    let (m, r) = (&s.mean, &s.rstd);
    match c.g.slot(s.x) {
        Some(dx) => {
            c.k.layernorm_bwd(xv, wv, m, r, dy, dx, &mut dw, &mut db, rows, cols)?
        }
        None => {
            let mut dx = c.g.scratch(rows * cols);
            c.k.layernorm_bwd(xv, wv, m, r, dy, &mut dx, &mut dw, &mut db, rows, cols)?;
            c.g.give(dx);
        }
    }
    for (v, d) in [(s.w, &dw), (s.b, &db)] {
        if let Some(g) = c.g.slot(v) {
            super::add_into(g, d);
        }
    }
    c.g.give(dw);
    c.g.give(db);
    Ok(())
}
