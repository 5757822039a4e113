//! Fused scaled-dot-product attention (flash-style), forward and backward.
//!
//! Layout, chosen so Q, K and V come straight out of a `linear` with no permute:
//! `q: (B, Tq, Hq, D)`, `k, v: (B, Tk, Hkv, D)`, `out: (B, Tq, Hq, D)`, all row-major contiguous;
//! the saved log-sum-exp is `lse: (B, Hq, Tq)`.
//!
//! Visibility ([`AttnSpec`]): query row `i` sits at absolute position `p = Tk - Tq + i` (so a
//! KV-cache decode step is `Tq = 1`). Causal: key `j` is visible iff `j <= p`; a sliding window
//! `W` additionally needs `p - j < W` (the query itself and the `W - 1` keys before it, as HF
//! Mistral). Non-causal (BERT) sees every key. The key padding mask `(B, Tk)` hides keys whose
//! entry is `false` (HF `attention_mask` semantics: `true` = real token). Grouped-query heads:
//! query head `h` reads kv head `h / (Hq / Hkv)`.
//!
//! **Empty rows**: a query row with no visible key outputs zeros, its `lse` is `-inf`, and it
//! gets (and passes on) zero gradient.
//!
//! Forward, per query block and key block of 64: `S = scale Q K^T` (a register-tiled product),
//! masked entries set to `-inf`, the online softmax (running row max `m` and sum `l`, the
//! accumulator rescaled by `exp(m_old - m_new)`), `O += P V`; at the end `O /= l` and
//! `lse = m + ln l`. Backward recomputes `P = exp(S - lse)` block by block (no `T x T` buffer),
//! with `D_i = rowsum(dO_i * O_i)`: `dV += P^T dO`, `dS = P * (dO V^T - D)`,
//! `dQ += scale dS K`, `dK += scale dS^T Q`, all ADDED into the gradient slices.
//!
//! Causal blocks that the diagonal crosses run their products in bands of rows that skip the
//! masked triangle (`tile::Causal`): scores past a row's last visible key are not computed, and
//! sums stop (or start) where P and dS are zero. The skipped terms are exact zeros, so for finite
//! inputs the results are the same bits. Measured on 2 threads, six layers of the tiny GPT's
//! attention (B 8, T 128, 6 heads of 64), alternated with the full blocks: forward 9.0-9.1 ms to
//! 7.4-7.8 ms, backward 19.6-21.2 ms to 16.6-17.7 ms. Transposing K and V 8 keys at a time in
//! registers, and `D_i` in eight partial sums, then took them to 6.6-7.0 ms and 13.9-15.2 ms.
//!
//! `packed.rs` holds the encoder inference path's variant: packed sentences, q, k, v read from
//! the fused projection ([`Kernels::attention_packed_fwd`]).
//!
//! Threads: the forward splits over `(batch, query head)`, the backward over `(batch, kv head)`
//! groups (each owns its `dK`, `dV` rows and its query heads' `dQ` rows), and the blocking is
//! fixed, so results are bit-identical for any thread count.

mod packed;
pub mod reference;
mod tile;

pub use packed::PackedQkv;

use crate::error::check_len;
use crate::par::SendPtr;
use crate::{Isa, KernelError, Kernels, Result};
use rayon::prelude::*;
use tile::{Causal, Mm};

/// Query rows per block.
const BQ: usize = 64;
/// Key rows per block.
const BK: usize = 64;

/// What each query may see, and the score scale. Usually `scale = 1 / sqrt(D)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnSpec {
    pub scale: f32,
    /// Key `j` visible iff `j <=` the query's absolute position.
    pub causal: bool,
    /// Sliding window `W >= 1` (needs `causal`): additionally `pos - j < W`.
    pub window: Option<usize>,
}

impl AttnSpec {
    /// Causal attention with `scale = 1 / sqrt(d)`, no window.
    pub fn causal(d: usize) -> Self {
        Self {
            scale: 1.0 / (d.max(1) as f32).sqrt(),
            causal: true,
            window: None,
        }
    }
}

/// The problem sizes: `q: (batch, tq, hq, d)`, `k, v: (batch, tk, hkv, d)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    pub batch: usize,
    pub tq: usize,
    pub tk: usize,
    pub hq: usize,
    pub hkv: usize,
    pub d: usize,
}

/// The inputs of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Attn<'a> {
    pub dims: AttnDims,
    pub spec: AttnSpec,
    /// q: (B, Tq, Hq, D)
    pub q: &'a [f32],
    /// k: (B, Tk, Hkv, D)
    pub k: &'a [f32],
    /// v: (B, Tk, Hkv, D)
    pub v: &'a [f32],
    /// Optional key padding mask (B, Tk): `true` = real token.
    pub key_mask: Option<&'a [bool]>,
}

/// The gradients the backward adds into: shapes as `q`, `k`, `v`.
#[derive(Debug)]
pub struct AttnGrads<'a> {
    pub dq: &'a mut [f32],
    pub dk: &'a mut [f32],
    pub dv: &'a mut [f32],
}

impl AttnDims {
    fn q_len(&self) -> Option<usize> {
        self.batch
            .checked_mul(self.tq)?
            .checked_mul(self.hq)?
            .checked_mul(self.d)
    }

    fn kv_len(&self) -> Option<usize> {
        self.batch
            .checked_mul(self.tk)?
            .checked_mul(self.hkv)?
            .checked_mul(self.d)
    }

    /// Query heads per kv head.
    pub fn group(&self) -> usize {
        self.hq / self.hkv.max(1)
    }

    /// Length of the saved log-sum-exp, `(B, Hq, Tq)`.
    pub fn lse_len(&self) -> usize {
        self.batch * self.hq * self.tq
    }
}

impl Attn<'_> {
    /// The visible key range `lo..hi` of query row `i` before the padding mask.
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        let AttnDims { tq, tk, .. } = self.dims;
        let pos = tk - tq + i;
        let hi = if self.spec.causal { pos + 1 } else { tk };
        let lo = self.spec.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        lo..hi
    }

    /// Whether key `j` of batch `b` is a real token.
    fn real(&self, b: usize, j: usize) -> bool {
        self.key_mask.is_none_or(|m| m[b * self.dims.tk + j])
    }

    /// Checks shapes and lengths; returns `(q_len, kv_len)`.
    fn check(&self, op: &'static str) -> Result<(usize, usize)> {
        let d = self.dims;
        let bad = |detail: String| Err(KernelError::BadShape { op, detail });
        if d.hkv == 0 || !d.hq.is_multiple_of(d.hkv) {
            return bad(format!(
                "{} query heads are not a multiple of {} kv heads",
                d.hq, d.hkv
            ));
        }
        if d.tq > d.tk {
            return bad(format!(
                "{} queries but only {} keys (need Tq <= Tk)",
                d.tq, d.tk
            ));
        }
        if self.spec.window == Some(0) {
            return bad("a sliding window must be at least 1".into());
        }
        if self.spec.window.is_some() && !self.spec.causal {
            return bad("a sliding window needs causal attention".into());
        }
        let overflow = || KernelError::BadShape {
            op,
            detail: format!("{d:?} overflows the address space"),
        };
        let (nq, nkv) = (
            d.q_len().ok_or_else(overflow)?,
            d.kv_len().ok_or_else(overflow)?,
        );
        check_len(op, "q", self.q.len(), nq)?;
        check_len(op, "k", self.k.len(), nkv)?;
        check_len(op, "v", self.v.len(), nkv)?;
        if let Some(m) = self.key_mask {
            check_len(op, "key_mask", m.len(), d.batch * d.tk)?;
        }
        Ok((nq, nkv))
    }
}

impl Kernels {
    /// Attention forward: writes `out: (B, Tq, Hq, D)` and the log-sum-exp `lse: (B, Hq, Tq)`
    /// that [`Kernels::attention_bwd`] needs. See the module docs for the layout and the masks.
    ///
    /// # Errors
    /// [`KernelError::BadShape`] when `Hq` is not a multiple of `Hkv`, `Tq > Tk`, the window is
    /// 0 or set without `causal`; [`KernelError::BadLength`] when a slice is too short.
    pub fn attention_fwd(&self, a: &Attn, out: &mut [f32], lse: &mut [f32]) -> Result<()> {
        let op = "attention_fwd";
        let (nq, _) = a.check(op)?;
        check_len(op, "out", out.len(), nq)?;
        check_len(op, "lse", lse.len(), a.dims.lse_len())?;
        let d = a.dims;
        let (op_, lp) = (SendPtr::new(&mut out[..nq]), SendPtr::new(lse));
        let isa = self.isa();
        (0..d.batch * d.hq).into_par_iter().for_each(|bh| {
            with_scratch(d, |s| {
                // SAFETY: task (b, h) writes only out rows (b, ., h, .) and lse row (b, h, .); tasks are distinct (b, h) pairs, so no element is written by two tasks.
                unsafe { fwd_head(isa, a, bh / d.hq, bh % d.hq, op_, lp, s) }
            })
        });
        Ok(())
    }

    /// Attention backward: ADDS into `g.dq`, `g.dk`, `g.dv` given the forward's `out` and `lse`
    /// and the output gradient `dout: (B, Tq, Hq, D)`.
    ///
    /// # Errors
    /// As [`Kernels::attention_fwd`], and [`KernelError::BadLength`] for short gradient slices.
    pub fn attention_bwd(
        &self,
        a: &Attn,
        out: &[f32],
        lse: &[f32],
        dout: &[f32],
        g: AttnGrads,
    ) -> Result<()> {
        let op = "attention_bwd";
        let (nq, nkv) = a.check(op)?;
        check_len(op, "out", out.len(), nq)?;
        check_len(op, "lse", lse.len(), a.dims.lse_len())?;
        check_len(op, "dout", dout.len(), nq)?;
        check_len(op, "dq", g.dq.len(), nq)?;
        check_len(op, "dk", g.dk.len(), nkv)?;
        check_len(op, "dv", g.dv.len(), nkv)?;
        let d = a.dims;
        let ptrs = GradPtrs {
            dq: SendPtr::new(&mut g.dq[..nq]),
            dk: SendPtr::new(&mut g.dk[..nkv]),
            dv: SendPtr::new(&mut g.dv[..nkv]),
        };
        let saved = Saved { out, lse, dout };
        let isa = self.isa();
        (0..d.batch * d.hkv).into_par_iter().for_each(|bg| {
            with_scratch(d, |s| {
                // SAFETY: task (b, g) writes only dk, dv rows (b, ., g, .) and dq rows (b, ., h, .) of its group's query heads; tasks are distinct (b, g) pairs.
                unsafe { bwd_group(isa, a, &saved, bg / d.hkv, bg % d.hkv, ptrs, s) }
            })
        });
        Ok(())
    }
}

/// The forward's results that the backward reads.
struct Saved<'a> {
    out: &'a [f32],
    lse: &'a [f32],
    dout: &'a [f32],
}

#[derive(Clone, Copy)]
struct GradPtrs {
    dq: SendPtr<f32>,
    dk: SendPtr<f32>,
    dv: SendPtr<f32>,
}

/// One thread's block buffers (reused across its tasks).
struct Scratch {
    /// K (then V) of one kv head, transposed: (D, Tk).
    kt: Vec<f32>,
    vt: Vec<f32>,
    /// Scores / probabilities of a block: (BQ, BK).
    s: Vec<f32>,
    /// dP then dS of a block: (BQ, BK).
    ds: Vec<f32>,
    /// The output accumulator of a query block: (BQ, D).
    acc: Vec<f32>,
    /// Per-row statistics of a query block.
    m: Vec<f32>,
    l: Vec<f32>,
}

impl Scratch {
    /// Grows the buffers to what `d` needs (contents are always written before being read).
    fn fit(&mut self, d: AttnDims) {
        let grow = |v: &mut Vec<f32>, n: usize| {
            if v.len() < n {
                v.resize(n, 0.0);
            }
        };
        grow(&mut self.kt, d.d * d.tk);
        grow(&mut self.vt, d.d * d.tk);
        grow(&mut self.s, BQ * BK);
        grow(&mut self.ds, BQ * BK);
        grow(&mut self.acc, BQ * d.d);
        grow(&mut self.m, BQ);
        grow(&mut self.l, BQ);
    }
}

thread_local! {
    /// Each thread's block buffers, kept across calls (fresh ones would page-fault every call).
    static SCRATCH: std::cell::RefCell<Scratch> = const {
        std::cell::RefCell::new(Scratch {
            kt: Vec::new(),
            vt: Vec::new(),
            s: Vec::new(),
            ds: Vec::new(),
            acc: Vec::new(),
            m: Vec::new(),
            l: Vec::new(),
        })
    };
}

/// Runs `f` on this thread's scratch, fitted to `d`.
fn with_scratch<R>(d: AttnDims, f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => {
            s.fit(d);
            f(&mut s)
        }
        // Only if a call were nested inside another on this thread: use fresh buffers.
        Err(_) => {
            let mut s = Scratch {
                kt: Vec::new(),
                vt: Vec::new(),
                s: Vec::new(),
                ds: Vec::new(),
                acc: Vec::new(),
                m: Vec::new(),
                l: Vec::new(),
            };
            s.fit(d);
            f(&mut s)
        }
    })
}

/// Copies the rows (b, ., g, .) of `x: (B, Tk, Hkv, D)` into `xt: (D, Tk)`: 8 keys at a time
/// in registers on the vector tiers (the GEMM's 8 x 8 transpose), the rest value by value.
/// (Value by value, every store went to another line of `xt`, which at T 128 fills L1: the
/// copies took a fifth of the backward.)
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut, unused_variables))]
fn transpose_head(isa: Isa, a: &Attn, x: &[f32], b: usize, g: usize, xt: &mut [f32]) {
    let AttnDims { tk, hkv, d, .. } = a.dims;
    let (rs, row0) = (hkv * d, (b * tk * hkv + g) * d);
    let mut j = 0;
    #[cfg(target_arch = "x86_64")]
    if d > 0 && matches!(isa, Isa::Avx512 | Isa::Avx2) {
        while j + 8 <= tk {
            let rows = &x[row0 + j * rs..][..7 * rs + d];
            // SAFETY: both tiers imply AVX; the 8 rows of d values lie in `rows`, and xt[j..] holds (d - 1) * tk + 8 values since j + 8 <= tk.
            unsafe { crate::gemm::pack::transpose8_avx(rows.as_ptr(), rs, d, &mut xt[j..], tk) };
            j += 8;
        }
    }
    for j in j..tk {
        let row = &x[row0 + j * rs..][..d];
        for (c, &v) in row.iter().enumerate() {
            xt[c * tk + j] = v;
        }
    }
}

/// Rows `i0..i0 + bq` and the key block `j0..j0 + bk`: returns through `ends` each row's visible
/// end in the block (every key from it on is invisible, and may be unwritten by a causal product:
/// the caller writes its probability, 0, there) and sets the scores of the other invisible keys
/// to `-inf` (written, not read).
#[allow(clippy::too_many_arguments)]
fn mask_block(
    a: &Attn,
    b: usize,
    i0: usize,
    j0: usize,
    s: &mut [f32],
    bq: usize,
    bk: usize,
    ends: &mut [usize],
) {
    for (r, end) in ends.iter_mut().enumerate().take(bq) {
        let vis = a.range(i0 + r);
        let lo = vis.start.saturating_sub(j0).min(bk);
        let hi = vis.end.saturating_sub(j0).clamp(lo, bk);
        let row = &mut s[r * BK..][..bk];
        row[..lo].fill(f32::NEG_INFINITY);
        if a.key_mask.is_some() {
            for (c, x) in row.iter_mut().enumerate().take(hi).skip(lo) {
                if !a.real(b, j0 + c) {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
        *end = hi;
    }
}

/// The causal shape of the block of `bk` keys from `j0` for queries from `i0` (see [`Causal`]):
/// the shift of its diagonal, or `None` when every query of the block sees every key (or the
/// attention is not causal).
fn diagonal(a: &Attn, i0: usize, j0: usize, bk: usize) -> Option<isize> {
    let AttnDims { tq, tk, .. } = a.dims;
    let shift = (tk - tq + i0) as isize - j0 as isize;
    (a.spec.causal && shift + 1 < bk as isize).then_some(shift)
}

/// The key blocks `(j0, bk)` that rows `i0..i1` may see.
fn key_blocks(a: &Attn, i0: usize, i1: usize) -> impl Iterator<Item = (usize, usize)> {
    let (lo, hi) = (a.range(i0).start, a.range(i1 - 1).end);
    (lo..hi).step_by(BK).map(move |j0| (j0, BK.min(hi - j0)))
}

/// The forward of query head `h` of batch `b`.
///
/// # Safety
/// `out` and `lse` point at slices of the checked lengths; only this call writes the rows of
/// `(b, h)`.
unsafe fn fwd_head(
    isa: Isa,
    a: &Attn,
    b: usize,
    h: usize,
    out: SendPtr<f32>,
    lse: SendPtr<f32>,
    s: &mut Scratch,
) {
    let AttnDims {
        tq, tk, hq, hkv, d, ..
    } = a.dims;
    let g = h / a.dims.group();
    // One query row (a decode step): its scores are dot products with the key rows as they lie,
    // so the head's keys are not transposed (that copy cost more than the product itself).
    let one_row = tq == 1;
    if !one_row {
        transpose_head(isa, a, a.k, b, g, &mut s.kt);
    }
    let (qs, kvs) = (hq * d, hkv * d);
    let mut ends = [0; BQ];
    for i0 in (0..tq).step_by(BQ) {
        let bq = BQ.min(tq - i0);
        s.acc[..bq * d].fill(0.0);
        s.m[..bq].fill(f32::NEG_INFINITY);
        s.l[..bq].fill(0.0);
        let q0 = ((b * tq + i0) * hq + h) * d;
        for (j0, bk) in key_blocks(a, i0, i0 + bq) {
            let shift = diagonal(a, i0, j0, bk);
            // S = scale * Q K^T over the block.
            if one_row {
                let k0 = ((b * tk + j0) * hkv + g) * d;
                let q = &a.q[q0..q0 + d];
                crate::gemm::gemv_dot(isa, a.spec.scale, q, &a.k[k0..], kvs, &mut s.s[..bk]);
            } else {
                let mm = Mm::new(bq, bk, d)
                    .a(&a.q[q0..], qs, 1)
                    .b(&s.kt[j0..], tk)
                    .causal(shift.map(Causal::Cols));
                mm.run(isa, a.spec.scale, &mut s.s, BK, false);
            }
            mask_block(a, b, i0, j0, &mut s.s, bq, bk, &mut ends);
            for (r, &end) in ends.iter().enumerate().take(bq) {
                // Keys past the row's visible end: their probability is 0, written directly.
                let (row, past) = s.s[r * BK..][..bk].split_at_mut(end);
                past.fill(0.0);
                let m_new = s.m[r].max(tile::row_max(isa, row));
                if m_new == f32::NEG_INFINITY {
                    row.fill(0.0);
                    continue;
                }
                let corr = crate::math::scalar::exp(s.m[r] - m_new);
                let sum = tile::exp_sub(isa, row, m_new);
                s.l[r] = s.l[r] * corr + sum;
                s.m[r] = m_new;
                if corr != 1.0 {
                    s.acc[r * d..][..d].iter_mut().for_each(|x| *x *= corr);
                }
            }
            // acc += P V over the block.
            let v0 = ((b * tk + j0) * hkv + g) * d;
            let mm = Mm::new(bq, d, bk)
                .a(&s.s, BK, 1)
                .b(&a.v[v0..], kvs)
                .causal(shift.map(Causal::KUpTo));
            mm.run(isa, 1.0, &mut s.acc, d, true);
        }
        for r in 0..bq {
            let l = s.l[r];
            let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
            // SAFETY: row (b, i0 + r, h) of out lies inside the checked length and belongs to this task; likewise lse (b, h, i0 + r).
            unsafe {
                let o = out.slice(q0 + r * qs..q0 + r * qs + d);
                for (o, &x) in o.iter_mut().zip(&s.acc[r * d..][..d]) {
                    *o = x * inv;
                }
                let li = (b * hq + h) * tq + i0 + r;
                lse.slice(li..li + 1)[0] = if l > 0.0 {
                    s.m[r] + l.ln()
                } else {
                    f32::NEG_INFINITY
                };
            }
        }
    }
}

/// The backward of kv head `g` of batch `b` and its query heads.
///
/// # Safety
/// The pointers come from slices of the checked lengths; only this call touches the dk, dv rows
/// of `(b, g)` and the dq rows of its query heads.
unsafe fn bwd_group(
    isa: Isa,
    a: &Attn,
    sv: &Saved,
    b: usize,
    g: usize,
    p: GradPtrs,
    s: &mut Scratch,
) {
    let AttnDims {
        tq, tk, hq, hkv, d, ..
    } = a.dims;
    transpose_head(isa, a, a.k, b, g, &mut s.kt);
    transpose_head(isa, a, a.v, b, g, &mut s.vt);
    let (qs, kvs, scale) = (hq * d, hkv * d, a.spec.scale);
    let kv0 = (b * tk * hkv + g) * d;
    let mut ends = [0; BQ];
    for h in g * a.dims.group()..(g + 1) * a.dims.group() {
        for i0 in (0..tq).step_by(BQ) {
            let bq = BQ.min(tq - i0);
            let q0 = ((b * tq + i0) * hq + h) * d;
            let l0 = (b * hq + h) * tq + i0;
            // D_i = rowsum(dO_i * O_i), kept in s.m.
            for r in 0..bq {
                let o = &sv.out[q0 + r * qs..][..d];
                let go = &sv.dout[q0 + r * qs..][..d];
                s.m[r] = crate::simd::sum8(d, |c| o[c] * go[c]);
            }
            for (j0, bk) in key_blocks(a, i0, i0 + bq) {
                let shift = diagonal(a, i0, j0, bk);
                let mm = Mm::new(bq, bk, d)
                    .a(&a.q[q0..], qs, 1)
                    .b(&s.kt[j0..], tk)
                    .causal(shift.map(Causal::Cols));
                mm.run(isa, scale, &mut s.s, BK, false);
                mask_block(a, b, i0, j0, &mut s.s, bq, bk, &mut ends);
                for (r, &end) in ends.iter().enumerate().take(bq) {
                    // Keys past the row's visible end get P = 0, written directly.
                    let (row, past) = s.s[r * BK..][..bk].split_at_mut(end);
                    past.fill(0.0);
                    let m = sv.lse[l0 + r];
                    if m == f32::NEG_INFINITY {
                        row.fill(0.0);
                    } else {
                        tile::exp_sub(isa, row, m);
                    }
                }
                // dP = dO V^T, then dS = P * (dP - D) in place; dS is 0 where P is (past a row's
                // visible end dP may be unwritten).
                let mm = Mm::new(bq, bk, d)
                    .a(&sv.dout[q0..], qs, 1)
                    .b(&s.vt[j0..], tk)
                    .causal(shift.map(Causal::Cols));
                mm.run(isa, 1.0, &mut s.ds, BK, false);
                for (r, &end) in ends.iter().enumerate().take(bq) {
                    let (pr, dr) = (&s.s[r * BK..][..bk], &mut s.ds[r * BK..][..bk]);
                    let (dr, past) = dr.split_at_mut(end);
                    dr.iter_mut()
                        .zip(pr)
                        .for_each(|(x, &pv)| *x = pv * (*x - s.m[r]));
                    past.fill(0.0);
                }
                let krow = kv0 + j0 * kvs;
                // SAFETY: the rows written lie inside the checked gradient slices and belong to this task (see the function's contract).
                unsafe {
                    // dV += P^T dO; dK += scale dS^T Q; dQ += scale dS K.
                    let dv = p.dv.ptr().add(krow);
                    Mm::new(bk, d, bq)
                        .a(&s.s, 1, BK)
                        .b(&sv.dout[q0..], qs)
                        .causal(shift.map(Causal::KFrom))
                        .run_ptr(isa, 1.0, dv, kvs, true);
                    let dk = p.dk.ptr().add(krow);
                    Mm::new(bk, d, bq)
                        .a(&s.ds, 1, BK)
                        .b(&a.q[q0..], qs)
                        .causal(shift.map(Causal::KFrom))
                        .run_ptr(isa, scale, dk, kvs, true);
                    let dq = p.dq.ptr().add(q0);
                    Mm::new(bq, d, bk)
                        .a(&s.ds, BK, 1)
                        .b(&a.k[krow..], kvs)
                        .causal(shift.map(Causal::KUpTo))
                        .run_ptr(isa, scale, dq, qs, true);
                }
            }
        }
    }
}
