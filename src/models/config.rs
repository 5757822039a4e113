//! One configuration type for every architecture: read from a HF `config.json`, written to and
//! read back from our own checkpoints' metadata, and enough to rebuild the model.

use super::Error;
use crate::json::{self, Value};

/// The architectures Anvil builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// GPT-2: pre-LN, learned positions, GELU (tanh) MLP, fused QKV, Conv1D weights `[in, out]`.
    Gpt2,
    /// LLaMA: RoPE, RMSNorm, SwiGLU MLP, grouped-query attention.
    Llama,
    /// Mistral: LLaMA plus sliding-window attention.
    Mistral,
    /// Mixtral: Mistral with a top-k mixture of SwiGLU experts in every block.
    Mixtral,
    /// The seeds' ExpertModel: post-LN, sinusoidal positions, embedding scaled by sqrt(d), GELU
    /// (erf) MLP, biases everywhere but the head, final LayerNorm.
    Expert,
}

impl Arch {
    /// The name used in `config.json` (`model_type`) and in our metadata.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Gpt2 => "gpt2",
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Mixtral => "mixtral",
            Arch::Expert => "expert",
        }
    }

    /// The architecture named `name` (`model_type`).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Arch::Gpt2,
            Arch::Llama,
            Arch::Mistral,
            Arch::Mixtral,
            Arch::Expert,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }

    /// Whether the architecture is the LLaMA family (RoPE, RMSNorm, SwiGLU).
    pub fn is_llama_like(self) -> bool {
        matches!(self, Arch::Llama | Arch::Mistral | Arch::Mixtral)
    }
}

/// Everything needed to rebuild a model. Fields an architecture does not use keep their defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub arch: Arch,
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention); equal to `n_heads` for plain multi-head.
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Hidden width of the MLP (of each expert in a mixture).
    pub d_ff: usize,
    /// Longest sequence: the learned / sinusoidal position table length, the RoPE context.
    pub max_seq_len: usize,
    pub norm_eps: f32,
    pub rope_theta: f32,
    /// Sliding attention window (a token sees itself and the `w - 1` before it).
    pub sliding_window: Option<usize>,
    pub tie_embeddings: bool,
    /// Experts per mixture layer (0: dense MLP).
    pub n_experts: usize,
    pub experts_per_token: usize,
    /// Weight of the load-balancing loss added to the LM loss.
    pub router_aux_loss_coef: f32,
    /// Weight of the router z-loss (mean squared log-sum-exp of the router logits).
    pub router_z_loss_coef: f32,
    /// Renormalise the top-k routing weights to sum to one (`false`: raw probabilities).
    pub moe_renormalize: bool,
    /// Multiplicative jitter on the router input in training.
    pub router_jitter: f32,
    /// Expert capacity as a multiple of the balanced share; `None`: dropless.
    pub capacity_factor: Option<f32>,
    /// Dropout probability in training (the seeds' ExpertModel: 0.1; HF fixtures: 0).
    pub dropout: f32,
}

impl Config {
    /// The seeds' ExpertModel with its documented defaults for `vocab_size`: d 512, 6 layers,
    /// 8 heads, d_ff 2048, max_seq_len 2048, dropout 0.1, untied head.
    pub fn expert(vocab_size: usize) -> Self {
        Config {
            arch: Arch::Expert,
            vocab_size,
            d_model: 512,
            n_layers: 6,
            n_heads: 8,
            n_kv_heads: 8,
            head_dim: 64,
            d_ff: 2048,
            max_seq_len: 2048,
            norm_eps: 1e-5,
            rope_theta: 10_000.0,
            sliding_window: None,
            tie_embeddings: false,
            n_experts: 0,
            experts_per_token: 0,
            router_aux_loss_coef: 0.0,
            router_z_loss_coef: 0.0,
            moe_renormalize: true,
            router_jitter: 0.0,
            capacity_factor: None,
            dropout: 0.1,
        }
    }

    /// A named ExpertModel size from the seeds: `tiny` (10k vocab, 256, 4 layers, 4 heads, 1024),
    /// `small` (32k, 512, 6, 8, 2048), `medium` (50k, 768, 8, 12, 3072), `large` (50k, 1024, 12,
    /// 16, 4096).
    pub fn expert_size(name: &str) -> Option<Self> {
        let (v, d, l, h, ff) = match name {
            "tiny" => (10_000, 256, 4, 4, 1024),
            "small" => (32_000, 512, 6, 8, 2048),
            "medium" => (50_000, 768, 8, 12, 3072),
            "large" => (50_000, 1024, 12, 16, 4096),
            _ => return None,
        };
        Some(Config {
            d_model: d,
            n_layers: l,
            n_heads: h,
            n_kv_heads: h,
            head_dim: d / h,
            d_ff: ff,
            ..Config::expert(v)
        })
    }

    /// The mixture layers' routing.
    pub fn routing(&self) -> crate::nn::Routing {
        crate::nn::Routing {
            top_k: self.experts_per_token,
            renormalize: self.moe_renormalize,
            jitter: self.router_jitter,
            capacity_factor: self.capacity_factor,
        }
    }

    /// Checks the sizes fit together.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first inconsistent field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |detail: String| Err(Error::Config { detail });
        let positive = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("d_ff", self.d_ff),
            ("max_seq_len", self.max_seq_len),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return bad(format!("{name} must be positive"));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "n_heads {} is not a multiple of n_kv_heads {}",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.arch.is_llama_like() && self.n_heads * self.head_dim != self.d_model {
            return bad(format!(
                "n_heads {} x head_dim {} != d_model {}",
                self.n_heads, self.head_dim, self.d_model
            ));
        }
        if self.arch.is_llama_like() && !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "RoPE needs an even head_dim, got {}",
                self.head_dim
            ));
        }
        if self.n_experts > 0 && !(1..=self.n_experts).contains(&self.experts_per_token) {
            return bad(format!(
                "experts_per_token {} of {} experts",
                self.experts_per_token, self.n_experts
            ));
        }
        if self.capacity_factor.is_some_and(|c| c <= 0.0)
            || !(0.0..1.0).contains(&self.router_jitter)
        {
            return bad("capacity_factor must be positive and router_jitter in [0, 1)".into());
        }
        if self.sliding_window == Some(0) {
            return bad("sliding_window must be positive".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        if !(self.norm_eps > 0.0 && self.rope_theta > 0.0) {
            return bad("norm_eps and rope_theta must be positive".into());
        }
        Ok(())
    }

    /// Reads a HF `config.json` (`model_type` gpt2, llama, mistral or mixtral) or one of ours.
    ///
    /// # Errors
    /// [`Error::Config`] for malformed JSON, an unknown `model_type`, a missing or mistyped field,
    /// or sizes that do not fit together.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        let v = json::parse_str(text).map_err(|e| Error::Config {
            detail: format!("invalid JSON: {e}"),
        })?;
        let f = Fields(&v);
        let ty = f.string("model_type")?;
        let arch = Arch::from_name(&ty).ok_or_else(|| Error::Config {
            detail: format!(
                "model_type `{ty}` is not one of gpt2, llama, mistral, mixtral, expert"
            ),
        })?;
        let c = match arch {
            Arch::Gpt2 => {
                let d = f.usize("n_embd")?;
                let h = f.usize("n_head")?;
                let act = f.opt_string("activation_function")?;
                if let Some(a) = act.filter(|a| a != "gelu_new" && a != "gelu_pytorch_tanh") {
                    return Err(Error::Config {
                        detail: format!("activation_function `{a}` (supported: gelu_new)"),
                    });
                }
                Config {
                    arch,
                    vocab_size: f.usize("vocab_size")?,
                    d_model: d,
                    n_layers: f.usize("n_layer")?,
                    n_heads: h,
                    n_kv_heads: h,
                    head_dim: d.checked_div(h).unwrap_or(0),
                    d_ff: f.opt_usize("n_inner")?.unwrap_or(4 * d),
                    max_seq_len: f.usize("n_positions")?,
                    norm_eps: f.opt_f32("layer_norm_epsilon")?.unwrap_or(1e-5),
                    tie_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(true),
                    dropout: 0.0,
                    ..Config::expert(0)
                }
            }
            Arch::Llama | Arch::Mistral | Arch::Mixtral => {
                let d = f.usize("hidden_size")?;
                let h = f.usize("num_attention_heads")?;
                if let Some(a) = f.opt_string("hidden_act")?.filter(|a| a != "silu") {
                    return Err(Error::Config {
                        detail: format!("hidden_act `{a}` (supported: silu)"),
                    });
                }
                let theta = match f.0.get("rope_parameters") {
                    Some(p) if !p.is_null() => Fields(p).opt_f32("rope_theta")?,
                    _ => f.opt_f32("rope_theta")?,
                };
                let moe = arch == Arch::Mixtral;
                Config {
                    arch,
                    vocab_size: f.usize("vocab_size")?,
                    d_model: d,
                    n_layers: f.usize("num_hidden_layers")?,
                    n_heads: h,
                    n_kv_heads: f.opt_usize("num_key_value_heads")?.unwrap_or(h),
                    head_dim: f
                        .opt_usize("head_dim")?
                        .unwrap_or(d.checked_div(h).unwrap_or(0)),
                    d_ff: f.usize("intermediate_size")?,
                    max_seq_len: f.usize("max_position_embeddings")?,
                    norm_eps: f.opt_f32("rms_norm_eps")?.unwrap_or(1e-6),
                    rope_theta: theta.unwrap_or(10_000.0),
                    sliding_window: if arch == Arch::Llama {
                        None
                    } else {
                        f.opt_usize("sliding_window")?
                    },
                    tie_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
                    n_experts: if moe {
                        f.usize("num_local_experts")?
                    } else {
                        0
                    },
                    experts_per_token: if moe {
                        f.usize("num_experts_per_tok")?
                    } else {
                        0
                    },
                    router_aux_loss_coef: if moe {
                        f.opt_f32("router_aux_loss_coef")?.unwrap_or(0.02)
                    } else {
                        0.0
                    },
                    router_z_loss_coef: f.opt_f32("router_z_loss_coef")?.unwrap_or(0.0),
                    moe_renormalize: f.opt_bool("moe_renormalize")?.unwrap_or(true),
                    router_jitter: f.opt_f32("router_jitter_noise")?.unwrap_or(0.0),
                    capacity_factor: f.opt_f32("capacity_factor")?,
                    dropout: 0.0,
                }
            }
            Arch::Expert => Config {
                arch,
                vocab_size: f.usize("vocab_size")?,
                d_model: f.usize("d_model")?,
                n_layers: f.usize("n_layers")?,
                n_heads: f.usize("n_heads")?,
                n_kv_heads: f.usize("n_heads")?,
                head_dim: f.usize("d_model")? / f.usize("n_heads")?.max(1),
                d_ff: f.usize("d_ff")?,
                max_seq_len: f.usize("max_seq_len")?,
                norm_eps: f.opt_f32("norm_eps")?.unwrap_or(1e-5),
                tie_embeddings: f.opt_bool("tie_embeddings")?.unwrap_or(false),
                n_experts: f.opt_usize("n_experts")?.unwrap_or(0),
                experts_per_token: f.opt_usize("experts_per_token")?.unwrap_or(0),
                router_aux_loss_coef: f.opt_f32("router_aux_loss_coef")?.unwrap_or(0.0),
                router_z_loss_coef: f.opt_f32("router_z_loss_coef")?.unwrap_or(0.0),
                moe_renormalize: f.opt_bool("moe_renormalize")?.unwrap_or(true),
                router_jitter: f.opt_f32("router_jitter")?.unwrap_or(0.0),
                capacity_factor: f.opt_f32("capacity_factor")?,
                dropout: f.opt_f32("dropout")?.unwrap_or(0.1),
                ..Config::expert(0)
            },
        };
        c.validate()?;
        Ok(c)
    }

    /// The configuration as JSON in the HF layout of its architecture (ours for the ExpertModel),
    /// which [`Config::from_json`] reads back to an equal value.
    pub fn to_json(&self) -> String {
        let n = |x: usize| Value::Int(x as i128);
        let f = |x: f32| Value::Number(f64::from(x));
        let s = |x: &str| Value::String(x.to_string());
        let mut o: Vec<(&str, Value)> = vec![("model_type", s(self.arch.name()))];
        match self.arch {
            Arch::Gpt2 => o.extend([
                ("vocab_size", n(self.vocab_size)),
                ("n_embd", n(self.d_model)),
                ("n_layer", n(self.n_layers)),
                ("n_head", n(self.n_heads)),
                ("n_inner", n(self.d_ff)),
                ("n_positions", n(self.max_seq_len)),
                ("layer_norm_epsilon", f(self.norm_eps)),
                ("activation_function", s("gelu_new")),
                ("tie_word_embeddings", Value::Bool(self.tie_embeddings)),
            ]),
            Arch::Llama | Arch::Mistral | Arch::Mixtral => {
                o.extend([
                    ("vocab_size", n(self.vocab_size)),
                    ("hidden_size", n(self.d_model)),
                    ("num_hidden_layers", n(self.n_layers)),
                    ("num_attention_heads", n(self.n_heads)),
                    ("num_key_value_heads", n(self.n_kv_heads)),
                    ("head_dim", n(self.head_dim)),
                    ("intermediate_size", n(self.d_ff)),
                    ("max_position_embeddings", n(self.max_seq_len)),
                    ("rms_norm_eps", f(self.norm_eps)),
                    ("rope_theta", f(self.rope_theta)),
                    ("hidden_act", s("silu")),
                    ("tie_word_embeddings", Value::Bool(self.tie_embeddings)),
                    ("sliding_window", self.sliding_window.map_or(Value::Null, n)),
                ]);
                if self.arch == Arch::Mixtral {
                    o.extend([
                        ("num_local_experts", n(self.n_experts)),
                        ("num_experts_per_tok", n(self.experts_per_token)),
                        ("router_aux_loss_coef", f(self.router_aux_loss_coef)),
                        ("router_z_loss_coef", f(self.router_z_loss_coef)),
                        ("moe_renormalize", Value::Bool(self.moe_renormalize)),
                        ("router_jitter_noise", f(self.router_jitter)),
                        (
                            "capacity_factor",
                            self.capacity_factor.map_or(Value::Null, f),
                        ),
                    ]);
                }
            }
            Arch::Expert => o.extend([
                ("vocab_size", n(self.vocab_size)),
                ("d_model", n(self.d_model)),
                ("n_layers", n(self.n_layers)),
                ("n_heads", n(self.n_heads)),
                ("d_ff", n(self.d_ff)),
                ("max_seq_len", n(self.max_seq_len)),
                ("norm_eps", f(self.norm_eps)),
                ("dropout", f(self.dropout)),
                ("tie_embeddings", Value::Bool(self.tie_embeddings)),
                ("n_experts", n(self.n_experts)),
                ("experts_per_token", n(self.experts_per_token)),
                ("router_aux_loss_coef", f(self.router_aux_loss_coef)),
                ("router_z_loss_coef", f(self.router_z_loss_coef)),
                ("moe_renormalize", Value::Bool(self.moe_renormalize)),
                ("router_jitter", f(self.router_jitter)),
                (
                    "capacity_factor",
                    self.capacity_factor.map_or(Value::Null, f),
                ),
            ]),
        }
        Value::Object(o.into_iter().map(|(k, v)| (k.to_string(), v)).collect()).to_json_pretty()
    }
}

/// Typed field access with errors naming the field.
struct Fields<'a>(&'a Value);

impl Fields<'_> {
    fn missing(key: &str) -> Error {
        Error::Config {
            detail: format!("missing field `{key}`"),
        }
    }

    fn mistyped(key: &str, want: &str, v: &Value) -> Error {
        Error::Config {
            detail: format!("field `{key}` must be {want}, got {}", v.to_json()),
        }
    }

    fn opt<T>(
        &self,
        key: &str,
        want: &str,
        get: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>, Error> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) if v.is_null() => Ok(None),
            Some(v) => get(v).map(Some).ok_or_else(|| Self::mistyped(key, want, v)),
        }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>, Error> {
        self.opt(key, "a non-negative integer below 2^32", |v| {
            v.as_u64()
                .filter(|&x| x < 1 << 32)
                .and_then(|x| usize::try_from(x).ok())
        })
    }

    fn usize(&self, key: &str) -> Result<usize, Error> {
        self.opt_usize(key)?.ok_or_else(|| Self::missing(key))
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>, Error> {
        self.opt(key, "a finite number", |v| {
            v.as_f64().map(|x| x as f32).filter(|x| x.is_finite())
        })
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, Error> {
        self.opt(key, "true or false", Value::as_bool)
    }

    fn opt_string(&self, key: &str) -> Result<Option<String>, Error> {
        self.opt(key, "a string", |v| v.as_str().map(str::to_string))
    }

    fn string(&self, key: &str) -> Result<String, Error> {
        self.opt_string(key)?.ok_or_else(|| Self::missing(key))
    }
}
