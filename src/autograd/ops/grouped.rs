//! `linear_grouped`: consecutive groups of rows, each through its own weight (a mixture's
//! experts, their tokens gathered expert by expert), as one op.
//!
//! One GEMM per group, all of them in one parallel region ([`Kernels::sgemm_many`]): small
//! products (an expert sees about `N * K / E` rows) then pay no fork-join each, the threads share
//! the groups' tiles largest first, and the op is one node on the tape instead of one per group.
//! A GEMM gives the same bits on any thread count and however it is tiled, so each group's rows
//! equal a `linear` of them alone.
//!
//! [`Kernels::sgemm_many`]: crate::kernels::Kernels::sgemm_many

use super::rows_cols;
use crate::autograd::grads::FreshSlot;
use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var, shape_err};
use crate::kernels::{GemmJob, MatMut, MatRef};
use crate::tensor::Result;

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
            jobs.push(GemmJob {
                alpha: 1.0,
                a: MatRef::new(&xv[r0 * inp..], m, inp, inp),
                b: MatRef::new(wv, out, inp, inp).t(),
                beta: 0.0,
                c: MatMut::new(yg, m, out, out),
            });
            (rest, r0) = (tail, r0 + m);
        }
        kern.sgemm_many(&mut jobs)?;
        let op = Op::LinearGrouped {
            x,
            ws: ws.to_vec(),
            groups: groups.to_vec(),
        };
        Ok(self.push(y, vec![rows, out], op))
    }
}

/// Per group `g` (rows `o..o + m`): `dx[o..] += dy[o..] W_g` and `dW_g += dy[o..]^T x[o..]`, all
/// of them in one parallel region. Weights that share a gradient (one weight in two groups),
/// or a weight that is also the input, are added in turn: `dx` first, then group by group.
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
    let p = GroupedGrads {
        dy,
        x: xv,
        ws: wvs,
        groups,
        offsets,
        inp,
        out,
    };
    let vars: Vec<Var> = std::iter::once(x).chain(ws.iter().copied()).collect();
    if let Some(slots) = c.g.slots_disjoint(&vars) {
        let mut slots = slots.into_iter();
        let mut jobs = slots
            .next()
            .flatten()
            .map(|gx| p.dx_jobs(gx))
            .unwrap_or_default();
        jobs.extend(
            slots
                .enumerate()
                .filter_map(|(g, s)| s.map(|gw| p.dw(g, gw))),
        );
        kern.sgemm_many(&mut jobs)?;
        return Ok(());
    }
    if let Some(gx) = c.g.slot_or_fresh(x) {
        kern.sgemm_many(&mut p.dx_jobs(gx))?;
    }
    for (g, &w) in ws.iter().enumerate() {
        // A weight shared by groups: one group after another, each on every thread.
        if let Some(gw) = c.g.slot_or_fresh(w) {
            kern.sgemm_many(&mut [p.dw(g, gw)])?;
        }
    }
    Ok(())
}

/// The operands of a grouped linear's backward, for its GEMM jobs.
struct GroupedGrads<'a> {
    dy: &'a [f32],
    x: &'a [f32],
    ws: Vec<&'a [f32]>,
    groups: &'a [usize],
    /// The first row of each group.
    offsets: Vec<usize>,
    inp: usize,
    out: usize,
}

impl<'a> GroupedGrads<'a> {
    /// `dx[o..] = dy[o..] W_g` for every group into x's gradient `gx`; a fresh slot is written
    /// (beta 0): every row belongs to one group.
    fn dx_jobs<'s>(&'s self, (gx, fresh): FreshSlot<'s>) -> Vec<GemmJob<'s>> {
        let (inp, out) = (self.inp, self.out);
        let beta = if fresh { 0.0 } else { 1.0 };
        let mut jobs = Vec::with_capacity(self.groups.len());
        let mut rest = gx;
        for (g, &m) in self.groups.iter().enumerate() {
            let (gg, tail) = rest.split_at_mut(m * inp);
            jobs.push(GemmJob {
                alpha: 1.0,
                a: MatRef::new(&self.dy[self.offsets[g] * out..], m, out, out),
                b: MatRef::new(self.ws[g], out, inp, inp),
                beta,
                c: MatMut::new(gg, m, inp, inp),
            });
            rest = tail;
        }
        jobs
    }

    /// `dW_g += dy_g^T x_g`, or `dW_g = dy_g^T x_g` into a fresh slot (no read of the old one).
    fn dw<'s>(&'s self, g: usize, (gw, fresh): FreshSlot<'s>) -> GemmJob<'s> {
        let (inp, out) = (self.inp, self.out);
        let (o, m) = (self.offsets[g], self.groups[g]);
        GemmJob {
            alpha: 1.0,
            a: MatRef::new(&self.dy[o * out..(o + m) * out], m, out, out).t(),
            b: MatRef::new(&self.x[o * inp..(o + m) * inp], m, inp, inp),
            beta: if fresh { 0.0 } else { 1.0 },
            c: MatMut::new(gw, out, inp, inp),
        }
    }
}
