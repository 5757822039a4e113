//! Layers: parameters registered in a [`Graph`] by name, and forwards made of graph ops.
//!
//! A layer is a handful of [`ParamId`]s plus its hyper-parameters; it owns no values (the graph
//! does), so the same layer runs in training and in no-grad inference alike. Layers are built by a
//! [`Builder`], which asks a [`Source`] for each parameter by its checkpoint name: random
//! initialisation for a new model, a safetensors file for a trained one.

mod attention;
mod moe;
mod moe_infer;

pub use attention::{Attention, AttentionSpec, CacheStep, KvCache, LayerKv, Qkv, sinusoidal_table};
pub use moe::{Moe, MoeOutput, MoeStats, Routing, assign as moe_assign};

use crate::autograd::{Gelu, Graph, ParamId, QParamId, Rng, Var};
use crate::kernels::qgemm::QFormat;
use crate::models::{Error, Result};
use crate::tensor::{DType, Tensor};

/// How a fresh parameter is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Normal with mean 0 and this standard deviation.
    Normal(f32),
    Zeros,
    Ones,
}

/// Where parameter values come from.
pub trait Source {
    /// The value of parameter `name`, which must have `shape` (`init` says how a fresh one starts).
    ///
    /// # Errors
    /// A source-specific error naming the tensor (missing, wrong shape, unreadable).
    fn get(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor>;

    /// The int8 form `(out, inp)` (per-row scales) of weight `name`, when the source stores it
    /// so; `None` (the default) when it holds the weight as floats or not at all.
    ///
    /// # Errors
    /// A source-specific error naming the tensor (an int8 tensor of the wrong shape).
    fn get_int8(&mut self, _name: &str, _out: usize, _inp: usize) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// `e`, a refusal of the value this source gave for `name` (an int8 weight the kernels
    /// cannot pack), located in the source: a file names itself and the stored tensor. The
    /// default passes `e` on.
    fn locate(&self, _name: &str, e: crate::tensor::Error) -> Error {
        Error::Tensor(e)
    }
}

/// Fresh parameters from a seeded generator, in the order they are asked for.
#[derive(Debug)]
pub struct RandomInit {
    rng: Rng,
}

impl RandomInit {
    pub fn new(seed: u64) -> Self {
        RandomInit {
            rng: Rng::new(seed),
        }
    }

    /// A standard normal sample (Box-Muller on two 24-bit uniforms).
    fn normal(&mut self) -> f32 {
        let u1 = (f64::from(self.rng.next_f32()) + 1.0 / f64::from(1u32 << 25)).min(1.0);
        let u2 = f64::from(self.rng.next_f32());
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

impl Source for RandomInit {
    fn get(&mut self, _name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let n = crate::tensor::numel("init", shape)?;
        let v = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(std) => (0..n).map(|_| std * self.normal()).collect(),
        };
        Ok(Tensor::from_vec(v, shape)?)
    }
}

/// Registers parameters in a graph, each from a [`Source`], under a name prefix.
pub struct Builder<'a> {
    pub graph: &'a mut Graph,
    source: &'a mut dyn Source,
    prefix: String,
    /// Every parameter made, with its full name, in order.
    pub names: &'a mut Vec<(String, ParamId)>,
}

impl<'a> Builder<'a> {
    pub fn new(
        graph: &'a mut Graph,
        source: &'a mut dyn Source,
        names: &'a mut Vec<(String, ParamId)>,
    ) -> Self {
        Builder {
            graph,
            source,
            prefix: String::new(),
            names,
        }
    }

    /// Runs `f` with `part` appended to the name prefix (joined by a dot).
    pub fn scope<R>(&mut self, part: &str, f: impl FnOnce(&mut Builder) -> R) -> R {
        let saved = self.prefix.clone();
        if !self.prefix.is_empty() {
            self.prefix.push('.');
        }
        self.prefix.push_str(part);
        let r = f(self);
        self.prefix = saved;
        r
    }

    /// The frozen int8 parameter `prefix.name` `(out, inp)` and its packed weights, when the
    /// source stores that weight as int8.
    ///
    /// # Errors
    /// The source's error; when the tensor cannot be packed (a -128, a row too long), the
    /// source's [`Source::locate`] of it.
    pub fn int8_weight(
        &mut self,
        name: &str,
        out: usize,
        inp: usize,
    ) -> Result<Option<(ParamId, QParamId)>> {
        let full = self.full_name(name);
        let Some(t) = self.source.get_int8(&full, out, inp)? else {
            return Ok(None);
        };
        let qw = crate::autograd::ops::qlinear::pack_int8(&t)
            .map_err(|e| self.source.locate(&full, e))?;
        let id = self.graph.add_param(&full, &t, false);
        self.names.push((full, id));
        Ok(Some((id, self.graph.add_qweights(qw))))
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A trainable parameter `prefix.name` of `shape`.
    ///
    /// # Errors
    /// The source's error (missing tensor, wrong shape, ...).
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> Result<ParamId> {
        let full = self.full_name(name);
        let t = self.source.get(&full, shape, init)?;
        if t.shape() != shape {
            return Err(Error::TensorShape {
                path: "<source>".into(),
                name: full,
                expected: shape.to_vec(),
                actual: t.shape().to_vec(),
            });
        }
        // A weight of several huge pages that is not read in place from a file moves to memory
        // advised for huge pages: a decode step streams every weight once, and with 4 KiB pages
        // each 4 KiB of it costs a TLB miss (GPT-2 124M decode, two models in one process,
        // interleaved: 35.9 against 32.7 tok/s; level in a second run under heavier load).
        // Training copies it back to ordinary memory on its first update.
        let t = if t.dtype() == DType::F32 && !t.is_mapped() && 4 * t.numel() >= HUGE_MIN_BYTES {
            t.in_huge_pages().map_err(|e| Error::Config {
                detail: format!(
                    "{full}: cannot map memory for its {} values: {e}",
                    t.numel()
                ),
            })?
        } else {
            t
        };
        let id = self.graph.add_param(&full, &t, true);
        self.names.push((full, id));
        Ok(id)
    }
}

/// From this size a fresh or copied f32 parameter lives in huge pages (two of them: the last
/// huge page is backed whole, so smaller weights would waste up to half their size).
const HUGE_MIN_BYTES: usize = 2 * crate::tensor::HUGE_PAGE;

/// Standard deviation of fresh weights (GPT-2's and the HF default `initializer_range`).
pub const INIT_STD: f32 = 0.02;

/// `y = x W^T + b` with `W: (out, in)`, or `y = x W + b` with `W: (in, out)` for GPT-2's Conv1D.
/// A quantized Linear (`q`) computes through int8 weights `(out, in)` per output channel; its
/// parameter `w` then holds that int8 tensor (for saving) and is not read by the forward.
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    pub w: ParamId,
    pub b: Option<ParamId>,
    /// The weight is stored `(in, out)` (GPT-2 `Conv1D`).
    pub in_out: bool,
    /// The packed int8 weights, once quantized (inference only).
    pub q: Option<QParamId>,
}

impl Linear {
    /// Whether it is a bare f32 product: no bias, weight not quantized (either layout).
    pub fn is_bare_f32(&self) -> bool {
        self.b.is_none() && self.q.is_none()
    }

    /// `name.weight` `(out, in)` and, with `bias`, `name.bias` `(out)`.
    ///
    /// # Errors
    /// The source's error.
    /// An int8 weight in the source (see [`Builder::int8_weight`]) makes it a quantized Linear.
    pub fn new(b: &mut Builder, name: &str, inp: usize, out: usize, bias: bool) -> Result<Self> {
        b.scope(name, |b| {
            let (w, q) = match b.int8_weight("weight", out, inp)? {
                Some((w, q)) => (w, Some(q)),
                None => (
                    b.param("weight", &[out, inp], Init::Normal(INIT_STD))?,
                    None,
                ),
            };
            Ok(Linear {
                w,
                b: bias
                    .then(|| b.param("bias", &[out], Init::Zeros))
                    .transpose()?,
                in_out: false,
                q,
            })
        })
    }

    /// GPT-2's `Conv1D`: `name.weight` `(in, out)` and `name.bias` `(out)`.
    ///
    /// # Errors
    /// The source's error.
    /// Its int8 form is stored `(out, in)` like any other.
    pub fn conv1d(b: &mut Builder, name: &str, inp: usize, out: usize) -> Result<Self> {
        b.scope(name, |b| {
            let (w, q) = match b.int8_weight("weight", out, inp)? {
                Some((w, q)) => (w, Some(q)),
                None => (
                    b.param("weight", &[inp, out], Init::Normal(INIT_STD))?,
                    None,
                ),
            };
            Ok(Linear {
                w,
                b: Some(b.param("bias", &[out], Init::Zeros)?),
                in_out: q.is_none(),
                q,
            })
        })
    }

    /// Replaces the weight by its int8 form (per output channel) for inference; no-op when
    /// already quantized.
    ///
    /// # Errors
    /// [`Error::Tensor`] when the weight is not 2-D or a tape is recorded.
    pub fn quantize(&mut self, g: &mut Graph) -> Result<()> {
        self.quantize_as(g, QFormat::PerChannel)
    }

    /// Replaces the weight by its int8 form in `format` for inference; no-op when already
    /// quantized. Per channel, the parameter becomes the int8 tensor a checkpoint stores; per
    /// block of 32 (no checkpoint form) the f32 parameter stays as it is, unused.
    ///
    /// # Errors
    /// [`Error::Tensor`] when the weight is not 2-D or a tape is recorded.
    pub fn quantize_as(&mut self, g: &mut Graph, format: QFormat) -> Result<()> {
        if self.q.is_some() {
            return Ok(());
        }
        if format == QFormat::Block32 {
            let kernels = g.kernels();
            let w = g.param_tensor(self.w)?.clone();
            let qw =
                crate::autograd::ops::qlinear::quantize_weight_blocks(&kernels, &w, self.in_out)?;
            self.q = Some(g.add_qweights(qw));
            return Ok(());
        }
        let kernels = g.kernels();
        let w = g.param_tensor(self.w)?.clone();
        let (qw, t) = crate::autograd::ops::qlinear::quantize_weight(&kernels, &w, self.in_out)?;
        g.replace_param(self.w, t)?;
        self.q = Some(g.add_qweights(qw));
        self.in_out = false;
        Ok(())
    }

    /// Lays an f32 weight stored `(in, out)` (GPT-2's `Conv1D`) out `(out, in)` and freezes it,
    /// for inference (see [`Graph::transpose_param`]); no-op for any other Linear.
    ///
    /// # Errors
    /// [`Error::Tensor`] while a tape is recorded.
    pub fn transpose_for_decode(&mut self, g: &mut Graph) -> Result<()> {
        if self.in_out && self.q.is_none() {
            g.transpose_param(self.w)?;
            self.in_out = false;
        }
        Ok(())
    }

    /// `// x: (..., in) -> (..., out)`
    ///
    /// # Errors
    /// Shape errors from the graph.
    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let b = self.b.map(|b| g.param(b)).transpose()?;
        if let Some(q) = self.q {
            return Ok(g.qlinear(x, q, b)?);
        }
        let w = g.param(self.w)?;
        Ok(if self.in_out {
            g.linear_in_out(x, w, b)?
        } else {
            g.linear(x, w, b)?
        })
    }
}

/// LayerNorm (weight and bias) or RMSNorm (weight only).
#[derive(Clone, Copy, Debug)]
pub enum Norm {
    Layer { w: ParamId, b: ParamId, eps: f32 },
    Rms { w: ParamId, eps: f32 },
}

impl Norm {
    /// `name.weight` and `name.bias`, both `(d)`.
    ///
    /// # Errors
    /// The source's error.
    pub fn layer(b: &mut Builder, name: &str, d: usize, eps: f32) -> Result<Self> {
        b.scope(name, |b| {
            Ok(Norm::Layer {
                w: b.param("weight", &[d], Init::Ones)?,
                b: b.param("bias", &[d], Init::Zeros)?,
                eps,
            })
        })
    }

    /// `name.weight` `(d)`.
    ///
    /// # Errors
    /// The source's error.
    pub fn rms(b: &mut Builder, name: &str, d: usize, eps: f32) -> Result<Self> {
        b.scope(name, |b| {
            Ok(Norm::Rms {
                w: b.param("weight", &[d], Init::Ones)?,
                eps,
            })
        })
    }

    /// `// x: (..., d) -> (..., d)`
    ///
    /// # Errors
    /// Shape errors from the graph.
    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        Ok(match *self {
            Norm::Layer { w, b, eps } => {
                let (w, b) = (g.param(w)?, g.param(b)?);
                g.layernorm(x, w, b, eps)?
            }
            Norm::Rms { w, eps } => {
                let w = g.param(w)?;
                g.rmsnorm(x, w, eps)?
            }
        })
    }
}

/// The feed-forward part of a block.
#[derive(Clone, Debug)]
pub enum Ffn {
    /// `proj(gelu(fc(x)))`.
    Mlp { fc: Linear, proj: Linear, act: Gelu },
    /// `down(silu(gate(x)) * up(x))`.
    SwiGlu(SwiGlu),
    /// A mixture of SwiGLU experts.
    Moe(Moe),
}

/// `down(silu(gate(x)) * up(x))`.
#[derive(Clone, Copy, Debug)]
pub struct SwiGlu {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl SwiGlu {
    /// `// x: (..., d) -> (..., d)`
    ///
    /// # Errors
    /// Shape errors from the graph.
    pub fn forward(&self, g: &mut Graph, x: Var) -> Result<Var> {
        let gate = self.gate.forward(g, x)?;
        let up = self.up.forward(g, x)?;
        let h = g.swiglu(gate, up)?;
        self.down.forward(g, h)
    }

    /// Whether its three Linears are plain f32 `x W^T` (no bias, not `(in, out)`, not int8).
    pub fn plain(&self) -> bool {
        [self.gate, self.up, self.down]
            .iter()
            .all(|l| l.is_bare_f32() && !l.in_out)
    }
}

/// What a feed-forward returns: its output and, for a mixture, the router logits `(tokens, E)`
/// and the routing statistics.
pub struct FfnOutput {
    pub y: Var,
    pub router: Option<(Var, MoeStats)>,
}

impl Ffn {
    /// `// x: (B, T, d) -> (B, T, d)`. `rng`: the training-mode generator (router jitter).
    ///
    /// # Errors
    /// Shape errors from the graph.
    pub fn forward(&self, g: &mut Graph, x: Var, rng: Option<&mut Rng>) -> Result<FfnOutput> {
        Ok(match self {
            Ffn::Mlp { fc, proj, act } => {
                let h = fc.forward(g, x)?;
                let h = g.gelu(h, *act)?;
                FfnOutput {
                    y: proj.forward(g, h)?,
                    router: None,
                }
            }
            Ffn::SwiGlu(s) => FfnOutput {
                y: s.forward(g, x)?,
                router: None,
            },
            Ffn::Moe(m) => {
                let o = m.forward(g, x, rng)?;
                FfnOutput {
                    y: o.y,
                    router: Some((o.router_logits, o.stats)),
                }
            }
        })
    }
}
