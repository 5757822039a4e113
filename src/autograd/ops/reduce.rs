//! Reductions to a scalar: `sum` and `mean` over every element.
//!
//! The forward accumulates in f64, in element order, then rounds once to f32: deterministic and
//! accurate to about one f32 ulp for the sizes a loss sums.

use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var, shape_err};
use crate::tensor::Result;

impl Graph {
    /// The sum of all elements. `// x: (...) -> ()`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when the handle is stale.
    pub fn sum(&mut self, x: Var) -> Result<Var> {
        let s: f64 = self.arg("sum", x)?.0.iter().map(|&v| f64::from(v)).sum();
        let mut y = self.pool().take(1);
        y[0] = s as f32;
        Ok(self.push(y, vec![], Op::Sum { x }))
    }

    /// The mean of all elements. `// x: (...) -> ()`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `x` is empty or the handle is stale.
    pub fn mean(&mut self, x: Var) -> Result<Var> {
        let xv = self.arg("mean", x)?.0;
        if xv.is_empty() {
            return Err(shape_err("mean", "the mean of no elements".into()));
        }
        let s: f64 = xv.iter().map(|&v| f64::from(v)).sum();
        let n = xv.len() as f64;
        let mut y = self.pool().take(1);
        y[0] = (s / n) as f32;
        Ok(self.push(y, vec![], Op::Mean { x }))
    }
}

/// `dx += dy` (broadcast).
pub(crate) fn sum_backward(c: &mut Ctx, x: Var, dy: &[f32]) -> Result<()> {
    if let Some(g) = c.g.slot(x) {
        g.iter_mut().for_each(|g| *g += dy[0]);
    }
    Ok(())
}

/// `dx += dy / n` (broadcast).
pub(crate) fn mean_backward(c: &mut Ctx, x: Var, dy: &[f32]) -> Result<()> {
    if let Some(g) = c.g.slot(x) {
        let d = dy[0] / g.len() as f32;
        g.iter_mut().for_each(|g| *g += d);
    }
    Ok(())
}
