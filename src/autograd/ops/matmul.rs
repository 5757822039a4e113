//! Matrix products on the GEMM kernel: `matmul` (batched over leading dims) and `linear`
//! (`y = x W^T + b`, `W` stored `(OUT, IN)` as Hugging Face does).
//!
//! Transposes are `MatRef::t` views, never copies: forward `x W^T`, backward `dx += dy W` and
//! `dW += dy^T x` all read their operands in place; backward GEMMs use `beta = 1` to add (or
//! `beta = 0` into an input's fresh gradient slot, which skips zeroing it).

use super::{rows_cols, zero_fill};
use crate::autograd::grads::FreshSlot;
use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var, shape_err};
use crate::kernels::{Kernels, MatMut, MatRef};
use crate::tensor::Result;

/// One matmul's problem: `batch` products of `(m, k) x (k, n)`; `b_batched` when each has its
/// own `b` (else all share one).
#[derive(Clone, Copy, Debug)]
struct Dims {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    b_batched: bool,
}

/// `a: (..., M, K)` with `b: (K, N)` (leading dims of `a` flattened into `M`), or `b: (..., K, N)`
/// with the same leading dims as `a` (one product per leading index, e.g. attention heads).
fn dims(a: &[usize], b: &[usize]) -> Result<Dims> {
    let bad = || shape_err("matmul", format!("cannot multiply {a:?} by {b:?}"));
    if a.len() < 2 || b.len() < 2 || a[a.len() - 1] != b[b.len() - 2] {
        return Err(bad());
    }
    let (k, n) = (b[b.len() - 2], b[b.len() - 1]);
    if b.len() == 2 {
        let m = a[..a.len() - 1].iter().product();
        return Ok(Dims {
            batch: 1,
            m,
            k,
            n,
            b_batched: false,
        });
    }
    if a.len() != b.len() || a[..a.len() - 2] != b[..b.len() - 2] {
        return Err(bad());
    }
    let batch = a[..a.len() - 2].iter().product();
    Ok(Dims {
        batch,
        m: a[a.len() - 2],
        k,
        n,
        b_batched: true,
    })
}

/// `c[i] = alpha * a[i] * b[i] + beta * c[i]` for `batch` problems; `s*` are the batch strides.
#[allow(clippy::too_many_arguments)]
fn gemm(
    kern: Kernels,
    batch: usize,
    a: MatRef,
    sa: usize,
    b: MatRef,
    sb: usize,
    beta: f32,
    c: MatMut,
    sc: usize,
) -> Result<()> {
    if batch == 1 {
        kern.sgemm(1.0, a, b, beta, c)?;
    } else {
        kern.sgemm_batched(batch, 1.0, a, sa, b, sb, beta, c, sc)?;
    }
    Ok(())
}

impl Graph {
    /// Matrix product. `// a: (..., M, K), b: (K, N) -> (..., M, N)`, or
    /// `// a: (..., M, K), b: (..., K, N) -> (..., M, N)` with equal leading dims (batched).
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when the shapes do not chain or a handle is stale.
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var> {
        let (ash, bsh) = (self.shape(a)?.to_vec(), self.shape(b)?.to_vec());
        let d = dims(&ash, &bsh)?;
        let mut shape = ash[..ash.len() - 1].to_vec();
        shape.push(d.n);
        let mut y = self.pool().take(d.batch * d.m * d.n);
        let (av, bv) = (self.arg("matmul", a)?.0, self.arg("matmul", b)?.0);
        let sb = if d.b_batched { d.k * d.n } else { 0 };
        let (am, bm) = (
            MatRef::new(av, d.m, d.k, d.k),
            MatRef::new(bv, d.k, d.n, d.n),
        );
        let cm = MatMut::new(&mut y, d.m, d.n, d.n);
        gemm(
            self.kernels(),
            d.batch,
            am,
            d.m * d.k,
            bm,
            sb,
            0.0,
            cm,
            d.m * d.n,
        )?;
        Ok(self.push(y, shape, Op::MatMul { a, b }))
    }

    /// Affine map `y = x W^T + b`. `// x: (..., IN), w: (OUT, IN), b: (OUT) -> (..., OUT)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `w` is not `(OUT, IN)`, `b` not `(OUT)`, or a handle
    /// is stale.
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>) -> Result<Var> {
        self.affine("linear", x, w, b, false)
    }

    /// Affine map `y = x W + b` with `W` stored `(IN, OUT)` (GPT-2's `Conv1D`): the same as
    /// `add_bias(matmul(x, w), b)` in one op, the bias added in the GEMM's epilogue
    /// (`sgemm_bias`: the bits of `beta = 1` over rows preset to `b`, without that pass over `y`
    /// or the GEMM reading it back) and its gradient summed in the backward.
    /// `// x: (..., IN), w: (IN, OUT), b: (OUT) -> (..., OUT)`
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] when `w` is not `(IN, OUT)`, `b` not `(OUT)`, or a handle
    /// is stale.
    pub fn linear_in_out(&mut self, x: Var, w: Var, b: Option<Var>) -> Result<Var> {
        self.affine("linear_in_out", x, w, b, true)
    }

    /// `x W^T + b` (`in_out` false, `w: (OUT, IN)`) or `x W + b` (`in_out`, `w: (IN, OUT)`).
    fn affine(
        &mut self,
        op: &'static str,
        x: Var,
        w: Var,
        b: Option<Var>,
        in_out: bool,
    ) -> Result<Var> {
        let (xs, ws) = (self.shape(x)?.to_vec(), self.shape(w)?.to_vec());
        let (rows, inp) = rows_cols(op, &xs)?;
        let w_in = if in_out { 0 } else { 1 };
        if ws.len() != 2 || ws[w_in] != inp {
            let want = if in_out {
                format!("({inp}, OUT)")
            } else {
                format!("(OUT, {inp})")
            };
            return Err(shape_err(
                op,
                format!("x {xs:?} needs w {want}, got {ws:?}"),
            ));
        }
        let out = ws[1 - w_in];
        if let Some(b) = b {
            self.arg(op, b)?;
            if self.shape(b)? != [out] {
                let bs = self.shape(b)?;
                return Err(shape_err(
                    op,
                    format!("w {ws:?} needs b [{out}], got {bs:?}"),
                ));
            }
        }
        let mut y = self.pool().take(rows * out);
        // Inference on a weight matrix: its packed copy (made once, kept until the weight is
        // written) saves packing it on every call, which costs about as much as the product at
        // a prompt's few dozen rows. At most SKINNY_ROWS rows, the GEMM reads W in place anyway.
        if !self.grad_enabled() && rows > SKINNY_ROWS && self.pack_param(w, in_out)? {
            let xv = self.arg(op, x)?.0;
            if let Some(wp) = self.packed_param(w) {
                let (xm, ym) = (
                    MatRef::new(xv, rows, inp, inp),
                    MatMut::new(&mut y, rows, out, out),
                );
                match b {
                    Some(b) => {
                        let bv = self.arg(op, b)?.0;
                        self.kernels().sgemm_packed_bias(1.0, xm, wp, 0.0, bv, ym)?
                    }
                    None => self.kernels().sgemm_packed(1.0, xm, wp, 0.0, ym)?,
                }
                return Ok(self.push(y, out_shape(xs, out), Op::Linear { x, w, b, in_out }));
            }
        }
        let (xv, wv) = (self.arg(op, x)?.0, self.arg(op, w)?.0);
        let xm = MatRef::new(xv, rows, inp, inp);
        let wm = if in_out {
            MatRef::new(wv, inp, out, out)
        } else {
            MatRef::new(wv, out, inp, inp).t()
        };
        let ym = MatMut::new(&mut y, rows, out, out);
        match b {
            Some(b) => {
                let bv = self.arg(op, b)?.0;
                self.kernels().sgemm_bias(1.0, xm, wm, 0.0, bv, ym)?
            }
            None => self.kernels().sgemm(1.0, xm, wm, 0.0, ym)?,
        }
        Ok(self.push(y, out_shape(xs, out), Op::Linear { x, w, b, in_out }))
    }
}

/// Rows up to which `sgemm` reads B in place (its skinny path: GEMV-like decode steps), so a
/// packed weight gains nothing (kernels/src/gemm/skinny.rs `SKINNY_M`).
const SKINNY_ROWS: usize = 8;

/// `x`'s shape with the last dimension replaced by `out`.
fn out_shape(mut shape: Vec<usize>, out: usize) -> Vec<usize> {
    if let Some(last) = shape.last_mut() {
        *last = out;
    }
    shape
}

/// `da += dy b^T`, `db += a^T dy` (per batch).
pub(crate) fn matmul_backward(c: &mut Ctx, a: Var, b: Var, dy: &[f32]) -> Result<()> {
    let d = dims(c.v.shape(a), c.v.shape(b))?;
    let (sa, sb, sy) = (
        d.m * d.k,
        if d.b_batched { d.k * d.n } else { 0 },
        d.m * d.n,
    );
    let dym = MatRef::new(dy, d.m, d.n, d.n);
    if let Some((ga, fresh)) = c.g.slot_or_fresh(a) {
        let bt = MatRef::new(c.v.get(b), d.k, d.n, d.n).t();
        let gm = MatMut::new(ga, d.m, d.k, d.k);
        let beta = if fresh { 0.0 } else { 1.0 };
        gemm(c.k, d.batch, dym, sy, bt, sb, beta, gm, sa)?;
    }
    if let Some((gb, fresh)) = c.g.slot_or_fresh(b) {
        let beta = if fresh { 0.0 } else { 1.0 };
        let at = MatRef::new(c.v.get(a), d.m, d.k, d.k).t();
        if d.b_batched {
            let gm = MatMut::new(gb, d.k, d.n, d.n);
            gemm(c.k, d.batch, at, sa, dym, sy, beta, gm, sb)?;
        } else {
            // Shared b: the batch was flattened into m, so this is one GEMM over all rows.
            c.k.sgemm(1.0, at, dym, beta, MatMut::new(gb, d.k, d.n, d.n))?;
        }
    }
    Ok(())
}

/// `dx += dy W^T`-or-`W`, `dW += dy^T x` (or `x^T dy` when `in_out`), `db += sum_rows(dy)`.
///
/// The two products have the same number of multiply-adds. On two threads they run side by
/// side, one on each thread through the single-threaded loop nest, with no synchronisation
/// inside either (the bias's column sums follow `dW`); on other thread counts one after the
/// other, each split between all threads. Either way each gets the bits of `sgemm`.
/// Measured on 2 threads, the tiny GPT's four backward shapes (1024 rows, cold operands),
/// alternated in one process: side by side 1.035-1.051x (median; q1-q3 0.99-1.14).
pub(crate) fn linear_backward(
    c: &mut Ctx,
    x: Var,
    w: Var,
    b: Option<Var>,
    in_out: bool,
    dy: &[f32],
) -> Result<()> {
    let (rows, inp) = rows_cols("linear", c.v.shape(x))?;
    let out = c.v.shape(w)[usize::from(in_out)];
    let (k, xv, wv) = (c.k, c.v.get(x), c.v.get(w));
    let dym = MatRef::new(dy, rows, out, out);
    // A fresh slot is written, not added into: no zeroing pass, no read of C.
    let beta = |fresh: bool| if fresh { 0.0 } else { 1.0 };
    let gemm = |a: MatRef, b: MatRef, beta: f32, c: MatMut, split: bool| {
        if split {
            k.sgemm(1.0, a, b, beta, c)
        } else {
            k.sgemm_serial(1.0, a, b, beta, c)
        }
    };
    let dx = |(gx, fresh): FreshSlot, split: bool| {
        let wm = if in_out {
            MatRef::new(wv, inp, out, out).t()
        } else {
            MatRef::new(wv, out, inp, inp)
        };
        gemm(dym, wm, beta(fresh), MatMut::new(gx, rows, inp, inp), split)
    };
    let dw = |(gw, fresh): FreshSlot, split: bool| {
        // A weight's gradient is fresh after the optimizer's step (`Graph::zero_grads`).
        let xm = MatRef::new(xv, rows, inp, inp);
        let (a, b, gm) = if in_out {
            (xm.t(), dym, MatMut::new(gw, inp, out, out))
        } else {
            (dym.t(), xm, MatMut::new(gw, out, inp, inp))
        };
        gemm(a, b, beta(fresh), gm, split)
    };
    let db = |slot: Option<FreshSlot>| match slot {
        Some((gb, fresh)) => {
            if fresh {
                zero_fill(gb);
            }
            k.add_col_sums(gb, dy, out)
        }
        None => Ok(()),
    };
    let vars: Vec<Var> = [x, w].into_iter().chain(b).collect();
    let Some(slots) = c.g.slots_disjoint(&vars) else {
        // Two of them share a buffer (`x` is `w`): one after another.
        if let Some(s) = c.g.slot_or_fresh(x) {
            dx(s, true)?;
        }
        if let Some(s) = c.g.slot_or_fresh(w) {
            dw(s, true)?;
        }
        if let Some(b) = b {
            db(c.g.slot_or_fresh(b))?;
        }
        return Ok(());
    };
    let mut slots = slots.into_iter();
    let (sx, sw, sb) = (
        slots.next().flatten(),
        slots.next().flatten(),
        slots.next().flatten(),
    );
    match (sx, sw) {
        (Some(sx), Some(sw)) if rayon::current_num_threads() == 2 => {
            let (rx, rw) = rayon::join(
                || dx(sx, false),
                || {
                    let r = dw(sw, false);
                    r.and(db(sb))
                },
            );
            rx?;
            rw?;
        }
        (sx, sw) => {
            if let Some(s) = sx {
                dx(s, true)?;
            }
            if let Some(s) = sw {
                dw(s, true)?;
            }
            db(sb)?;
        }
    }
    Ok(())
}
