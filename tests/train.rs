//! The training stack: exact resume, schedules, clipping, accumulation, parameter groups,
//! frozen parameters, evaluation and metrics.

use anvil::json;
use anvil::models::{Config, Model, Result};
use anvil::train::{
    Batch, Batches, Decay, MetricsLog, Schedule, TrainConfig, Trainer, clip_grad_norm,
    default_groups, groups_by_name,
};
use std::path::PathBuf;

/// A stateless batch source: batch `i` is a pure function of the seed and `i`.
struct Synthetic {
    seed: u64,
    pos: u64,
    rows: usize,
    t: usize,
    vocab: usize,
}

impl Batches for Synthetic {
    fn next_batch(&mut self) -> Result<Batch> {
        let mut s = self.seed ^ self.pos.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let ids = (0..self.rows * self.t)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) % self.vocab as u64) as u32
            })
            .collect();
        self.pos += 1;
        Ok(Batch {
            ids,
            rows: self.rows,
            mask: None,
        })
    }
    fn position(&self) -> u64 {
        self.pos
    }
    fn seek(&mut self, position: u64) -> Result<()> {
        self.pos = position;
        Ok(())
    }
}

fn data(seed: u64) -> Synthetic {
    Synthetic {
        seed,
        pos: 0,
        rows: 2,
        t: 12,
        vocab: 53,
    }
}

/// A small ExpertModel with MoE feed-forwards, dropout and router jitter: every source of
/// randomness a resume must restore.
fn moe_config() -> Config {
    Config {
        vocab_size: 53,
        d_model: 24,
        n_layers: 2,
        n_heads: 3,
        n_kv_heads: 3,
        head_dim: 8,
        d_ff: 32,
        max_seq_len: 16,
        n_experts: 4,
        experts_per_token: 2,
        router_aux_loss_coef: 0.01,
        router_z_loss_coef: 0.001,
        router_jitter: 0.01,
        capacity_factor: Some(1.25),
        dropout: 0.1,
        ..Config::expert(53)
    }
}

fn train_config() -> TrainConfig {
    TrainConfig {
        schedule: Schedule {
            warmup: 2,
            total: 8,
            decay: Decay::Cosine,
            min_ratio: 0.1,
        },
        clip: Some(1.0),
        accum: 2,
        ..TrainConfig::default()
    }
}

fn trainer(seed: u64) -> Trainer {
    let mut model = Model::new(moe_config(), seed).unwrap();
    model.set_training(Some(seed + 100));
    // The seeds' groups: MoE layers 1e-4 (here 1e-3 to move in few steps), the rest 5e-4.
    let groups = groups_by_name(&model, &[("moe", 1e-3, 0.01)], 5e-4, 0.1);
    Trainer::new(model, groups, train_config()).unwrap()
}

fn bits(t: &Trainer) -> Vec<Vec<u32>> {
    t.model
        .params()
        .iter()
        .map(|(_, p)| {
            let v = t.model.graph_ref().param_tensor(*p).unwrap().as_slice();
            v.iter().map(|x| x.to_bits()).collect()
        })
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("train-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn resume_continues_bit_identically() {
    const N: usize = 6;
    let mut straight = trainer(1);
    let mut d = data(7);
    let losses: Vec<u64> = (0..N)
        .map(|_| straight.step(&mut d).unwrap().loss.to_bits())
        .collect();

    let mut first = trainer(1);
    let mut d1 = data(7);
    let mut resumed_losses: Vec<u64> = (0..N / 2)
        .map(|_| first.step(&mut d1).unwrap().loss.to_bits())
        .collect();
    let path = scratch("resume").join("ckpt.safetensors");
    first.save(&path, d1.position()).unwrap();
    drop(first);
    let (mut second, pos) = Trainer::resume(&path).unwrap();
    let mut d2 = data(7);
    d2.seek(pos).unwrap();
    resumed_losses.extend((N / 2..N).map(|_| second.step(&mut d2).unwrap().loss.to_bits()));

    assert_eq!(losses, resumed_losses, "losses after resume differ");
    assert_eq!(
        bits(&straight),
        bits(&second),
        "parameters after resume differ"
    );
    assert_eq!(straight.step_count(), second.step_count());
    // The checkpoint also loads as a plain model (optimizer state ignored).
    Model::load(&path).unwrap();
}

#[test]
fn schedules_warm_up_then_decay() {
    let s = Schedule {
        warmup: 4,
        total: 14,
        decay: Decay::Cosine,
        min_ratio: 0.1,
    };
    assert_eq!(s.factor(0), 0.25);
    assert_eq!(s.factor(3), 1.0);
    assert!((s.factor(4) - 1.0).abs() < 1e-12);
    assert!((s.factor(9) - 0.55).abs() < 1e-12, "{}", s.factor(9));
    assert!((s.factor(14) - 0.1).abs() < 1e-12);
    assert!((s.factor(100) - 0.1).abs() < 1e-12);
    let l = Schedule {
        decay: Decay::Linear,
        ..s
    };
    assert!((l.factor(9) - 0.55).abs() < 1e-12);
    assert!((l.factor(6) - (0.1 + 0.9 * 0.8)).abs() < 1e-12);
    let c = Schedule {
        decay: Decay::Constant,
        ..s
    };
    assert_eq!(c.factor(1), 0.5);
    assert_eq!(c.factor(50), 1.0);
}

#[test]
fn clipping_bounds_the_global_norm() {
    let mut t = trainer(2);
    let b = data(3).next_batch().unwrap();
    let l = t.model.loss(&b.ids, b.rows, None).unwrap();
    t.model.graph().backward(l.total).unwrap();
    let params: Vec<_> = t.model.params().iter().map(|(_, p)| *p).collect();
    let norm = |t: &Trainer| -> f64 {
        params
            .iter()
            .map(|&p| {
                let g = t.model.graph_ref().param_grad(p).unwrap().unwrap();
                g.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>()
            })
            .sum::<f64>()
            .sqrt()
    };
    let before = norm(&t);
    let reported = clip_grad_norm(t.model.graph(), &params, before / 4.0).unwrap();
    assert_eq!(reported, before);
    let after = norm(&t);
    assert!(
        (after - before / 4.0).abs() <= 1e-6 * before,
        "{after} vs {}",
        before / 4.0
    );
    // A limit above the norm changes nothing.
    let again = clip_grad_norm(t.model.graph(), &params, after * 2.0).unwrap();
    assert_eq!(norm(&t), again);
}

/// Max |diff| of accumulated against one-batch gradients, relative to the largest gradient of
/// the model: the same sums in another order, so only f32 rounding differs. (Relative to each
/// tensor's own max would fail on the key biases, whose gradient is zero in exact arithmetic,
/// softmax being shift-invariant, and pure rounding noise here.)
const ACCUM_RTOL_OF_MAX: f32 = 1e-5;

#[test]
fn accumulation_equals_one_big_batch() {
    // No batch-level terms (balancing, z-loss, capacity) and no randomness: per-token losses.
    let cfg = Config {
        dropout: 0.0,
        router_jitter: 0.0,
        capacity_factor: None,
        router_aux_loss_coef: 0.0,
        router_z_loss_coef: 0.0,
        ..moe_config()
    };
    let mut d = data(5);
    let (x, y) = (d.next_batch().unwrap(), d.next_batch().unwrap());
    // Gradients: two half batches scaled by 1/2, against one batch of both.
    let mut a = Model::new(cfg.clone(), 4).unwrap();
    for b in [&x, &y] {
        let l = a.loss(&b.ids, b.rows, None).unwrap();
        let s = a.graph().scale(l.total, 0.5).unwrap();
        a.graph().backward(s).unwrap();
    }
    let mut b = Model::new(cfg.clone(), 4).unwrap();
    let ids = [x.ids.clone(), y.ids.clone()].concat();
    let l = b.loss(&ids, 4, None).unwrap();
    b.graph().backward(l.total).unwrap();
    let max = b
        .params()
        .iter()
        .flat_map(|(_, q)| b.graph_ref().param_grad(*q).unwrap().unwrap())
        .fold(0.0f32, |m, x| m.max(x.abs()));
    for ((n, p), (_, q)) in a.params().iter().zip(b.params()) {
        let u = a.graph_ref().param_grad(*p).unwrap().unwrap();
        let v = b.graph_ref().param_grad(*q).unwrap().unwrap();
        let d = u
            .iter()
            .zip(v)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(d <= ACCUM_RTOL_OF_MAX * max, "{n}: {d} of {max}");
    }
    // The trainer's accumulating step is exactly that procedure followed by one AdamW step.
    let tc = TrainConfig {
        accum: 2,
        clip: None,
        ..TrainConfig::default()
    };
    let m = Model::new(cfg.clone(), 4).unwrap();
    let groups = default_groups(&m, 1e-3, 0.1);
    let mut t = Trainer::new(m, groups.clone(), tc).unwrap();
    let mut src = data(5);
    let stats = t.step(&mut src).unwrap();
    let mut opt =
        anvil::train::AdamW::new(a.graph_ref(), groups, tc.beta1, tc.beta2, tc.eps).unwrap();
    opt.step(a.graph(), 1.0).unwrap();
    let t_bits = bits(&t);
    let a_bits: Vec<Vec<u32>> = a
        .params()
        .iter()
        .map(|(_, p)| {
            a.graph_ref()
                .param_tensor(*p)
                .unwrap()
                .as_slice()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        })
        .collect();
    assert_eq!(t_bits, a_bits);
    assert!(stats.loss.is_finite());
}

#[test]
fn groups_frozen_parameters_and_decay_rules() {
    let mut m = Model::new(moe_config(), 6).unwrap();
    let frozen = m.param("embedding.weight").unwrap();
    m.graph().set_requires_grad(frozen, false).unwrap();
    let groups = groups_by_name(
        &m,
        &[("moe", 1e-4, 0.01), ("lm_head", 1e-3, 0.0)],
        5e-4,
        0.1,
    );
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["decay", "no_decay", "moe", "lm_head"], "{names:?}");
    let find = |n: &str| groups.iter().find(|g| g.name == n).unwrap();
    assert_eq!(find("no_decay").weight_decay, 0.0);
    assert_eq!(find("moe").lr, 1e-4);
    // Every 1-D parameter is in a no-decay group; the frozen embedding is in none.
    for g in &groups {
        assert!(!g.params.contains(&frozen));
        for &p in &g.params {
            let one_d = m.graph_ref().param_tensor(p).unwrap().rank() == 1;
            assert_eq!(
                one_d,
                g.weight_decay == 0.0 && g.name != "lm_head",
                "{}",
                g.name
            );
        }
    }
    let before = m.graph_ref().param_tensor(frozen).unwrap().to_vec();
    let mut t = Trainer::new(m, groups, train_config()).unwrap();
    let mut d = data(8);
    for _ in 0..2 {
        t.step(&mut d).unwrap();
    }
    assert_eq!(
        t.model.graph_ref().param_tensor(frozen).unwrap().to_vec(),
        before
    );
    // A frozen parameter in a group is refused.
    let g2 = vec![anvil::train::ParamGroup {
        name: "bad".into(),
        lr: 1e-3,
        weight_decay: 0.0,
        params: vec![frozen],
    }];
    let m2 = {
        let mut m = Model::new(moe_config(), 6).unwrap();
        m.graph().set_requires_grad(frozen, false).unwrap();
        m
    };
    let e = Trainer::new(m2, g2, train_config())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("embedding.weight") && e.contains("frozen"),
        "{e}"
    );
}

#[test]
fn evaluation_and_metrics() {
    let mut t = trainer(9);
    let rng_before = t.model.training_state();
    let e = t.evaluate(&mut data(11), 3).unwrap();
    assert_eq!(
        t.model.training_state(),
        rng_before,
        "eval consumed training randomness"
    );
    assert!((e.perplexity - e.loss.exp()).abs() < 1e-9);
    assert_eq!(e.tokens, 3 * 2 * 11);
    // An untrained model is near uniform: loss close to ln(vocab).
    assert!((e.loss - 53f64.ln()).abs() < 0.5, "{}", e.loss);
    let again = t.evaluate(&mut data(11), 3).unwrap();
    assert_eq!(e, again, "evaluation is deterministic");

    let path = scratch("metrics").join("m.jsonl");
    let mut log = MetricsLog::open(&path).unwrap();
    let mut d = data(12);
    for _ in 0..2 {
        let s = t.step(&mut d).unwrap();
        assert_eq!(s.moe.len(), 2);
        assert!(s.grad_norm.is_some() && s.aux.is_some() && s.z.is_some());
        log.write(&s.to_json()).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    let v = json::parse_str(lines[1]).unwrap();
    assert_eq!(v.get("step").and_then(json::Value::as_u64), Some(2));
    let load = v
        .get("moe")
        .and_then(|m| m.at(0))
        .and_then(|m| m.get("load"))
        .unwrap();
    let slots: u64 = load
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .sum();
    let dropped = v
        .get("moe")
        .and_then(|m| m.at(0))
        .and_then(|m| m.get("dropped"))
        .unwrap();
    // Two micro-batches of 24 tokens, 2 slots each.
    assert_eq!(slots + dropped.as_u64().unwrap(), 2 * 24 * 2);
}

/// `AdamW::step` leaves every gradient zero for the next accumulation: a stepped parameter's
/// in the update's own pass, a trainable parameter outside every group as `zero_grads` does; the
/// latter's value is untouched.
#[test]
fn adamw_step_zeroes_every_gradient() {
    use anvil::autograd::Graph;
    use anvil::tensor::Tensor;
    let mut g = Graph::new().unwrap();
    // 70_001 elements: past one threaded AdamW task.
    let n = 70_001;
    let vals = |s: f32| Tensor::from_vec((0..n).map(|i| s + (i % 13) as f32 * 0.1).collect(), &[n]);
    let a = g.add_param("a", &vals(1.0).unwrap(), true);
    let b = g.add_param("b", &vals(-2.0).unwrap(), true);
    let (av, bv) = (g.param(a).unwrap(), g.param(b).unwrap());
    let y = g.mul(av, bv).unwrap();
    let loss = g.sum(y).unwrap();
    g.backward(loss).unwrap();
    let grad_nonzero = |g: &Graph, p| g.param_grad(p).unwrap().unwrap().iter().any(|&x| x != 0.0);
    assert!(grad_nonzero(&g, a) && grad_nonzero(&g, b));
    let group = anvil::train::ParamGroup {
        name: "a only".into(),
        lr: 1e-2,
        weight_decay: 0.1,
        params: vec![a],
    };
    let mut opt = anvil::train::AdamW::new(&g, vec![group], 0.9, 0.95, 1e-8).unwrap();
    let (a0, b0) = (
        g.param_tensor(a).unwrap().to_vec(),
        g.param_tensor(b).unwrap().to_vec(),
    );
    opt.step(&mut g, 1.0).unwrap();
    assert!(!grad_nonzero(&g, a) && !grad_nonzero(&g, b));
    assert_ne!(g.param_tensor(a).unwrap().to_vec(), a0);
    assert_eq!(g.param_tensor(b).unwrap().to_vec(), b0);
}
