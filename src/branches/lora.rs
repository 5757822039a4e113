//! LoRA: a low-rank update `y = W x + (alpha / r) B A x` beside a base linear map, with `A`
//! random and `B` zero, so a fresh adapter leaves the base output unchanged.

use crate::autograd::{Graph, ParamId, Var};
use crate::models::Result;
use crate::nn::{Builder, Init};

/// The low-rank pair of one adapter: `A: (r, in)`, `B: (out, r)`, and the scale `alpha / r`.
#[derive(Clone, Copy, Debug)]
pub struct Lora {
    pub a: ParamId,
    pub b: ParamId,
    pub rank: usize,
    pub alpha: f32,
}

impl Lora {
    /// `name.a` `(r, in)` drawn from `N(0, 1/in)` (the input keeps its scale through `A`) and
    /// `name.b` `(out, r)` zero.
    ///
    /// # Errors
    /// The source's error.
    pub fn new(
        b: &mut Builder,
        name: &str,
        inp: usize,
        out: usize,
        rank: usize,
        alpha: f32,
    ) -> Result<Self> {
        let std = 1.0 / (inp.max(1) as f32).sqrt();
        b.scope(name, |b| {
            Ok(Lora {
                a: b.param("a", &[rank, inp], Init::Normal(std))?,
                b: b.param("b", &[out, rank], Init::Zeros)?,
                rank,
                alpha,
            })
        })
    }

    /// The update alone: `(alpha / r) B A x`. `// x: (..., in) -> (..., out)`
    ///
    /// # Errors
    /// Shape errors from the graph.
    pub fn delta(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let a = g.param(self.a)?;
        let b = g.param(self.b)?;
        let ax = g.linear(x, a, None)?;
        let bax = g.linear(ax, b, None)?;
        Ok(g.scale(bax, self.alpha / self.rank.max(1) as f32)?)
    }

    /// `base + (alpha / r) B A x`, where `base` is `W x` computed by the caller.
    /// `// base: (..., out), x: (..., in) -> (..., out)`
    ///
    /// # Errors
    /// Shape errors from the graph.
    pub fn apply(&self, g: &mut Graph, base: Var, x: Var) -> Result<Var> {
        let d = self.delta(g, x)?;
        Ok(g.add(base, d)?)
    }
}
