//! Training the system (every batch mixes all the tasks being trained) and evaluating a branch.

use super::{Encoded, Example, System};
use crate::autograd::{ParamId, Rng};
use crate::models::{Error, Result};
use crate::train::{AdamW, Decay, ParamGroup, Schedule, clip_grad_norm, decays_by_default};

/// Peak learning rates per parameter group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrGroups {
    /// The MoE blocks, final norm and shared projection.
    pub trunk: f64,
    pub adapter: f64,
    pub head: f64,
}

/// The optimisation settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainOptions {
    pub steps: u64,
    /// Examples per batch, split evenly over the tasks being trained.
    pub batch: usize,
    /// Linear warmup steps; then linear decay to 10% at `steps`.
    pub warmup: u64,
    pub lr: LrGroups,
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    pub clip: f64,
    /// Weight of the load-balancing loss.
    pub aux_weight: f32,
    /// Seed of the batch sampler.
    pub seed: u64,
}

impl TrainOptions {
    /// The seeds' settings (MoE 1e-4, adapters 5e-4, heads 1e-3, AdamW decay 0.01, clip 1.0,
    /// aux 0.01, batch 64), with `steps` steps and a warmup of a tenth of them (the seeds' 500
    /// warmup steps would be most of a short demo run).
    pub fn seeds(steps: u64) -> Self {
        TrainOptions {
            steps,
            batch: 64,
            warmup: (steps / 10).max(1),
            lr: LrGroups {
                trunk: 1e-4,
                adapter: 5e-4,
                head: 1e-3,
            },
            weight_decay: 0.01,
            clip: 1.0,
            aux_weight: 0.01,
            seed: 0,
        }
    }
}

/// The training examples of one branch.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskData {
    pub branch: usize,
    pub train: Vec<Example>,
}

/// One step's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct StepLog {
    pub step: u64,
    pub loss: f64,
    pub ce: f64,
    pub aux: f64,
    pub grad_norm: f64,
    pub lr_factor: f64,
    /// Per MoE block, kept routing slots per expert.
    pub load: Vec<Vec<usize>>,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainReport {
    pub steps: u64,
    pub seconds: f64,
    /// Mean loss over the last (up to) 20 steps.
    pub final_loss: f64,
    /// Parameters that were trained.
    pub trained_params: usize,
}

/// Trains the branches of `tasks` and, when `train_trunk`, the trunk; every other parameter is
/// frozen (so adding a branch with `train_trunk = false` leaves all others untouched). Each
/// batch cycles over the tasks, so it mixes all of them. `log` sees every step.
///
/// # Errors
/// [`Error::Config`] for no task, an empty task or a zero batch; forward and optimizer errors.
pub fn train(
    sys: &mut System,
    enc: &Encoded,
    tasks: &[TaskData],
    train_trunk: bool,
    opts: &TrainOptions,
    mut log: impl FnMut(&StepLog),
) -> Result<TrainReport> {
    if tasks.is_empty() || tasks.iter().any(|t| t.train.is_empty()) || opts.batch == 0 {
        return Err(Error::Config {
            detail: "train: needs at least one task, examples for each, and a batch above 0".into(),
        });
    }
    let branches: Vec<usize> = tasks.iter().map(|t| t.branch).collect();
    if let Some(&b) = branches.iter().find(|&&b| b >= sys.branches.len()) {
        return Err(Error::Config {
            detail: format!("train: no branch {b}"),
        });
    }
    sys.set_trainable(train_trunk, &branches)?;
    let groups = groups(sys, train_trunk, &branches, opts);
    let params: Vec<ParamId> = groups.iter().flat_map(|g| g.params.clone()).collect();
    let trained_params = params
        .iter()
        .map(|&p| sys.graph_ref().param_tensor(p).map_or(0, |t| t.numel()))
        .sum();
    let mut opt = AdamW::new(sys.graph_ref(), groups, 0.9, 0.999, 1e-8)?;
    let schedule = Schedule {
        warmup: opts.warmup,
        total: opts.steps,
        decay: Decay::Linear,
        min_ratio: 0.1,
    };
    let mut rng = Rng::new(opts.seed);
    let start = std::time::Instant::now();
    let mut recent = Vec::new();
    for step in 0..opts.steps {
        let mut items = Vec::with_capacity(opts.batch);
        let mut labels = Vec::with_capacity(opts.batch);
        for j in 0..opts.batch {
            let t = &tasks[j % tasks.len()];
            let ex = t.train[(rng.next_u64() % t.train.len() as u64) as usize];
            items.push((t.branch, ex.sentence));
            labels.push(ex.label);
        }
        let (loss, ce, aux, stats) = sys.loss(enc, &items, &labels, opts.aux_weight)?;
        let g = sys.graph();
        let loss_value = f64::from(g.value(loss)?[0]);
        let grads = g.backward(loss)?;
        g.recycle(grads);
        let grad_norm = clip_grad_norm(g, &params, opts.clip)?;
        let lr_factor = schedule.factor(step);
        opt.step(g, lr_factor)?;
        recent.push(loss_value);
        log(&StepLog {
            step,
            loss: loss_value,
            ce,
            aux,
            grad_norm,
            lr_factor,
            load: stats.into_iter().map(|s| s.load).collect(),
        });
    }
    let tail = &recent[recent.len().saturating_sub(20)..];
    Ok(TrainReport {
        steps: opts.steps,
        seconds: start.elapsed().as_secs_f64(),
        final_loss: tail.iter().sum::<f64>() / tail.len().max(1) as f64,
        trained_params,
    })
}

/// The parameter groups: `trunk`, `adapter`, `head`, each split into matrices (decayed) and
/// vectors (`.no_decay`, decay 0).
fn groups(
    sys: &System,
    train_trunk: bool,
    branches: &[usize],
    opts: &TrainOptions,
) -> Vec<ParamGroup> {
    let mut out: Vec<ParamGroup> = Vec::new();
    let mut put = |name: &str, lr: f64, p: ParamId, shape: &[usize]| {
        let (name, wd) = if decays_by_default(shape) {
            (name.to_string(), opts.weight_decay)
        } else {
            (format!("{name}.no_decay"), 0.0)
        };
        match out.iter_mut().find(|g| g.name == name) {
            Some(g) => g.params.push(p),
            None => out.push(ParamGroup {
                name,
                lr,
                weight_decay: wd,
                params: vec![p],
            }),
        }
    };
    let g = sys.graph_ref();
    let shape = |p: ParamId| {
        g.param_tensor(p)
            .map(|t| t.shape().to_vec())
            .unwrap_or_default()
    };
    if train_trunk {
        for (_, p) in sys.trunk_params() {
            put("trunk", opts.lr.trunk, *p, &shape(*p));
        }
    }
    for &b in branches {
        for (name, p) in &sys.branches[b].params {
            let (group, lr) = if name.contains(".lora.") {
                ("adapter", opts.lr.adapter)
            } else {
                ("head", opts.lr.head)
            };
            put(group, lr, *p, &shape(*p));
        }
    }
    out
}

/// A branch's test figures: accuracy and, per MoE block, the routing slots per expert.
#[derive(Clone, Debug, PartialEq)]
pub struct BranchEval {
    pub name: String,
    pub accuracy: f64,
    pub n: usize,
    pub load: Vec<Vec<usize>>,
}

/// Sentences per no-grad forward in evaluation.
const EVAL_CHUNK: usize = 64;

/// Accuracy of branch `branch` on `test` (argmax of the logits; ties go to the lower class).
///
/// # Errors
/// As [`System::predict`].
pub fn evaluate(
    sys: &mut System,
    enc: &Encoded,
    branch: usize,
    test: &[Example],
) -> Result<BranchEval> {
    let name = sys
        .branches
        .get(branch)
        .ok_or_else(|| Error::Config {
            detail: format!("evaluate: no branch {branch}"),
        })?
        .name
        .clone();
    let sentences: Vec<usize> = test.iter().map(|e| e.sentence).collect();
    let (logits, load) = sys.predict(enc, branch, &sentences, EVAL_CHUNK)?;
    let correct = logits
        .iter()
        .zip(test)
        .filter(|(row, ex)| argmax(row) == ex.label as usize)
        .count();
    Ok(BranchEval {
        name,
        accuracy: correct as f64 / test.len().max(1) as f64,
        n: test.len(),
        load,
    })
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}
