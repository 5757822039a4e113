//! The `block` bench family: one forward + backward of a pre-LN GPT-2 block (d 768, 12 heads,
//! MLP 3072 with GELU-tanh), built from the autograd graph ops with its weights as graph
//! parameters, beside the same kernel calls made directly on preallocated buffers.
//!
//! The block: `x1 = x + proj(attn(split(qkv(ln_1(x)))))`, `y = x1 + fc2(gelu(fc(ln_2(x1))))`,
//! causal attention; loss `mean(y)`; every parameter gets its gradient, `x` needs none.
//!
//! Tape overhead: [`RawBlock`] issues the same kernel calls (the same GEMMs with the same `.t()`
//! views, norms, attention, GELU, the q/k/v split copies) on buffers allocated once, with no
//! graph: no nodes, no op records, no pool, no gradient slots. The difference between the two
//! step times is the time the autograd spends outside the kernels (recording, pool lookups,
//! zeroing and adding into gradient slots, the reshape/split bookkeeping); its share of the
//! graph step is the tape overhead reported.

use crate::autograd::{AttnConfig, Gelu, Graph, ParamId, Var};
use crate::kernels::attention::{Attn, AttnDims, AttnGrads, AttnSpec};
use crate::kernels::{Kernels, MatMut, MatRef};
use crate::tensor::{Result, Tensor};

/// Model width, heads, MLP width, LayerNorm eps (GPT-2 small).
pub const C: usize = 768;
pub const HEADS: usize = 12;
pub const FF: usize = 4 * C;
const EPS: f32 = 1e-5;

/// The configurations of the measure: `(B, T)`.
pub const BLOCK_CONFIGS: [(usize, usize); 2] = [(4, 64), (4, 256)];

/// Deterministic values in [-scale, scale).
fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32 ^ seed.wrapping_mul(0x9E37_79B9)).wrapping_mul(2654435761);
            ((h >> 8) as f32 / (1u32 << 23) as f32 - 1.0) * scale
        })
        .collect()
}

/// The parameters' shapes, in forward order: name, shape, init scale (LayerNorm weights 1).
const PARAMS: [(&str, &[usize]); 12] = [
    ("ln_1.weight", &[C]),
    ("ln_1.bias", &[C]),
    ("attn.c_attn.weight", &[3 * C, C]),
    ("attn.c_attn.bias", &[3 * C]),
    ("attn.c_proj.weight", &[C, C]),
    ("attn.c_proj.bias", &[C]),
    ("ln_2.weight", &[C]),
    ("ln_2.bias", &[C]),
    ("mlp.c_fc.weight", &[FF, C]),
    ("mlp.c_fc.bias", &[FF]),
    ("mlp.c_proj.weight", &[C, FF]),
    ("mlp.c_proj.bias", &[C]),
];

fn init(i: usize, n: usize) -> Vec<f32> {
    match i {
        0 | 6 => vec![1.0; n],
        _ => values(n, i as u32 + 1, 0.02),
    }
}

/// The block on the autograd graph.
pub struct Gpt2Block {
    g: Graph,
    p: Vec<ParamId>,
    x: Tensor,
    b: usize,
    t: usize,
}

impl Gpt2Block {
    /// A block with fixed pseudo-random weights and input `(b, t, 768)`.
    pub fn new(kern: Kernels, b: usize, t: usize) -> Result<Self> {
        let mut g = Graph::with_kernels(kern);
        let p = PARAMS
            .iter()
            .enumerate()
            .map(|(i, (name, shape))| {
                let n = shape.iter().product();
                let t = Tensor::from_vec(init(i, n), shape)?;
                Ok(g.add_param(name, &t, true))
            })
            .collect::<Result<Vec<_>>>()?;
        let x = Tensor::from_vec(values(b * t * C, 99, 1.0), &[b, t, C])?;
        Ok(Self { g, p, x, b, t })
    }

    /// Tokens per step.
    pub fn tokens(&self) -> usize {
        self.b * self.t
    }

    /// One forward + backward from zeroed gradients; returns the loss.
    ///
    /// # Errors
    /// Only on a bug (the shapes are fixed).
    pub fn step(&mut self) -> Result<f32> {
        self.g.zero_grads();
        let g = &mut self.g;
        let p: Vec<Var> = self.p.iter().map(|&p| g.param(p)).collect::<Result<_>>()?;
        let x = g.input(&self.x, false);
        let h = g.layernorm(x, p[0], p[1], EPS)?;
        let qkv = g.linear(h, p[2], Some(p[3]))?;
        let s = g.split(qkv, 2, &[C, C, C])?;
        let a = g.attention(s[0], s[1], s[2], AttnConfig::causal(HEADS, C / HEADS), None)?;
        let o = g.linear(a, p[4], Some(p[5]))?;
        let x1 = g.add(x, o)?;
        let h2 = g.layernorm(x1, p[6], p[7], EPS)?;
        let f = g.linear(h2, p[8], Some(p[9]))?;
        let f = g.gelu(f, Gelu::Tanh)?;
        let m = g.linear(f, p[10], Some(p[11]))?;
        let y = g.add(x1, m)?;
        let loss = g.mean(y)?;
        let l = g.value(loss)?[0];
        let grads = g.backward(loss)?;
        g.recycle(grads);
        Ok(l)
    }

    /// The gradient of parameter `i` (in [`PARAMS`] order) after a step.
    pub fn param_grad(&self, i: usize) -> Option<&[f32]> {
        self.g.param_grad(*self.p.get(i)?).ok().flatten()
    }
}

/// Activations and gradients of [`RawBlock`], allocated once.
struct Bufs {
    ln1: Vec<f32>,
    st1: [Vec<f32>; 2],
    qkv: Vec<f32>,
    q: [Vec<f32>; 3],
    att: Vec<f32>,
    lse: Vec<f32>,
    x1: Vec<f32>,
    ln2: Vec<f32>,
    st2: [Vec<f32>; 2],
    fc: Vec<f32>,
    gel: Vec<f32>,
    y: Vec<f32>,
    dy: Vec<f32>,
    dff: [Vec<f32>; 2],
    dc: [Vec<f32>; 3],
    dqkv_parts: [Vec<f32>; 3],
    dqkv: Vec<f32>,
}

/// The same block as the same kernel calls on preallocated buffers, no graph.
pub struct RawBlock {
    k: Kernels,
    w: Vec<Vec<f32>>,
    dw: Vec<Vec<f32>>,
    x: Vec<f32>,
    s: Bufs,
    b: usize,
    t: usize,
}

/// `y = x w^T + bias`: `x: (rows, inp)`, `w: (out, inp)` -> `y: (rows, out)`.
fn linear(k: Kernels, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32], inp: usize) {
    let (out, rows) = (bias.len(), x.len() / inp);
    y.chunks_exact_mut(out)
        .for_each(|r| r.copy_from_slice(bias));
    let (xm, wt) = (
        MatRef::new(x, rows, inp, inp),
        MatRef::new(w, out, inp, inp).t(),
    );
    k.sgemm(1.0, xm, wt, 1.0, MatMut::new(y, rows, out, out))
        .expect("fixed block shapes");
}

/// `dx = dy w` (overwrites), `dw += dy^T x`, `db += colsum(dy)`.
#[allow(clippy::too_many_arguments)]
fn linear_bwd(
    k: Kernels,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
    inp: usize,
) {
    let (out, rows) = (db.len(), x.len() / inp);
    let dym = MatRef::new(dy, rows, out, out);
    let wm = MatRef::new(w, out, inp, inp);
    k.sgemm(1.0, dym, wm, 0.0, MatMut::new(dx, rows, inp, inp))
        .expect("fixed block shapes");
    let xm = MatRef::new(x, rows, inp, inp);
    k.sgemm(1.0, dym.t(), xm, 1.0, MatMut::new(dw, out, inp, inp))
        .expect("fixed block shapes");
    for r in dy.chunks_exact(out) {
        db.iter_mut().zip(r).for_each(|(d, g)| *d += g);
    }
}

impl RawBlock {
    /// The block of [`Gpt2Block::new`] with the same weights and input.
    pub fn new(k: Kernels, b: usize, t: usize) -> Self {
        let n = b * t;
        let w: Vec<Vec<f32>> = PARAMS
            .iter()
            .enumerate()
            .map(|(i, (_, s))| init(i, s.iter().product()))
            .collect();
        let dw = w.iter().map(|w| vec![0.0; w.len()]).collect();
        let z = |len: usize| vec![0.0f32; len];
        let s = Bufs {
            ln1: z(n * C),
            st1: [z(n), z(n)],
            qkv: z(n * 3 * C),
            q: [z(n * C), z(n * C), z(n * C)],
            att: z(n * C),
            lse: z(b * HEADS * t),
            x1: z(n * C),
            ln2: z(n * C),
            st2: [z(n), z(n)],
            fc: z(n * FF),
            gel: z(n * FF),
            y: z(n * C),
            dy: vec![1.0 / (n * C) as f32; n * C],
            dff: [z(n * FF), z(n * FF)],
            dc: [z(n * C), z(n * C), z(n * C)],
            dqkv_parts: [z(n * C), z(n * C), z(n * C)],
            dqkv: z(n * 3 * C),
        };
        let x = values(n * C, 99, 1.0);
        Self {
            k,
            w,
            dw,
            x,
            s,
            b,
            t,
        }
    }

    /// One forward + backward, adding into zeroed weight gradients; returns `mean(y)`.
    pub fn step(&mut self) -> f32 {
        self.dw.iter_mut().for_each(|d| d.fill(0.0));
        let loss = self.forward();
        self.backward();
        loss
    }

    /// The attention inputs (the split q, k, v).
    fn attn<'a>(q: &'a [Vec<f32>; 3], b: usize, t: usize) -> Attn<'a> {
        let dims = AttnDims {
            batch: b,
            tq: t,
            tk: t,
            hq: HEADS,
            hkv: HEADS,
            d: C / HEADS,
        };
        Attn {
            dims,
            spec: AttnSpec::causal(C / HEADS),
            q: &q[0],
            k: &q[1],
            v: &q[2],
            key_mask: None,
        }
    }

    fn forward(&mut self) -> f32 {
        let (k, w, s, n) = (self.k, &self.w, &mut self.s, self.b * self.t);
        let ex = "fixed block shapes";
        let [m1, r1] = &mut s.st1;
        k.layernorm_fwd(&self.x, &w[0], &w[1], &mut s.ln1, m1, r1, n, C, EPS)
            .expect(ex);
        linear(k, &s.ln1, &w[2], &w[3], &mut s.qkv, C);
        for (i, part) in s.q.iter_mut().enumerate() {
            for (dst, src) in part.chunks_exact_mut(C).zip(s.qkv.chunks_exact(3 * C)) {
                dst.copy_from_slice(&src[i * C..(i + 1) * C]);
            }
        }
        let a = Self::attn(&s.q, self.b, self.t);
        k.attention_fwd(&a, &mut s.att, &mut s.lse).expect(ex);
        linear(k, &s.att, &w[4], &w[5], &mut s.x1, C);
        s.x1.iter_mut().zip(&self.x).for_each(|(y, x)| *y += x);
        let [m2, r2] = &mut s.st2;
        k.layernorm_fwd(&s.x1, &w[6], &w[7], &mut s.ln2, m2, r2, n, C, EPS)
            .expect(ex);
        linear(k, &s.ln2, &w[8], &w[9], &mut s.fc, C);
        k.gelu_fwd(Gelu::Tanh, &s.fc, &mut s.gel, n * FF).expect(ex);
        linear(k, &s.gel, &w[10], &w[11], &mut s.y, FF);
        s.y.iter_mut().zip(&s.x1).for_each(|(y, x)| *y += x);
        (s.y.iter().map(|&v| v as f64).sum::<f64>() / (n * C) as f64) as f32
    }

    /// Backward from `dy = 1 / (N C)` everywhere (the mean).
    fn backward(&mut self) {
        let (k, w, s, dw, n) = (self.k, &self.w, &mut self.s, &mut self.dw, self.b * self.t);
        let ex = "fixed block shapes";
        let [dgel, dfc] = &mut s.dff;
        let (a, b) = dw.split_at_mut(11);
        linear_bwd(k, &s.gel, &w[10], &s.dy, dgel, &mut a[10], &mut b[0], FF);
        dfc.fill(0.0);
        k.gelu_bwd(Gelu::Tanh, &s.fc, dgel, dfc, n * FF).expect(ex);
        let [dln2, dx1, datt] = &mut s.dc;
        let (a, b) = dw.split_at_mut(9);
        linear_bwd(k, &s.ln2, &w[8], dfc, dln2, &mut a[8], &mut b[0], C);
        dx1.copy_from_slice(&s.dy);
        let [m2, r2] = &s.st2;
        let (a, b) = dw.split_at_mut(7);
        k.layernorm_bwd(&s.x1, &w[6], m2, r2, dln2, dx1, &mut a[6], &mut b[0], n, C)
            .expect(ex);
        let (a, b) = dw.split_at_mut(5);
        linear_bwd(k, &s.att, &w[4], dx1, datt, &mut a[4], &mut b[0], C);
        s.dqkv_parts.iter_mut().for_each(|d| d.fill(0.0));
        let [dq, dk, dv] = &mut s.dqkv_parts;
        let at = Self::attn(&s.q, self.b, self.t);
        k.attention_bwd(&at, &s.att, &s.lse, datt, AttnGrads { dq, dk, dv })
            .expect(ex);
        for (i, part) in s.dqkv_parts.iter().enumerate() {
            for (dst, src) in s.dqkv.chunks_exact_mut(3 * C).zip(part.chunks_exact(C)) {
                dst[i * C..(i + 1) * C].copy_from_slice(src);
            }
        }
        let (a, b) = dw.split_at_mut(3);
        linear_bwd(k, &s.ln1, &w[2], &s.dqkv, dln2, &mut a[2], &mut b[0], C);
        // x needs no gradient; the kernel still computes dx, into a scratch block.
        let [m1, r1] = &s.st1;
        let (a, b) = dw.split_at_mut(1);
        k.layernorm_bwd(
            &self.x, &w[0], m1, r1, dln2, datt, &mut a[0], &mut b[0], n, C,
        )
        .expect(ex);
    }

    /// The gradient of parameter `i` (in [`PARAMS`] order) after a step.
    pub fn param_grad(&self, i: usize) -> Option<&[f32]> {
        self.dw.get(i).map(Vec::as_slice)
    }
}

/// Median seconds per step of each engine on one configuration.
#[derive(Clone, Copy, Debug)]
pub struct BlockTimes {
    /// The autograd graph.
    pub graph: f64,
    /// The same kernel calls without a graph.
    pub raw: f64,
    /// PyTorch eager, when a runner was given.
    pub torch: Option<f64>,
}

/// Floating-point operations of one forward + backward of the block on `(b, t)`: the four
/// Linear layers' GEMMs (`2 n d_in d_out` each for `n = b t` rows) and causal attention's two
/// products per head over the `t (t + 1) / 2` unmasked query-key pairs, forward; the backward
/// computes two products for each forward one (the gradients of both operands), so 3x in all.
/// Norms, GELU, softmax and the adds are left out (a few percent): the figure is the GEMM-class
/// work a step cannot avoid, so `flops / seconds` is a floor on what a step sustains.
pub fn block_flops(b: usize, t: usize) -> f64 {
    let n = (b * t) as f64;
    let (c, ff) = (C as f64, FF as f64);
    let linear = 2.0 * n * (c * 3.0 * c + c * c + c * ff + ff * c);
    let pairs = (b * HEADS) as f64 * (t * (t + 1) / 2) as f64;
    let attention = 2.0 * 2.0 * pairs * (C / HEADS) as f64;
    3.0 * (linear + attention)
}

impl BlockTimes {
    /// The share of the graph step spent outside the kernels: `(graph - raw) / graph`.
    pub fn tape_overhead(&self) -> f64 {
        (self.graph - self.raw) / self.graph
    }
}

/// Steps the graph block, the raw block and (if given) `torch`, which runs one step elsewhere
/// and returns its seconds, in turn, round after round until `budget` has passed (at least
/// `min_rounds` rounds, after one warm-up round); returns the medians.
///
/// # Errors
/// A failing graph step (a bug) or the error `torch` returns.
pub fn measure_block(
    kern: Kernels,
    (b, t): (usize, usize),
    budget: std::time::Duration,
    min_rounds: usize,
    mut torch: Option<&mut dyn FnMut() -> std::result::Result<f64, String>>,
) -> std::result::Result<BlockTimes, String> {
    use std::time::Instant;
    let mut g = Gpt2Block::new(kern, b, t).map_err(|e| e.to_string())?;
    let mut r = RawBlock::new(kern, b, t);
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    let start = Instant::now();
    let mut round = 0;
    while round <= min_rounds || start.elapsed() < budget {
        let t0 = Instant::now();
        std::hint::black_box(g.step().map_err(|e| e.to_string())?);
        let t1 = Instant::now();
        std::hint::black_box(r.step());
        let t2 = Instant::now();
        let ts = match torch.as_mut() {
            Some(f) => Some(f()?),
            None => None,
        };
        // Round 0 is the warm-up (page faults, pools, packing buffers).
        if round > 0 {
            samples[0].push((t1 - t0).as_secs_f64());
            samples[1].push((t2 - t1).as_secs_f64());
            samples[2].extend(ts);
        }
        round += 1;
    }
    let [gs, rs, ts] = samples;
    Ok(BlockTimes {
        graph: super::median(gs),
        raw: super::median(rs),
        torch: (!ts.is_empty()).then(|| super::median(ts)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// B 4, T 64: 256 rows through 12 d^2 weights, 48 heads over 64 * 65 / 2 query-key pairs
    /// of width 64, forward; 3x with the backward.
    #[test]
    fn block_flops_counts_linears_and_causal_attention() {
        let d = 768.0f64;
        let forward = 2.0 * 256.0 * 12.0 * d * d + 4.0 * 48.0 * 2080.0 * 64.0;
        assert_eq!(block_flops(4, 64), 3.0 * forward);
    }
}
