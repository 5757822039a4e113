//! Fused multi-head attention on the `attention_fwd/bwd` kernels: grouped-query heads, causal
//! with an optional sliding window (or not causal), an optional key padding mask, `Tq <= Tk`
//! (queries are the last `Tq` positions: a KV-cache step). See `anvil_kernels::attention`.
//!
//! Inputs and output keep heads packed in the last axis, exactly as a `linear` gives them, so a
//! model needs no reshape or permute: `q: (B, Tq, Hq * D)`, `k, v: (B, Tk, Hkv * D)` ->
//! `(B, Tq, Hq * D)`. Saved for backward: the per-row log-sum-exp `(B, Hq, Tq)` and the padding
//! mask; the probabilities are recomputed block by block (no `T x T` buffer is kept).

use crate::autograd::op::{Ctx, Op};
use crate::autograd::{Graph, Var, shape_err};
use crate::kernels::attention::{Attn, AttnDims, AttnGrads, AttnSpec};
use crate::tensor::Result;

/// Head counts and visibility of one attention op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnConfig {
    /// Query heads `Hq`.
    pub heads: usize,
    /// Key/value heads `Hkv` (`Hq % Hkv == 0`; `Hkv = Hq` is plain multi-head attention).
    pub kv_heads: usize,
    pub spec: AttnSpec,
}

impl AttnConfig {
    /// Causal multi-head attention (`Hkv = Hq`) over heads of size `d`, scale `1 / sqrt(d)`.
    pub fn causal(heads: usize, d: usize) -> Self {
        Self {
            heads,
            kv_heads: heads,
            spec: AttnSpec::causal(d),
        }
    }
}

/// What the backward needs.
#[derive(Debug)]
pub(crate) struct Saved {
    pub(crate) q: Var,
    pub(crate) k: Var,
    pub(crate) v: Var,
    pub(crate) dims: AttnDims,
    pub(crate) spec: AttnSpec,
    pub(crate) key_mask: Option<Vec<bool>>,
    pub(crate) lse: Vec<f32>,
}

impl Saved {
    fn attn<'a>(&'a self, c: &'a Ctx) -> Attn<'a> {
        Attn {
            dims: self.dims,
            spec: self.spec,
            q: c.v.get(self.q),
            k: c.v.get(self.k),
            v: c.v.get(self.v),
            key_mask: self.key_mask.as_deref(),
        }
    }
}

/// The kernel dims from the shapes, or an error naming them.
fn dims(qs: &[usize], ks: &[usize], vs: &[usize], cfg: &AttnConfig) -> Result<AttnDims> {
    let bad = |why: &str| {
        Err(shape_err(
            "attention",
            format!("q {qs:?}, k {ks:?}, v {vs:?} with {cfg:?}: {why}"),
        ))
    };
    if qs.len() != 3 || ks.len() != 3 || ks != vs {
        return bad("need q (B, Tq, Hq*D) and k, v both (B, Tk, Hkv*D)");
    }
    if cfg.heads == 0 || cfg.kv_heads == 0 || !cfg.heads.is_multiple_of(cfg.kv_heads) {
        return bad("Hq must be a positive multiple of Hkv");
    }
    if !qs[2].is_multiple_of(cfg.heads) {
        return bad("q's last axis is not a multiple of Hq");
    }
    let d = qs[2] / cfg.heads;
    if ks[0] != qs[0] || ks[2] != cfg.kv_heads * d {
        return bad("k and v need the same batch and Hkv * D columns");
    }
    if qs[1] > ks[1] {
        return bad("more queries than keys");
    }
    Ok(AttnDims {
        batch: qs[0],
        tq: qs[1],
        tk: ks[1],
        hq: cfg.heads,
        hkv: cfg.kv_heads,
        d,
    })
}

impl Graph {
    /// Scaled-dot-product attention, fused.
    /// `// q: (B, Tq, Hq*D), k: (B, Tk, Hkv*D), v: (B, Tk, Hkv*D) -> (B, Tq, Hq*D)`
    /// `key_mask: (B, Tk)`, `true` = real token (HF `attention_mask`). A query that sees no key
    /// outputs zeros and passes no gradient.
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] for shapes that disagree with each other or with the head
    /// counts, `Tq > Tk`, a stale handle; [`crate::tensor::Error::Kernel`] for a mask of the
    /// wrong length or a bad window (0, or without `causal`).
    pub fn attention(
        &mut self,
        q: Var,
        k: Var,
        v: Var,
        cfg: AttnConfig,
        key_mask: Option<&[bool]>,
    ) -> Result<Var> {
        const OP: &str = "attention";
        let qs = self.shape(q)?.to_vec();
        let d = dims(&qs, self.shape(k)?, self.shape(v)?, &cfg)?;
        let mut y = self.pool().take(qs.iter().product());
        let mut lse = self.pool().take(d.lse_len());
        let a = Attn {
            dims: d,
            spec: cfg.spec,
            q: self.arg(OP, q)?.0,
            k: self.arg(OP, k)?.0,
            v: self.arg(OP, v)?.0,
            key_mask,
        };
        self.kernels().attention_fwd(&a, &mut y, &mut lse)?;
        if !self.records(&[q, k, v]) {
            self.pool().give(lse);
            return Ok(self.push(y, qs, Op::Leaf));
        }
        let s = Saved {
            q,
            k,
            v,
            dims: d,
            spec: cfg.spec,
            key_mask: key_mask.map(<[bool]>::to_vec),
            lse,
        };
        Ok(self.push(y, qs, Op::Attention(s)))
    }
}

/// `dq, dk, dv` from the kernel into zeroed scratch buffers, each then handed to its input as
/// its gradient (no copy) or added into the one it has (q, k and v may be the same value).
pub(crate) fn backward(c: &mut Ctx, s: &Saved, out: Var, dy: &[f32]) -> Result<()> {
    let (nq, nkv) = (c.v.get(s.q).len(), c.v.get(s.k).len());
    let mut g = [nq, nkv, nkv].map(|n| c.g.scratch_zeroed(n));
    let [dq, dk, dv] = &mut g;
    let grads = AttnGrads { dq, dk, dv };
    c.k.attention_bwd(&s.attn(c), c.v.get(out), &s.lse, dy, grads)?;
    for (x, gx) in [s.q, s.k, s.v].into_iter().zip(g) {
        c.g.accumulate_owned(x, gx);
    }
    Ok(())
}
