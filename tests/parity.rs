//! Whole models against the PyTorch / HF fixtures: logits, loss, the mixtral balancing loss,
//! every parameter gradient, and the losses of 5 AdamW steps.
//!
//! The fixture root comes from `ANVIL_FIXTURES` (default `../shared/fixtures` beside the
//! repository); every size is read from the files (config.json, tensor shapes), so the same
//! tests run on any fixture set made by the same script.

use anvil::io::safetensors::SafeTensors;
use anvil::json;
use anvil::models::Model;
use anvil::train::{AdamW, AdamWConfig};
use std::path::PathBuf;

/// Max |diff| on logits and on the loss (the bound). f32 sums of a few hundred terms in
/// another order differ by ~1e-6 here, so 1e-4 leaves room only for real errors.
const LOGITS_ATOL: f64 = 1e-4;
const LOSS_ATOL: f64 = 1e-4;
/// Max |diff| of each gradient tensor relative to its largest |value|.
const GRAD_RTOL_OF_MAX: f64 = 1e-4;
/// Max |diff| of each of the 5 training losses.
const TRAIN_LOSS_ATOL: f64 = 1e-4;

fn fixtures() -> PathBuf {
    match std::env::var_os("ANVIL_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"),
    }
}

struct Expected {
    file: SafeTensors,
    ids: Vec<u32>,
    batch: usize,
    meta: json::Value,
}

fn expected(arch: &str) -> Expected {
    let dir = fixtures().join(arch);
    let file = SafeTensors::open(dir.join("expected.safetensors")).expect("expected.safetensors");
    let shape = file.info("input_ids").unwrap().shape.clone();
    let ids = file
        .i64s("input_ids")
        .unwrap()
        .into_iter()
        .map(|i| u32::try_from(i).unwrap())
        .collect();
    let meta = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    Expected {
        file,
        ids,
        batch: shape[0],
        meta: json::parse_str(&meta).unwrap(),
    }
}

/// `(max |a - b|, max |b|)`.
fn diff(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold((0.0, 0.0), |(d, m), (&x, &y)| {
        (
            f64::max(d, (f64::from(x) - f64::from(y)).abs()),
            f64::max(m, f64::from(y).abs()),
        )
    })
}

fn scalar(e: &Expected, name: &str) -> f32 {
    e.file.tensor_f32(name).unwrap().as_slice()[0]
}

fn parity(arch: &str) {
    let dir = fixtures().join(arch);
    let mut model = Model::load(&dir).unwrap_or_else(|e| panic!("{arch}: {e}"));
    let e = expected(arch);
    let loss = model.loss(&e.ids, e.batch, None).unwrap();
    let g = model.graph();

    let want = e.file.tensor_f32("logits").unwrap();
    assert_eq!(
        g.shape(loss.logits).unwrap(),
        want.shape(),
        "{arch} logits shape"
    );
    let (d, _) = diff(g.value(loss.logits).unwrap(), want.as_slice());
    println!("{arch}: logits max|diff| {d:.2e}");
    assert!(d <= LOGITS_ATOL, "{arch}: logits max|diff| {d}");

    let got = g.value(loss.total).unwrap()[0];
    let d = (f64::from(got) - f64::from(scalar(&e, "loss"))).abs();
    println!("{arch}: loss {got} |diff| {d:.2e}");
    assert!(
        d <= LOSS_ATOL,
        "{arch}: loss {got} vs {}",
        scalar(&e, "loss")
    );
    if let Some(aux) = loss.aux {
        let got = g.value(aux).unwrap()[0];
        let d = (f64::from(got) - f64::from(scalar(&e, "aux_loss"))).abs();
        println!("{arch}: aux_loss {got} |diff| {d:.2e}");
        assert!(d <= LOSS_ATOL, "{arch}: aux loss {got}");
    }

    g.backward(loss.total).unwrap();
    let mut worst = (0.0f64, String::new());
    let names: Vec<(String, _)> = model.params().to_vec();
    for (name, p) in &names {
        let want = e
            .file
            .tensor_f32(&format!("grad.{name}"))
            .unwrap_or_else(|_| panic!("{arch}: no fixture gradient for {name}"));
        let got = model.graph_ref().param_grad(*p).unwrap().unwrap();
        let (d, m) = diff(got, want.as_slice());
        let rel = d / m.max(f64::MIN_POSITIVE);
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
        assert!(
            rel <= GRAD_RTOL_OF_MAX,
            "{arch}: grad {name}: {d:.3e} of max {m:.3e}"
        );
    }
    // Every fixture gradient belongs to a parameter of ours.
    let ours: Vec<String> = names.iter().map(|(n, _)| format!("grad.{n}")).collect();
    for n in e
        .file
        .names()
        .into_iter()
        .filter(|n| n.starts_with("grad."))
    {
        assert!(
            ours.iter().any(|o| o == n),
            "{arch}: fixture has {n}, we have no such parameter"
        );
    }
    println!(
        "{arch}: {} gradients, worst relative-to-max {:.2e} ({})",
        names.len(),
        worst.0,
        worst.1
    );
}

fn train(arch: &str) {
    let mut model = Model::load(fixtures().join(arch)).unwrap();
    let e = expected(arch);
    let want: Vec<f64> = e
        .meta
        .get("train_losses")
        .and_then(json::Value::as_array)
        .expect("train_losses")
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let hyper = AdamWConfig {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut opt = AdamW::all(model.graph_ref(), hyper);
    for (step, &w) in want.iter().enumerate() {
        let loss = model.loss(&e.ids, e.batch, None).unwrap();
        let got = model.graph().value(loss.total).unwrap()[0];
        let d = (f64::from(got) - w).abs();
        println!("{arch}: step {step} loss {got} |diff| {d:.2e}");
        assert!(
            d <= TRAIN_LOSS_ATOL,
            "{arch}: step {step} loss {got} vs {w}"
        );
        model.graph().backward(loss.total).unwrap();
        opt.step(model.graph(), 1.0).unwrap();
    }
}

#[test]
fn parity_gpt2() {
    parity("gpt2");
    train("gpt2");
}

#[test]
fn parity_llama() {
    parity("llama");
    train("llama");
}

#[test]
fn parity_mistral() {
    parity("mistral");
    train("mistral");
}

#[test]
fn parity_mixtral() {
    parity("mixtral");
    train("mixtral");
}
