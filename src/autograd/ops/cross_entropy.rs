//! Mean cross-entropy of logits against token ids, fused with the log-softmax, on the
//! `cross_entropy_fwd/bwd` kernels (per-row log-sum-exp saved in f32; rows whose target is
//! `ignore_index` count for nothing).

use super::rows_cols;
use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var, shape_err};
use crate::tensor::Result;

/// What the backward needs.
#[derive(Debug)]
pub(crate) struct Saved {
    pub(crate) logits: Var,
    pub(crate) targets: Vec<u32>,
    pub(crate) lse: Vec<f32>,
    pub(crate) ignore_index: u32,
}

impl Graph {
    /// Mean cross-entropy over the rows whose target is not `ignore_index`.
    /// `// logits: (..., V), targets: (...) -> ()`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `targets` does not hold one id per row or the handle
    /// is stale; [`crate::tensor::Error::Kernel`] naming a target `>= V`.
    pub fn cross_entropy(
        &mut self,
        logits: Var,
        targets: &[u32],
        ignore_index: u32,
    ) -> Result<Var> {
        const OP: &str = "cross_entropy";
        let ls = self.shape(logits)?.to_vec();
        let (rows, v) = rows_cols(OP, &ls)?;
        if targets.len() != rows {
            let n = targets.len();
            return Err(shape_err(
                OP,
                format!("logits {ls:?} have {rows} rows, got {n} targets"),
            ));
        }
        let mut lse = self.pool().take(rows);
        let lv = self.arg(OP, logits)?.0;
        let loss =
            self.kernels()
                .cross_entropy_fwd(lv, targets, &mut lse, rows, v, ignore_index)?;
        let mut y = self.pool().take(1);
        y[0] = loss;
        if !self.records(&[logits]) {
            self.pool().give(lse);
            return Ok(self.push(y, vec![], Op::Leaf));
        }
        let targets = targets.to_vec();
        let s = Saved {
            logits,
            targets,
            lse,
            ignore_index,
        };
        Ok(self.push(y, vec![], Op::CrossEntropy(s)))
    }
}

/// `dlogits += (softmax - onehot) * dloss / count` on counted rows; written instead when the
/// logits have no gradient yet (no zeroing pass over `rows x vocab`).
pub(crate) fn backward(c: &mut Ctx, s: &Saved, dy: &[f32]) -> Result<()> {
    let (rows, v) = rows_cols("cross_entropy", c.v.shape(s.logits))?;
    if let Some((g, fresh)) = c.g.slot_or_fresh(s.logits) {
        let lv = c.v.get(s.logits);
        let (t, lse, ig) = (&s.targets, &s.lse, s.ignore_index);
        if fresh {
            c.k.cross_entropy_bwd_overwrite(lv, t, lse, dy[0], g, rows, v, ig)?;
        } else {
            c.k.cross_entropy_bwd(lv, t, lse, dy[0], g, rows, v, ig)?;
        }
    }
    Ok(())
}
