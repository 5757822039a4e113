//! The mixture-of-experts feed-forward as Mixtral has it: a linear router, softmax, top-k, the
//! k weights renormalised to sum to one, and SwiGLU experts.
//!
//! Dispatch groups the tokens of each expert, so each expert runs one GEMM over its tokens
//! (`index_select`), scales its rows by their routing weights (`scale_rows`), and one
//! `index_add` combines every expert's rows back into token order. Renormalised top-k softmax
//! probabilities equal a softmax over the k selected logits, which is how the weights are
//! computed (one op, exact gradient to the router).

use super::{Builder, Linear, SwiGlu};
use crate::autograd::ops::gather::topk_indices;
use crate::autograd::{Graph, Var};
use crate::models::Result;

/// Router plus experts.
#[derive(Clone, Debug)]
pub struct Moe {
    pub router: Linear,
    pub experts: Vec<SwiGlu>,
    pub top_k: usize,
}

/// The mixture's output and the router logits `(tokens, experts)` for the balancing loss.
pub struct MoeOutput {
    pub y: Var,
    pub router_logits: Var,
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
        top_k: usize,
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
                top_k,
            })
        })
    }

    /// `// x: (..., d) -> (..., d)`, router logits `(tokens, E)`.
    ///
    /// # Errors
    /// Shape errors from the graph.
    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<MoeOutput> {
        let shape = g.shape(x)?.to_vec();
        let d = *shape.last().unwrap_or(&0);
        let n = shape.iter().product::<usize>() / d.max(1);
        let flat = g.reshape(x, &[n, d])?;
        let logits = self.router.forward(g, flat)?;
        let e = self.experts.len();
        let k = self.top_k;
        let idx = topk_indices(g.value(logits)?, e, k);
        let chosen = g.take(logits, &idx, k)?;
        let weights = g.softmax(chosen)?;
        let weights = g.reshape(weights, &[n * k])?;
        let mut parts = Vec::with_capacity(e);
        let mut rows_all = Vec::with_capacity(n * k);
        for (ex, expert) in self.experts.iter().enumerate() {
            // Slots (token * k + j) routed to this expert, in token order.
            let slots: Vec<u32> = (0..(n * k) as u32)
                .filter(|&s| idx[s as usize] as usize == ex)
                .collect();
            if slots.is_empty() {
                continue;
            }
            let rows: Vec<u32> = slots.iter().map(|&s| s / k as u32).collect();
            let xe = g.index_select(flat, &rows)?;
            let ye = expert.forward(g, xe)?;
            let we = g.index_select(weights, &slots)?;
            parts.push(g.scale_rows(ye, we)?);
            rows_all.extend_from_slice(&rows);
        }
        let all = g.concat(&parts, 0)?;
        let y = g.index_add(all, &rows_all, n)?;
        Ok(MoeOutput {
            y: g.reshape(y, &shape)?,
            router_logits: logits,
        })
    }
}
