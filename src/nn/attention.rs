//! Multi-head self-attention with grouped-query heads, optional RoPE, causal or bidirectional,
//! optional sliding window; and the position tables (RoPE, sinusoidal).

use super::{Builder, Linear};
use crate::autograd::{AttnConfig, AttnSpec, Graph, Var};
use crate::models::{Error, Result};

/// The shape of an attention: heads, grouping, positions and masking.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionSpec {
    pub n_heads: usize,
    /// Key/value heads; query head `h` reads kv head `h / (n_heads / n_kv_heads)`.
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// RoPE base (rotate-half convention, as HF LLaMA); `None`: no rotary positions.
    pub rope_theta: Option<f32>,
    /// A token sees itself and the `w - 1` before it.
    pub window: Option<usize>,
    /// Causal (decoder) or bidirectional (encoder).
    pub causal: bool,
}

/// How the input is projected to queries, keys and values.
#[derive(Clone, Copy, Debug)]
pub enum Qkv {
    /// One projection to `[q | k | v]` (GPT-2 `c_attn`).
    Fused(Linear),
    Separate {
        q: Linear,
        k: Linear,
        v: Linear,
    },
}

/// Projections, attention, output projection.
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub qkv: Qkv,
    pub out: Linear,
    pub spec: AttentionSpec,
}

impl AttentionSpec {
    /// The fused op's configuration: scale `1 / sqrt(head_dim)`, the spec's masking.
    pub fn config(&self) -> AttnConfig {
        AttnConfig {
            heads: self.n_heads,
            kv_heads: self.n_kv_heads,
            spec: AttnSpec {
                scale: 1.0 / (self.head_dim as f32).sqrt(),
                causal: self.causal,
                window: self.window,
            },
        }
    }
}

impl Attention {
    /// Queries, keys and values of `x: (B, T, d)`, RoPE applied at `positions` (`T` shared or
    /// `B * T`) when the spec has it. `// -> (B, T, Hq*D), (B, T, Hkv*D), (B, T, Hkv*D)`
    fn project(&self, g: &mut Graph, x: Var, positions: &[u32]) -> Result<(Var, Var, Var)> {
        let s = self.spec;
        let (hq, hkv, d) = (s.n_heads, s.n_kv_heads, s.head_dim);
        let (q, k, v) = match self.qkv {
            Qkv::Fused(l) => {
                let y = l.forward(g, x)?;
                let parts = g.split(y, 2, &[hq * d, hkv * d, hkv * d])?;
                (parts[0], parts[1], parts[2])
            }
            Qkv::Separate { q, k, v } => {
                match super::moe_infer::linears_no_grad(g, &[&q, &k, &v], x)?.as_deref() {
                    Some(&[q, k, v]) => (q, k, v),
                    _ => (q.forward(g, x)?, k.forward(g, x)?, v.forward(g, x)?),
                }
            }
        };
        Ok(match s.rope_theta {
            Some(theta) => (
                g.rope(q, d, positions, theta)?,
                g.rope(k, d, positions, theta)?,
                v,
            ),
            None => (q, k, v),
        })
    }

    /// LLaMA's layout under `name`: `q_proj`, `k_proj`, `v_proj`, `o_proj`.
    ///
    /// # Errors
    /// The source's error.
    pub fn llama(b: &mut Builder, name: &str, d: usize, spec: AttentionSpec) -> Result<Self> {
        let (hq, hkv) = (
            spec.n_heads * spec.head_dim,
            spec.n_kv_heads * spec.head_dim,
        );
        b.scope(name, |b| {
            Ok(Attention {
                qkv: Qkv::Separate {
                    q: Linear::new(b, "q_proj", d, hq, false)?,
                    k: Linear::new(b, "k_proj", d, hkv, false)?,
                    v: Linear::new(b, "v_proj", d, hkv, false)?,
                },
                out: Linear::new(b, "o_proj", hq, d, false)?,
                spec,
            })
        })
    }

    /// GPT-2's layout under `name`: `c_attn` (fused, Conv1D) and `c_proj`.
    ///
    /// # Errors
    /// The source's error.
    pub fn gpt2(b: &mut Builder, name: &str, d: usize, spec: AttentionSpec) -> Result<Self> {
        b.scope(name, |b| {
            Ok(Attention {
                qkv: Qkv::Fused(Linear::conv1d(b, "c_attn", d, 3 * d)?),
                out: Linear::conv1d(b, "c_proj", d, d)?,
                spec,
            })
        })
    }

    /// Separate projections with biases under `name`: `q`, `k`, `v`, `out` (the ExpertModel).
    ///
    /// # Errors
    /// The source's error.
    pub fn with_bias(b: &mut Builder, name: &str, d: usize, spec: AttentionSpec) -> Result<Self> {
        b.scope(name, |b| {
            Ok(Attention {
                qkv: Qkv::Separate {
                    q: Linear::new(b, "q", d, d, true)?,
                    k: Linear::new(b, "k", d, d, true)?,
                    v: Linear::new(b, "v", d, d, true)?,
                },
                out: Linear::new(b, "out", d, d, true)?,
                spec,
            })
        })
    }

    /// `// x: (B, T, d) -> (B, T, d)`. `key_mask` (`B * T`, `true` = a real token) hides padded
    /// keys.
    ///
    /// # Errors
    /// Shape errors from the graph; [`Error::Config`] for a mask of the wrong length.
    pub fn forward(&self, g: &mut Graph, x: Var, key_mask: Option<&[bool]>) -> Result<Var> {
        let t = g.shape(x)?[1];
        let pos: Vec<u32> = (0..t as u32).collect();
        let (q, k, v) = self.project(g, x, &pos)?;
        let o = g.attention(q, k, v, self.spec.config(), key_mask)?;
        self.out.forward(g, o)
    }
}

/// The sinusoidal position table `(len, d)`: `PE(pos, 2i) = sin(pos / 10000^(2i/d))`,
/// `PE(pos, 2i+1) = cos(...)`, computed in f64 and rounded once.
pub fn sinusoidal_table(len: usize, d: usize) -> Vec<f32> {
    let mut pe = vec![0.0; len * d];
    for pos in 0..len {
        for i in (0..d).step_by(2) {
            let div = (-(i as f64) * (10_000f64.ln() / d as f64)).exp();
            let a = pos as f64 * div;
            pe[pos * d + i] = a.sin() as f32;
            if i + 1 < d {
                pe[pos * d + i + 1] = a.cos() as f32;
            }
        }
    }
    pe
}

/// Keys and values of one layer for every cached row: `(rows, capacity, Hkv, D)` each.
#[derive(Clone, Debug)]
pub struct LayerKv {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// The key/value cache of a decoder: per layer, per row, room for `capacity` positions,
/// allocated once. A sliding-window model whose window is shorter than the context keeps only
/// the last `window` positions in a ring (position `p` lives in slot `p % window`), so its memory
/// stays bounded however long the generation runs.
#[derive(Clone, Debug)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    /// Tokens seen so far by each row (the next token's position).
    seen: Vec<usize>,
    capacity: usize,
    /// The longest sequence a row may reach (the model's context).
    max_len: usize,
    ring: bool,
}

impl KvCache {
    /// A cache for `rows` sequences of up to `max_len` tokens each, for `n_layers` layers of
    /// `spec`'s attention.
    pub fn new(n_layers: usize, rows: usize, max_len: usize, spec: &AttentionSpec) -> Self {
        let (capacity, ring) = match spec.window {
            Some(w) if w < max_len => (w, true),
            _ => (max_len, false),
        };
        let n = rows * capacity * spec.n_kv_heads * spec.head_dim;
        KvCache {
            layers: (0..n_layers)
                .map(|_| LayerKv {
                    k: vec![0.0; n],
                    v: vec![0.0; n],
                })
                .collect(),
            seen: vec![0; rows],
            capacity,
            max_len,
            ring,
        }
    }

    /// Number of rows (sequences).
    pub fn rows(&self) -> usize {
        self.seen.len()
    }

    /// Tokens seen by `row` (the position of its next token).
    pub fn seen(&self, row: usize) -> usize {
        self.seen.get(row).copied().unwrap_or(0)
    }

    /// Positions kept per row (the window for a ring cache).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether old positions are overwritten (sliding window shorter than the context).
    pub fn is_ring(&self) -> bool {
        self.ring
    }

    /// Forgets `row`'s tokens (its memory is reused).
    pub fn reset(&mut self, row: usize) {
        if let Some(s) = self.seen.get_mut(row) {
            *s = 0;
        }
    }

    /// Bytes held by keys and values.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| 4 * (l.k.len() + l.v.len()))
            .sum()
    }

    /// Checks that `rows` can take `t` more tokens each; returns their start positions.
    ///
    /// # Errors
    /// [`Error::Config`] for a row out of range, a repeated row, a sequence past the context,
    /// or a multi-token chunk appended to a ring cache that already holds tokens.
    pub fn starts(&self, rows: &[usize], t: usize) -> Result<Vec<usize>> {
        let mut starts = Vec::with_capacity(rows.len());
        for (i, &r) in rows.iter().enumerate() {
            let Some(&p) = self.seen.get(r) else {
                return Err(Error::Config {
                    detail: format!("cache row {r} of {}", self.rows()),
                });
            };
            if rows[..i].contains(&r) {
                return Err(Error::Config {
                    detail: format!("cache row {r} given twice"),
                });
            }
            if p + t > self.max_len {
                return Err(Error::Config {
                    detail: format!(
                        "row {r}: {p} cached + {t} new tokens exceed the context length {}",
                        self.max_len
                    ),
                });
            }
            if self.ring && t > 1 && p > 0 {
                return Err(Error::Config {
                    detail: format!(
                        "row {r}: a sliding-window cache takes a multi-token chunk only as the first (prefill); feed tokens one at a time after it"
                    ),
                });
            }
            starts.push(p);
        }
        Ok(starts)
    }

    /// Records that `rows` took `t` more tokens.
    pub(crate) fn advance(&mut self, rows: &[usize], t: usize) {
        rows.iter().for_each(|&r| self.seen[r] += t);
    }

    pub(crate) fn layer(&mut self, l: usize) -> &mut LayerKv {
        &mut self.layers[l]
    }
}

/// Where a cached forward writes: the cache geometry, rows and their start positions.
pub struct CacheStep<'a> {
    pub layer: &'a mut LayerKv,
    pub rows: &'a [usize],
    pub starts: &'a [usize],
    pub capacity: usize,
    pub ring: bool,
}

impl Attention {
    /// Inference with a KV cache. `// x: (R, T, d) -> (R, T, d)` for the cache rows
    /// `step.rows`, whose tokens sit at positions `starts[r]..starts[r] + T`. The new keys and
    /// values are written into the cache; each query attends to its row's cached past and the
    /// new tokens (causal, windowed as the spec says). Records nothing: run it in no-grad mode.
    ///
    /// # Errors
    /// [`Error::Config`] when recording is on; shape and kernel errors.
    pub fn forward_cached(&self, g: &mut Graph, x: Var, step: CacheStep) -> Result<Var> {
        if g.grad_enabled() {
            return Err(Error::Config {
                detail: "a cached forward is inference-only: run it under no_grad".into(),
            });
        }
        let xs = g.shape(x)?.to_vec();
        let (rows, t) = (xs[0], xs[1]);
        let s = self.spec;
        let (hq, hkv, d) = (s.n_heads, s.n_kv_heads, s.head_dim);
        let pos: Vec<u32> = step
            .starts
            .iter()
            .flat_map(|&p| (p..p + t).map(|q| q as u32))
            .collect();
        let (q, k, v) = self.project(g, x, &pos)?;
        let (qrow, kvrow) = (hq * d, hkv * d);
        let kernels = g.kernels();
        // Pooled buffers: no allocation per decoded token. The kernel writes every output.
        let mut out = g.pool().take(rows * t * qrow);
        let mut lse = g.pool().take(hq * t);
        let (qv, kv, vv) = (g.value(q)?, g.value(k)?, g.value(v)?);
        let cap = step.capacity;
        for (r, (&row, &p0)) in step.rows.iter().zip(step.starts).enumerate() {
            let base = row * cap * kvrow;
            let (kc, vc) = (
                &mut step.layer.k[base..base + cap * kvrow],
                &mut step.layer.v[base..base + cap * kvrow],
            );
            let (kn, vn) = (
                &kv[r * t * kvrow..][..t * kvrow],
                &vv[r * t * kvrow..][..t * kvrow],
            );
            let q_r = &qv[r * t * qrow..][..t * qrow];
            let out_r = &mut out[r * t * qrow..][..t * qrow];
            let dims = |tk| crate::kernels::attention::AttnDims {
                batch: 1,
                tq: t,
                tk,
                hq,
                hkv,
                d,
            };
            let scale = 1.0 / (d as f32).sqrt();
            let causal = crate::kernels::attention::AttnSpec {
                scale,
                causal: s.causal,
                window: s.window,
            };
            if step.ring && p0 == 0 {
                // Prefill of a ring cache: attend within the chunk, then keep its last `cap`.
                let a = crate::kernels::attention::Attn {
                    dims: dims(t),
                    spec: causal,
                    q: q_r,
                    k: kn,
                    v: vn,
                    key_mask: None,
                };
                kernels.attention_fwd(&a, out_r, &mut lse)?;
                for p in t.saturating_sub(cap)..t {
                    let slot = (p % cap) * kvrow;
                    kc[slot..slot + kvrow].copy_from_slice(&kn[p * kvrow..][..kvrow]);
                    vc[slot..slot + kvrow].copy_from_slice(&vn[p * kvrow..][..kvrow]);
                }
            } else if step.ring {
                // One token into the ring: every kept slot is inside the window, in any order.
                let slot = (p0 % cap) * kvrow;
                kc[slot..slot + kvrow].copy_from_slice(kn);
                vc[slot..slot + kvrow].copy_from_slice(vn);
                let tk = (p0 + 1).min(cap);
                let a = crate::kernels::attention::Attn {
                    dims: dims(tk),
                    spec: crate::kernels::attention::AttnSpec {
                        scale,
                        causal: false,
                        window: None,
                    },
                    q: q_r,
                    k: &kc[..tk * kvrow],
                    v: &vc[..tk * kvrow],
                    key_mask: None,
                };
                kernels.attention_fwd(&a, out_r, &mut lse)?;
            } else {
                // Slot = position: append, then attend over the whole past.
                kc[p0 * kvrow..(p0 + t) * kvrow].copy_from_slice(kn);
                vc[p0 * kvrow..(p0 + t) * kvrow].copy_from_slice(vn);
                let tk = p0 + t;
                let a = crate::kernels::attention::Attn {
                    dims: dims(tk),
                    spec: causal,
                    q: q_r,
                    k: &kc[..tk * kvrow],
                    v: &vc[..tk * kvrow],
                    key_mask: None,
                };
                kernels.attention_fwd(&a, out_r, &mut lse)?;
            }
        }
        g.pool().give(lse);
        let o = g.leaf(out, vec![rows, t, qrow], false);
        self.out.forward(g, o)
    }
}
