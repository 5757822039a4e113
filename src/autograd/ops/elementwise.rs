//! Element-wise ops: add, mul, scale, and the broadcast add of a bias row.

use super::{rows_cols, same_shape, zip_map};
use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var, shape_err};
use crate::tensor::Result;

impl Graph {
    /// `a + b`. `// a, b: (...) -> (...)`, equal shapes.
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when the shapes differ or a handle is stale.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        self.zip("add", a, b, |x, y| x + y, Op::Add { a, b })
    }

    /// `a * b`, element-wise. `// a, b: (...) -> (...)`, equal shapes.
    ///
    /// # Errors
    /// As [`Graph::add`].
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.zip("mul", a, b, |x, y| x * y, Op::Mul { a, b })
    }

    /// `s * x`. `// x: (...) -> (...)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when the handle is stale.
    pub fn scale(&mut self, x: Var, s: f32) -> Result<Var> {
        let n = self.arg("scale", x)?.0.len();
        let mut y = self.pool().take(n);
        let (xv, shape) = self.arg("scale", x)?;
        y.iter_mut().zip(xv).for_each(|(o, v)| *o = s * v);
        let shape = shape.to_vec();
        Ok(self.push(y, shape, Op::Scale { x, s }))
    }

    /// `x + b` with the row `b` added to every row. `// x: (..., C), b: (C) -> (..., C)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `b` is not `(C)` or a handle is stale.
    pub fn add_bias(&mut self, x: Var, b: Var) -> Result<Var> {
        const OP: &str = "add_bias";
        let (xs, bs) = (self.shape(x)?.to_vec(), self.shape(b)?.to_vec());
        let (_, c) = rows_cols(OP, &xs)?;
        if bs != [c] {
            return Err(shape_err(
                OP,
                format!("x {xs:?} needs bias [{c}], got {bs:?}"),
            ));
        }
        let mut y = self.pool().take(xs.iter().product());
        let (xv, bv) = (self.arg(OP, x)?.0, self.arg(OP, b)?.0);
        for (yr, xr) in y.chunks_exact_mut(c.max(1)).zip(xv.chunks_exact(c.max(1))) {
            yr.iter_mut()
                .zip(xr.iter().zip(bv))
                .for_each(|(o, (x, b))| *o = x + b);
        }
        Ok(self.push(y, xs, Op::AddBias { x, b }))
    }

    /// Shared forward of the binary element-wise ops.
    fn zip(
        &mut self,
        op: &'static str,
        a: Var,
        b: Var,
        f: impl Fn(f32, f32) -> f32 + Sync,
        rec: Op,
    ) -> Result<Var> {
        let shape = self.shape(a)?.to_vec();
        same_shape(op, &shape, self.shape(b)?)?;
        let mut y = self.pool().take(shape.iter().product());
        let (av, bv) = (self.arg(op, a)?.0, self.arg(op, b)?.0);
        zip_map(&mut y, av, bv, f);
        Ok(self.push(y, shape, rec))
    }
}

/// `da += dy`, `db += dy`.
pub(crate) fn add_backward(c: &mut Ctx, a: Var, b: Var, dy: &[f32]) -> Result<()> {
    c.g.accumulate(a, dy);
    c.g.accumulate(b, dy);
    Ok(())
}

/// `da += dy * b`, `db += dy * a`.
pub(crate) fn mul_backward(c: &mut Ctx, a: Var, b: Var, dy: &[f32]) -> Result<()> {
    for (v, other) in [(a, b), (b, a)] {
        if let Some(g) = c.g.slot(v) {
            let o = c.v.get(other);
            g.iter_mut()
                .zip(dy.iter().zip(o))
                .for_each(|(g, (d, o))| *g += d * o);
        }
    }
    Ok(())
}

/// `dx += s * dy`.
pub(crate) fn scale_backward(c: &mut Ctx, x: Var, s: f32, dy: &[f32]) -> Result<()> {
    c.g.accumulate_with(x, dy, |d| s * d);
    Ok(())
}

/// `dx += dy`, `db += sum_rows(dy)`.
pub(crate) fn add_bias_backward(c: &mut Ctx, x: Var, b: Var, dy: &[f32]) -> Result<()> {
    c.g.accumulate(x, dy);
    let cols = c.v.shape(b)[0];
    if let Some(g) = c.g.slot(b) {
        c.k.add_col_sums(g, dy, cols)?;
    }
    Ok(())
}
