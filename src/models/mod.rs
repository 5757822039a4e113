//! Models as wiring only: GPT-2, LLaMA, Mistral, Mixtral and the seeds' ExpertModel, built from
//! the layers in [`crate::nn`], loaded from HF checkpoint directories or our own checkpoints.
//!
//! A [`Model`] owns the [`Graph`] that holds its parameters (named as in the checkpoint, so a
//! gradient is found by its tensor's name); a forward records on that graph unless it is in
//! no-grad mode.

mod config;
mod encoder;
mod encoder_infer;
mod error;
mod load;
mod quantize;

pub use config::{Arch, Config};
pub use encoder::{Encoder, EncoderConfig, SentenceEmbedder, mean_pool_normalize};
pub use encoder_infer::Scratch as EncoderScratch;
pub use error::{Error, Result};
pub use load::CHECKPOINT_CONFIG_KEY;
pub(crate) use load::FileSource;

use crate::autograd::{Gelu, Graph, IGNORE_INDEX, ParamId, Rng, Var};
use crate::nn::{
    Attention, AttentionSpec, Builder, CacheStep, Ffn, Init, KvCache, Linear, Moe, MoeStats, Norm,
    RandomInit, Source, SwiGlu, sinusoidal_table,
};
use crate::tensor::Tensor;

/// How positions enter the model.
#[derive(Clone, Copy, Debug)]
enum Positions {
    /// A learned table `(max_seq_len, d)` added to the token embeddings (GPT-2).
    Learned(ParamId),
    /// The fixed sinusoidal table, added after scaling the embeddings by sqrt(d) (ExpertModel).
    Sinusoidal,
    /// Rotary, inside attention (LLaMA family).
    Rotary,
}

/// One transformer block.
#[derive(Clone, Debug)]
struct Block {
    ln1: Norm,
    attn: Attention,
    ln2: Norm,
    ffn: Ffn,
}

/// The result of a forward: logits and, for mixtures, every layer's router logits.
#[derive(Clone, Debug)]
pub struct Output {
    /// `(B, T, V)`.
    pub logits: Var,
    /// `(B * T, E)` per mixture layer.
    pub router_logits: Vec<Var>,
    /// Routing statistics per mixture layer.
    pub moe_stats: Vec<MoeStats>,
}

/// The training objective: HF's causal-LM loss plus, for mixtures, the weighted balancing loss.
#[derive(Clone, Debug)]
pub struct Loss {
    /// `lm + router_aux_loss_coef * aux`: what backward starts from.
    pub total: Var,
    /// Mean cross-entropy of `logits[:, :-1]` against `ids[:, 1:]`.
    pub lm: Var,
    /// The load-balancing loss (mixtures only).
    pub aux: Option<Var>,
    /// The router z-loss (mixtures with a z-loss weight only).
    pub z: Option<Var>,
    pub logits: Var,
    /// Routing statistics per mixture layer.
    pub moe_stats: Vec<MoeStats>,
}

/// Parameter memory at each storage precision, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    pub f32: usize,
    pub f16: usize,
    /// One byte per weight plus an f32 scale per row of every matrix (vectors stay f32).
    pub int8: usize,
}

/// A model: its configuration, its parameters (in a graph) and its wiring.
pub struct Model {
    config: Config,
    graph: Graph,
    params: Vec<(String, ParamId)>,
    embed: ParamId,
    positions: Positions,
    blocks: Vec<Block>,
    final_norm: Norm,
    /// `None`: the head is the transposed token embedding (tied).
    head: Option<Linear>,
    /// The training-mode generator (dropout, router jitter); `None` in eval mode.
    training: Option<Rng>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .field("params", &self.params.len())
            .finish_non_exhaustive()
    }
}

impl Model {
    /// A fresh model with random weights (normal, std 0.02; norms one, biases zero) from `seed`.
    ///
    /// # Errors
    /// [`Error::Config`] for an inconsistent configuration; [`Error::Tensor`] when the kernels
    /// cannot be chosen (a bad `ANVIL_ISA`).
    pub fn new(config: Config, seed: u64) -> Result<Self> {
        Self::build(config, &mut RandomInit::new(seed))
    }

    /// The model of `config` with every parameter taken from `source` by its checkpoint name.
    ///
    /// # Errors
    /// [`Error::Config`] for an inconsistent configuration; the source's error for a missing or
    /// mis-shaped tensor.
    pub fn build(config: Config, source: &mut dyn Source) -> Result<Self> {
        config.validate()?;
        let mut graph = Graph::new()?;
        let mut params = Vec::new();
        let c = &config;
        let mut b = Builder::new(&mut graph, source, &mut params);
        let (embed, positions, blocks, final_norm, head) = match c.arch {
            Arch::Gpt2 => b
                .scope("transformer", |b| {
                    let embed = b.param("wte.weight", &[c.vocab_size, c.d_model], normal())?;
                    let wpe = b.param("wpe.weight", &[c.max_seq_len, c.d_model], normal())?;
                    let blocks = (0..c.n_layers)
                        .map(|i| b.scope(&format!("h.{i}"), |b| gpt2_block(b, c)))
                        .collect::<Result<Vec<_>>>()?;
                    let ln_f = Norm::layer(b, "ln_f", c.d_model, c.norm_eps)?;
                    Ok::<_, Error>((embed, Positions::Learned(wpe), blocks, ln_f))
                })
                .map(|(e, p, bl, n)| (e, p, bl, n, None))?,
            Arch::Llama | Arch::Mistral | Arch::Mixtral => {
                let (embed, blocks, norm) = b.scope("model", |b| {
                    let embed =
                        b.param("embed_tokens.weight", &[c.vocab_size, c.d_model], normal())?;
                    let blocks = (0..c.n_layers)
                        .map(|i| b.scope(&format!("layers.{i}"), |b| llama_block(b, c)))
                        .collect::<Result<Vec<_>>>()?;
                    let norm = Norm::rms(b, "norm", c.d_model, c.norm_eps)?;
                    Ok::<_, Error>((embed, blocks, norm))
                })?;
                let head = (!c.tie_embeddings)
                    .then(|| Linear::new(&mut b, "lm_head", c.d_model, c.vocab_size, false))
                    .transpose()?;
                (embed, Positions::Rotary, blocks, norm, head)
            }
            Arch::Expert => {
                let embed = b.param("embedding.weight", &[c.vocab_size, c.d_model], normal())?;
                let blocks = (0..c.n_layers)
                    .map(|i| b.scope(&format!("blocks.{i}"), |b| expert_block(b, c)))
                    .collect::<Result<Vec<_>>>()?;
                let norm = Norm::layer(&mut b, "norm", c.d_model, c.norm_eps)?;
                let head = (!c.tie_embeddings)
                    .then(|| Linear::new(&mut b, "lm_head", c.d_model, c.vocab_size, false))
                    .transpose()?;
                (embed, Positions::Sinusoidal, blocks, norm, head)
            }
        };
        // An int8 checkpoint of a tied model holds the head's int8 copy.
        let head = match head {
            None => b
                .int8_weight(quantize::TIED_HEAD, c.vocab_size, c.d_model)?
                .map(|(w, q)| Linear {
                    w,
                    b: None,
                    in_out: false,
                    q: Some(q),
                }),
            h => h,
        };
        let mut model = Model {
            config,
            graph,
            params,
            embed,
            positions,
            blocks,
            final_norm,
            head,
            training: None,
        };
        if model.is_quantized() {
            model.freeze()?;
        }
        Ok(model)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The graph holding the parameters, on which forwards record.
    pub fn graph(&mut self) -> &mut Graph {
        &mut self.graph
    }

    /// The graph, read-only.
    pub fn graph_ref(&self) -> &Graph {
        &self.graph
    }

    /// Every parameter with its checkpoint name, in construction order.
    pub fn params(&self) -> &[(String, ParamId)] {
        &self.params
    }

    /// The parameter named `name`.
    pub fn param(&self, name: &str) -> Option<ParamId> {
        self.params
            .iter()
            .find_map(|(n, p)| (n == name).then_some(*p))
    }

    /// Training mode: dropout with the config's probability and router jitter, drawn from
    /// `seed`. Eval mode (`None`, the default): neither.
    pub fn set_training(&mut self, seed: Option<u64>) {
        self.training = seed.map(Rng::new);
    }

    /// The training-mode generator's state (for exact resume), `None` in eval mode.
    pub fn training_state(&self) -> Option<u64> {
        self.training.as_ref().map(Rng::state)
    }

    /// Restores a training-mode generator state from [`Model::training_state`].
    pub fn set_training_state(&mut self, state: Option<u64>) {
        self.training = state.map(Rng::new);
    }

    /// Number of parameters; `non_embedding` leaves out the token embedding (and, like HF and
    /// the seeds, counts a tied head once, as the embedding).
    pub fn num_params(&self, non_embedding: bool) -> usize {
        let all: usize = self
            .params
            .iter()
            .map(|(_, p)| self.graph.param_tensor(*p).map_or(0, Tensor::numel))
            .sum();
        let emb = self.graph.param_tensor(self.embed).map_or(0, Tensor::numel);
        if non_embedding { all - emb } else { all }
    }

    /// Parameter memory at f32, f16 and int8 (per-row scales) storage.
    pub fn footprint(&self) -> Footprint {
        let mut f = Footprint {
            f32: 0,
            f16: 0,
            int8: 0,
        };
        for (_, p) in &self.params {
            let Ok(t) = self.graph.param_tensor(*p) else {
                continue;
            };
            let n = t.numel();
            f.f32 += 4 * n;
            f.f16 += 2 * n;
            f.int8 += match t.shape() {
                [rows, _] => n + 4 * rows,
                _ => 4 * n,
            };
        }
        f
    }

    /// Logits for `ids` (`batch` rows of equal length). `attention_mask` (`B * T`, `true` = a real
    /// token) hides padded keys.
    /// `// ids: (B, T) -> logits (B, T, V)`
    ///
    /// # Errors
    /// [`Error::Config`] when the ids do not split into `batch` rows, a row is longer than
    /// `max_seq_len`, or the mask has the wrong length; [`Error::Tensor`] for an id outside the
    /// vocabulary.
    pub fn forward(
        &mut self,
        ids: &[u32],
        batch: usize,
        attention_mask: Option<&[bool]>,
    ) -> Result<Output> {
        let c = &self.config;
        if batch == 0 || ids.is_empty() || !ids.len().is_multiple_of(batch) {
            return Err(Error::Config {
                detail: format!("{} token ids do not form {batch} equal rows", ids.len()),
            });
        }
        let t = ids.len() / batch;
        if t > c.max_seq_len {
            return Err(Error::Config {
                detail: format!("sequence length {t} exceeds max_seq_len {}", c.max_seq_len),
            });
        }
        if attention_mask.is_some_and(|m| m.len() != ids.len()) {
            return Err(Error::Config {
                detail: format!(
                    "attention mask of {} entries for {batch} x {t} ids",
                    attention_mask.map_or(0, <[bool]>::len)
                ),
            });
        }
        let mut mode = Mode::Full(attention_mask);
        self.run(ids, batch, &mut mode)
    }

    /// A key/value cache for `rows` sequences of up to `max_len` tokens (at most the model's
    /// context, the default).
    pub fn new_cache(&self, rows: usize, max_len: Option<usize>) -> KvCache {
        let c = &self.config;
        let len = max_len.map_or(c.max_seq_len, |m| m.min(c.max_seq_len));
        KvCache::new(c.n_layers, rows, len, &spec(c, c.arch.is_llama_like()))
    }

    /// Inference with a key/value cache: `ids` holds `T` new tokens for each of the cache rows
    /// `rows` (so `rows.len() * T` ids), placed after what those rows already hold. Returns the
    /// logits `(rows.len(), T, V)` of the new tokens. A prompt goes in as one chunk (prefill),
    /// then tokens one at a time. Runs in no-grad mode.
    ///
    /// # Errors
    /// [`Error::Config`] when the ids do not split over the rows, a row would pass the cache's
    /// context length, or a row is out of range; [`Error::Tensor`] for an id outside the
    /// vocabulary.
    pub fn forward_cached(
        &mut self,
        ids: &[u32],
        rows: &[usize],
        cache: &mut KvCache,
    ) -> Result<Var> {
        self.cached(ids, rows, cache, false)
    }

    /// As [`Model::forward_cached`], but returns only the logits of each row's last new token,
    /// `(rows.len(), 1, V)`: all a sampler needs after a prefill. The head, `V x d` per position
    /// (a third of GPT-2's prefill work), then runs for one position per row instead of `T`.
    ///
    /// # Errors
    /// As [`Model::forward_cached`].
    pub fn forward_cached_last(
        &mut self,
        ids: &[u32],
        rows: &[usize],
        cache: &mut KvCache,
    ) -> Result<Var> {
        self.cached(ids, rows, cache, true)
    }

    fn cached(
        &mut self,
        ids: &[u32],
        rows: &[usize],
        cache: &mut KvCache,
        last_only: bool,
    ) -> Result<Var> {
        if rows.is_empty() || ids.is_empty() || !ids.len().is_multiple_of(rows.len()) {
            return Err(Error::Config {
                detail: format!(
                    "{} token ids do not split over {} cache rows",
                    ids.len(),
                    rows.len()
                ),
            });
        }
        let t = ids.len() / rows.len();
        let starts = cache.starts(rows, t)?;
        let was = self.graph.grad_enabled();
        self.graph.set_grad_enabled(false);
        let mut mode = Mode::Cached {
            cache: &mut *cache,
            rows,
            starts: &starts,
            last_only,
        };
        let r = self.run(ids, rows.len(), &mut mode);
        self.graph.set_grad_enabled(was);
        let out = r?;
        cache.advance(rows, t);
        Ok(out.logits)
    }

    /// Embeddings, blocks, final norm and head, with attention as `mode` says.
    fn run(&mut self, ids: &[u32], batch: usize, mode: &mut Mode) -> Result<Output> {
        let c = &self.config;
        let t = ids.len() / batch;
        let d = c.d_model;
        let pos: Vec<u32> = match mode {
            Mode::Full(_) => (0..batch).flat_map(|_| 0..t as u32).collect(),
            Mode::Cached { starts, .. } => starts
                .iter()
                .flat_map(|&p| (p..p + t).map(|q| q as u32))
                .collect(),
        };
        let g = &mut self.graph;
        let table = g.param(self.embed)?;
        let mut x = g.embedding(table, ids, &[batch, t])?;
        match self.positions {
            Positions::Learned(wpe) => {
                let wpe = g.param(wpe)?;
                let p = g.embedding(wpe, &pos, &[batch, t])?;
                x = g.add(x, p)?;
            }
            Positions::Sinusoidal => {
                x = g.scale(x, (d as f32).sqrt())?;
                let longest = pos.iter().max().map_or(0, |&p| p as usize + 1);
                let table = sinusoidal_table(longest, d);
                let pe: Vec<f32> = pos
                    .iter()
                    .flat_map(|&p| table[p as usize * d..][..d].iter().copied())
                    .collect();
                let pe = g.input(&Tensor::from_vec(pe, &[batch, t, d])?, false);
                x = g.add(x, pe)?;
            }
            Positions::Rotary => {}
        }
        let mut rng = if matches!(mode, Mode::Full(_)) {
            self.training.take()
        } else {
            None
        };
        let mut train = Train {
            p: c.dropout,
            rng: rng.as_mut(),
        };
        let r = run_blocks(g, &self.blocks, x, mode, &mut train, c.arch == Arch::Expert);
        if matches!(mode, Mode::Full(_)) {
            self.training = rng;
        }
        let (mut x, router_logits, moe_stats) = r?;
        if matches!(
            mode,
            Mode::Cached {
                last_only: true,
                ..
            }
        ) && t > 1
        {
            // `// x: (B, T, d) -> (B, 1, d)`: norm and head act per position.
            x = g.narrow(x, 1, t - 1, 1)?;
        }
        let x = self.final_norm.forward(g, x)?;
        let logits = match self.head {
            Some(h) => h.forward(g, x)?,
            None => {
                let w = g.param(self.embed)?;
                g.linear(x, w, None)?
            }
        };
        Ok(Output {
            logits,
            router_logits,
            moe_stats,
        })
    }

    /// HF's causal-LM loss on `ids` (`logits[:, :-1]` against `ids[:, 1:]`; positions whose mask
    /// is false are not predicted), plus `router_aux_loss_coef` times the load-balancing loss for
    /// mixtures.
    ///
    /// # Errors
    /// As [`Model::forward`].
    pub fn loss(
        &mut self,
        ids: &[u32],
        batch: usize,
        attention_mask: Option<&[bool]>,
    ) -> Result<Loss> {
        let out = self.forward(ids, batch, attention_mask)?;
        let t = ids.len() / batch;
        let targets: Vec<u32> = (0..ids.len())
            .map(|i| {
                if i % t + 1 < t && attention_mask.is_none_or(|m| m[i + 1]) {
                    ids[i + 1]
                } else {
                    IGNORE_INDEX
                }
            })
            .collect();
        let g = &mut self.graph;
        let lm = g.cross_entropy(out.logits, &targets, IGNORE_INDEX)?;
        let c = &self.config;
        let (mut total, mut aux, mut z) = (lm, None, None);
        if !out.router_logits.is_empty() {
            let a = load_balancing_loss(g, &out.router_logits, c.n_experts, c.experts_per_token)?;
            let weighted = g.scale(a, c.router_aux_loss_coef)?;
            total = g.add(total, weighted)?;
            aux = Some(a);
            if c.router_z_loss_coef > 0.0 {
                let zl = router_z_loss(g, &out.router_logits)?;
                let weighted = g.scale(zl, c.router_z_loss_coef)?;
                total = g.add(total, weighted)?;
                z = Some(zl);
            }
        }
        Ok(Loss {
            total,
            lm,
            aux,
            z,
            logits: out.logits,
            moe_stats: out.moe_stats,
        })
    }
}

/// How attention runs in a forward.
enum Mode<'a> {
    /// Over the whole sequence, with an optional key padding mask.
    Full(Option<&'a [bool]>),
    /// Incrementally, through a key/value cache.
    Cached {
        cache: &'a mut KvCache,
        rows: &'a [usize],
        starts: &'a [usize],
        /// Logits of each row's last position only.
        last_only: bool,
    },
}

/// The blocks: pre-LN (`x + f(norm(x))`) or, for the ExpertModel, post-LN (`norm(x + f(x))`).
fn run_blocks(
    g: &mut Graph,
    blocks: &[Block],
    mut x: Var,
    mode: &mut Mode,
    tr: &mut Train,
    post_ln: bool,
) -> Result<(Var, Vec<Var>, Vec<MoeStats>)> {
    let (mut router_logits, mut stats) = (Vec::new(), Vec::new());
    x = tr.dropout(g, x)?;
    for (l, blk) in blocks.iter().enumerate() {
        let attn = |g: &mut Graph, h: Var, mode: &mut Mode| -> Result<Var> {
            match mode {
                Mode::Full(mask) => blk.attn.forward(g, h, *mask),
                Mode::Cached {
                    cache,
                    rows,
                    starts,
                    ..
                } => {
                    let (capacity, ring) = (cache.capacity(), cache.is_ring());
                    let step = CacheStep {
                        layer: cache.layer(l),
                        rows,
                        starts,
                        capacity,
                        ring,
                    };
                    blk.attn.forward_cached(g, h, step)
                }
            }
        };
        let mut ffn = |g: &mut Graph, h: Var, tr: &mut Train| -> Result<Var> {
            let f = blk.ffn.forward(g, h, tr.rng.as_deref_mut())?;
            if let Some((l, s)) = f.router {
                router_logits.push(l);
                stats.push(s);
            }
            tr.dropout(g, f.y)
        };
        if post_ln {
            let a = attn(g, x, mode)?;
            let a = tr.dropout(g, a)?;
            let r = g.add(x, a)?;
            x = blk.ln1.forward(g, r)?;
            let f = ffn(g, x, tr)?;
            let r = g.add(x, f)?;
            x = blk.ln2.forward(g, r)?;
        } else {
            let h = blk.ln1.forward(g, x)?;
            let a = attn(g, h, mode)?;
            let a = tr.dropout(g, a)?;
            x = g.add(x, a)?;
            let h = blk.ln2.forward(g, x)?;
            let f = ffn(g, h, tr)?;
            x = g.add(x, f)?;
        }
    }
    Ok((x, router_logits, stats))
}

/// Training-mode randomness: dropout probability and the generator (`None` in eval mode).
struct Train<'a> {
    p: f32,
    rng: Option<&'a mut Rng>,
}

impl Train<'_> {
    fn dropout(&mut self, g: &mut Graph, x: Var) -> Result<Var> {
        Ok(match self.rng.as_deref_mut() {
            Some(rng) if self.p > 0.0 => g.dropout(x, self.p, rng)?,
            _ => x,
        })
    }
}

/// The router z-loss over all layers: the mean over tokens of `logsumexp(router logits)^2`
/// (ST-MoE), which keeps router logits small.
///
/// # Errors
/// Shape errors from the graph.
pub fn router_z_loss(g: &mut Graph, router_logits: &[Var]) -> Result<Var> {
    let all = g.concat(router_logits, 0)?;
    let lse = g.logsumexp(all)?;
    let sq = g.mul(lse, lse)?;
    Ok(g.mean(sq)?)
}

/// The Switch / HF Mixtral load-balancing loss over all layers' router logits:
/// `E * sum_e f_e * P_e`, where `f_e` is the share of the `k` routing slots of all tokens (of all
/// layers) that chose expert `e` and `P_e` the mean router probability of `e`. Only `P` carries a
/// gradient (the counts are constants), so it is `sum(probs * c)` with `c_e = E * count_e / N^2`.
///
/// # Errors
/// Shape errors from the graph.
pub fn load_balancing_loss(
    g: &mut Graph,
    router_logits: &[Var],
    e: usize,
    k: usize,
) -> Result<Var> {
    let all = g.concat(router_logits, 0)?;
    let probs = g.softmax(all)?;
    let pv = g.value(probs)?;
    let n = pv.len() / e.max(1);
    let mut count = vec![0usize; e];
    for &j in &crate::autograd::ops::gather::topk_indices(pv, e, k) {
        count[j as usize] += 1;
    }
    let nf = n as f64;
    let row: Vec<f32> = count
        .iter()
        .map(|&c| (e as f64 * c as f64 / (nf * nf)) as f32)
        .collect();
    let weights: Vec<f32> = (0..n).flat_map(|_| row.iter().copied()).collect();
    let w = g.input(&Tensor::from_vec(weights, &[n, e])?, false);
    let m = g.mul(probs, w)?;
    Ok(g.sum(m)?)
}

fn normal() -> Init {
    Init::Normal(crate::nn::INIT_STD)
}

fn spec(c: &Config, rope: bool) -> AttentionSpec {
    AttentionSpec {
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        rope_theta: rope.then_some(c.rope_theta),
        window: c.sliding_window,
        causal: true,
    }
}

fn gpt2_block(b: &mut Builder, c: &Config) -> Result<Block> {
    let d = c.d_model;
    Ok(Block {
        ln1: Norm::layer(b, "ln_1", d, c.norm_eps)?,
        attn: Attention::gpt2(b, "attn", d, spec(c, false))?,
        ln2: Norm::layer(b, "ln_2", d, c.norm_eps)?,
        ffn: b.scope("mlp", |b| {
            Ok::<_, Error>(Ffn::Mlp {
                fc: Linear::conv1d(b, "c_fc", d, c.d_ff)?,
                proj: Linear::conv1d(b, "c_proj", c.d_ff, d)?,
                act: Gelu::Tanh,
            })
        })?,
    })
}

fn llama_block(b: &mut Builder, c: &Config) -> Result<Block> {
    let d = c.d_model;
    let ffn = if c.n_experts > 0 {
        Ffn::Moe(Moe::mixtral(
            b,
            "block_sparse_moe",
            d,
            c.d_ff,
            c.n_experts,
            c.routing(),
        )?)
    } else {
        Ffn::SwiGlu(b.scope("mlp", |b| {
            Ok::<_, Error>(SwiGlu {
                gate: Linear::new(b, "gate_proj", d, c.d_ff, false)?,
                up: Linear::new(b, "up_proj", d, c.d_ff, false)?,
                down: Linear::new(b, "down_proj", c.d_ff, d, false)?,
            })
        })?)
    };
    Ok(Block {
        ln1: Norm::rms(b, "input_layernorm", d, c.norm_eps)?,
        attn: Attention::llama(b, "self_attn", d, spec(c, true))?,
        ln2: Norm::rms(b, "post_attention_layernorm", d, c.norm_eps)?,
        ffn,
    })
}

fn expert_block(b: &mut Builder, c: &Config) -> Result<Block> {
    let d = c.d_model;
    let attn = Attention::with_bias(b, "attn", d, spec(c, false))?;
    let ln1 = Norm::layer(b, "ln1", d, c.norm_eps)?;
    let ffn = if c.n_experts > 0 {
        Ffn::Moe(Moe::mixtral(b, "moe", d, c.d_ff, c.n_experts, c.routing())?)
    } else {
        b.scope("ffn", |b| {
            Ok::<_, Error>(Ffn::Mlp {
                fc: Linear::new(b, "fc1", d, c.d_ff, true)?,
                proj: Linear::new(b, "fc2", c.d_ff, d, true)?,
                act: Gelu::Erf,
            })
        })?
    };
    let ln2 = Norm::layer(b, "ln2", d, c.norm_eps)?;
    Ok(Block {
        ln1,
        attn,
        ln2,
        ffn,
    })
}
