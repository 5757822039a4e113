//! The mixture-of-experts feed-forward: a linear router computed in f32, softmax, top-k, the k
//! weights renormalised to sum to one (or the raw probabilities kept), optional multiplicative
//! jitter in training, an optional capacity per expert with token dropping, and SwiGLU experts.
//!
//! Dispatch groups the tokens of each expert, so each expert runs one GEMM over its tokens
//! (`index_select`), and one `index_add_scaled` adds every expert's rows, scaled by their
//! routing weights, back into token order (no scaled copy or concatenation of the rows). Renormalised top-k softmax
//! probabilities equal a softmax over the k selected logits, which is how they are computed (one
//! op, exact gradient to the router).
//!
//! Capacity: with a capacity factor `c`, expert `e` keeps at most `ceil(c * N * k / E)` of the
//! `(token, choice)` slots routed to it, first choices of all tokens before second choices, each
//! in token order (GShard's priority). A dropped slot contributes nothing, so a token whose every
//! slot is dropped leaves the layer as zero and the block's residual passes it on unchanged.
//! Without a capacity (dropless) every slot is kept.

use super::{Builder, Linear, SwiGlu};
use crate::autograd::ops::gather::topk_indices;
use crate::autograd::{Graph, Rng, Var};
use crate::models::Result;
use crate::tensor::Tensor;

/// How tokens are routed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Routing {
    /// Experts per token.
    pub top_k: usize,
    /// Renormalise the k probabilities to sum to one (Mixtral); `false` keeps the raw softmax
    /// probabilities (Switch with k = 1).
    pub renormalize: bool,
    /// Multiplicative jitter on the router input in training: `x * U(1 - j, 1 + j)`.
    pub jitter: f32,
    /// Slots per expert as a multiple of the balanced share `N * k / E`; `None`: dropless.
    pub capacity_factor: Option<f32>,
}

impl Routing {
    /// Mixtral's routing: top-k, renormalised, no jitter, dropless.
    pub fn top_k(k: usize) -> Self {
        Routing {
            top_k: k,
            renormalize: true,
            jitter: 0.0,
            capacity_factor: None,
        }
    }
}

/// Router plus experts.
#[derive(Clone, Debug)]
pub struct Moe {
    pub router: Linear,
    pub experts: Vec<SwiGlu>,
    pub routing: Routing,
}

/// What one forward of a mixture saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MoeStats {
    /// Kept `(token, choice)` slots per expert.
    pub load: Vec<usize>,
    /// Slots dropped for capacity.
    pub dropped: usize,
    /// Mean entropy of the router distribution over tokens, in nats (`ln E` is uniform).
    pub entropy: f32,
}

/// The mixture's output, the router logits `(tokens, experts)` for the balancing losses, and
/// the routing statistics.
pub struct MoeOutput {
    pub y: Var,
    pub router_logits: Var,
    pub stats: MoeStats,
}

impl Moe {
    /// Mixtral's layout under `name`: `gate.weight` `(E, d)` and `experts.{e}.w1` (gate),
    /// `w3` (up), `w2` (down).
    ///
    /// # Errors
    /// The source's error.
    pub fn mixtral(
        b: &mut Builder,
        name: &str,
        d: usize,
        ff: usize,
        n_experts: usize,
        routing: Routing,
    ) -> Result<Self> {
        b.scope(name, |b| {
            let router = Linear::new(b, "gate", d, n_experts, false)?;
            let experts = (0..n_experts)
                .map(|e| {
                    b.scope(&format!("experts.{e}"), |b| {
                        Ok(SwiGlu {
                            gate: Linear::new(b, "w1", d, ff, false)?,
                            down: Linear::new(b, "w2", ff, d, false)?,
                            up: Linear::new(b, "w3", d, ff, false)?,
                        })
                    })
                })
                .collect::<Result<_>>()?;
            Ok(Moe {
                router,
                experts,
                routing,
            })
        })
    }

    /// `// x: (..., d) -> (..., d)`, router logits `(tokens, E)`. `rng` is the training-mode
    /// generator for jitter (`None` in evaluation: no jitter).
    ///
    /// # Errors
    /// Shape errors from the graph.
    pub fn forward(&self, g: &mut Graph, x: Var, rng: Option<&mut Rng>) -> Result<MoeOutput> {
        let shape = g.shape(x)?.to_vec();
        let d = *shape.last().unwrap_or(&0);
        let n = shape.iter().product::<usize>() / d.max(1);
        let flat = g.reshape(x, &[n, d])?;
        let r = self.routing;
        let router_in = match rng {
            Some(rng) if r.jitter > 0.0 => {
                let noise: Vec<f32> = (0..n * d)
                    .map(|_| 1.0 - r.jitter + 2.0 * r.jitter * rng.next_f32())
                    .collect();
                let noise = g.input(&Tensor::from_vec(noise, &[n, d])?, false);
                g.mul(flat, noise)?
            }
            _ => flat,
        };
        let logits = self.router.forward(g, router_in)?;
        let e = self.experts.len();
        let k = r.top_k;
        let idx = topk_indices(g.value(logits)?, e, k);
        let entropy = mean_entropy(g.value(logits)?, e);
        let weights = if r.renormalize {
            let chosen = g.take(logits, &idx, k)?;
            g.softmax(chosen)?
        } else {
            let probs = g.softmax(logits)?;
            g.take(probs, &idx, k)?
        };
        let weights = g.reshape(weights, &[n * k])?;
        let (kept, dropped) = assign(&idx, n, e, k, r.capacity_factor);
        let load = kept.iter().map(Vec::len).collect();
        let y = if let Some(y) = super::moe_infer::experts_no_grad(g, self, flat, weights, &kept)? {
            // Decode: nothing recorded, a few tokens (see `moe_infer`).
            y
        } else if g.grad_enabled() && self.experts.iter().all(SwiGlu::plain) {
            self.experts_grouped(g, flat, weights, &kept, n)?
        } else {
            self.experts_one_by_one(g, flat, weights, kept, n)?
        };
        Ok(MoeOutput {
            y: g.reshape(y, &shape)?,
            router_logits: logits,
            stats: MoeStats {
                load,
                dropped,
                entropy,
            },
        })
    }
}

impl Moe {
    /// Training: every expert's tokens gathered into one `(R, d)` block, expert after expert,
    /// through `linear_grouped` (the experts' GEMMs in one parallel region, cut into tiles)
    /// and one `swiglu`, then scaled and added back by token. The same bits as
    /// [`Moe::experts_one_by_one`] with `k <= 2` (beyond, a token's input gradient sums its
    /// experts' rows in another order). `// flat: (N, d), weights: (N * k) -> (N, d)`
    fn experts_grouped(
        &self,
        g: &mut Graph,
        flat: Var,
        weights: Var,
        kept: &[Vec<u32>],
        n: usize,
    ) -> Result<Var> {
        let k = self.routing.top_k as u32;
        let used: Vec<usize> = (0..kept.len()).filter(|&e| !kept[e].is_empty()).collect();
        if used.is_empty() {
            // Every slot dropped: the layer adds nothing.
            return Ok(g.scale(flat, 0.0)?);
        }
        let slots: Vec<u32> = used.iter().flat_map(|&e| kept[e].iter().copied()).collect();
        let rows: Vec<u32> = slots.iter().map(|&s| s / k).collect();
        let groups: Vec<usize> = used.iter().map(|&e| kept[e].len()).collect();
        let xs = g.index_select(flat, &rows)?;
        let mut weights_of = |pick: fn(&SwiGlu) -> &Linear| {
            used.iter()
                .map(|&e| g.param(pick(&self.experts[e]).w))
                .collect::<crate::tensor::Result<Vec<Var>>>()
        };
        let (w1, w3, w2) = (
            weights_of(|x| &x.gate)?,
            weights_of(|x| &x.up)?,
            weights_of(|x| &x.down)?,
        );
        let gate = g.linear_grouped(xs, &w1, &groups)?;
        let up = g.linear_grouped(xs, &w3, &groups)?;
        let h = g.swiglu(gate, up)?;
        let down = g.linear_grouped(h, &w2, &groups)?;
        Ok(g.index_add_scaled(&[down], weights, &[slots], k as usize, n)?)
    }

    /// Each expert on its own tokens in turn (inference, where each Linear reads its packed
    /// weight, and experts with biases or int8 weights). `// flat: (N, d) -> (N, d)`
    fn experts_one_by_one(
        &self,
        g: &mut Graph,
        flat: Var,
        weights: Var,
        kept: Vec<Vec<u32>>,
        n: usize,
    ) -> Result<Var> {
        let k = self.routing.top_k;
        let mut parts = Vec::with_capacity(kept.len());
        let mut part_slots = Vec::with_capacity(kept.len());
        for (expert, slots) in self.experts.iter().zip(kept) {
            if slots.is_empty() {
                continue;
            }
            let rows: Vec<u32> = slots.iter().map(|&s| s / k as u32).collect();
            let xe = g.index_select(flat, &rows)?;
            parts.push(expert.forward(g, xe)?);
            part_slots.push(slots);
        }
        Ok(if parts.is_empty() {
            // Every slot dropped: the layer adds nothing.
            g.scale(flat, 0.0)?
        } else {
            g.index_add_scaled(&parts, weights, &part_slots, k, n)?
        })
    }
}

/// The kept slots (`token * k + choice`) of each expert and the number dropped: with a capacity,
/// first choices of all tokens come before second choices, each in token order.
pub fn assign(
    idx: &[u32],
    n: usize,
    e: usize,
    k: usize,
    capacity_factor: Option<f32>,
) -> (Vec<Vec<u32>>, usize) {
    let cap = capacity_factor.map_or(usize::MAX, |c| {
        (f64::from(c) * (n * k) as f64 / e.max(1) as f64).ceil() as usize
    });
    let mut kept: Vec<Vec<u32>> = vec![Vec::new(); e];
    let mut dropped = 0;
    for j in 0..k {
        for t in 0..n {
            let slot = t * k + j;
            let ex = idx[slot] as usize;
            if kept[ex].len() < cap {
                kept[ex].push(slot as u32);
            } else {
                dropped += 1;
            }
        }
    }
    (kept, dropped)
}

/// Mean over rows of the entropy (nats) of `softmax(row)`.
fn mean_entropy(logits: &[f32], e: usize) -> f32 {
    let rows = logits.len() / e.max(1);
    if rows == 0 {
        return 0.0;
    }
    let total: f64 = logits
        .chunks_exact(e)
        .map(|row| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f64 = row.iter().map(|&v| f64::from(v - m).exp()).sum();
            row.iter()
                .map(|&v| {
                    let p = f64::from(v - m).exp() / z;
                    if p > 0.0 { -p * p.ln() } else { 0.0 }
                })
                .sum::<f64>()
        })
        .sum();
    (total / rows as f64) as f32
}
