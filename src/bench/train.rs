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
        },
        TrainBench {
            name: "tiny-moe",
            config: moe,
            batch: 8,
            seq: 128,
        },
        TrainBench {
            name: "gpt2-124m",
            config: gpt2(50257, 768, 12, 12, 1024),
            batch: 4,
            seq: 64,
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
