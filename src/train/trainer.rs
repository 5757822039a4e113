//! The training loop: gradient accumulation, clipping, the schedule, evaluation, metrics, and
//! checkpoints that resume bit-identically.

use super::optim::{AdamW, Decay, Moments, ParamGroup, Schedule, clip_grad_norm};
use crate::io::safetensors::{self, SafeTensors};
use crate::json::{self, Value};
use crate::models::{CHECKPOINT_CONFIG_KEY, Error, Model, Result};
use crate::nn::MoeStats;
use crate::tensor::Tensor;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Prefix of the optimizer tensors in a training checkpoint (`optimizer.m.<param>`, `.v.`).
pub const OPTIMIZER_PREFIX: &str = "optimizer.";
/// Metadata key of the training state (JSON) in a training checkpoint.
pub const TRAIN_STATE_KEY: &str = "anvil.train";

/// One batch of token rows of equal length.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub ids: Vec<u32>,
    pub rows: usize,
    /// `true` = a real token (padding is `false`); `None`: all real.
    pub mask: Option<Vec<bool>>,
}

/// A deterministic source of batches whose position can be saved and restored.
pub trait Batches {
    /// The next batch.
    ///
    /// # Errors
    /// A source-specific error (an unreadable file, ...).
    fn next_batch(&mut self) -> Result<Batch>;
    /// Where the source is: restoring it with [`Batches::seek`] continues identically.
    fn position(&self) -> u64;
    /// Moves to a position from [`Batches::position`].
    ///
    /// # Errors
    /// A position the source cannot reach.
    fn seek(&mut self, position: u64) -> Result<()>;
}

/// Hyper-parameters of a run besides the parameter groups.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    pub schedule: Schedule,
    /// Global gradient-norm limit (the seeds: 1.0); `None`: no clipping.
    pub clip: Option<f64>,
    /// Micro-batches per optimizer step (their mean loss is the step's loss).
    pub accum: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            schedule: Schedule::constant(),
            clip: Some(1.0),
            accum: 1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// What one optimizer step saw.
#[derive(Clone, Debug, PartialEq)]
pub struct StepStats {
    /// Steps done, this one included.
    pub step: u64,
    /// Mean total loss over the micro-batches.
    pub loss: f64,
    /// Mean LM loss.
    pub lm: f64,
    /// Mean balancing / z losses (mixtures only).
    pub aux: Option<f64>,
    pub z: Option<f64>,
    /// The first group's learning rate this step.
    pub lr: f64,
    /// Gradient norm before clipping (when clipping is on).
    pub grad_norm: Option<f64>,
    /// Real tokens processed.
    pub tokens: usize,
    pub seconds: f64,
    /// Routing statistics per mixture layer, summed over the micro-batches.
    pub moe: Vec<MoeStats>,
}

impl StepStats {
    /// One JSON object (a line of a metrics file).
    pub fn to_json(&self) -> String {
        let num = |x: f64| {
            if x.is_finite() {
                Value::Number(x)
            } else {
                Value::Null
            }
        };
        let opt = |x: Option<f64>| x.map_or(Value::Null, num);
        let moe: Vec<Value> = self
            .moe
            .iter()
            .map(|s| {
                Value::Object(vec![
                    (
                        "load".into(),
                        Value::Array(s.load.iter().map(|&l| Value::Int(l as i128)).collect()),
                    ),
                    ("dropped".into(), Value::Int(s.dropped as i128)),
                    ("entropy".into(), num(f64::from(s.entropy))),
                ])
            })
            .collect();
        Value::Object(vec![
            ("step".into(), Value::Int(i128::from(self.step))),
            ("loss".into(), num(self.loss)),
            ("lm_loss".into(), num(self.lm)),
            ("aux_loss".into(), opt(self.aux)),
            ("z_loss".into(), opt(self.z)),
            ("lr".into(), num(self.lr)),
            ("grad_norm".into(), opt(self.grad_norm)),
            ("tokens".into(), Value::Int(self.tokens as i128)),
            ("seconds".into(), num(self.seconds)),
            (
                "tokens_per_s".into(),
                num(self.tokens as f64 / self.seconds.max(1e-9)),
            ),
            ("moe".into(), Value::Array(moe)),
        ])
        .to_json()
    }
}

/// Held-out loss and perplexity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Eval {
    /// Mean LM loss per predicted token.
    pub loss: f64,
    pub perplexity: f64,
    pub tokens: usize,
}

/// A model, its optimizer and schedule, and the step count.
pub struct Trainer {
    pub model: Model,
    pub opt: AdamW,
    pub config: TrainConfig,
}

impl Trainer {
    /// A trainer over `groups` of `model`'s parameters.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad group (frozen or repeated parameter) or `accum == 0`.
    pub fn new(model: Model, groups: Vec<ParamGroup>, config: TrainConfig) -> Result<Self> {
        if config.accum == 0 {
            return Err(Error::Config {
                detail: "accum must be at least 1".into(),
            });
        }
        if model.graph_ref().has_transposed_params() {
            return Err(Error::Config {
                detail: "the model's weights are laid out for decoding (Model::prepare_decode): train a model as built or loaded".into(),
            });
        }
        let opt = AdamW::new(
            model.graph_ref(),
            groups,
            config.beta1,
            config.beta2,
            config.eps,
        )?;
        Ok(Trainer { model, opt, config })
    }

    /// Steps done.
    pub fn step_count(&self) -> u64 {
        self.opt.steps()
    }

    /// One optimizer step over `accum` micro-batches from `data`.
    ///
    /// # Errors
    /// Errors of the data source and of the model (a bad batch).
    pub fn step(&mut self, data: &mut dyn Batches) -> Result<StepStats> {
        let start = Instant::now();
        let accum = self.config.accum;
        let (mut loss, mut lm, mut aux, mut z) = (0.0, 0.0, None::<f64>, None::<f64>);
        let mut tokens = 0;
        let mut moe: Vec<MoeStats> = Vec::new();
        for _ in 0..accum {
            let b = data.next_batch()?;
            tokens += b
                .mask
                .as_ref()
                .map_or(b.ids.len(), |m| m.iter().filter(|&&x| x).count());
            let l = self.model.loss(&b.ids, b.rows, b.mask.as_deref())?;
            let g = self.model.graph();
            let val = |g: &crate::autograd::Graph, v| g.value(v).map(|x| f64::from(x[0]));
            loss += val(g, l.total)?;
            lm += val(g, l.lm)?;
            if let Some(a) = l.aux {
                *aux.get_or_insert(0.0) += val(g, a)?;
            }
            if let Some(zv) = l.z {
                *z.get_or_insert(0.0) += val(g, zv)?;
            }
            merge_stats(&mut moe, &l.moe_stats);
            let scaled = if accum > 1 {
                g.scale(l.total, 1.0 / accum as f32)?
            } else {
                l.total
            };
            g.backward(scaled)?;
        }
        let n = accum as f64;
        let step = self.opt.steps();
        let factor = self.config.schedule.factor(step);
        let grad_norm = match self.config.clip {
            Some(max) => {
                let params: Vec<_> = self
                    .opt
                    .groups()
                    .flat_map(|g| g.params.iter().copied())
                    .collect();
                Some(clip_grad_norm(self.model.graph(), &params, max)?)
            }
            None => None,
        };
        self.opt.step(self.model.graph(), factor)?;
        Ok(StepStats {
            step: self.opt.steps(),
            loss: loss / n,
            lm: lm / n,
            aux: aux.map(|a| a / n),
            z: z.map(|a| a / n),
            lr: self.opt.groups().next().map_or(0.0, |g| g.lr * factor),
            grad_norm,
            tokens,
            seconds: start.elapsed().as_secs_f64(),
            moe,
        })
    }

    /// The mean LM loss and perplexity over `batches` batches from `data`, in eval mode (no
    /// dropout, nothing recorded). The training-mode generator is left as it was.
    ///
    /// # Errors
    /// Errors of the data source and of the model.
    pub fn evaluate(&mut self, data: &mut dyn Batches, batches: usize) -> Result<Eval> {
        evaluate(&mut self.model, data, batches)
    }

    /// Writes the model, the optimizer moments, the step, the training-mode generator and
    /// `data_position` to `path` (a temporary file renamed into place).
    ///
    /// # Errors
    /// [`Error::Io`] when writing fails.
    pub fn save(&self, path: impl AsRef<Path>, data_position: u64) -> Result<()> {
        let m = &self.model;
        let g = m.graph_ref();
        let name_of = |p| {
            m.params()
                .iter()
                .find(|(_, q)| *q == p)
                .map(|(n, _)| n.clone())
                .ok_or_else(|| Error::Config {
                    detail: format!("optimizer parameter {p:?} is not in the model"),
                })
        };
        let mut owned: Vec<(String, Tensor)> = Vec::new();
        let mut groups = Vec::new();
        for (group, state) in &self.opt.groups {
            let mut names = Vec::new();
            for s in state {
                let name = name_of(s.param)?;
                let shape = g.param_tensor(s.param)?.shape().to_vec();
                owned.push((
                    format!("{OPTIMIZER_PREFIX}m.{name}"),
                    Tensor::from_vec(s.m.clone(), &shape)?,
                ));
                owned.push((
                    format!("{OPTIMIZER_PREFIX}v.{name}"),
                    Tensor::from_vec(s.v.clone(), &shape)?,
                ));
                names.push(Value::String(name));
            }
            groups.push(Value::Object(vec![
                ("name".into(), Value::String(group.name.clone())),
                ("lr".into(), Value::Number(group.lr)),
                ("weight_decay".into(), Value::Number(group.weight_decay)),
                ("params".into(), Value::Array(names)),
            ]));
        }
        let c = &self.config;
        let sch = c.schedule;
        let state = Value::Object(vec![
            ("step".into(), Value::Int(i128::from(self.opt.step))),
            (
                "rng".into(),
                m.training_state()
                    .map_or(Value::Null, |s| Value::String(s.to_string())),
            ),
            (
                "data_position".into(),
                Value::String(data_position.to_string()),
            ),
            ("beta1".into(), Value::Number(c.beta1)),
            ("beta2".into(), Value::Number(c.beta2)),
            ("eps".into(), Value::Number(c.eps)),
            ("clip".into(), c.clip.map_or(Value::Null, Value::Number)),
            ("accum".into(), Value::Int(c.accum as i128)),
            ("warmup".into(), Value::Int(i128::from(sch.warmup))),
            ("total".into(), Value::Int(i128::from(sch.total))),
            ("decay".into(), Value::String(sch.decay.name().into())),
            ("min_ratio".into(), Value::Number(sch.min_ratio)),
            ("groups".into(), Value::Array(groups)),
        ])
        .to_json();
        let mut tensors: Vec<(&str, &Tensor)> = Vec::new();
        for (n, p) in m.params() {
            tensors.push((n.as_str(), g.param_tensor(*p)?));
        }
        for (n, t) in &owned {
            tensors.push((n.as_str(), t));
        }
        let config = m.config().to_json();
        safetensors::save(
            path,
            &tensors,
            &[
                (CHECKPOINT_CONFIG_KEY, config.as_str()),
                (TRAIN_STATE_KEY, state.as_str()),
                ("format", "pt"),
            ],
        )?;
        Ok(())
    }

    /// A trainer restored from [`Trainer::save`], and the data position to seek to.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Config`] for a file that is not a complete training checkpoint.
    pub fn resume(path: impl AsRef<Path>) -> Result<(Self, u64)> {
        let path = path.as_ref();
        let mut model = Model::load(path)?;
        let file = SafeTensors::open(path)?;
        let bad = |detail: String| Error::Config {
            detail: format!("{}: {detail}", path.display()),
        };
        let text = file
            .metadata()
            .iter()
            .find_map(|(k, v)| (k == TRAIN_STATE_KEY).then_some(v.as_str()))
            .ok_or_else(|| bad(format!("no `{TRAIN_STATE_KEY}`: not a training checkpoint")))?;
        let st = json::parse_str(text).map_err(|e| bad(format!("training state: {e}")))?;
        let get = |k: &str| {
            st.get(k)
                .ok_or_else(|| bad(format!("training state lacks `{k}`")))
        };
        let f64_of = |k: &str| {
            get(k)?
                .as_f64()
                .ok_or_else(|| bad(format!("`{k}` is not a number")))
        };
        let u64_of = |k: &str| {
            get(k)?
                .as_u64()
                .ok_or_else(|| bad(format!("`{k}` is not an integer")))
        };
        let u64_str = |k: &str| {
            get(k)?
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| bad(format!("`{k}` is not an integer string")))
        };
        let rng = match get("rng")? {
            Value::Null => None,
            _ => Some(u64_str("rng")?),
        };
        model.set_training_state(rng);
        let decay = get("decay")?
            .as_str()
            .and_then(Decay::from_name)
            .ok_or_else(|| bad("`decay` is not cosine, linear or constant".into()))?;
        let config = TrainConfig {
            schedule: Schedule {
                warmup: u64_of("warmup")?,
                total: u64_of("total")?,
                decay,
                min_ratio: f64_of("min_ratio")?,
            },
            clip: match get("clip")? {
                Value::Null => None,
                _ => Some(f64_of("clip")?),
            },
            accum: u64_of("accum")? as usize,
            beta1: f64_of("beta1")?,
            beta2: f64_of("beta2")?,
            eps: f64_of("eps")?,
        };
        let mut groups = Vec::new();
        for gv in get("groups")?.as_array().unwrap_or(&[]) {
            let field = |k: &str| gv.get(k).ok_or_else(|| bad(format!("a group lacks `{k}`")));
            let mut params = Vec::new();
            for n in field("params")?.as_array().unwrap_or(&[]) {
                let n = n.as_str().unwrap_or("");
                params.push(
                    model
                        .param(n)
                        .ok_or_else(|| bad(format!("group parameter `{n}` is not in the model")))?,
                );
            }
            groups.push(ParamGroup {
                name: field("name")?.as_str().unwrap_or("").to_string(),
                lr: field("lr")?
                    .as_f64()
                    .ok_or_else(|| bad("group lr".into()))?,
                weight_decay: field("weight_decay")?
                    .as_f64()
                    .ok_or_else(|| bad("group weight_decay".into()))?,
                params,
            });
        }
        let mut t = Trainer::new(model, groups, config)?;
        t.opt.step = u64_of("step")?;
        let names: Vec<(String, crate::autograd::ParamId)> = t.model.params().to_vec();
        for (_, state) in &mut t.opt.groups {
            for Moments { param, m, v } in state {
                let name = &names
                    .iter()
                    .find(|(_, p)| p == param)
                    .expect("groups were built from model names")
                    .0;
                for (buf, which) in [(m, "m"), (v, "v")] {
                    let key = format!("{OPTIMIZER_PREFIX}{which}.{name}");
                    let src = file.tensor_f32(&key).map_err(|_| Error::MissingTensor {
                        path: path.to_path_buf(),
                        name: key.clone(),
                        nearby: Vec::new(),
                        first: false,
                    })?;
                    if src.numel() != buf.len() {
                        return Err(Error::TensorShape {
                            path: path.to_path_buf(),
                            name: key,
                            expected: vec![buf.len()],
                            actual: src.shape().to_vec(),
                        });
                    }
                    buf.copy_from_slice(src.as_slice());
                }
            }
        }
        Ok((t, u64_str("data_position")?))
    }
}

/// The mean LM loss and perplexity of `model` over `batches` batches from `data`, in eval
/// mode, nothing recorded.
///
/// # Errors
/// Errors of the data source and of the model.
pub fn evaluate(model: &mut Model, data: &mut dyn Batches, batches: usize) -> Result<Eval> {
    let saved = model.training_state();
    model.set_training(None);
    let was = model.graph().grad_enabled();
    model.graph().set_grad_enabled(false);
    let r = (|| {
        let (mut sum, mut count) = (0.0f64, 0usize);
        for _ in 0..batches {
            let b = data.next_batch()?;
            let t = b.ids.len() / b.rows.max(1);
            let predicted = (0..b.ids.len())
                .filter(|&i| i % t + 1 < t && b.mask.as_ref().is_none_or(|m| m[i + 1]))
                .count();
            let l = model.loss(&b.ids, b.rows, b.mask.as_deref())?;
            sum += f64::from(model.graph().value(l.lm)?[0]) * predicted as f64;
            count += predicted;
            model.graph().clear();
        }
        let loss = sum / count.max(1) as f64;
        Ok(Eval {
            loss,
            perplexity: loss.exp(),
            tokens: count,
        })
    })();
    model.graph().set_grad_enabled(was);
    model.set_training_state(saved);
    r
}

fn merge_stats(acc: &mut Vec<MoeStats>, new: &[MoeStats]) {
    if acc.is_empty() {
        acc.extend_from_slice(new);
        return;
    }
    for (a, n) in acc.iter_mut().zip(new) {
        a.load.iter_mut().zip(&n.load).for_each(|(x, y)| *x += y);
        a.dropped += n.dropped;
        a.entropy = 0.5 * (a.entropy + n.entropy);
    }
}

/// Appends one JSON object per line to a metrics file.
pub struct MetricsLog {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl MetricsLog {
    /// Opens `path` for appending (created if absent).
    ///
    /// # Errors
    /// [`Error::Read`] when the file cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
        Ok(MetricsLog { file, path })
    }

    /// Writes one line.
    ///
    /// # Errors
    /// [`Error::Read`] when writing fails.
    pub fn write(&mut self, line: &str) -> Result<()> {
        writeln!(self.file, "{line}").map_err(|source| Error::Read {
            path: self.path.clone(),
            source,
        })
    }
}
