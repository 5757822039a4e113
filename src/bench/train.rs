//! Training throughput: one full step (forward, backward, AdamW) of the configurations the
//! training issue names, on random weights and random tokens.

use crate::models::{Arch, Config, Model};
use crate::train::{AdamW, AdamWConfig};

/// One training configuration.
#[derive(Clone, Debug)]
pub struct TrainBench {
    pub name: &'static str,
    pub config: Config,
    pub batch: usize,
    pub seq: usize,
    /// The speed-up over PyTorch eager the training issue asks of this configuration; the bench
    /// reports the share of the FMA peak a step at that speed-up would need.
    pub target_vs_torch: f64,
}

impl TrainBench {
    /// `B x T` and the model size, e.g. `B8xT128 d384 L6`.
    pub fn label(&self) -> String {
        let c = &self.config;
        let moe = if c.n_experts > 0 {
            format!(" E{}k{}", c.n_experts, c.experts_per_token)
        } else {
            String::new()
        };
        format!(
            "B{}xT{} d{} L{} V{}{moe}",
            self.batch, self.seq, c.d_model, c.n_layers, c.vocab_size
        )
    }

    /// Tokens per step.
    pub fn tokens(&self) -> usize {
        self.batch * self.seq
    }

    /// Floating-point operations per token of one training step's matrix products, the
    /// `6 N` rule: 2 per weight a token meets forward (q, k, v, o; the MLP's two matrices, or
    /// three for SwiGLU, of the `k` experts a token is sent to, and the router; the head), and
    /// twice that backward; plus causal attention's two products per head over the `(T + 1) / 2`
    /// keys a query sees on average, also 3x. Norms, activations, softmax and the optimizer are
    /// left out: `flops / seconds` is a floor on the rate a step sustains.
    pub fn flops_per_token(&self) -> f64 {
        let c = &self.config;
        let d = c.d_model as f64;
        let attn = d * (c.n_heads * c.head_dim) as f64 * 2.0
            + d * (c.n_kv_heads * c.head_dim) as f64 * 2.0;
        let mats = if c.arch.is_llama_like() { 3.0 } else { 2.0 };
        let mlp = mats * d * c.d_ff as f64;
        let mlp = if c.n_experts > 0 {
            mlp * c.experts_per_token as f64 + d * c.n_experts as f64
        } else {
            mlp
        };
        let weights = c.n_layers as f64 * (attn + mlp) + d * c.vocab_size as f64;
        let keys = (self.seq + 1) as f64 / 2.0;
        let scores = c.n_layers as f64 * 2.0 * 2.0 * keys * (c.n_heads * c.head_dim) as f64;
        3.0 * (2.0 * weights + scores)
    }
}

/// A GPT-2-shaped config (tied head, d_ff 4 d, no dropout); also the decode bench's models.
pub(crate) fn gpt2(vocab: usize, d: usize, layers: usize, heads: usize, ctx: usize) -> Config {
    Config {
        arch: Arch::Gpt2,
        vocab_size: vocab,
        d_model: d,
        n_layers: layers,
        n_heads: heads,
        n_kv_heads: heads,
        head_dim: d / heads,
        d_ff: 4 * d,
        max_seq_len: ctx,
        norm_eps: 1e-5,
        tie_embeddings: true,
        dropout: 0.0,
        ..Config::expert(vocab)
    }
}

/// The three configurations: dense "tiny" GPT, its 8-expert top-2 variant (Mixtral-style
/// blocks: RMSNorm, RoPE, SwiGLU experts of width 1536), and GPT-2 124M.
pub fn train_benches() -> Vec<TrainBench> {
    let tiny = gpt2(4096, 384, 6, 6, 128);
    let moe = Config {
        arch: Arch::Mixtral,
        d_ff: 1536,
        n_experts: 8,
        experts_per_token: 2,
        router_aux_loss_coef: 0.01,
        norm_eps: 1e-6,
        rope_theta: 10_000.0,
        ..tiny.clone()
    };
    vec![
        TrainBench {
            name: "tiny-gpt",
            config: tiny,
            batch: 8,
            seq: 128,
            target_vs_torch: 1.5,
        },
        TrainBench {
            name: "tiny-moe",
            config: moe,
            batch: 8,
            seq: 128,
            target_vs_torch: 2.0,
        },
        TrainBench {
            name: "gpt2-124m",
            config: gpt2(50257, 768, 12, 12, 1024),
            batch: 4,
            seq: 64,
            target_vs_torch: 1.3,
        },
    ]
}

/// A closure running one training step of `b` (loss, backward, AdamW with the fixtures'
/// hyper-parameters) on fixed random tokens.
///
/// # Errors
/// When the model cannot be built (a bad `ANVIL_ISA`).
pub fn train_step(b: &TrainBench) -> crate::models::Result<impl FnMut() + use<>> {
    let mut model = Model::new(b.config.clone(), 1)?;
    let hyper = AdamWConfig {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut opt = AdamW::all(model.graph_ref(), hyper);
    let v = b.config.vocab_size as u64;
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let ids: Vec<u32> = (0..b.tokens())
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % v) as u32
        })
        .collect();
    let rows = b.batch;
    Ok(move || {
        let l = model
            .loss(&ids, rows, None)
            .expect("bench batch fits the model");
        model.graph().backward(l.total).expect("backward");
        opt.step(model.graph(), 1.0).expect("step");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2 124M: 12 layers of 12 d^2 weights (qkv 3, proj 1, fc 4, proj 4), the tied head
    /// V d; at T 64 a query sees 32.5 keys on average.
    #[test]
    fn flops_per_token_counts_gpt2_124m() {
        let b = &train_benches()[2];
        assert_eq!((b.name, b.seq), ("gpt2-124m", 64));
        let d = 768.0f64;
        let weights = 12.0 * 12.0 * d * d + 50257.0 * d;
        let attention = 12.0 * 4.0 * 32.5 * d;
        assert_eq!(b.flops_per_token(), 6.0 * weights + 3.0 * attention);
    }

    /// The MoE variant: q, k, v, o, the router and 2 of 8 SwiGLU experts of width 1536.
    #[test]
    fn flops_per_token_counts_two_experts_of_eight() {
        let b = &train_benches()[1];
        assert_eq!(b.name, "tiny-moe");
        let d = 384.0f64;
        let layer = 4.0 * d * d + 2.0 * 3.0 * d * 1536.0 + 8.0 * d;
        let weights = 6.0 * layer + 4096.0 * d;
        let attention = 6.0 * 4.0 * 64.5 * d;
        assert_eq!(b.flops_per_token(), 6.0 * weights + 3.0 * attention);
    }
}
