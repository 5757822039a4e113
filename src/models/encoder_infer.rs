//! The encoder's inference path without the tape, for sentence embeddings.
//!
//! The tokens of a batch of sentences are packed into one `(N, d)` matrix, `N` the sum of the
//! real lengths (no padding at all): every per-token op (Linear, LayerNorm, GELU) runs on that
//! matrix, and attention runs per sentence on its real length, so no work is spent on pad
//! positions. Queries, keys and values come out of one GEMM (weights `[Wq; Wk; Wv]`, which for
//! int8 also quantizes the activations once for the three) and attention reads them from its
//! output in place; each Linear's bias is added in the pass that follows it (attention; GELU;
//! the residual add before LayerNorm).
//! A batch is cut into one part per thread, of about equal token counts, and each thread embeds
//! its own part start to end, so the threads do not wait for each other at every op; the same
//! bits come out on any thread count (every op is per token or per sentence). Sharing the work of
//! each op instead scaled 1.6-1.8x from 1 to 2 threads.
//! Buffers live in [`Scratch`], a set per part, and are reused from batch to batch. It computes what
//! [`Encoder::forward`] followed by [`super::mean_pool_normalize`] computes, with the same kernels;
//! `tests/minilm.rs` holds it to the PyTorch reference.

use super::encoder::{Encoder, Layer};
use super::{Error, Result};
use crate::autograd::{Gelu, Graph, QParamId};
use crate::kernels::Kernels;
use crate::kernels::attention::PackedQkv;
use crate::kernels::gemm::{MatMut, MatRef, PackedB};
use crate::kernels::qgemm::QWeights;
use crate::nn::{Linear, Norm, Qkv};
use rayon::prelude::*;

/// Rows per task of the row passes (bias, GELU, add & norm): 16 rows of 384 floats are 24 KiB,
/// small enough for L1 and enough tasks for two threads at a batch's few hundred rows.
const ROWS: usize = 16;

/// One layer's weights as the inference path reads them: q|k|v fused into one projection (for
/// int8 this also quantizes the activations once for the three), f32 weights packed once into
/// the GEMM's B panels, so no call repacks them (packing every weight on every batch took 4-5%
/// of an f32 embedding). The biases and norms stay in the graph.
#[derive(Debug)]
pub(super) struct InferLayer {
    /// `// (d) -> (3 d)`
    qkv: Weight,
    /// `// (3 d)`
    qkv_b: Vec<f32>,
    out: Weight,
    fc: Weight,
    proj: Weight,
}

#[derive(Debug)]
enum Weight {
    /// f32 `(inp, out)`, packed for the graph's kernels: `y = x W`.
    F32(PackedB),
    /// int8 per output channel, owned (the fused q|k|v: per-channel scales concatenate exactly).
    Int8(QWeights),
    /// int8 weights held by the graph.
    Int8Of(QParamId),
}

/// Buffers of the inference path, grown to the largest batch seen and reused: one set per part
/// of a batch (a part per thread).
#[derive(Debug, Default)]
pub struct Scratch {
    parts: Vec<Bufs>,
}

/// The buffers of one part of a batch.
#[derive(Debug, Default)]
struct Bufs {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    y: Vec<f32>,
    h: Vec<f32>,
    act: Vec<f32>,
}

/// The first `n` elements of `buf`, grown (zero-filled) when short. Stale contents.
fn take(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// Builds every layer's [`InferLayer`] from the parameters.
pub(super) fn build_layers(g: &Graph, layers: &[Layer]) -> Result<Vec<InferLayer>> {
    let kern = g.kernels();
    let weight = |l: &Linear| -> Result<Weight> {
        match l.q {
            Some(q) => Ok(Weight::Int8Of(q)),
            None => {
                let (w, inp, out) = in_out(g, l)?;
                Ok(Weight::F32(kern.pack_b(MatRef::new(&w, inp, out, out))?))
            }
        }
    };
    layers
        .iter()
        .map(|l| {
            let Qkv::Separate { q, k, v } = &l.attn.qkv else {
                return Err(Error::Config {
                    detail: "the encoder's attention has separate q, k, v projections".into(),
                });
            };
            let parts = [q, k, v];
            let mut qkv_b = Vec::new();
            for l in parts {
                match l.b {
                    Some(p) => qkv_b.extend_from_slice(g.param_value(p)?.2),
                    None => qkv_b.extend(std::iter::repeat_n(0.0, out_dim(g, l)?)),
                }
            }
            let qkv = if let [Some(a), Some(b), Some(c)] = parts.map(|l| l.q) {
                let (mut qs, mut scales, mut inp) = (Vec::new(), Vec::new(), 0);
                for id in [a, b, c] {
                    let w = g.qweights(id)?;
                    qs.extend(w.unpack());
                    scales.extend_from_slice(w.channel_scales().unwrap_or_default());
                    inp = w.k();
                }
                let n = scales.len();
                Weight::Int8(QWeights::from_per_channel(&qs, &scales, n, inp)?)
            } else {
                // (inp, 3 d): the three transposed weights side by side in each row.
                if parts.iter().any(|l| l.q.is_some()) {
                    return Err(Error::Config {
                        detail: "q, k, v projections mix int8 and f32 weights".into(),
                    });
                }
                let cols = parts
                    .iter()
                    .map(|l| in_out(g, l))
                    .collect::<Result<Vec<_>>>()?;
                let inp = cols[0].1;
                let out: usize = cols.iter().map(|c| c.2).sum();
                let mut w = Vec::with_capacity(inp * out);
                for i in 0..inp {
                    for (c, _, o) in &cols {
                        w.extend_from_slice(&c[i * o..(i + 1) * o]);
                    }
                }
                Weight::F32(kern.pack_b(MatRef::new(&w, inp, out, out))?)
            };
            Ok(InferLayer {
                qkv,
                qkv_b,
                out: weight(&l.attn.out)?,
                fc: weight(&l.fc)?,
                proj: weight(&l.proj)?,
            })
        })
        .collect()
}

/// `l`'s f32 weight copied as `(in, out)` row-major: `(w, in, out)`.
fn in_out(g: &Graph, l: &Linear) -> Result<(Vec<f32>, usize, usize)> {
    let (_, s, w) = g.param_value(l.w)?;
    let &[a, b] = s else {
        return Err(Error::Config {
            detail: format!("a Linear weight is 2-D, got {s:?}"),
        });
    };
    if l.in_out {
        return Ok((w.to_vec(), a, b));
    }
    let mut t = vec![0.0f32; a * b];
    for (o, row) in w.chunks_exact(b).enumerate() {
        for (i, &x) in row.iter().enumerate() {
            t[i * a + o] = x;
        }
    }
    Ok((t, b, a))
}

/// Output width of `l`.
fn out_dim(g: &Graph, l: &Linear) -> Result<usize> {
    Ok(match l.q {
        Some(q) => g.qweights(q)?.n(),
        None => {
            let s = g.param_value(l.w)?.1;
            if l.in_out { s[1] } else { s[0] }
        }
    })
}

/// `y = x W` without the bias (added by the pass that follows).
/// `// x: (n, in), W: (in, out) -> y: (n, out)`
fn matmul(g: &Graph, k: &Kernels, w: &Weight, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
    match w {
        Weight::F32(w) => k.sgemm_packed(
            1.0,
            MatRef::new(x, n, w.k(), w.k()),
            w,
            0.0,
            MatMut::new(y, n, w.n(), w.n()),
        )?,
        Weight::Int8(w) => k.qgemm_i8(x, n, w, y)?,
        Weight::Int8Of(q) => k.qgemm_i8(x, n, g.qweights(*q)?, y)?,
    }
    Ok(())
}

/// The bias of `l` (zeros when it has none). `// -> (out)`
fn bias<'g>(g: &'g Graph, l: &Linear, zeros: &'g [f32]) -> Result<&'g [f32]> {
    Ok(match l.b {
        Some(b) => g.param_value(b)?.2,
        None => zeros,
    })
}

/// LayerNorm weight, bias and eps of `n`.
fn norm<'g>(g: &'g Graph, n: &Norm) -> Result<(&'g [f32], &'g [f32], f32)> {
    match *n {
        Norm::Layer { w, b, eps } => Ok((g.param_value(w)?.2, g.param_value(b)?.2, eps)),
        Norm::Rms { .. } => Err(Error::Config {
            detail: "the encoder uses LayerNorm".into(),
        }),
    }
}

/// `x = LayerNorm(x + (y + bias))`, row by row; `y` is overwritten (scratch).
/// `// x, y: (n, d), bias, w, b: (d)`
fn add_norm(
    k: &Kernels,
    x: &mut [f32],
    y: &mut [f32],
    bias: &[f32],
    (w, b, eps): (&[f32], &[f32], f32),
) -> Result<()> {
    let d = w.len();
    x.par_chunks_mut(ROWS * d)
        .zip(y.par_chunks_mut(ROWS * d))
        .try_for_each(|(xc, yc)| {
            for (yr, xr) in yc.chunks_exact_mut(d).zip(xc.chunks_exact(d)) {
                for ((y, &x), &c) in yr.iter_mut().zip(xr).zip(bias) {
                    *y = x + (*y + c);
                }
            }
            let rows = xc.len() / d;
            let (mut mean, mut rstd) = ([0.0f32; ROWS], [0.0f32; ROWS]);
            k.layernorm_fwd(yc, w, b, xc, &mut mean, &mut rstd, rows, d, eps)
        })?;
    Ok(())
}

/// `act = GELU(h + bias)` (exact erf form), row by row, in one pass.
/// `// h, act: (n, ff), bias: (ff)`
fn bias_gelu(k: &Kernels, h: &[f32], bias: &[f32], act: &mut [f32]) -> Result<()> {
    let ff = bias.len();
    h.par_chunks(ROWS * ff)
        .zip(act.par_chunks_mut(ROWS * ff))
        .try_for_each(|(hc, ac)| k.gelu_bias_fwd(Gelu::Erf, hc, bias, ac, hc.len() / ff))?;
    Ok(())
}

/// `seqs` cut into at most `parts` consecutive runs of about equal token counts (each non-empty).
fn split_by_tokens<'s, 't>(seqs: &'s [&'t [u32]], parts: usize) -> Vec<&'s [&'t [u32]]> {
    let total: usize = seqs.iter().map(|t| t.len()).sum();
    let parts = parts.clamp(1, seqs.len().max(1));
    let mut out = Vec::with_capacity(parts);
    let (mut start, mut acc) = (0, 0);
    for (i, t) in seqs.iter().enumerate() {
        acc += t.len();
        // Close the part once it holds its share of the tokens, keeping a sentence for each
        // part still to come.
        let want = total * (out.len() + 1) / parts;
        if out.len() + 1 < parts && acc >= want && seqs.len() - (i + 1) >= parts - out.len() - 1 {
            out.push(&seqs[start..=i]);
            start = i + 1;
        }
    }
    if start < seqs.len() || out.is_empty() {
        out.push(&seqs[start..]);
    }
    out
}

impl Encoder {
    /// Sentence embeddings of `seqs` (token ids, `[CLS] ... [SEP]`, any lengths) without the
    /// tape or padding: the mean of the last hidden states over each sentence's tokens, then
    /// L2-normalised. `// seqs: B x (T_i) -> (B, d)`
    ///
    /// # Errors
    /// [`Error::Config`] for an empty sentence, one longer than the position table, or an id
    /// outside the vocabulary.
    pub fn embed_packed(&mut self, seqs: &[&[u32]], s: &mut Scratch) -> Result<Vec<Vec<f32>>> {
        let c = self.config.clone();
        for (i, t) in seqs.iter().enumerate() {
            if t.is_empty() || t.len() > c.max_positions {
                return Err(Error::Config {
                    detail: format!(
                        "sentence {i} has {} tokens (need 1 to max_position_embeddings {})",
                        t.len(),
                        c.max_positions
                    ),
                });
            }
            if let Some(&id) = t.iter().find(|&&id| id as usize >= c.vocab_size) {
                return Err(Error::Config {
                    detail: format!(
                        "token id {id} in sentence {i} is outside the vocabulary of {}",
                        c.vocab_size
                    ),
                });
            }
        }
        if self.fused.is_none() {
            self.fused = Some(build_layers(&self.graph, &self.layers)?);
        }
        let parts = split_by_tokens(seqs, rayon::current_num_threads());
        if s.parts.len() < parts.len() {
            s.parts.resize_with(parts.len(), Bufs::default);
        }
        let this = &*self;
        let outs: Vec<Result<Vec<Vec<f32>>>> = parts
            .into_par_iter()
            .zip(s.parts.par_iter_mut())
            .map(|(part, bufs)| this.embed_part(part, bufs))
            .collect();
        let mut out = Vec::with_capacity(seqs.len());
        for o in outs {
            out.extend(o?);
        }
        Ok(out)
    }

    /// [`Encoder::embed_packed`] on one part of a batch, with its own buffers (checked input).
    fn embed_part(&self, seqs: &[&[u32]], s: &mut Bufs) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let fused = self.fused.as_deref().unwrap_or_default();
        let lens: Vec<usize> = seqs.iter().map(|t| t.len()).collect();
        let n: usize = lens.iter().sum();
        let (d, ff) = (c.d_model, c.d_ff);
        let g = &self.graph;
        let kern = g.kernels();
        let x = take(&mut s.x, n * d);
        let y = take(&mut s.y, n * d);
        // Embeddings: (word + position) + token type 0, in the tape's order.
        let (wv, pv, tv) = (
            g.param_value(self.word)?.2,
            g.param_value(self.position)?.2,
            &g.param_value(self.token_type)?.2[..d],
        );
        let mut r = 0;
        for t in seqs {
            for (p, &id) in t.iter().enumerate() {
                let (we, pe) = (&wv[id as usize * d..][..d], &pv[p * d..][..d]);
                for (j, o) in y[r * d..(r + 1) * d].iter_mut().enumerate() {
                    *o = (we[j] + pe[j]) + tv[j];
                }
                r += 1;
            }
        }
        let zeros = vec![0.0f32; d];
        // x = LayerNorm(0 + (y + 0)) is the embeddings' LayerNorm: adding zeros is exact.
        x.fill(0.0);
        add_norm(&kern, x, y, &zeros, norm(g, &self.emb_norm)?)?;
        for (l, f) in self.layers.iter().zip(fused) {
            let qkv = take(&mut s.qkv, n * 3 * d);
            matmul(g, &kern, &f.qkv, x, n, qkv)?;
            let ctx = take(&mut s.ctx, n * d);
            // Each sentence over its own tokens, q, k, v and their bias read from qkv in place.
            kern.attention_packed_fwd(
                &PackedQkv {
                    qkv,
                    bias: &f.qkv_b,
                    lens: &lens,
                    heads: c.n_heads,
                    d: d / c.n_heads,
                    scale: 1.0 / ((d / c.n_heads) as f32).sqrt(),
                },
                ctx,
            )?;
            let (out, ln1, fc, proj, ln2) = (&l.attn.out, &l.ln1, &l.fc, &l.proj, &l.ln2);
            matmul(g, &kern, &f.out, ctx, n, y)?;
            add_norm(&kern, x, y, bias(g, out, &zeros)?, norm(g, ln1)?)?;
            let h = take(&mut s.h, n * ff);
            matmul(g, &kern, &f.fc, x, n, h)?;
            let act = take(&mut s.act, n * ff);
            let zeros_ff;
            let fc_b = match fc.b {
                Some(b) => g.param_value(b)?.2,
                None => {
                    zeros_ff = vec![0.0; ff];
                    &zeros_ff
                }
            };
            bias_gelu(&kern, h, fc_b, act)?;
            matmul(g, &kern, &f.proj, act, n, y)?;
            add_norm(&kern, x, y, bias(g, proj, &zeros)?, norm(g, ln2)?)?;
        }
        let mut out = Vec::with_capacity(seqs.len());
        let mut off = 0;
        for &l in &lens {
            out.extend(super::mean_pool_normalize(
                &x[off * d..(off + l) * d],
                1,
                d,
                None,
            ));
            off += l;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::split_by_tokens;

    #[test]
    fn parts_cover_the_batch_in_order_with_even_token_counts() {
        let lens = [5usize, 30, 7, 7, 12, 40, 3, 9, 20, 1];
        let seqs: Vec<Vec<u32>> = lens.iter().map(|&n| vec![101; n]).collect();
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        for parts in 1..=12 {
            let got = split_by_tokens(&refs, parts);
            assert!(!got.is_empty() && got.len() <= parts.min(refs.len()));
            assert!(got.iter().all(|p| !p.is_empty()), "{parts}: an empty part");
            let joined: Vec<&[u32]> = got.iter().flat_map(|p| p.iter().copied()).collect();
            assert_eq!(joined, refs, "{parts}: parts must cover the batch in order");
        }
        // Two parts: 134 tokens cut after the sentence that passes 67 (5 + 30 + 7 + 7 + 12 + 40).
        let two = split_by_tokens(&refs, 2);
        assert_eq!(two.iter().map(|p| p.len()).collect::<Vec<_>>(), [6, 4]);
        assert_eq!(split_by_tokens(&refs[..1], 2).len(), 1);
        assert_eq!(split_by_tokens(&[], 2).len(), 1);
    }
}
