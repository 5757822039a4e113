//! `linear_grouped`: consecutive groups of rows, each through its own weight (a mixture's
//! experts, their tokens gathered expert by expert), as one op.
//!
//! One GEMM per group, the groups spread over the threads, each GEMM on one thread: small
//! products (an expert sees about `N * K / E` rows) then pay no fork-join inside each GEMM, and
//! the op is one node on the tape instead of one per group. A GEMM gives the same bits on any
//! thread count, so each group's rows equal a `linear` of them alone.

use super::rows_cols;
use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var, shape_err};
use crate::kernels::{MatMut, MatRef};
use crate::tensor::Result;
use rayon::prelude::*;

impl Graph {
    /// Rows `x[o_g .. o_g + groups[g]]` times `ws[g]^T`, group by group, with `o_g` the sum of
    /// the earlier groups. `// x: (R, IN), ws[g]: (OUT, IN) -> (R, OUT)`, `R = sum(groups)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `groups` and `ws` differ in length, the groups do
    /// not add up to the rows of `x`, a weight is not `(OUT, IN)` with the first weight's `OUT`,
    /// or a handle is stale.
    pub fn linear_grouped(&mut self, x: Var, ws: &[Var], groups: &[usize]) -> Result<Var> {
        const OP: &str = "linear_grouped";
        let xs = self.shape(x)?.to_vec();
        let (rows, inp) = rows_cols(OP, &xs)?;
        if xs.len() != 2 || groups.len() != ws.len() || groups.iter().sum::<usize>() != rows {
            return Err(shape_err(
                OP,
                format!("groups {groups:?} of {} weights for x {xs:?}", ws.len()),
            ));
        }
        let Some(&first) = ws.first() else {
            return Err(shape_err(OP, "no weights".into()));
        };
        let out = self.shape(first)?.first().copied().unwrap_or(0);
        for &w in ws {
            let s = self.shape(w)?;
            if s != [out, inp] {
                return Err(shape_err(
                    OP,
                    format!("x {xs:?} needs weights ({out}, {inp}), got {s:?}"),
                ));
            }
        }
        let mut y = self.pool().take(rows * out);
        let kern = self.kernels();
        let xv = self.arg(OP, x)?.0;
        let wvs = ws
            .iter()
            .map(|&w| Ok(self.arg(OP, w)?.0))
            .collect::<Result<Vec<_>>>()?;
        let mut jobs = Vec::with_capacity(groups.len());
        let (mut rest, mut r0) = (y.as_mut_slice(), 0);
        for (&wv, &m) in wvs.iter().zip(groups) {
            let (yg, tail) = rest.split_at_mut(m * out);
            jobs.push((yg, &xv[r0 * inp..][..m * inp], wv, m));
            (rest, r0) = (tail, r0 + m);
        }
        jobs.into_par_iter()
            .with_max_len(1)
            .try_for_each(|(yg, xg, wv, m)| {
                let xm = MatRef::new(xg, m, inp, inp);
                let wm = MatRef::new(wv, out, inp, inp).t();
                kern.sgemm_serial(1.0, xm, wm, 0.0, MatMut::new(yg, m, out, out))
            })?;
        let op = Op::LinearGrouped {
            x,
            ws: ws.to_vec(),
            groups: groups.to_vec(),
        };
        Ok(self.push(y, vec![rows, out], op))
    }
}

/// Per group `g` (rows `o..o + m`): `dx[o..] += dy[o..] W_g`, `dW_g += dy[o..]^T x[o..]`, the
/// groups in parallel. Weights that share a gradient (one weight in two groups) are added in
/// turn, group by group.
pub(crate) fn linear_grouped_backward(
    c: &mut Ctx,
    x: Var,
    ws: &[Var],
    groups: &[usize],
    dy: &[f32],
) -> Result<()> {
    let (_, inp) = rows_cols("linear_grouped", c.v.shape(x))?;
    let out = c.v.shape(ws[0])[0];
    let kern = c.k;
    let (xv, wvs): (&[f32], Vec<&[f32]>) = (c.v.get(x), ws.iter().map(|&w| c.v.get(w)).collect());
    let offsets: Vec<usize> = groups
        .iter()
        .scan(0, |o, &m| {
            *o += m;
            Some(*o - m)
        })
        .collect();
    if let Some((gx, fresh)) = c.g.slot_or_fresh(x) {
        // A fresh slot is written (beta 0): every row belongs to one group.
        let beta = if fresh { 0.0 } else { 1.0 };
        let mut jobs = Vec::with_capacity(groups.len());
        let mut rest = gx;
        for (g, &m) in groups.iter().enumerate() {
            let (gg, tail) = rest.split_at_mut(m * inp);
            jobs.push((gg, g, m));
            rest = tail;
        }
        jobs.into_par_iter()
            .with_max_len(1)
            .try_for_each(|(gg, g, m)| {
                let dym = MatRef::new(&dy[offsets[g] * out..], m, out, out);
                let wm = MatRef::new(wvs[g], out, inp, inp);
                kern.sgemm_serial(1.0, dym, wm, beta, MatMut::new(gg, m, inp, inp))
            })?;
    }
    // `serial` when the groups run side by side; the same bits either way.
    let dw = |g: usize, gw: &mut [f32], serial: bool| {
        let m = groups[g];
        let dym = MatRef::new(&dy[offsets[g] * out..], m, out, out);
        let xm = MatRef::new(&xv[offsets[g] * inp..], m, inp, inp);
        let gm = MatMut::new(gw, out, inp, inp);
        if serial {
            kern.sgemm_serial(1.0, dym.t(), xm, 1.0, gm)
        } else {
            kern.sgemm(1.0, dym.t(), xm, 1.0, gm)
        }
    };
    match c.g.slots_disjoint(ws) {
        Some(slots) => slots
            .into_par_iter()
            .enumerate()
            .with_max_len(1)
            .try_for_each(|(g, s)| s.map_or(Ok(()), |gw| dw(g, gw, true)))?,
        None => {
            for (g, &w) in ws.iter().enumerate() {
                // A weight shared by groups: one group after another, each on every thread.
                if let Some(gw) = c.g.slot(w) {
                    dw(g, gw, false)?;
                }
            }
        }
    }
    Ok(())
}
