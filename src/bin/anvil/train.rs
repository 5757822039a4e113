//! `anvil train`: trains an ExpertModel (mixture-of-experts feed-forwards by default) on the
//! built-in corpus or on text files, then evaluates, plots, checkpoints and prints samples.

use crate::Flags;
use crate::progress::{Progress, duration};
use anvil::corpus::{self, ASCII_VOCAB, Ascii, Domain};
use anvil::data::{Split, Tokens, Windows, encode_files};
use anvil::models::{Config, Model};
use anvil::plot::{self, Series};
use anvil::tokenizer::{Bpe, Tokenizer};
use anvil::train::{
    Batches, ConfigFile, Decay, MetricsLog, RUN_KEYS, RunConfig, Schedule, StepStats, TrainConfig,
    Trainer, default_groups,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const HELP: &str = "\
anvil train: train a small mixture-of-experts model, then evaluate, plot and checkpoint it

Usage: anvil train [OPTIONS]

With no options: an ExpertModel (d 128, 4 layers, 4 experts top-2) on the built-in corpus
(arithmetic, reverse, json, facts), a few minutes on 2 cores.

Options (also read from --config FILE as `key = value` lines, flags win):
  --out DIR          where the checkpoint, metrics, plots go            [anvil-run]
  --steps N          optimizer steps                                    [800]
  --batch N          rows per step                                      [16]
  --seq N            tokens per row                                     [64]
  --lr X             peak learning rate (warmup, then cosine to 10%)    [4e-3]
  --warmup N         warmup steps                                       [30]
  --seed N           model, data and evaluation seed                    [1]
  --d-model N        width                                              [128]
  --layers N         blocks                                             [4]
  --heads N          attention heads                                    [4]
  --d-ff N           feed-forward width (per expert)                    [256]
  --experts N        experts per layer (0: dense)                       [4]
  --top-k N          experts per token                                  [2]
  --aux X            load-balancing loss weight                         [0.01]
  --eval-every N     validation loss every N steps                      [50]
  --eval-n N         prompts per domain for exact-match accuracy        [100]
  --data FILES       comma-separated text files: train a byte-level BPE on them and the model
                     on their tokens instead of the built-in corpus
  --vocab N          BPE vocabulary size with --data                    [2048]
  --resume CKPT      continue a run from its checkpoint (same data flags)
  --config FILE      read options from FILE (`key = value` lines, `#` comments; examples in
                     tests/fixtures/train/)
  -h, --help         this help";

/// Lines of built-in corpus generated for training (about 2.5 MB of text).
const CORPUS_LINES: usize = 200_000;
/// Share of the ids held out for validation.
const VAL_FRACTION: f64 = 0.05;
/// Validation batches per evaluation.
const VAL_BATCHES: usize = 8;

/// The run's options: the flags, then `--config FILE`, then the defaults.
fn opts(flags: &Flags) -> Result<RunConfig, String> {
    let file = match flags.value("config") {
        Some(p) => Some(ConfigFile::read(p).map_err(|e| e.to_string())?),
        None => None,
    };
    let given: Vec<(String, String)> = flags
        .values
        .iter()
        .filter(|(k, _)| k != "config")
        .cloned()
        .collect();
    RunConfig::resolve(&given, file.as_ref()).map_err(|e| e.to_string())
}

/// The tokens of the run and the tokenizer that made them (`None`: the built-in corpus).
fn load_data(o: &RunConfig) -> Result<(Tokens, Option<Bpe>), String> {
    if o.data.is_empty() {
        let text = corpus::text(&corpus::generate(o.seed, CORPUS_LINES));
        return Ok((Tokens::Memory(Ascii.encode(&text)), None));
    }
    let tok_path = o.out.join("tokenizer.json");
    let bpe = if o.resume.is_some() && tok_path.is_file() {
        Bpe::from_file(&tok_path).map_err(|e| e.to_string())?
    } else {
        // The tokenizer learns from (up to) the first 8 MB of each file.
        let mut texts = Vec::new();
        for p in &o.data {
            let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let cut = bytes.len().min(8 << 20);
            let text = String::from_utf8_lossy(&bytes[..cut]).into_owned();
            texts.push(text);
        }
        let bpe = Bpe::train(&texts, o.vocab, 2, &["<|endoftext|>"]).map_err(|e| e.to_string())?;
        bpe.save(&tok_path).map_err(|e| e.to_string())?;
        bpe
    };
    let sep = bpe.token_to_id("<|endoftext|>");
    let bin = o.out.join("tokens.bin");
    encode_files(&o.data, &bpe, sep, &bin).map_err(|e| e.to_string())?;
    let file = anvil::data::TokenFile::open(&bin).map_err(|e| e.to_string())?;
    Ok((Tokens::Mapped(file), Some(bpe)))
}

fn new_trainer(o: &RunConfig, vocab: usize) -> Result<Trainer, String> {
    let config = Config {
        vocab_size: vocab,
        ..o.model.clone()
    };
    let mut model = Model::new(config, o.seed).map_err(|e| e.to_string())?;
    model.set_training(Some(o.seed.wrapping_add(1)));
    let groups = default_groups(&model, o.lr, 0.1);
    let tc = TrainConfig {
        schedule: Schedule {
            warmup: o.warmup.min(o.steps),
            total: o.steps,
            decay: Decay::Cosine,
            min_ratio: 0.1,
        },
        ..TrainConfig::default()
    };
    Trainer::new(model, groups, tc).map_err(|e| e.to_string())
}

/// What a resumed run keeps from its checkpoint that this run's flags ask otherwise: the saved
/// schedule and learning rates continue (so a resume is exact), and steps past the saved schedule's
/// end run at its final rate. Empty when the flags agree with the checkpoint.
fn resume_note(t: &Trainer, o: &RunConfig) -> String {
    let sch = t.config.schedule;
    let lr = t.opt.groups().next().map_or(o.lr, |g| g.lr);
    let mut parts = Vec::new();
    if sch.warmup != o.warmup.min(o.steps) || lr != o.lr {
        parts.push(format!(
            "its saved learning rate {lr} and warmup of {} steps are kept (flags asked {} and {})",
            sch.warmup, o.lr, o.warmup
        ));
    }
    if sch.total != o.steps {
        let tail = if o.steps > sch.total {
            format!(
                "; steps {}..{} run at its final rate",
                sch.total + 1,
                o.steps
            )
        } else {
            String::new()
        };
        parts.push(format!(
            "its {} schedule over {} steps is kept{tail}",
            sch.decay.name(),
            sch.total
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join("; "))
    }
}

/// Per-expert share of the step's routing slots, averaged over the layers: `27/25/24/24%`.
fn load_summary(s: &StepStats) -> String {
    let Some(first) = s.moe.first() else {
        return String::new();
    };
    let mut share = vec![0.0; first.load.len()];
    for l in &s.moe {
        let total: usize = l.load.iter().sum();
        for (x, &n) in share.iter_mut().zip(&l.load) {
            *x += n as f64 / total.max(1) as f64 / s.moe.len() as f64;
        }
    }
    let parts: Vec<String> = share.iter().map(|x| format!("{:.0}", 100.0 * x)).collect();
    format!(" | experts {}%", parts.join("/"))
}

pub fn main(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{HELP}");
        return Ok(());
    }
    let mut value_flags = RUN_KEYS.to_vec();
    value_flags.push("config");
    let flags = Flags::parse(args, &value_flags, &[])?;
    if let Some(p) = flags.positional.first() {
        return Err(format!(
            "unexpected argument `{p}`; run `anvil train --help`"
        ));
    }
    let o = opts(&flags)?;
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    let wall = Instant::now();
    let (tokens, bpe) = load_data(&o)?;
    let vocab = bpe.as_ref().map_or(ASCII_VOCAB, Tokenizer::vocab_size);
    let n_tokens = tokens.len();
    let split = Split::new(n_tokens, VAL_FRACTION).map_err(|e| e.to_string())?;
    let tokens = Arc::new(tokens);
    let windows = |range, seed| {
        Windows::new(Arc::clone(&tokens), range, o.batch, o.seq, seed).map_err(|e| e.to_string())
    };
    let mut train = windows(split.train.clone(), o.seed)?;
    let val = windows(split.validation.clone(), o.seed ^ 0x5EED)?;

    let mut trainer = match &o.resume {
        Some(p) => {
            let (t, pos) = Trainer::resume(p).map_err(|e| e.to_string())?;
            if t.model.config().vocab_size != vocab {
                return Err(format!(
                    "--resume: {} has a vocabulary of {}, the data {vocab}",
                    p.display(),
                    t.model.config().vocab_size
                ));
            }
            train.seek(pos).map_err(|e| e.to_string())?;
            let done = t.step_count();
            if done >= o.steps {
                return Err(format!(
                    "--resume: {} is already at step {done}; --steps {} leaves nothing to do (give the step to stop at, above {done})",
                    p.display(),
                    o.steps
                ));
            }
            let note = resume_note(&t, &o);
            if !note.is_empty() {
                eprintln!("anvil train: resuming {} at step {done}{note}", p.display());
            }
            t
        }
        None => new_trainer(&o, vocab)?,
    };
    let m = &trainer.model;
    eprintln!(
        "anvil train: {} parameters ({} non-embedding), {} experts top-{}, {} tokens ({} for validation), {} steps of {} x {}",
        m.num_params(false),
        m.num_params(true),
        m.config().n_experts,
        m.config().experts_per_token,
        n_tokens,
        split.validation.len(),
        o.steps,
        o.batch,
        o.seq
    );
    let metrics_path = o.out.join("metrics.jsonl");
    if o.resume.is_none() {
        let _ = std::fs::remove_file(&metrics_path);
    }
    let mut metrics = MetricsLog::open(&metrics_path).map_err(|e| e.to_string())?;
    let (mut train_curve, mut val_curve) = (Vec::new(), Vec::new());
    let first = trainer.step_count();
    let mut bar = Progress::new(first, o.steps);
    let mut last_val = f64::NAN;
    let mut first_loss = None;
    while trainer.step_count() < o.steps {
        let s = trainer.step(&mut train).map_err(|e| e.to_string())?;
        first_loss.get_or_insert(s.lm);
        metrics.write(&s.to_json()).map_err(|e| e.to_string())?;
        train_curve.push((s.step as f64, s.lm));
        if s.step % o.eval_every == 0 || s.step == o.steps {
            let ev = trainer
                .evaluate(&mut val.clone(), VAL_BATCHES)
                .map_err(|e| e.to_string())?;
            last_val = ev.loss;
            val_curve.push((s.step as f64, ev.loss));
            metrics
                .write(&format!(
                    "{{\"step\":{},\"val_loss\":{},\"val_perplexity\":{}}}",
                    s.step, ev.loss, ev.perplexity
                ))
                .map_err(|e| e.to_string())?;
        }
        let tps = s.tokens as f64 / s.seconds.max(1e-9);
        bar.update(
            s.step,
            &format!(
                "loss {:.3} val {:.3} | {:.0} tok/s{}",
                s.lm,
                last_val,
                tps,
                load_summary(&s)
            ),
        );
    }
    bar.finish();
    let train_secs = wall.elapsed().as_secs_f64();
    let ckpt = o.out.join("model.safetensors");
    trainer
        .save(&ckpt, train.position())
        .map_err(|e| e.to_string())?;
    println!(
        "trained {} steps in {}: loss {:.3} -> {:.3}, validation {:.3}; checkpoint {}",
        o.steps - first,
        duration(train_secs),
        first_loss.unwrap_or(f64::NAN),
        train_curve.last().map_or(f64::NAN, |p| p.1),
        last_val,
        ckpt.display()
    );
    let curve = plot::line_chart(
        "loss",
        "step",
        "cross-entropy (nats/token)",
        &[
            Series {
                name: "train",
                color: "#1f77b4",
                points: &train_curve,
            },
            Series {
                name: "validation",
                color: "#d62728",
                points: &val_curve,
            },
        ],
    );
    save_svg(&o.out.join("loss.svg"), &curve)?;
    if bpe.is_none() {
        report_corpus(&mut trainer.model, &o)?;
    } else if let Some(b) = &bpe {
        sample_text(&mut trainer.model, b)?;
    }
    println!(
        "done in {}; outputs in {}",
        duration(wall.elapsed().as_secs_f64()),
        o.out.display()
    );
    Ok(())
}

fn save_svg(path: &Path, svg: &str) -> Result<(), String> {
    plot::save(path, svg).map_err(|e| format!("{}: {e}", path.display()))
}

/// Per-domain accuracy, the routing heatmap and a few samples.
fn report_corpus(model: &mut Model, o: &RunConfig) -> Result<(), String> {
    let t = Instant::now();
    let scores =
        corpus::accuracy(model, o.eval_n, o.seed.wrapping_add(1000)).map_err(|e| e.to_string())?;
    println!(
        "exact-match accuracy ({} prompts per domain, {}):",
        o.eval_n,
        duration(t.elapsed().as_secs_f64())
    );
    for s in &scores {
        println!(
            "  {:<11} {:>5.1}%  ({}/{})",
            s.domain.name(),
            100.0 * s.accuracy(),
            s.correct,
            s.total
        );
    }
    let json: Vec<String> = scores
        .iter()
        .map(|s| format!("\"{}\":{}", s.domain.name(), s.accuracy()))
        .collect();
    let acc_path = o.out.join("accuracy.json");
    plot::save(&acc_path, &format!("{{{}}}\n", json.join(",")))
        .map_err(|e| format!("{}: {e}", acc_path.display()))?;
    println!("samples:");
    for s in &scores {
        for x in s.samples.iter().take(2) {
            println!(
                "  {}{}  {}",
                x.prompt,
                x.completion,
                if x.correct { "ok" } else { "WRONG" }
            );
        }
    }
    if model.config().n_experts > 0 {
        let share =
            corpus::routing_by_domain(model, 8, o.seq.min(model.config().max_seq_len), o.seed)
                .map_err(|e| e.to_string())?;
        let svg = routing_heatmap(&share, model.config().n_experts);
        save_svg(&o.out.join("routing.svg"), &svg)?;
    }
    Ok(())
}

/// Rows: each domain in each layer, then each domain averaged over layers; columns: experts.
pub fn routing_heatmap(share: &[Vec<Vec<f64>>], experts: usize) -> String {
    let mut rows = Vec::new();
    let mut values = Vec::new();
    let layers = share.first().map_or(0, Vec::len);
    for (d, per_layer) in Domain::ALL.iter().zip(share) {
        let mut mean = vec![0.0; experts];
        for l in per_layer {
            for (m, x) in mean.iter_mut().zip(l) {
                *m += x / layers.max(1) as f64;
            }
        }
        rows.push(format!("{} (mean)", d.name()));
        values.push(mean);
    }
    for l in 0..layers {
        for (d, per_layer) in Domain::ALL.iter().zip(share) {
            rows.push(format!("{} L{l}", d.name()));
            values.push(per_layer[l].clone());
        }
    }
    let cols: Vec<String> = (0..experts).map(|e| format!("E{e}")).collect();
    plot::heatmap(
        "share of each domain's routing slots per expert",
        &rows,
        &cols,
        &values,
    )
}

/// Greedy continuations of the first words of the training text.
fn sample_text(model: &mut Model, bpe: &Bpe) -> Result<(), String> {
    let prompt = bpe.encode("The");
    let mut ids = prompt.clone();
    model.set_training(None);
    let v = model.config().vocab_size;
    for _ in 0..32 {
        if ids.len() >= model.config().max_seq_len {
            break;
        }
        let out = model.forward(&ids, 1, None).map_err(|e| e.to_string())?;
        let vals = model.graph().value(out.logits).map_err(|e| e.to_string())?;
        let row = &vals[vals.len() - v..];
        let best = (0..v).fold(0, |b, i| if row[i] > row[b] { i } else { b });
        model.graph().clear();
        ids.push(best as u32);
    }
    let text = bpe.decode(&ids).map_err(|e| e.to_string())?;
    println!("sample: {text:?}");
    Ok(())
}
