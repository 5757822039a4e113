//! Gather and scatter, for mixture-of-experts dispatch: `index_select` (rows by index),
//! `index_add` (rows added into a fresh tensor by index), `take` (columns by per-row index, which
//! [`Graph::topk`] uses), `scale_rows` (one weight per row) and `index_add_scaled` (weighted rows
//! of several parts added into a fresh tensor: the three-op combine in one). Each backward is the other's
//! forward: a gather's gradient scatters, a scatter's gradient gathers.
//!
//! Repeated indices are summed in index order, so results never depend on the thread count.

use super::{add_into, rows_cols};
use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var, shape_err};
use crate::tensor::Result;
use rayon::prelude::*;

impl Graph {
    /// Rows `x[rows[i]]`. `// x: (N, ...) -> (R, ...)` with `R = rows.len()`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] for a scalar `x`, an index `>= N`, or a stale handle.
    pub fn index_select(&mut self, x: Var, rows: &[u32]) -> Result<Var> {
        const OP: &str = "index_select";
        let xs = self.shape(x)?.to_vec();
        let (n, row) = lead_rows(OP, &xs)?;
        check_indices(OP, rows, n, &xs)?;
        let mut y = self.pool().take(rows.len() * row);
        let xv = self.arg(OP, x)?.0;
        for (dst, &r) in y.chunks_exact_mut(row.max(1)).zip(rows) {
            dst.copy_from_slice(&xv[r as usize * row..][..row]);
        }
        let mut shape = xs;
        shape[0] = rows.len();
        let rows = self.saved_indices(&[x], rows);
        Ok(self.push(y, shape, Op::IndexSelect { x, rows }))
    }

    /// A fresh `(n, ...)` tensor of zeros with `src[i]` added into row `rows[i]`.
    /// `// src: (R, ...) -> (n, ...)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `rows.len() != R`, an index is `>= n`, or the handle
    /// is stale.
    pub fn index_add(&mut self, src: Var, rows: &[u32], n: usize) -> Result<Var> {
        const OP: &str = "index_add";
        let ss = self.shape(src)?.to_vec();
        let (r, row) = lead_rows(OP, &ss)?;
        if rows.len() != r {
            return Err(shape_err(
                OP,
                format!("{} indices for source {ss:?}", rows.len()),
            ));
        }
        let mut shape = ss;
        shape[0] = n;
        check_indices(OP, rows, n, &shape)?;
        let mut y = self.pool().take_zeroed(n * row);
        let sv = self.arg(OP, src)?.0;
        for (s, &i) in sv.chunks_exact(row.max(1)).zip(rows) {
            add_into(&mut y[i as usize * row..][..row], s);
        }
        let rows = self.saved_indices(&[src], rows);
        Ok(self.push(y, shape, Op::IndexAdd { src, rows }))
    }

    /// Per row, the columns named by `cols`: `y[r, j] = x[r, cols[r * k + j]]`.
    /// `// x: (..., E), cols: (..., k) -> (..., k)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `cols` is not `k` per row, an index is `>= E`, or the
    /// handle is stale.
    pub fn take(&mut self, x: Var, cols: &[u32], k: usize) -> Result<Var> {
        const OP: &str = "take";
        let xs = self.shape(x)?.to_vec();
        let (rows, e) = rows_cols(OP, &xs)?;
        if cols.len() != rows * k {
            return Err(shape_err(
                OP,
                format!("{} indices for {rows} rows of {k} from {xs:?}", cols.len()),
            ));
        }
        check_indices(OP, cols, e, &xs)?;
        let mut y = self.pool().take(rows * k);
        let xv = self.arg(OP, x)?.0;
        for ((dst, idx), src) in y
            .chunks_exact_mut(k.max(1))
            .zip(cols.chunks_exact(k.max(1)))
            .zip(xv.chunks_exact(e.max(1)))
        {
            dst.iter_mut()
                .zip(idx)
                .for_each(|(d, &j)| *d = src[j as usize]);
        }
        let mut shape = xs;
        *shape.last_mut().expect("rows_cols checked the rank") = k;
        let cols = self.saved_indices(&[x], cols);
        Ok(self.push(y, shape, Op::Take { x, cols }))
    }

    /// The `k` largest values of each row and their column indices, largest first (ties: the
    /// lower index first, as a stable sort gives). The values are a [`Graph::take`], so the
    /// gradient flows to the selected entries; the indices are data.
    /// `// x: (..., E) -> (..., k)`, indices `(..., k)` flattened
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `k > E` or the handle is stale.
    pub fn topk(&mut self, x: Var, k: usize) -> Result<(Var, Vec<u32>)> {
        const OP: &str = "topk";
        let xs = self.shape(x)?.to_vec();
        let (_, e) = rows_cols(OP, &xs)?;
        if k > e {
            return Err(shape_err(OP, format!("k = {k} of {e} columns in {xs:?}")));
        }
        let idx = topk_indices(self.arg(OP, x)?.0, e, k);
        let v = self.take(x, &idx, k)?;
        Ok((v, idx))
    }

    /// Each row scaled by its weight: `y[r] = w[r] * x[r]`. `// x: (R, ...), w: (R) -> (R, ...)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `w` does not hold one value per row of `x`, or a
    /// handle is stale.
    pub fn scale_rows(&mut self, x: Var, w: Var) -> Result<Var> {
        const OP: &str = "scale_rows";
        let (xs, ws) = (self.shape(x)?.to_vec(), self.shape(w)?.to_vec());
        let (r, row) = lead_rows(OP, &xs)?;
        if ws.iter().product::<usize>() != r {
            return Err(shape_err(
                OP,
                format!("weights {ws:?} for {r} rows of {xs:?}"),
            ));
        }
        let mut y = self.pool().take(r * row);
        let (xv, wv) = (self.arg(OP, x)?.0, self.arg(OP, w)?.0);
        for ((dst, src), &s) in y
            .chunks_exact_mut(row.max(1))
            .zip(xv.chunks_exact(row.max(1)))
            .zip(wv)
        {
            dst.iter_mut().zip(src).for_each(|(d, v)| *d = s * v);
        }
        Ok(self.push(y, xs, Op::ScaleRows { x, w }))
    }

    /// Weighted rows of several parts added into a fresh `(n, ...)` tensor of zeros: for each
    /// part `p` and its row `i`, with slot `s = slots[p][i]`, `y[s / k] += w[s] * parts[p][i]`,
    /// in order (part by part, row by row), so results never depend on the thread count. The
    /// mixture-of-experts combine: part `p` is expert `p`'s output rows, `w` the `(token,
    /// choice)` routing weights and `s = token * k + choice`; one op instead of `scale_rows`,
    /// `concat` and `index_add`, with the same roundings (each `w * x` rounded, then added).
    /// `// parts[p]: (R_p, ...), w: (n * k) -> (n, ...)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when there are no parts, `slots` does not hold one index
    /// per row of each part, the parts' rows differ in shape, `w` does not hold `n * k` values,
    /// a slot is `>= n * k`, or a handle is stale.
    pub fn index_add_scaled(
        &mut self,
        parts: &[Var],
        w: Var,
        slots: &[Vec<u32>],
        k: usize,
        n: usize,
    ) -> Result<Var> {
        const OP: &str = "index_add_scaled";
        let Some(&first) = parts.first() else {
            return Err(shape_err(OP, "no parts to combine".into()));
        };
        let ws = self.shape(w)?.to_vec();
        let n_slots = n * k;
        if ws.iter().product::<usize>() != n_slots {
            return Err(shape_err(
                OP,
                format!("weights {ws:?} for {n} rows of {k} slots"),
            ));
        }
        if slots.len() != parts.len() {
            return Err(shape_err(
                OP,
                format!("{} slot lists for {} parts", slots.len(), parts.len()),
            ));
        }
        let mut shape = self.shape(first)?.to_vec();
        let (_, row) = lead_rows(OP, &shape)?;
        for (&p, s) in parts.iter().zip(slots) {
            let ps = self.shape(p)?;
            if ps.len() != shape.len() || ps[1..] != shape[1..] || ps[0] != s.len() {
                return Err(shape_err(
                    OP,
                    format!("part {ps:?} with {} slots beside {shape:?}", s.len()),
                ));
            }
            check_indices(OP, s, n_slots, &ws)?;
        }
        shape[0] = n;
        let mut y = self.pool().take_zeroed(n * row);
        let wv = self.arg(OP, w)?.0;
        for (&p, s) in parts.iter().zip(slots) {
            let pv = self.arg(OP, p)?.0;
            for (src, &slot) in pv.chunks_exact(row.max(1)).zip(s) {
                let dst = &mut y[slot as usize / k * row..][..row];
                let c = wv[slot as usize];
                dst.iter_mut().zip(src).for_each(|(d, v)| *d += c * v);
            }
        }
        let mut inputs = parts.to_vec();
        inputs.push(w);
        let slots = if self.records(&inputs) {
            slots.to_vec()
        } else {
            Vec::new()
        };
        let op = Op::IndexAddScaled {
            parts: parts.to_vec(),
            w,
            slots,
            k,
        };
        Ok(self.push(y, shape, op))
    }

    /// The indices a backward needs, kept only when the op will be recorded.
    fn saved_indices(&self, inputs: &[Var], idx: &[u32]) -> Vec<u32> {
        if self.records(inputs) {
            idx.to_vec()
        } else {
            Vec::new()
        }
    }
}

/// The column indices of the `k` largest values of each row of `x: (rows, e)`, largest first;
/// NaN sorts below every number, ties keep the lower index first.
pub fn topk_indices(x: &[f32], e: usize, k: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(x.len() / e.max(1) * k);
    let mut order: Vec<u32> = Vec::with_capacity(e);
    for row in x.chunks_exact(e.max(1)) {
        order.clear();
        order.extend(0..e as u32);
        let key = |j: &u32| {
            let v = row[*j as usize];
            if v.is_nan() { f32::NEG_INFINITY } else { v }
        };
        // A stable sort keeps equal values in index order.
        order.sort_by(|a, b| key(b).total_cmp(&key(a)));
        out.extend_from_slice(&order[..k]);
    }
    out
}

/// `(first axis, elements per first-axis row)`.
fn lead_rows(op: &'static str, shape: &[usize]) -> Result<(usize, usize)> {
    match shape.split_first() {
        Some((&n, rest)) => Ok((n, rest.iter().product())),
        None => Err(shape_err(
            op,
            "needs at least one axis, got a scalar".into(),
        )),
    }
}

fn check_indices(op: &'static str, idx: &[u32], bound: usize, shape: &[usize]) -> Result<()> {
    match idx.iter().find(|&&i| i as usize >= bound) {
        Some(bad) => Err(shape_err(
            op,
            format!("index {bad} out of range {bound} for {shape:?}"),
        )),
        None => Ok(()),
    }
}

/// `dx[rows[i]] += dy[i]`, in index order.
pub(crate) fn index_select_backward(c: &mut Ctx, x: Var, rows: &[u32], dy: &[f32]) -> Result<()> {
    let (_, row) = lead_rows("index_select", c.v.shape(x))?;
    if let Some(g) = c.g.slot(x) {
        for (d, &r) in dy.chunks_exact(row.max(1)).zip(rows) {
            add_into(&mut g[r as usize * row..][..row], d);
        }
    }
    Ok(())
}

/// `dsrc[i] += dy[rows[i]]`.
pub(crate) fn index_add_backward(c: &mut Ctx, src: Var, rows: &[u32], dy: &[f32]) -> Result<()> {
    let (_, row) = lead_rows("index_add", c.v.shape(src))?;
    if let Some(g) = c.g.slot(src) {
        for (d, &r) in g.chunks_exact_mut(row.max(1)).zip(rows) {
            add_into(d, &dy[r as usize * row..][..row]);
        }
    }
    Ok(())
}

/// `dx[r, cols[r, j]] += dy[r, j]`.
pub(crate) fn take_backward(c: &mut Ctx, x: Var, cols: &[u32], out: Var, dy: &[f32]) -> Result<()> {
    let (_, e) = rows_cols("take", c.v.shape(x))?;
    let (_, k) = rows_cols("take", c.v.shape(out))?;
    if let Some(g) = c.g.slot(x) {
        for ((gr, idx), d) in g
            .chunks_exact_mut(e.max(1))
            .zip(cols.chunks_exact(k.max(1)))
            .zip(dy.chunks_exact(k.max(1)))
        {
            idx.iter().zip(d).for_each(|(&j, v)| gr[j as usize] += v);
        }
    }
    Ok(())
}

/// `dx[r] += w[r] dy[r]`, `dw[r] += <dy[r], x[r]>` (accumulated in f64, in order).
pub(crate) fn scale_rows_backward(c: &mut Ctx, x: Var, w: Var, dy: &[f32]) -> Result<()> {
    let (_, row) = lead_rows("scale_rows", c.v.shape(x))?;
    let row = row.max(1);
    let (xv, wv) = (c.v.get(x), c.v.get(w));
    if let Some(g) = c.g.slot(x) {
        for ((gr, d), &s) in g.chunks_exact_mut(row).zip(dy.chunks_exact(row)).zip(wv) {
            gr.iter_mut().zip(d).for_each(|(g, d)| *g += s * d);
        }
    }
    if let Some(g) = c.g.slot(w) {
        for ((gw, d), xr) in g
            .iter_mut()
            .zip(dy.chunks_exact(row))
            .zip(xv.chunks_exact(row))
        {
            let dot: f64 = d
                .iter()
                .zip(xr)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            *gw += dot as f32;
        }
    }
    Ok(())
}

/// Per part `p`, row `i`, slot `s`, row of the output `t = s / k`:
/// `dparts[p][i] += w[s] dy[t]`, `dw[s] += <dy[t], parts[p][i]>` (accumulated in f64, in order).
pub(crate) fn index_add_scaled_backward(
    c: &mut Ctx,
    parts: &[Var],
    w: Var,
    slots: &[Vec<u32>],
    k: usize,
    dy: &[f32],
) -> Result<()> {
    let Some(&first) = parts.first() else {
        return Ok(());
    };
    let (_, row) = lead_rows("index_add_scaled", c.v.shape(first))?;
    let row = row.max(1);
    let wv = c.v.get(w);
    // Rows in parallel (each row of a part's gradient is written by one task); the weights'
    // dot products too, added afterwards in slot order: the bits of the serial loops.
    let par = super::split_pass(slots.iter().map(Vec::len).sum::<usize>() * row);
    for (&p, s) in parts.iter().zip(slots) {
        if let Some((g, fresh)) = c.g.slot_or_fresh(p) {
            let one = |(gr, &slot): (&mut [f32], &u32)| {
                let d = &dy[slot as usize / k * row..][..row];
                let sc = wv[slot as usize];
                if fresh {
                    // `+ 0.0`: the bits of adding into zeros (a -0 product becomes +0).
                    gr.iter_mut().zip(d).for_each(|(g, d)| *g = sc * d + 0.0);
                } else {
                    gr.iter_mut().zip(d).for_each(|(g, d)| *g += sc * d);
                }
            };
            if par {
                g.par_chunks_exact_mut(row).zip(s).for_each(one);
            } else {
                g.chunks_exact_mut(row).zip(s).for_each(one);
            }
        }
    }
    if let Some(g) = c.g.slot(w) {
        for (&p, s) in parts.iter().zip(slots) {
            let xv = c.v.get(p);
            let dot = |(xr, &slot): (&[f32], &u32)| -> f32 {
                let d = &dy[slot as usize / k * row..][..row];
                let dot: f64 = d
                    .iter()
                    .zip(xr)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                dot as f32
            };
            let dots: Vec<f32> = if par {
                xv.par_chunks_exact(row).zip(s).map(dot).collect()
            } else {
                xv.chunks_exact(row).zip(s).map(dot).collect()
            };
            for (&slot, d) in s.iter().zip(dots) {
                g[slot as usize] += d;
            }
        }
    }
    Ok(())
}
