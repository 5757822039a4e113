//! Whole-model int8: every Linear weight (attention, MLP, experts, and the LM head, a tied head
//! included) replaced by int8 per output channel (or per block of 32) for no-grad inference. Embeddings, norms,
//! biases and the mixture routers stay f32 (a router's top-k choice is discrete: quantizing it
//! would change which experts run, not just round their output).

use super::{Model, Result};
use crate::autograd::ops::qlinear::{quantize_weight, quantize_weight_blocks};
use crate::kernels::qgemm::QFormat;
use crate::nn::{Ffn, Linear, Qkv};

/// The checkpoint name of a tied head's int8 copy (the f32 head is the embedding itself).
pub(crate) const TIED_HEAD: &str = "lm_head.weight";

impl Model {
    /// Quantizes every Linear weight to int8 per output channel (see the module docs) and
    /// freezes every parameter: the model then runs inference only, through the int8 kernels,
    /// and [`Model::save`] writes an int8 checkpoint that [`Model::load`] reads back as is.
    ///
    /// # Errors
    /// [`super::Error::Tensor`] when a tape is recorded (clear it first).
    pub fn quantize(&mut self) -> Result<()> {
        self.quantize_as(QFormat::PerChannel)
    }

    /// As [`Model::quantize`], in `format`. [`QFormat::Block32`] (ggml's Q8_0: an f16 scale per
    /// 32 weights) has no checkpoint form: [`Model::save`] refuses such a model.
    ///
    /// # Errors
    /// [`super::Error::Tensor`] when a tape is recorded (clear it first).
    pub fn quantize_as(&mut self, format: QFormat) -> Result<()> {
        let g = &mut self.graph;
        for blk in &mut self.blocks {
            match &mut blk.attn.qkv {
                Qkv::Fused(l) => l.quantize_as(g, format)?,
                Qkv::Separate { q, k, v } => {
                    q.quantize_as(g, format)?;
                    k.quantize_as(g, format)?;
                    v.quantize_as(g, format)?;
                }
            }
            blk.attn.out.quantize_as(g, format)?;
            match &mut blk.ffn {
                Ffn::Mlp { fc, proj, .. } => {
                    fc.quantize_as(g, format)?;
                    proj.quantize_as(g, format)?;
                }
                Ffn::SwiGlu(s) => {
                    s.gate.quantize_as(g, format)?;
                    s.up.quantize_as(g, format)?;
                    s.down.quantize_as(g, format)?;
                }
                Ffn::Moe(m) => {
                    for s in &mut m.experts {
                        s.gate.quantize_as(g, format)?;
                        s.up.quantize_as(g, format)?;
                        s.down.quantize_as(g, format)?;
                    }
                }
            }
        }
        match &mut self.head {
            Some(h) => h.quantize_as(g, format)?,
            None => {
                let kernels = g.kernels();
                let embed = g.param_tensor(self.embed)?.clone();
                let (w, qw) = if format == QFormat::Block32 {
                    // No stored form: the head reads the embedding's f32 values, packed.
                    (self.embed, quantize_weight_blocks(&kernels, &embed, false)?)
                } else {
                    let (qw, t) = quantize_weight(&kernels, &embed, false)?;
                    let w = g.add_param(TIED_HEAD, &t, false);
                    self.params.push((TIED_HEAD.to_string(), w));
                    (w, qw)
                };
                self.head = Some(Linear {
                    w,
                    b: None,
                    in_out: false,
                    q: Some(g.add_qweights(qw)),
                });
            }
        }
        self.freeze()
    }

    /// Lays every f32 GPT-2 `Conv1D` weight out `(out, in)`, as every other Linear's, and freezes
    /// those weights, for inference. A decode step then streams each weight as dot products of
    /// contiguous rows, which read memory faster than the `(in, out)` layout's short rows of
    /// 1.5-3 KiB (measured on 2 threads, the same model with and without, decodes alternated in
    /// one process: the tiny GPT 1.03-1.06x the tokens/s, GPT-2 124M 1.05x).
    /// Numerics: only the order of each dot product's sum changes. [`Model::save`] writes the
    /// weights back in their checkpoint layout; a [`crate::train::Trainer`] refuses such a model.
    /// A no-op for models without f32 `Conv1D` weights (LLaMA, Mistral, Mixtral, int8 models).
    ///
    /// # Errors
    /// [`super::Error::Tensor`] when a tape is recorded (clear it first).
    pub fn prepare_decode(&mut self) -> Result<()> {
        let g = &mut self.graph;
        for blk in &mut self.blocks {
            if let Qkv::Fused(l) = &mut blk.attn.qkv {
                l.transpose_for_decode(g)?;
            }
            blk.attn.out.transpose_for_decode(g)?;
            if let Ffn::Mlp { fc, proj, .. } = &mut blk.ffn {
                fc.transpose_for_decode(g)?;
                proj.transpose_for_decode(g)?;
            }
        }
        Ok(())
    }

    /// The format of the int8 weights, `None` for an f32 model (every Linear shares the head's).
    pub fn quant_format(&self) -> Option<QFormat> {
        let q = self.head?.q?;
        self.graph.qweights(q).ok().map(|w| w.format())
    }

    /// Whether the Linear weights are int8 (quantized or loaded from an int8 checkpoint).
    pub fn is_quantized(&self) -> bool {
        self.head.is_some_and(|h| h.q.is_some())
            || self.blocks.first().is_some_and(|b| b.attn.out.q.is_some())
    }

    /// Freezes every parameter (a quantized model has no training path).
    pub(crate) fn freeze(&mut self) -> Result<()> {
        for (_, p) in &self.params {
            self.graph.set_requires_grad(*p, false)?;
        }
        Ok(())
    }
}
