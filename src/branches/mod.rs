//! The seeds' interconnected system (part 4): a frozen sentence encoder whose token states are
//! computed once, two shared residual pre-norm MoE blocks (dense SwiGLU ones for the baseline),
//! mean pooling, a shared projection, and per task a branch: a LoRA adapter on that projection
//! and a classification head.
//!
//! Where the LoRA goes: on the shared projection after pooling, `u = P z + (alpha/r) B_t A_t z`,
//! then `GELU(u)` and the head of task `t`. The encoder is frozen and shared, and so (once
//! trained) is the MoE trunk; a branch then only reads the pooled state `z`, so its cost is
//! `O(d r)` per sentence, the trunk runs once per sentence whatever the number of branches, and
//! no branch can change another's routing. Adding a branch freezes the trunk and every other
//! branch, so their outputs stay bit-identical by construction (and `tests/branches.rs` checks
//! it). The price: a branch cannot re-route tokens inside the MoE layers.

mod demo;
mod lora;
mod store;
pub use store::{BRANCH_KEY, TRUNK_KEY};
mod train;

pub use demo::{Demo, DemoTask, Example, INITIAL_TASKS};
pub use lora::Lora;
pub use train::{
    BranchEval, LrGroups, StepLog, TaskData, TrainOptions, TrainReport, evaluate, train,
};

use crate::autograd::{Graph, ParamId, Var};
use crate::models::{Error, Result, SentenceEmbedder, load_balancing_loss};
use crate::nn::{Builder, Ffn, Linear, Moe, MoeStats, Norm, RandomInit, Routing, Source, SwiGlu};
use crate::tensor::Tensor;

/// LayerNorm epsilon of the trunk's norms.
const NORM_EPS: f32 = 1e-5;

/// The shapes of the trunk and the branches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SystemConfig {
    /// Width of the encoder's states (384 for all-MiniLM-L6-v2).
    pub d: usize,
    /// Residual MoE (or dense) blocks.
    pub layers: usize,
    pub n_experts: usize,
    pub top_k: usize,
    /// Hidden width of one SwiGLU expert.
    pub expert_ff: usize,
    /// Dense baseline: each block is one SwiGLU of width `top_k * expert_ff` (the same active
    /// compute per token as the mixture, router aside).
    pub dense: bool,
    /// LoRA rank and alpha of every branch.
    pub rank: usize,
    pub alpha: f32,
}

impl SystemConfig {
    /// The seeds' system over a `d`-wide encoder: two blocks of 8 experts, top-2, rank 8.
    pub fn seeds(d: usize) -> Self {
        SystemConfig {
            d,
            layers: 2,
            n_experts: 8,
            top_k: 2,
            expert_ff: 128,
            dense: false,
            rank: 8,
            alpha: 16.0,
        }
    }

    /// # Errors
    /// [`Error::Config`] naming the first zero size or a top-k above the expert count.
    pub fn validate(&self) -> Result<()> {
        let bad = |detail: String| Err(Error::Config { detail });
        for (name, v) in [
            ("d", self.d),
            ("layers", self.layers),
            ("n_experts", self.n_experts),
            ("top_k", self.top_k),
            ("expert_ff", self.expert_ff),
            ("rank", self.rank),
        ] {
            if v == 0 {
                return bad(format!("branches: `{name}` must be positive"));
            }
        }
        if self.top_k > self.n_experts {
            return bad(format!(
                "branches: top_k {} exceeds n_experts {}",
                self.top_k, self.n_experts
            ));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad(format!("branches: alpha {} must be positive", self.alpha));
        }
        Ok(())
    }
}

/// Token states of sentences from the frozen encoder, computed once: sentence `i` holds
/// `(len_i, d)` rows, its real tokens only (`[CLS] ... [SEP]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub d: usize,
    pub states: Vec<Vec<f32>>,
}

impl Encoded {
    /// Runs the embedder's encoder in no-grad mode over `texts` in length-sorted batches and keeps
    /// each sentence's real-token rows. `progress(done, total)` after each batch.
    ///
    /// # Errors
    /// Tokenizer and encoder errors.
    pub fn encode(
        emb: &mut SentenceEmbedder,
        texts: &[String],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let d = emb.encoder.config().d_model;
        let tokens: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| emb.tokenize(t))
            .collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(tokens[i].len()));
        let mut states = vec![Vec::new(); texts.len()];
        let mut done = 0;
        let g_was = emb.encoder.graph().grad_enabled();
        emb.encoder.graph().set_grad_enabled(false);
        for chunk in order.chunks(emb.batch.max(1)) {
            let t = chunk.iter().map(|&i| tokens[i].len()).max().unwrap_or(1);
            let b = chunk.len();
            let mut ids = vec![0u32; b * t];
            let mut mask = vec![false; b * t];
            for (r, &i) in chunk.iter().enumerate() {
                ids[r * t..][..tokens[i].len()].copy_from_slice(&tokens[i]);
                mask[r * t..][..tokens[i].len()].fill(true);
            }
            let h = emb.encoder.forward(&ids, b, Some(&mask));
            let h = h.and_then(|h| Ok(emb.encoder.graph().value(h)?.to_vec()));
            emb.encoder.graph().clear();
            let h = match h {
                Ok(h) => h,
                Err(e) => {
                    emb.encoder.graph().set_grad_enabled(g_was);
                    return Err(e);
                }
            };
            for (r, &i) in chunk.iter().enumerate() {
                states[i] = h[r * t * d..][..tokens[i].len() * d].to_vec();
            }
            done += b;
            progress(done, texts.len());
        }
        emb.encoder.graph().set_grad_enabled(g_was);
        Ok(Encoded { d, states })
    }
}

/// Logits per sentence `(n, classes)` and, per MoE block, routing slots per expert.
pub type Prediction = (Vec<Vec<f32>>, Vec<Vec<usize>>);

/// One pre-norm residual block: `x + ffn(norm(x))`.
#[derive(Clone, Debug)]
struct Block {
    norm: Norm,
    ffn: Ffn,
}

/// One task's branch: LoRA on the shared projection and a classification head.
#[derive(Clone, Debug)]
pub struct Branch {
    pub name: String,
    pub labels: Vec<String>,
    pub lora: Lora,
    pub head: Linear,
    /// Its parameters with their graph names (`branch.{name}.lora.a`, ...).
    pub params: Vec<(String, ParamId)>,
}

/// The trunk (MoE blocks, final norm, shared projection) and the branches, in one graph.
pub struct System {
    pub config: SystemConfig,
    graph: Graph,
    blocks: Vec<Block>,
    final_norm: Norm,
    proj: Linear,
    trunk_params: Vec<(String, ParamId)>,
    pub branches: Vec<Branch>,
}

/// What one forward produced: per branch present in the batch, its logits `(n_t, classes)` and
/// the batch positions of its rows; the router logits of every MoE block; routing statistics.
pub struct Pass {
    pub logits: Vec<(usize, Var, Vec<usize>)>,
    pub router_logits: Vec<Var>,
    pub stats: Vec<MoeStats>,
}

impl System {
    /// A fresh trunk with weights from `seed` and no branch.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config.
    pub fn new(config: SystemConfig, seed: u64) -> Result<Self> {
        Self::build(config, &mut RandomInit::new(seed))
    }

    /// The trunk with parameters from `source` (names `blocks.{i}.norm.weight`, `blocks.{i}.moe.*`
    /// or `blocks.{i}.ffn.*`, `final_norm.*`, `proj.*`).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config; the source's errors.
    pub fn build(config: SystemConfig, source: &mut dyn Source) -> Result<Self> {
        config.validate()?;
        let mut graph = Graph::new()?;
        let mut names = Vec::new();
        let c = config;
        let (blocks, final_norm, proj) = {
            let mut b = Builder::new(&mut graph, source, &mut names);
            let blocks = (0..c.layers)
                .map(|i| {
                    b.scope(&format!("blocks.{i}"), |b| {
                        let norm = Norm::layer(b, "norm", c.d, NORM_EPS)?;
                        let ffn = if c.dense {
                            Ffn::SwiGlu(b.scope("ffn", |b| {
                                let ff = c.top_k * c.expert_ff;
                                Ok::<_, Error>(SwiGlu {
                                    gate: Linear::new(b, "w1", c.d, ff, false)?,
                                    down: Linear::new(b, "w2", ff, c.d, false)?,
                                    up: Linear::new(b, "w3", c.d, ff, false)?,
                                })
                            })?)
                        } else {
                            let routing = Routing::top_k(c.top_k);
                            Ffn::Moe(Moe::mixtral(
                                b,
                                "moe",
                                c.d,
                                c.expert_ff,
                                c.n_experts,
                                routing,
                            )?)
                        };
                        Ok::<_, Error>(Block { norm, ffn })
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let final_norm = Norm::layer(&mut b, "final_norm", c.d, NORM_EPS)?;
            let proj = Linear::new(&mut b, "proj", c.d, c.d, true)?;
            (blocks, final_norm, proj)
        };
        Ok(System {
            config,
            graph,
            blocks,
            final_norm,
            proj,
            trunk_params: names,
            branches: Vec::new(),
        })
    }

    pub fn graph(&mut self) -> &mut Graph {
        &mut self.graph
    }

    pub fn graph_ref(&self) -> &Graph {
        &self.graph
    }

    /// The trunk's parameters with their names.
    pub fn trunk_params(&self) -> &[(String, ParamId)] {
        &self.trunk_params
    }

    /// The index of branch `name`.
    pub fn branch_index(&self, name: &str) -> Option<usize> {
        self.branches.iter().position(|b| b.name == name)
    }

    /// Adds a fresh branch (LoRA `A` random from `seed`, `B` zero; head random) and returns its
    /// index. Nothing else in the graph changes.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad or taken name or fewer than two labels.
    pub fn add_branch(&mut self, name: &str, labels: &[String], seed: u64) -> Result<usize> {
        self.add_branch_from(name, labels, &mut RandomInit::new(seed))
    }

    /// Adds a branch whose parameters come from `source` (full names `branch.{name}.lora.a`,
    /// `.lora.b`, `.head.weight`, `.head.bias`).
    ///
    /// # Errors
    /// As [`System::add_branch`]; the source's errors.
    pub fn add_branch_from(
        &mut self,
        name: &str,
        labels: &[String],
        source: &mut dyn Source,
    ) -> Result<usize> {
        check_name(name)?;
        if self.branch_index(name).is_some() {
            return Err(Error::Config {
                detail: format!("branch `{name}` already exists"),
            });
        }
        if labels.len() < 2 {
            return Err(Error::Config {
                detail: format!("branch `{name}` needs at least two labels"),
            });
        }
        let c = self.config;
        let mut names = Vec::new();
        let (lora, head) = {
            let mut b = Builder::new(&mut self.graph, source, &mut names);
            b.scope(&format!("branch.{name}"), |b| {
                let lora = Lora::new(b, "lora", c.d, c.d, c.rank, c.alpha)?;
                let head = Linear::new(b, "head", c.d, labels.len(), true)?;
                Ok::<_, Error>((lora, head))
            })?
        };
        self.branches.push(Branch {
            name: name.to_string(),
            labels: labels.to_vec(),
            lora,
            head,
            params: names,
        });
        Ok(self.branches.len() - 1)
    }

    /// Sets which parameters train: the trunk when `trunk`, and the branches whose indices are
    /// in `branches`; everything else is frozen.
    ///
    /// # Errors
    /// Graph errors for unknown parameters.
    pub fn set_trainable(&mut self, trunk: bool, branches: &[usize]) -> Result<()> {
        for (_, p) in &self.trunk_params {
            self.graph.set_requires_grad(*p, trunk)?;
        }
        for (i, br) in self.branches.iter().enumerate() {
            for (_, p) in &br.params {
                self.graph.set_requires_grad(*p, branches.contains(&i))?;
            }
        }
        Ok(())
    }

    /// The forward of a batch: `items[j] = (branch, sentence)` with the sentence's token states
    /// taken from `enc`. The MoE blocks run over the batch's real tokens only (no padding).
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown branch or sentence, or a state width that is not `d`;
    /// graph errors.
    pub fn forward(&mut self, enc: &Encoded, items: &[(usize, usize)]) -> Result<Pass> {
        let d = self.config.d;
        if enc.d != d {
            return Err(Error::Config {
                detail: format!("encoder states are {} wide, the system expects {d}", enc.d),
            });
        }
        let mut flat = Vec::new();
        let mut tok_row = Vec::new();
        let mut inv_len = Vec::with_capacity(items.len());
        for (j, &(br, s)) in items.iter().enumerate() {
            if br >= self.branches.len() {
                return Err(Error::Config {
                    detail: format!("branch index {br} of {}", self.branches.len()),
                });
            }
            let st = enc.states.get(s).ok_or_else(|| Error::Config {
                detail: format!("sentence {s} of {}", enc.states.len()),
            })?;
            let n = st.len() / d;
            flat.extend_from_slice(st);
            tok_row.extend(std::iter::repeat_n(j as u32, n));
            inv_len.push(1.0 / n.max(1) as f32);
        }
        let g = &mut self.graph;
        let n_tok = tok_row.len();
        let mut x = g.input(&Tensor::from_vec(flat, &[n_tok, d])?, false);
        let mut router_logits = Vec::new();
        let mut stats = Vec::new();
        for blk in &self.blocks {
            let h = blk.norm.forward(g, x)?;
            let o = blk.ffn.forward(g, h, None)?;
            if let Some((rl, st)) = o.router {
                router_logits.push(rl);
                stats.push(st);
            }
            x = g.add(x, o.y)?;
        }
        // Mean pooling: sum each sentence's rows, then scale by 1 / len.
        let sums = g.index_add(x, &tok_row, items.len())?;
        let inv = g.input(&Tensor::from_vec(inv_len, &[items.len()])?, false);
        let pooled = g.scale_rows(sums, inv)?;
        let z = self.final_norm.forward(g, pooled)?;
        let base = self.proj.forward(g, z)?;
        let mut logits = Vec::new();
        for (bi, br) in self.branches.iter().enumerate() {
            let pos: Vec<usize> = (0..items.len()).filter(|&j| items[j].0 == bi).collect();
            if pos.is_empty() {
                continue;
            }
            let rows: Vec<u32> = pos.iter().map(|&j| j as u32).collect();
            let zt = g.index_select(z, &rows)?;
            let bt = g.index_select(base, &rows)?;
            let u = br.lora.apply(g, bt, zt)?;
            let f = g.gelu(u, crate::autograd::Gelu::Erf)?;
            logits.push((bi, br.head.forward(g, f)?, pos));
        }
        Ok(Pass {
            logits,
            router_logits,
            stats,
        })
    }

    /// The training loss of a batch: the cross-entropy averaged over all items (each branch's
    /// mean weighted by its share of the batch) plus `aux_weight` times the load-balancing loss.
    /// Returns the loss, its cross-entropy and auxiliary parts, and the pass's statistics.
    ///
    /// # Errors
    /// As [`System::forward`]; [`Error::Config`] for a label out of range.
    pub fn loss(
        &mut self,
        enc: &Encoded,
        items: &[(usize, usize)],
        labels: &[u32],
        aux_weight: f32,
    ) -> Result<(Var, f64, f64, Vec<MoeStats>)> {
        let pass = self.forward(enc, items)?;
        let g = &mut self.graph;
        let total = items.len().max(1) as f32;
        let mut loss: Option<Var> = None;
        for (bi, lg, pos) in &pass.logits {
            let classes = self.branches[*bi].labels.len() as u32;
            let ys: Vec<u32> = pos.iter().map(|&j| labels[j]).collect();
            if let Some(&y) = ys.iter().find(|&&y| y >= classes) {
                return Err(Error::Config {
                    detail: format!(
                        "label {y} out of range for branch `{}` ({classes} classes)",
                        self.branches[*bi].name
                    ),
                });
            }
            let ce = g.cross_entropy(*lg, &ys, u32::MAX)?;
            let w = g.scale(ce, pos.len() as f32 / total)?;
            loss = Some(match loss {
                Some(l) => g.add(l, w)?,
                None => w,
            });
        }
        let ce = loss.ok_or_else(|| Error::Config {
            detail: "empty batch".into(),
        })?;
        let ce_value = f64::from(g.value(ce)?[0]);
        let (loss, aux_value) = if pass.router_logits.is_empty() || aux_weight == 0.0 {
            (ce, 0.0)
        } else {
            let c = self.config;
            let aux = load_balancing_loss(g, &pass.router_logits, c.n_experts, c.top_k)?;
            let aux_value = f64::from(g.value(aux)?[0]);
            let aux = g.scale(aux, aux_weight)?;
            (g.add(ce, aux)?, aux_value)
        };
        Ok((loss, ce_value, aux_value, pass.stats))
    }

    /// Logits of branch `br` for `sentences`, in no-grad mode, `chunk` sentences per forward,
    /// with the per-expert load of each MoE block summed over the chunks.
    ///
    /// # Errors
    /// As [`System::forward`].
    pub fn predict(
        &mut self,
        enc: &Encoded,
        br: usize,
        sentences: &[usize],
        chunk: usize,
    ) -> Result<Prediction> {
        let was = self.graph.grad_enabled();
        self.graph.set_grad_enabled(false);
        let r = self.predict_inner(enc, br, sentences, chunk);
        self.graph.clear();
        self.graph.set_grad_enabled(was);
        r
    }

    fn predict_inner(
        &mut self,
        enc: &Encoded,
        br: usize,
        sentences: &[usize],
        chunk: usize,
    ) -> Result<Prediction> {
        let mut out = Vec::with_capacity(sentences.len());
        let mut load: Vec<Vec<usize>> = Vec::new();
        for part in sentences.chunks(chunk.max(1)) {
            let items: Vec<(usize, usize)> = part.iter().map(|&s| (br, s)).collect();
            let pass = self.forward(enc, &items)?;
            for (li, st) in pass.stats.iter().enumerate() {
                if load.len() <= li {
                    load.push(vec![0; st.load.len()]);
                }
                load[li]
                    .iter_mut()
                    .zip(&st.load)
                    .for_each(|(a, &b)| *a += b);
            }
            if let Some((_, lg, _)) = pass.logits.first() {
                let v = self.graph.value(*lg)?;
                let k = v.len() / part.len().max(1);
                out.extend(v.chunks_exact(k.max(1)).map(<[f32]>::to_vec));
            }
            self.graph.clear();
        }
        Ok((out, load))
    }
}

/// Branch names become file and parameter names: ASCII letters, digits, `_` and `-`.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::Config {
            detail: format!("branch name `{name}`: use 1 to 64 ASCII letters, digits, `_` or `-`"),
        })
    }
}
