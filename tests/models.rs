//! Model construction, checkpoints and bad input: parameter counts from the seeds, configs that
//! round-trip, reloads with bit-identical logits, f16/bf16 weights, and errors naming the tensor.

use anvil::io::safetensors::{self, SafeTensors};
use anvil::json::{self, Value};
use anvil::models::{Arch, Config, Error, Model};
use anvil::tensor::{DType, Tensor};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    match std::env::var_os("ANVIL_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"),
    }
}

const ARCHS: [&str; 4] = ["gpt2", "llama", "mistral", "mixtral"];

/// Max |diff| between a padded row's logits and the same row alone: the same kernels over a
/// different number of keys (masked ones skipped), so only a few ulps apart.
const PAD_ATOL: f32 = 1e-5;

/// A fresh directory under the target dir for one test.
fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("models-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small_expert() -> Config {
    Config {
        vocab_size: 97,
        d_model: 32,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 4,
        head_dim: 8,
        d_ff: 64,
        max_seq_len: 16,
        ..Config::expert(97)
    }
}

fn ids(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 31 + 7) % vocab) as u32).collect()
}

fn logits(model: &mut Model, ids: &[u32], batch: usize) -> Vec<f32> {
    let o = model.forward(ids, batch, None).unwrap();
    let v = model.graph().value(o.logits).unwrap().to_vec();
    model.graph().clear();
    v
}

#[test]
fn expert_model_reference_parameter_counts() {
    // The seeds: vocab 10,000, d 512, 6 layers, 8 heads, d_ff 2048, max_seq_len 512.
    let c = Config {
        max_seq_len: 512,
        ..Config::expert(10_000)
    };
    let m = Model::new(c.clone(), 1).unwrap();
    assert_eq!(m.num_params(false), 29_155_328);
    assert_eq!(m.num_params(true), 24_035_328);
    // One block of d 512, 8 heads, d_ff 2048: 3,152,384 parameters.
    let one = Model::new(Config { n_layers: 1, ..c }, 1).unwrap();
    let block = one.num_params(true) - 2 * 512 - 512 * 10_000;
    assert_eq!(block, 3_152_384);
    // Tying the head removes its 5,120,000 weights.
    let tied = Model::new(
        Config {
            n_layers: 1,
            tie_embeddings: true,
            max_seq_len: 512,
            ..Config::expert(10_000)
        },
        1,
    )
    .unwrap();
    assert_eq!(one.num_params(false) - tied.num_params(false), 5_120_000);
    let f = m.footprint();
    assert_eq!(f.f32, 4 * 29_155_328);
    assert_eq!(f.f16, 2 * 29_155_328);
    assert!(f.int8 > 29_155_328 && f.int8 < f.f16, "{f:?}");
}

#[test]
fn expert_model_shapes_and_named_sizes() {
    let mut m = Model::new(small_expert(), 3).unwrap();
    let o = m.forward(&ids(2 * 10, 97), 2, None).unwrap();
    assert_eq!(m.graph().shape(o.logits).unwrap(), [2, 10, 97]);
    for name in ["tiny", "small", "medium", "large"] {
        let c = Config::expert_size(name).unwrap();
        c.validate().unwrap();
        assert_eq!(c.n_heads * c.head_dim, c.d_model, "{name}");
    }
    assert!(Config::expert_size("huge").is_none());
}

#[test]
fn configs_round_trip_through_json() {
    for arch in ARCHS {
        let text = std::fs::read_to_string(fixtures().join(arch).join("config.json")).unwrap();
        let c = Config::from_json(&text).unwrap();
        assert_eq!(c.arch.name(), arch);
        assert_eq!(Config::from_json(&c.to_json()).unwrap(), c, "{arch}");
    }
    let c = small_expert();
    assert_eq!(Config::from_json(&c.to_json()).unwrap(), c);
    let mistral = std::fs::read_to_string(fixtures().join("mistral/config.json")).unwrap();
    let c = Config::from_json(&mistral).unwrap();
    assert!(c.sliding_window.is_some() && c.n_kv_heads < c.n_heads);
}

#[test]
fn bad_configs_name_the_field() {
    let err = |s: &str| Config::from_json(s).unwrap_err().to_string();
    assert!(err("{").contains("invalid JSON"));
    assert!(err(r#"{"model_type": "bert"}"#).contains("`bert`"));
    assert!(err(r#"{"model_type": "gpt2"}"#).contains("`n_embd`"));
    let llama = std::fs::read_to_string(fixtures().join("llama/config.json")).unwrap();
    let heads = Config::from_json(&llama).unwrap().n_heads;
    let bad = with_field(&llama, "num_key_value_heads", Value::Int(heads as i128 + 1));
    let want = format!("not a multiple of n_kv_heads {}", heads + 1);
    assert!(err(&bad).contains(&want), "{}", err(&bad));
    let bad = with_field(&llama, "hidden_size", Value::Int(-64));
    assert!(err(&bad).contains("`hidden_size`"), "{}", err(&bad));
    let bad = with_field(&llama, "hidden_act", Value::String("relu".into()));
    assert!(err(&bad).contains("hidden_act `relu`"));
}

/// `text` (a JSON object) with `key` set to `v`.
fn with_field(text: &str, key: &str, v: Value) -> String {
    let Value::Object(mut o) = json::parse_str(text).unwrap() else {
        panic!("config is not an object")
    };
    o.retain(|(k, _)| k != key);
    o.push((key.to_string(), v));
    Value::Object(o).to_json()
}

#[test]
fn our_checkpoints_reload_with_bit_identical_logits() {
    let dir = scratch("reload");
    let mut models: Vec<(String, Model)> = ARCHS
        .iter()
        .map(|a| (a.to_string(), Model::load(fixtures().join(a)).unwrap()))
        .collect();
    models.push(("expert".into(), Model::new(small_expert(), 5).unwrap()));
    for (name, mut m) in models {
        let v = m.config().vocab_size;
        let x = ids(2 * 12, v);
        let before = logits(&mut m, &x, 2);
        let path = dir.join(format!("{name}.safetensors"));
        m.save(&path).unwrap();
        let mut back = Model::load(&path).unwrap();
        assert_eq!(back.config(), m.config(), "{name}");
        let after = logits(&mut back, &x, 2);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&before),
            bits(&after),
            "{name}: logits changed on reload"
        );
        // No temporary file is left beside the checkpoint.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".safetensors"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

/// Copies a fixture directory's config and rewrites its weights through `edit`.
fn edited(arch: &str, name: &str, edit: impl Fn(&mut Vec<(String, Tensor)>)) -> PathBuf {
    let src = fixtures().join(arch);
    let dir = scratch(name);
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let f = SafeTensors::open(src.join("model.safetensors")).unwrap();
    let mut ts: Vec<(String, Tensor)> = f
        .names()
        .into_iter()
        .map(|n| (n.to_string(), f.tensor(n).unwrap()))
        .collect();
    edit(&mut ts);
    let refs: Vec<(&str, &Tensor)> = ts.iter().map(|(n, t)| (n.as_str(), t)).collect();
    safetensors::save(dir.join("model.safetensors"), &refs, &[]).unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    match Model::load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_extra_and_misshaped_tensors_are_named() {
    let w = "model.layers.1.self_attn.k_proj.weight";
    let dir = edited("llama", "missing", |ts| ts.retain(|(n, _)| n != w));
    let e = load_err(&dir);
    assert!(
        e.contains("missing tensor") && e.contains(w) && e.contains("model.safetensors"),
        "{e}"
    );

    let dir = edited("llama", "extra", |ts| {
        ts.push(("model.layers.9.oops".into(), Tensor::zeros(&[2]).unwrap()))
    });
    let e = load_err(&dir);
    assert!(e.contains("unexpected tensor `model.layers.9.oops`"), "{e}");

    let want = Model::load(fixtures().join("llama")).unwrap();
    let want = want
        .graph_ref()
        .param_tensor(want.param(w).unwrap())
        .unwrap()
        .shape()
        .to_vec();
    let dir = edited("llama", "shape", |ts| {
        let t = ts.iter_mut().find(|(n, _)| n == w).unwrap();
        let n = t.1.numel();
        t.1 = t.1.reshape(&[n / 2, 2]).unwrap();
    });
    let e = load_err(&dir);
    assert!(
        e.contains(w) && e.contains("has shape") && e.contains(&format!("{want:?}")),
        "{e}"
    );

    let dir = scratch("noconfig");
    let e = load_err(&dir);
    assert!(e.contains("config.json"), "{e}");
    // A HF weights file given directly is refused with a hint.
    let e = match Model::load(fixtures().join("gpt2/model.safetensors")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("loaded without a config"),
    };
    assert!(e.contains("not an Anvil checkpoint"), "{e}");
}

#[test]
fn half_precision_weights_convert_on_load() {
    let f32_model = Model::load(fixtures().join("llama")).unwrap();
    for (dtype, name) in [(DType::F16, "f16"), (DType::BF16, "bf16")] {
        let dir = edited("llama", name, |ts| {
            ts.iter_mut().for_each(|(_, t)| *t = t.to_dtype(dtype))
        });
        let m = Model::load(&dir).unwrap();
        for ((n, p), (_, q)) in m.params().iter().zip(f32_model.params()) {
            let got = m.graph_ref().param_tensor(*p).unwrap();
            let want = f32_model
                .graph_ref()
                .param_tensor(*q)
                .unwrap()
                .to_dtype(dtype);
            assert_eq!(got.dtype(), DType::F32, "{n}");
            assert_eq!(got.as_slice(), want.to_f32().as_slice(), "{n} ({name})");
        }
    }
}

#[test]
fn gpt2_hub_names_without_the_transformer_prefix_load() {
    let dir = edited("gpt2", "hubnames", |ts| {
        for (n, _) in ts.iter_mut() {
            *n = n.trim_start_matches("transformer.").to_string();
        }
        // Old checkpoints also carry the causal-mask buffers.
        ts.push((
            "h.0.attn.bias".into(),
            Tensor::zeros(&[1, 1, 4, 4]).unwrap(),
        ));
    });
    let mut a = Model::load(&dir).unwrap();
    let mut b = Model::load(fixtures().join("gpt2")).unwrap();
    let x = ids(16, 256);
    assert_eq!(logits(&mut a, &x, 1), logits(&mut b, &x, 1));
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let mut m = Model::load(fixtures().join("gpt2")).unwrap();
    let c = m.config().clone();
    let msg = |r: Result<anvil::models::Output, Error>| r.map(|_| ()).unwrap_err().to_string();
    assert!(msg(m.forward(&[1, 2, 3], 2, None)).contains("do not form 2 equal rows"));
    assert!(msg(m.forward(&[], 1, None)).contains("equal rows"));
    let long = ids(c.max_seq_len + 1, c.vocab_size);
    assert!(msg(m.forward(&long, 1, None)).contains("exceeds max_seq_len"));
    let bad = [0, c.vocab_size as u32];
    let e = msg(m.forward(&bad, 1, None));
    assert!(
        e.contains("embedding") && e.contains(&c.vocab_size.to_string()),
        "{e}"
    );
    m.graph().clear();
    let e = msg(m.forward(&[1, 2], 1, Some(&[true])));
    assert!(e.contains("attention mask of 1 entries"), "{e}");
}

#[test]
fn training_mode_dropout_is_seeded_and_eval_is_deterministic() {
    let mut m = Model::new(small_expert(), 9).unwrap();
    let x = ids(16, 97);
    let eval = logits(&mut m, &x, 2);
    m.set_training(Some(42));
    let a = logits(&mut m, &x, 2);
    m.set_training(Some(42));
    let b = logits(&mut m, &x, 2);
    assert_eq!(a, b, "same seed, same dropout");
    assert_ne!(a, eval, "dropout 0.1 changed nothing");
    m.set_training(None);
    assert_eq!(logits(&mut m, &x, 2), eval);
    assert_eq!(m.config().arch, Arch::Expert);
}

#[test]
fn padding_mask_hides_padded_keys() {
    // Right padding: the real tokens of a padded row see exactly what they see alone.
    for arch in ARCHS {
        let mut m = Model::load(fixtures().join(arch)).unwrap();
        let v = m.config().vocab_size;
        let (t, real) = (12, 7);
        let mut x = ids(2 * t, v);
        x[t + real..].iter_mut().for_each(|i| *i = 0);
        let mask: Vec<bool> = (0..2 * t).map(|i| i < t + real).collect();
        let o = m.forward(&x, 2, Some(&mask)).unwrap();
        let padded = m.graph().value(o.logits).unwrap()[t * v..(t + real) * v].to_vec();
        m.graph().clear();
        let alone = logits(&mut m, &x[t..t + real], 1);
        let d = padded
            .iter()
            .zip(&alone)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            d <= PAD_ATOL,
            "{arch}: padded row differs from the row alone by {d}"
        );
        // The loss skips predictions of padding.
        let l = m.loss(&x, 2, Some(&mask)).unwrap();
        assert!(m.graph().value(l.lm).unwrap()[0].is_finite());
        m.graph().clear();
    }
}
