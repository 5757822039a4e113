//! AdamW with parameter groups, learning-rate schedules and global-norm gradient clipping.

use crate::autograd::{Graph, ParamId};
use crate::kernels::adamw::AdamW as Hyper;
use crate::models::{Error, Model, Result};

/// Parameters sharing a learning rate and a weight decay.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamGroup {
    pub name: String,
    /// Peak learning rate (the schedule scales it).
    pub lr: f64,
    pub weight_decay: f64,
    pub params: Vec<ParamId>,
}

/// Whether a parameter is decayed by default: matrices are, vectors (norm weights, biases) are
/// not.
pub fn decays_by_default(shape: &[usize]) -> bool {
    shape.len() >= 2
}

/// The usual two groups over a model's trainable parameters: `decay` (matrices, `weight_decay`)
/// and `no_decay` (norm weights and biases, decay 0), both at `lr`.
pub fn default_groups(model: &Model, lr: f64, weight_decay: f64) -> Vec<ParamGroup> {
    groups_by_name(model, &[], lr, weight_decay)
}

/// Groups by name: each parameter goes to the first rule whose substring its name contains
/// (`(substring, lr, weight_decay)`, group named after the substring), else to `decay` /
/// `no_decay` at the defaults. Vectors get no decay in every group. Frozen parameters are left
/// out.
pub fn groups_by_name(
    model: &Model,
    rules: &[(&str, f64, f64)],
    lr: f64,
    weight_decay: f64,
) -> Vec<ParamGroup> {
    let g = model.graph_ref();
    let mut groups: Vec<ParamGroup> = Vec::new();
    for (name, p) in model.params() {
        if g.requires_grad(*p) != Some(true) {
            continue;
        }
        let shape = g
            .param_tensor(*p)
            .map(|t| t.shape().to_vec())
            .unwrap_or_default();
        let (gname, glr, gwd) = match rules.iter().find(|(s, _, _)| name.contains(s)) {
            Some(&(s, l, w)) => (s.to_string(), l, w),
            None => ("decay".to_string(), lr, weight_decay),
        };
        let (gname, gwd) = if decays_by_default(&shape) {
            (gname, gwd)
        } else if gname == "decay" {
            ("no_decay".to_string(), 0.0)
        } else {
            (format!("{gname}.no_decay"), 0.0)
        };
        match groups.iter_mut().find(|x| x.name == gname) {
            Some(x) => x.params.push(*p),
            None => groups.push(ParamGroup {
                name: gname,
                lr: glr,
                weight_decay: gwd,
                params: vec![*p],
            }),
        }
    }
    groups
}

/// One parameter's optimizer state.
#[derive(Clone, Debug)]
pub(crate) struct Moments {
    pub(crate) param: ParamId,
    pub(crate) m: Vec<f32>,
    pub(crate) v: Vec<f32>,
}

/// AdamW (decoupled weight decay, PyTorch's operation order through the AdamW kernel) over
/// parameter groups. Frozen parameters have no state.
#[derive(Clone, Debug)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub(crate) groups: Vec<(ParamGroup, Vec<Moments>)>,
    pub(crate) step: u64,
}

impl AdamW {
    /// State for `groups` (zero moments).
    ///
    /// # Errors
    /// [`Error::Config`] when a parameter is frozen, unknown, or in two groups.
    pub fn new(
        graph: &Graph,
        groups: Vec<ParamGroup>,
        beta1: f64,
        beta2: f64,
        eps: f64,
    ) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let mut state = Vec::with_capacity(group.params.len());
            for &p in &group.params {
                let name = graph.param_value(p).map(|v| v.0.to_string());
                let name = name.unwrap_or_else(|_| format!("{p:?}"));
                if graph.requires_grad(p) != Some(true) {
                    return Err(Error::Config {
                        detail: format!("group `{}`: `{name}` is frozen or unknown", group.name),
                    });
                }
                if !seen.insert(p) {
                    return Err(Error::Config {
                        detail: format!("`{name}` is in two parameter groups"),
                    });
                }
                let n = graph.param_tensor(p)?.numel();
                state.push(Moments {
                    param: p,
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                });
            }
            out.push((group, state));
        }
        Ok(AdamW {
            beta1,
            beta2,
            eps,
            groups: out,
            step: 0,
        })
    }

    /// One group of every trainable parameter with `hyper`'s learning rate and decay.
    pub fn all(graph: &Graph, hyper: Hyper) -> Self {
        let params = graph
            .param_ids()
            .filter(|&p| graph.requires_grad(p) == Some(true))
            .collect();
        let group = ParamGroup {
            name: "all".into(),
            lr: hyper.lr,
            weight_decay: hyper.weight_decay,
            params,
        };
        Self::new(graph, vec![group], hyper.beta1, hyper.beta2, hyper.eps)
            .expect("every trainable parameter once")
    }

    /// The groups, in order.
    pub fn groups(&self) -> impl Iterator<Item = &ParamGroup> {
        self.groups.iter().map(|(g, _)| g)
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One step at `lr_factor` times each group's learning rate, from the accumulated
    /// gradients; then zeroes them (every parameter's, with [`Graph::zero_grads`]: lazily, so the
    /// next backward writes each gradient instead of adding into zeros).
    ///
    /// # Errors
    /// When a tape is still recorded on `graph` (call backward or clear first).
    pub fn step(&mut self, graph: &mut Graph, lr_factor: f64) -> Result<()> {
        self.step += 1;
        let k = graph.kernels();
        for (group, state) in &mut self.groups {
            let h = Hyper {
                lr: group.lr * lr_factor,
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.eps,
                weight_decay: group.weight_decay,
            };
            for s in state {
                let (param, grad) = graph.param_update(s.param)?;
                k.adamw(param, grad, &mut s.m, &mut s.v, &h, self.step)?;
            }
        }
        graph.zero_grads();
        Ok(())
    }
}

/// How the learning rate decays after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decay {
    Cosine,
    Linear,
    Constant,
}

impl Decay {
    pub fn name(self) -> &'static str {
        match self {
            Decay::Cosine => "cosine",
            Decay::Linear => "linear",
            Decay::Constant => "constant",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        [Decay::Cosine, Decay::Linear, Decay::Constant]
            .into_iter()
            .find(|d| d.name() == s)
    }
}

/// Linear warmup over `warmup` steps, then `decay` to `min_ratio` of the peak at `total`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub warmup: u64,
    pub total: u64,
    pub decay: Decay,
    pub min_ratio: f64,
}

impl Schedule {
    /// A constant learning rate.
    pub fn constant() -> Self {
        Schedule {
            warmup: 0,
            total: 0,
            decay: Decay::Constant,
            min_ratio: 1.0,
        }
    }

    /// The multiplier of the peak learning rate for step `step` (0 for the first step):
    /// `(step + 1) / warmup` during warmup, then the decay over `warmup..total` (held at
    /// `min_ratio` past `total`).
    pub fn factor(&self, step: u64) -> f64 {
        if step < self.warmup {
            return (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let p = ((step - self.warmup) as f64 / span).min(1.0);
        let m = self.min_ratio;
        match self.decay {
            Decay::Constant => 1.0,
            Decay::Linear => m + (1.0 - m) * (1.0 - p),
            Decay::Cosine => m + (1.0 - m) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
        }
    }
}

/// Scales the gradients of `params` so their global L2 norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`: coefficient `max_norm / (norm + 1e-6)`, applied only when below 1).
/// The norm is summed in f64 in parameter order, so it does not depend on the thread count.
/// Returns the norm before clipping.
///
/// # Errors
/// [`Error::Tensor`] for an unknown parameter.
pub fn clip_grad_norm(graph: &mut Graph, params: &[ParamId], max_norm: f64) -> Result<f64> {
    let mut sq = 0.0f64;
    for &p in params {
        if let Some(g) = graph.param_grad(p)? {
            sq += g.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>();
        }
    }
    let norm = sq.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let c = coef as f32;
        for &p in params {
            if let Some(g) = graph.param_grad_mut(p)? {
                g.iter_mut().for_each(|x| *x *= c);
            }
        }
    }
    Ok(norm)
}
