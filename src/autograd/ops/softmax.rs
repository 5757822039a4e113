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

    /// `log(sum(exp(x)))` of each row, computed around the row max (the router z-loss uses it).
    /// `// x: (..., C) -> (...)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] for a scalar or a stale handle.
    pub fn logsumexp(&mut self, x: Var) -> Result<Var> {
        let xs = self.shape(x)?.to_vec();
        let (rows, cols) = rows_cols("logsumexp", &xs)?;
        let mut y = self.pool().take(rows);
        let xv = self.arg("logsumexp", x)?.0;
        for (o, row) in y.iter_mut().zip(xv.chunks_exact(cols.max(1))) {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s: f64 = row.iter().map(|&v| f64::from((v - m).exp())).sum();
            *o = if m.is_finite() { m + s.ln() as f32 } else { m };
        }
        if cols == 0 {
            y.fill(f32::NEG_INFINITY);
        }
        Ok(self.push(y, xs[..xs.len() - 1].to_vec(), Op::LogSumExp { x }))
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

/// `dx += dy * exp(x - lse)` per row, `lse` the output `out`.
pub(crate) fn logsumexp_backward(c: &mut Ctx, x: Var, out: Var, dy: &[f32]) -> Result<()> {
    let (_, cols) = rows_cols("logsumexp", c.v.shape(x))?;
    let (xv, lse) = (c.v.get(x), c.v.get(out));
    if let Some(g) = c.g.slot(x) {
        for (((gr, xr), &l), &d) in g
            .chunks_exact_mut(cols.max(1))
            .zip(xv.chunks_exact(cols.max(1)))
            .zip(lse)
            .zip(dy)
        {
            if l.is_finite() {
                gr.iter_mut()
                    .zip(xr)
                    .for_each(|(g, &x)| *g += d * (x - l).exp());
            }
        }
    }
    Ok(())
}
