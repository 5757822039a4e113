//! Embedding lookup: rows of a table gathered by token id; backward scatter-adds.

use super::rows_cols;
use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var, shape_err};
use crate::tensor::Result;

impl Graph {
    /// Rows `table[ids]`, laid out as `ids_shape`. `// table: (V, C), ids: (...) -> (..., C)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `table` is not 2-D, `ids` does not fill `ids_shape`,
    /// an id is `>= V`, or the handle is stale.
    pub fn embedding(&mut self, table: Var, ids: &[u32], ids_shape: &[usize]) -> Result<Var> {
        const OP: &str = "embedding";
        let ts = self.shape(table)?.to_vec();
        if ts.len() != 2 {
            return Err(shape_err(OP, format!("table must be (V, C), got {ts:?}")));
        }
        let (v, c) = (ts[0], ts[1]);
        if ids.len() != crate::tensor::numel(OP, ids_shape)? {
            let n = ids.len();
            return Err(shape_err(
                OP,
                format!("{n} ids cannot be shaped {ids_shape:?}"),
            ));
        }
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= v) {
            return Err(shape_err(
                OP,
                format!("id {bad} out of range for table {ts:?}"),
            ));
        }
        let mut y = self.pool().take(ids.len() * c);
        let tv = self.arg(OP, table)?.0;
        for (row, &i) in y.chunks_exact_mut(c.max(1)).zip(ids) {
            let i = i as usize;
            row.copy_from_slice(&tv[i * c..(i + 1) * c]);
        }
        let mut shape = ids_shape.to_vec();
        shape.push(c);
        let ids = if self.records(&[table]) {
            ids.to_vec()
        } else {
            Vec::new()
        };
        Ok(self.push(y, shape, Op::Embedding { table, ids }))
    }
}

/// `dtable[ids[i]] += dy[i]`, in id order (a repeated id sums its rows deterministically).
pub(crate) fn backward(c: &mut Ctx, table: Var, ids: &[u32], dy: &[f32]) -> Result<()> {
    let (_, cols) = rows_cols("embedding", c.v.shape(table))?;
    if let Some(g) = c.g.slot(table) {
        for (row, &i) in dy.chunks_exact(cols.max(1)).zip(ids) {
            let i = i as usize;
            super::add_into(&mut g[i * cols..(i + 1) * cols], row);
        }
    }
    Ok(())
}
