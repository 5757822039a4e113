//! Multi-head self-attention with grouped-query heads, optional RoPE, causal or bidirectional,
//! optional sliding window; and the position tables (RoPE, sinusoidal).

use super::{Builder, Linear};
use crate::autograd::{CausalMask, Graph, Var};
use crate::models::{Error, Result};
use crate::tensor::Tensor;

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

impl Attention {
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
        let xs = g.shape(x)?.to_vec();
        let (b, t) = (xs[0], xs[1]);
        let s = self.spec;
        let (hq, hkv, d) = (s.n_heads, s.n_kv_heads, s.head_dim);
        let (q, k, v) = match self.qkv {
            Qkv::Fused(l) => {
                let y = l.forward(g, x)?;
                let parts = g.split(y, 2, &[hq * d, hkv * d, hkv * d])?;
                (parts[0], parts[1], parts[2])
            }
            Qkv::Separate { q, k, v } => (q.forward(g, x)?, k.forward(g, x)?, v.forward(g, x)?),
        };
        let q = g.reshape(q, &[b, t, hq, d])?;
        let k = g.reshape(k, &[b, t, hkv, d])?;
        let v = g.reshape(v, &[b, t, hkv, d])?;
        let (q, k) = match s.rope_theta {
            Some(theta) => {
                let pos: Vec<u32> = (0..t as u32).collect();
                (rope(g, q, &pos, theta)?, rope(g, k, &pos, theta)?)
            }
            None => (q, k),
        };
        let o = attend(g, q, k, v, key_mask, s)?;
        let o = g.reshape(o, &[b, t, hq * d])?;
        self.out.forward(g, o)
    }
}

/// Scaled dot-product attention. `// q: (B, T, Hq, D), k, v: (B, T, Hkv, D) -> (B, T, Hq, D)`
fn attend(
    g: &mut Graph,
    q: Var,
    k: Var,
    v: Var,
    key_mask: Option<&[bool]>,
    s: AttentionSpec,
) -> Result<Var> {
    if key_mask.is_some() {
        return Err(Error::Config {
            detail: "padding masks need the fused attention op".into(),
        });
    }
    let qs = g.shape(q)?.to_vec();
    let t = qs[1];
    let q = g.permute(q, &[0, 2, 1, 3])?;
    let expand = |g: &mut Graph, x: Var| -> Result<Var> {
        let x = g.permute(x, &[2, 0, 1, 3])?;
        let rep = s.n_heads / s.n_kv_heads;
        let x = if rep > 1 {
            let rows: Vec<u32> = (0..s.n_heads).map(|h| (h / rep) as u32).collect();
            g.index_select(x, &rows)?
        } else {
            x
        };
        Ok(g.permute(x, &[1, 0, 2, 3])?)
    };
    let k = expand(g, k)?;
    let v = expand(g, v)?;
    let kt = g.transpose(k)?;
    let scores = g.matmul(q, kt)?;
    let scores = g.scale(scores, 1.0 / (s.head_dim as f32).sqrt())?;
    let p = if s.causal {
        let mask = CausalMask {
            block_rows: t,
            offset: 0,
            window: s.window,
        };
        g.softmax_causal(scores, mask)?
    } else {
        g.softmax(scores)?
    };
    let o = g.matmul(p, v)?;
    Ok(g.permute(o, &[0, 2, 1, 3])?)
}

/// Rotary embedding of `x: (B, T, H, D)` at positions `pos` (one per `T`), rotate-half.
fn rope(g: &mut Graph, x: Var, pos: &[u32], theta: f32) -> Result<Var> {
    let xs = g.shape(x)?.to_vec();
    let (b, t, h, d) = (xs[0], xs[1], xs[2], xs[3]);
    let (cos, sin) = rope_tables(pos, d, theta);
    let full = |tab: &[f32]| -> Result<Tensor> {
        let mut v = Vec::with_capacity(b * t * h * d);
        for _ in 0..b {
            for row in tab.chunks_exact(d) {
                for _ in 0..h {
                    v.extend_from_slice(row);
                }
            }
        }
        Ok(Tensor::from_vec(v, &xs)?)
    };
    let (cos, sin) = (g.input(&full(&cos)?, false), g.input(&full(&sin)?, false));
    let lo = g.narrow(x, 3, 0, d / 2)?;
    let hi = g.narrow(x, 3, d / 2, d / 2)?;
    let neg_hi = g.scale(hi, -1.0)?;
    let rot = g.concat(&[neg_hi, lo], 3)?;
    let a = g.mul(x, cos)?;
    let r = g.mul(rot, sin)?;
    Ok(g.add(a, r)?)
}

/// RoPE `cos` and `sin` tables `(positions, head_dim)`, rounded as HF LLaMA computes them in f32:
/// `inv_freq[i] = 1 / theta^(2i / D)` and the angle `pos * inv_freq[i]` each rounded to f32, then
/// cos and sin of that angle (here in f64, rounded once); the two halves of a row are equal.
pub fn rope_tables(pos: &[u32], head_dim: usize, theta: f32) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let (mut cos, mut sin) = (
        Vec::with_capacity(pos.len() * head_dim),
        Vec::with_capacity(pos.len() * head_dim),
    );
    for &p in pos {
        let start = cos.len();
        for &f in &inv {
            let a = f64::from(p as f32 * f);
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
        cos.extend_from_within(start..start + half);
        sin.extend_from_within(start..start + half);
    }
    (cos, sin)
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
