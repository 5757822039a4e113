//! Bidirectional attention over packed sentences, read straight from a fused q|k|v projection:
//! the encoder's inference path (no padding, no tape, no saved statistics).
//!
//! Layout: the sentences' tokens are back to back, `qkv: (N, 3 H D)` with each row `[q | k | v]`
//! and the heads `(H, D)` inside each part, as one `Linear` with weights `[Wq; Wk; Wv]` writes
//! it, before that Linear's bias `(3 H D)`; `out: (N, H D)`, `N` the sum of the lengths. Each
//! sentence attends over its own tokens only.
//!
//! Per sentence: one pass over its rows adds the bias and lays out `q: (T, H D)`, `k^T` per head
//! `(H, D, T)` and `v: (T, H D)` in thread-local blocks that stay in cache; then per head
//! `S = scale q k^T` (the tiles of [`super::tile`]), each row `P = exp(S - max)` with its sum
//! `l`, and `out = (P v) / l`. A sentence is one task: short sentences (tens of tokens) give too
//! little work per head to split, and whole sentences balance the threads. Results do not
//! depend on the thread count.

use super::tile::{self, Mm};
use crate::error::check_len;
use crate::{Isa, KernelError, Kernels, Result};
use rayon::prelude::*;

/// The inputs of [`Kernels::attention_packed_fwd`].
#[derive(Clone, Copy, Debug)]
pub struct PackedQkv<'a> {
    /// `qkv: (N, 3 H D)`, rows `[q | k | v]`, without the bias.
    pub qkv: &'a [f32],
    /// `bias: (3 H D)`, added to every row of `qkv`.
    pub bias: &'a [f32],
    /// Each sentence's token count; they sum to `N`.
    pub lens: &'a [usize],
    /// `H`.
    pub heads: usize,
    /// `D`, the head size.
    pub d: usize,
    /// The score scale, usually `1 / sqrt(D)`.
    pub scale: f32,
}

impl PackedQkv<'_> {
    /// Checks shapes and lengths; returns `N`.
    fn check(&self, op: &'static str, out: usize) -> Result<usize> {
        let overflow = || KernelError::BadShape {
            op,
            detail: format!(
                "{} sentences of {} heads of {} overflow the address space",
                self.lens.len(),
                self.heads,
                self.d
            ),
        };
        let n = self
            .lens
            .iter()
            .try_fold(0usize, |s, &l| s.checked_add(l))
            .ok_or_else(overflow)?;
        let hd = self.heads.checked_mul(self.d).ok_or_else(overflow)?;
        let w = hd.checked_mul(3).ok_or_else(overflow)?;
        check_len(
            op,
            "qkv",
            self.qkv.len(),
            n.checked_mul(w).ok_or_else(overflow)?,
        )?;
        check_len(op, "out", out, n * hd)?;
        if self.bias.len() != w {
            return Err(KernelError::BadShape {
                op,
                detail: format!(
                    "bias has {} elements, q|k|v of {} heads of {} need {w}",
                    self.bias.len(),
                    self.heads,
                    self.d
                ),
            });
        }
        Ok(n)
    }
}

impl Kernels {
    /// Attention of each packed sentence over its own tokens, q, k, v read from the fused
    /// projection: writes `out: (N, H D)`. See the module docs for the layout.
    ///
    /// # Errors
    /// [`KernelError::BadLength`] when `qkv` or `out` is shorter than the lengths need,
    /// [`KernelError::BadShape`] when `bias` is not `3 H D` long or the sizes overflow.
    pub fn attention_packed_fwd(&self, a: &PackedQkv, out: &mut [f32]) -> Result<()> {
        let n = a.check("attention_packed_fwd", out.len())?;
        let hd = a.heads * a.d;
        let mut jobs = Vec::with_capacity(a.lens.len());
        let (mut rest, mut off) = (&mut out[..n * hd], 0);
        for &t in a.lens {
            let (o, r) = rest.split_at_mut(t * hd);
            jobs.push((off, t, o));
            (rest, off) = (r, off + t);
        }
        let isa = self.isa();
        jobs.into_par_iter().for_each(|(off, t, o)| {
            let x = &a.qkv[off * 3 * hd..(off + t) * 3 * hd];
            with_scratch(t, hd, |s| sentence(isa, a, x, t, o, s));
        });
        Ok(())
    }
}

/// One thread's blocks, kept across calls.
#[derive(Default)]
struct Scratch {
    /// `q + b_q` of one sentence: (T, H D).
    q: Vec<f32>,
    /// `(k + b_k)^T` per head: (H, D, T).
    kt: Vec<f32>,
    /// `v + b_v`: (T, H D).
    v: Vec<f32>,
    /// One head's scores, then probabilities: (T, T).
    s: Vec<f32>,
    /// `1 / l` per row: (T).
    inv: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Runs `f` on this thread's scratch, grown to a `t`-token sentence of `hd` features.
fn with_scratch<R>(t: usize, hd: usize, f: impl FnOnce(&mut Scratch) -> R) -> R {
    let fit = |s: &mut Scratch| {
        for (v, n) in [
            (&mut s.q, t * hd),
            (&mut s.kt, t * hd),
            (&mut s.v, t * hd),
            (&mut s.s, t * t),
            (&mut s.inv, t),
        ] {
            if v.len() < n {
                v.resize(n, 0.0);
            }
        }
    };
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => {
            fit(&mut s);
            f(&mut s)
        }
        // Only if a call were nested inside another on this thread: use fresh buffers.
        Err(_) => {
            let mut s = Scratch::default();
            fit(&mut s);
            f(&mut s)
        }
    })
}

/// Every head of one sentence. `// x: (T, 3 H D) -> o: (T, H D)`
fn sentence(isa: Isa, a: &PackedQkv, x: &[f32], t: usize, o: &mut [f32], s: &mut Scratch) {
    let (h_n, d) = (a.heads, a.d);
    let hd = h_n * d;
    if t == 0 || d == 0 {
        return;
    }
    let (q, kt, v, sc, inv) = (
        &mut s.q[..t * hd],
        &mut s.kt[..t * hd],
        &mut s.v[..t * hd],
        &mut s.s[..t * t],
        &mut s.inv[..t],
    );
    // One pass over the sentence's rows in order (the hardware prefetcher follows it; per-head
    // reads 3 H D floats apart did not): q, v biased, k biased and transposed per head.
    let (bq, bk, bv) = (&a.bias[..hd], &a.bias[hd..2 * hd], &a.bias[2 * hd..]);
    for (i, xr) in x.chunks_exact(3 * hd).enumerate() {
        let (xq, xk, xv) = (&xr[..hd], &xr[hd..2 * hd], &xr[2 * hd..]);
        for ((q, &x), &b) in q[i * hd..][..hd].iter_mut().zip(xq).zip(bq) {
            *q = x + b;
        }
        for ((v, &x), &b) in v[i * hd..][..hd].iter_mut().zip(xv).zip(bv) {
            *v = x + b;
        }
        // Head h, feature c of key i goes to kt[(h D + c) T + i].
        for (f, (&x, &b)) in xk.iter().zip(bk).enumerate() {
            kt[f * t + i] = x + b;
        }
    }
    for h in 0..h_n {
        Mm::new(t, t, d)
            .a(&q[h * d..], hd, 1)
            .b(&kt[h * d * t..], t)
            .run(isa, a.scale, sc, t, false);
        for (row, inv) in sc.chunks_exact_mut(t).zip(inv.iter_mut()) {
            // Every key is visible, so the max is finite for finite inputs and l >= 1.
            let m = tile::row_max(isa, row);
            *inv = 1.0 / tile::exp_sub(isa, row, m);
        }
        let oh = &mut o[h * d..];
        Mm::new(t, d, t)
            .a(sc, t, 1)
            .b(&v[h * d..], hd)
            .run(isa, 1.0, oh, hd, false);
        for (orow, &inv) in oh.chunks_mut(hd).zip(inv.iter()) {
            orow[..d].iter_mut().for_each(|y| *y *= inv);
        }
    }
}
