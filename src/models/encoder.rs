//! A BERT-style encoder (post-LN, learned positions, token types, exact GELU, padding mask) loaded
//! from HF checkpoints, with sentence-transformers' mean pooling and L2 normalisation.

use super::{Error, Result};
use crate::autograd::{Gelu, Graph, ParamId, Var};
use crate::io::safetensors::SafeTensors;
use crate::json;
use crate::nn::{Attention, AttentionSpec, Builder, Init, Linear, Norm, Qkv, Source};

use std::path::Path;

/// The encoder's sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub d_ff: usize,
    pub max_positions: usize,
    pub type_vocab_size: usize,
    pub norm_eps: f32,
}

impl EncoderConfig {
    /// Reads a HF BERT `config.json` (`model_type` bert, `hidden_act` gelu).
    ///
    /// # Errors
    /// [`Error::Config`] naming the field that is missing, mistyped or unsupported.
    pub fn from_json(text: &str) -> Result<Self> {
        let v = json::parse_str(text).map_err(|e| Error::Config {
            detail: format!("invalid JSON: {e}"),
        })?;
        let bad = |detail: String| Error::Config { detail };
        let usize_of = |k: &str| -> Result<usize> {
            let f = v
                .get(k)
                .ok_or_else(|| bad(format!("missing field `{k}`")))?;
            f.as_u64()
                .filter(|&x| (1..1 << 32).contains(&x))
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("field `{k}` must be a positive integer")))
        };
        match v.get("model_type").and_then(json::Value::as_str) {
            Some("bert") => {}
            other => {
                return Err(bad(format!(
                    "model_type {other:?} is not `bert` (the encoder loads BERT checkpoints)"
                )));
            }
        }
        if let Some(a) = v.get("hidden_act").and_then(json::Value::as_str)
            && a != "gelu"
        {
            return Err(bad(format!(
                "hidden_act `{a}` (supported: gelu, the exact erf form)"
            )));
        }
        if let Some(p) = v
            .get("position_embedding_type")
            .and_then(json::Value::as_str)
            && p != "absolute"
        {
            return Err(bad(format!(
                "position_embedding_type `{p}` (supported: absolute)"
            )));
        }
        let c = EncoderConfig {
            vocab_size: usize_of("vocab_size")?,
            d_model: usize_of("hidden_size")?,
            n_layers: usize_of("num_hidden_layers")?,
            n_heads: usize_of("num_attention_heads")?,
            d_ff: usize_of("intermediate_size")?,
            max_positions: usize_of("max_position_embeddings")?,
            type_vocab_size: usize_of("type_vocab_size").unwrap_or(2),
            norm_eps: v
                .get("layer_norm_eps")
                .and_then(json::Value::as_f64)
                .unwrap_or(1e-12) as f32,
        };
        if !c.d_model.is_multiple_of(c.n_heads) {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                c.d_model, c.n_heads
            )));
        }
        Ok(c)
    }
}

/// One encoder layer: attention, add & norm, feed-forward, add & norm.
#[derive(Clone, Debug)]
pub(super) struct Layer {
    pub(super) attn: Attention,
    pub(super) ln1: Norm,
    pub(super) fc: Linear,
    pub(super) proj: Linear,
    pub(super) ln2: Norm,
}

/// The encoder: embeddings, layers, and the (unused for sentence embeddings) pooler.
pub struct Encoder {
    pub(super) config: EncoderConfig,
    pub(super) graph: Graph,
    params: Vec<(String, ParamId)>,
    pub(super) word: ParamId,
    pub(super) position: ParamId,
    pub(super) token_type: ParamId,
    pub(super) emb_norm: Norm,
    pub(super) layers: Vec<Layer>,
    /// The inference path's weights (fused q|k|v, f32 weights packed as GEMM panels: a copy of
    /// the f32 Linear weights), built on first use from the parameters; dropped whenever the parameters
    /// may change ([`Encoder::graph`], [`Encoder::quantize`]).
    pub(super) fused: Option<Vec<super::encoder_infer::InferLayer>>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Loads a HF BERT directory (`config.json` + `model.safetensors`), e.g. all-MiniLM-L6-v2.
    ///
    /// # Errors
    /// [`Error::Read`] / [`Error::Config`] for the config; [`Error::Io`] for a malformed tensor
    /// file; [`Error::MissingTensor`], [`Error::UnexpectedTensor`], [`Error::TensorShape`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| Error::Read {
            path: cfg_path.clone(),
            source,
        })?;
        let config = EncoderConfig::from_json(&text).map_err(|e| match e {
            Error::Config { detail } => Error::Config {
                detail: format!("{}: {detail}", cfg_path.display()),
            },
            e => e,
        })?;
        let file = SafeTensors::open(dir.join("model.safetensors"))?;
        let prefix = if file.info("bert.embeddings.word_embeddings.weight").is_ok() {
            "bert."
        } else {
            ""
        };
        let mut src = super::load::FileSource::new(&file, |n: &str| format!("{prefix}{n}"));
        let enc = Self::build(config, &mut src)?;
        // Not parameters of the encoder: the position-id buffer, the pooler (sentence
        // embeddings pool by mean), and pre-training heads of a `BertForPreTraining` file.
        src.check_all_used(|n| {
            n.ends_with("position_ids") || n.contains("pooler.") || n.starts_with("cls.")
        })?;
        Ok(enc)
    }

    /// The encoder of `config` with parameters from `source` (HF names).
    ///
    /// # Errors
    /// [`Error::Tensor`] when the kernels cannot be chosen; the source's errors.
    pub fn build(config: EncoderConfig, source: &mut dyn Source) -> Result<Self> {
        let mut graph = Graph::new()?;
        let mut params = Vec::new();
        let c = &config;
        let d = c.d_model;
        let n = |s: f32| Init::Normal(s);
        let mut b = Builder::new(&mut graph, source, &mut params);
        let (word, position, token_type, emb_norm) = b.scope("embeddings", |b| {
            Ok::<_, Error>((
                b.param("word_embeddings.weight", &[c.vocab_size, d], n(0.02))?,
                b.param("position_embeddings.weight", &[c.max_positions, d], n(0.02))?,
                b.param(
                    "token_type_embeddings.weight",
                    &[c.type_vocab_size, d],
                    n(0.02),
                )?,
                Norm::layer(b, "LayerNorm", d, c.norm_eps)?,
            ))
        })?;
        let spec = AttentionSpec {
            n_heads: c.n_heads,
            n_kv_heads: c.n_heads,
            head_dim: d / c.n_heads,
            rope_theta: None,
            window: None,
            causal: false,
        };
        let layers = (0..c.n_layers)
            .map(|i| {
                b.scope(&format!("encoder.layer.{i}"), |b| {
                    let (qkv, out, ln1) = b.scope("attention", |b| {
                        let qkv = b.scope("self", |b| {
                            Ok::<_, Error>(Qkv::Separate {
                                q: Linear::new(b, "query", d, d, true)?,
                                k: Linear::new(b, "key", d, d, true)?,
                                v: Linear::new(b, "value", d, d, true)?,
                            })
                        })?;
                        let (out, ln) = b.scope("output", |b| {
                            Ok::<_, Error>((
                                Linear::new(b, "dense", d, d, true)?,
                                Norm::layer(b, "LayerNorm", d, c.norm_eps)?,
                            ))
                        })?;
                        Ok::<_, Error>((qkv, out, ln))
                    })?;
                    let fc =
                        b.scope("intermediate", |b| Linear::new(b, "dense", d, c.d_ff, true))?;
                    let (proj, ln2) = b.scope("output", |b| {
                        Ok::<_, Error>((
                            Linear::new(b, "dense", c.d_ff, d, true)?,
                            Norm::layer(b, "LayerNorm", d, c.norm_eps)?,
                        ))
                    })?;
                    Ok(Layer {
                        attn: Attention { qkv, out, spec },
                        ln1,
                        fc,
                        proj,
                        ln2,
                    })
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoder {
            config,
            graph,
            params,
            word,
            position,
            token_type,
            emb_norm,
            layers,
            fused: None,
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    pub fn graph(&mut self) -> &mut Graph {
        self.fused = None;
        &mut self.graph
    }

    pub fn graph_ref(&self) -> &Graph {
        &self.graph
    }

    /// Every parameter with its HF name.
    pub fn params(&self) -> &[(String, ParamId)] {
        &self.params
    }

    /// Freezes (`false`) or unfreezes every parameter.
    ///
    /// # Errors
    /// While a tape is recorded.
    pub fn set_trainable(&mut self, on: bool) -> Result<()> {
        for (_, p) in &self.params {
            self.graph.set_requires_grad(*p, on)?;
        }
        Ok(())
    }

    /// Replaces every Linear weight of the layers (attention projections, feed-forward) by int8
    /// per output channel, run through the int8 GEMM with activations quantized per row;
    /// embeddings and LayerNorms stay f32. Freezes the encoder (int8 has no training path).
    ///
    /// # Errors
    /// While a tape is recorded; kernel errors from quantizing.
    pub fn quantize(&mut self) -> Result<()> {
        self.fused = None;
        self.set_trainable(false)?;
        let g = &mut self.graph;
        for l in &mut self.layers {
            if let Qkv::Separate { q, k, v } = &mut l.attn.qkv {
                q.quantize(g)?;
                k.quantize(g)?;
                v.quantize(g)?;
            }
            l.attn.out.quantize(g)?;
            l.fc.quantize(g)?;
            l.proj.quantize(g)?;
        }
        Ok(())
    }

    /// The last hidden states. `// ids: (B, T), mask: (B, T) -> (B, T, d)` on [`Encoder::graph`].
    ///
    /// # Errors
    /// [`Error::Config`] for ids that do not form `batch` rows, rows longer than the position
    /// table, or a mask of the wrong length; [`Error::Tensor`] for an id outside the vocabulary.
    pub fn forward(&mut self, ids: &[u32], batch: usize, mask: Option<&[bool]>) -> Result<Var> {
        if batch == 0 || ids.is_empty() || !ids.len().is_multiple_of(batch) {
            return Err(Error::Config {
                detail: format!("{} token ids do not form {batch} equal rows", ids.len()),
            });
        }
        let t = ids.len() / batch;
        if t > self.config.max_positions {
            return Err(Error::Config {
                detail: format!(
                    "sequence length {t} exceeds max_position_embeddings {}",
                    self.config.max_positions
                ),
            });
        }
        if mask.is_some_and(|m| m.len() != ids.len()) {
            return Err(Error::Config {
                detail: format!(
                    "attention mask of {} entries for {batch} x {t} ids",
                    mask.map_or(0, <[bool]>::len)
                ),
            });
        }
        let g = &mut self.graph;
        let word = g.param(self.word)?;
        let pos = g.param(self.position)?;
        let ty = g.param(self.token_type)?;
        let we = g.embedding(word, ids, &[batch, t])?;
        let positions: Vec<u32> = (0..batch).flat_map(|_| 0..t as u32).collect();
        let pe = g.embedding(pos, &positions, &[batch, t])?;
        let te = g.embedding(ty, &vec![0; ids.len()], &[batch, t])?;
        let x = g.add(we, pe)?;
        let x = g.add(x, te)?;
        let mut x = self.emb_norm.forward(g, x)?;
        for l in &self.layers {
            let a = l.attn.forward(g, x, mask)?;
            let r = g.add(x, a)?;
            x = l.ln1.forward(g, r)?;
            let h = l.fc.forward(g, x)?;
            let h = g.gelu(h, Gelu::Erf)?;
            let f = l.proj.forward(g, h)?;
            let r = g.add(x, f)?;
            x = l.ln2.forward(g, r)?;
        }
        Ok(x)
    }

    /// Sentence embeddings as sentence-transformers makes them: the mean of the last hidden
    /// states over real tokens, then L2-normalised. Runs in no-grad mode.
    /// `// ids: (B, T), mask: (B, T) -> (B, d)`
    ///
    /// # Errors
    /// As [`Encoder::forward`].
    pub fn embed(
        &mut self,
        ids: &[u32],
        batch: usize,
        mask: Option<&[bool]>,
    ) -> Result<Vec<Vec<f32>>> {
        let was = self.graph.grad_enabled();
        self.graph.set_grad_enabled(false);
        let r = self.forward(ids, batch, mask).and_then(|h| {
            let v = self.graph.value(h)?;
            Ok(mean_pool_normalize(v, batch, self.config.d_model, mask))
        });
        self.graph.clear();
        self.graph.set_grad_enabled(was);
        r
    }
}

/// Mean over the real tokens of each row of `h: (B, T, d)`, then L2 normalisation (norm clamped
/// below at 1e-12, as `torch.nn.functional.normalize`). Sums in f64.
pub fn mean_pool_normalize(
    h: &[f32],
    batch: usize,
    d: usize,
    mask: Option<&[bool]>,
) -> Vec<Vec<f32>> {
    let t = h.len() / (batch * d).max(1);
    (0..batch)
        .map(|b| {
            let mut acc = vec![0.0f64; d];
            let mut n = 0usize;
            for i in 0..t {
                if mask.is_some_and(|m| !m[b * t + i]) {
                    continue;
                }
                n += 1;
                let row = &h[(b * t + i) * d..][..d];
                acc.iter_mut()
                    .zip(row)
                    .for_each(|(a, &x)| *a += f64::from(x));
            }
            let n = n.max(1) as f64;
            acc.iter_mut().for_each(|a| *a /= n);
            let norm = acc.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
            acc.iter().map(|a| (a / norm) as f32).collect()
        })
        .collect()
}

/// Sentences in, embeddings out: WordPiece tokenisation, truncation to `max_len` tokens (the
/// final `[SEP]` kept), batches of sentences of similar length (sorted, longest first), the
/// encoder's packed no-tape path ([`Encoder::embed_packed`]), mean pooling and normalisation;
/// results in input order.
pub struct SentenceEmbedder {
    pub encoder: Encoder,
    pub tokenizer: crate::tokenizer::WordPiece,
    /// Longest input in tokens (sentence-transformers' `max_seq_length`: 256 for MiniLM).
    pub max_len: usize,
    pub batch: usize,
    /// The inference path's buffers, kept from call to call (fresh ones page-fault every call).
    scratch: super::encoder_infer::Scratch,
}

impl SentenceEmbedder {
    /// The encoder and tokenizer of a sentence-transformers model directory (`config.json`,
    /// `model.safetensors`, `tokenizer.json` or `vocab.txt`, and `sentence_bert_config.json` for
    /// `max_seq_length`, default 256), batch 32.
    ///
    /// # Errors
    /// As [`Encoder::load`]; [`Error::Config`] when the tokenizer cannot be read.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let encoder = Encoder::load(dir)?;
        let tok = if dir.join("tokenizer.json").exists() {
            crate::tokenizer::WordPiece::from_tokenizer_json(dir.join("tokenizer.json"))
        } else {
            crate::tokenizer::WordPiece::from_vocab_file(dir.join("vocab.txt"))
        };
        let tokenizer = tok.map_err(|e| Error::Config {
            detail: format!("{}: tokenizer: {e}", dir.display()),
        })?;
        let max_len = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|t| json::parse_str(&t).ok())
            .and_then(|v| v.get("max_seq_length").and_then(json::Value::as_u64))
            .map_or(256, |m| m as usize)
            .min(encoder.config().max_positions);
        Ok(SentenceEmbedder {
            encoder,
            tokenizer,
            max_len,
            batch: 32,
            scratch: Default::default(),
        })
    }

    /// The token ids of `text` as the encoder sees them (`[CLS] ... [SEP]`, truncated).
    ///
    /// # Errors
    /// [`Error::Config`] when the vocabulary lacks the special tokens.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self
            .tokenizer
            .encode_with_special(text)
            .map_err(|e| Error::Config {
                detail: format!("tokenizer: {e}"),
            })?;
        if ids.len() > self.max_len && self.max_len >= 2 {
            let sep = ids[ids.len() - 1];
            ids.truncate(self.max_len - 1);
            ids.push(sep);
        }
        Ok(ids)
    }

    /// Embeddings of `texts` in order; `progress(done, total)` is called after each batch.
    ///
    /// # Errors
    /// As [`SentenceEmbedder::tokenize`] and [`Encoder::embed`].
    pub fn embed(
        &mut self,
        texts: &[&str],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        let tokens: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(tokens[i].len()));
        let mut out = vec![Vec::new(); texts.len()];
        let mut done = 0;
        for chunk in order.chunks(self.batch.max(1)) {
            // No padding: the sentences of a batch are packed (see `encoder_infer`).
            let seqs: Vec<&[u32]> = chunk.iter().map(|&i| tokens[i].as_slice()).collect();
            let embs = self.encoder.embed_packed(&seqs, &mut self.scratch)?;
            for (&i, e) in chunk.iter().zip(embs) {
                out[i] = e;
            }
            done += chunk.len();
            progress(done, texts.len());
        }
        Ok(out)
    }
}
