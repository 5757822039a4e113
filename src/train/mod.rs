//! Training: AdamW with parameter groups, schedules, clipping, gradient accumulation,
//! evaluation, metrics, checkpoints that resume bit-identically, and the options of a run
//! (`anvil train`'s config files and flags).

mod optim;
mod run_config;
mod trainer;

pub use crate::kernels::adamw::AdamW as AdamWConfig;
pub use optim::{
    AdamW, Decay, ParamGroup, Schedule, clip_grad_norm, decays_by_default, default_groups,
    groups_by_name,
};
pub use run_config::{ConfigFile, Origin, RUN_KEYS, RunConfig, RunConfigError};
pub use trainer::{
    Batch, Batches, Eval, MetricsLog, OPTIMIZER_PREFIX, StepStats, TRAIN_STATE_KEY, TrainConfig,
    Trainer, evaluate,
};
