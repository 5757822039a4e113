//! Wrong architecture for the loader: real fixture weights paired with another architecture's config
//! (GPT-2 weights under a LLaMA config and the reverse, Mixtral weights under a LLaMA config and the
//! reverse), an encoder given a language model and a language model given an encoder. Each refusal names
//! the weights file, the tensor the model missed (or did not expect) and, for a missing one, the file's
//! unused tensors nearest in name.

use super::scratch;
use anvil::io::safetensors::save;
use anvil::models::{Encoder, Error, Model};
use anvil::tensor::Tensor;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    match std::env::var_os("ANVIL_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"),
    }
}

/// A HF directory `dir/name` with `config` as its config.json and `weights` as its model.safetensors.
fn hf_dir(dir: &Path, name: &str, config: &str, weights: &Path) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.json"), config).unwrap();
    std::fs::copy(weights, d.join("model.safetensors")).unwrap();
    d
}

fn config_of(arch: &str) -> String {
    std::fs::read_to_string(fixtures().join(arch).join("config.json")).unwrap()
}

fn weights_of(arch: &str) -> PathBuf {
    fixtures().join(arch).join("model.safetensors")
}

/// `err`'s message names `dir`'s model.safetensors and contains every needle.
fn says(err: &Error, dir: &Path, needles: &[&str]) {
    let msg = err.to_string();
    let file = dir.join("model.safetensors");
    assert!(
        msg.contains(&file.display().to_string()),
        "does not name {}: {msg}",
        file.display()
    );
    for n in needles {
        assert!(msg.contains(n), "expected `{n}` in: {msg}");
    }
}

/// The missing tensor of `err`, whether it was the first asked for, and the unused ones listed.
fn missing(err: &Error) -> (&str, bool, &[String]) {
    match err {
        Error::MissingTensor {
            name,
            first,
            nearby,
            ..
        } => (name, *first, nearby),
        e => panic!("expected a missing tensor, got: {e}"),
    }
}

#[test]
fn gpt2_weights_with_a_llama_config() {
    let dir = scratch("arch-gpt2-as-llama");
    let d = hf_dir(&dir, "m", &config_of("llama"), &weights_of("gpt2"));
    let e = Model::load(&d).unwrap_err();
    assert_eq!(missing(&e).0, "model.embed_tokens.weight");
    assert!(missing(&e).1, "nothing of a LLaMA matched before it");
    says(
        &e,
        &d,
        &[
            "missing tensor `model.embed_tokens.weight`",
            "`transformer.h.0.attn.c_attn.bias`",
            "weights of another architecture",
        ],
    );
}

#[test]
fn llama_weights_with_a_gpt2_config() {
    let dir = scratch("arch-llama-as-gpt2");
    let d = hf_dir(&dir, "m", &config_of("gpt2"), &weights_of("llama"));
    let e = Model::load(&d).unwrap_err();
    assert_eq!(missing(&e).0, "transformer.wte.weight");
    assert!(missing(&e).1);
    says(
        &e,
        &d,
        &[
            "missing tensor `transformer.wte.weight`",
            "`lm_head.weight`",
            "another architecture",
        ],
    );
}

/// Mixtral and LLaMA share embeddings and attention: the load gets as far as the feed-forward and
/// names the mixture's tensors that sit where the MLP should.
#[test]
fn mixtral_weights_with_a_llama_config_and_the_reverse() {
    let dir = scratch("arch-mixtral-llama");
    let as_llama = config_of("mixtral").replace("\"mixtral\"", "\"llama\"");
    let d = hf_dir(&dir, "moe-as-dense", &as_llama, &weights_of("mixtral"));
    let e = Model::load(&d).unwrap_err();
    let (name, first, nearby) = missing(&e);
    assert!(name.starts_with("model.layers.0.mlp."), "{e}");
    assert!(!first);
    assert!(
        nearby
            .iter()
            .all(|n| n.starts_with("model.layers.0.block_sparse_moe.")),
        "{e}"
    );
    says(
        &e,
        &d,
        &[
            name,
            "model.layers.0.block_sparse_moe.experts.0.w1.weight",
            "instead",
        ],
    );

    let as_moe = config_of("llama").replace(
        "\"model_type\": \"llama\"",
        "\"model_type\": \"mixtral\", \"num_local_experts\": 4, \"num_experts_per_tok\": 2",
    );
    let d = hf_dir(&dir, "dense-as-moe", &as_moe, &weights_of("llama"));
    let e = Model::load(&d).unwrap_err();
    let (name, first, nearby) = missing(&e);
    assert!(name.starts_with("model.layers.0.block_sparse_moe."), "{e}");
    assert!(!first && !nearby.is_empty());
    assert!(
        nearby.iter().all(|n| n.starts_with("model.layers.0.")),
        "{e}"
    );
    says(&e, &d, &[name, "model.layers.0.mlp.", "instead"]);
}

/// A config with fewer layers than the weights: the first tensor nothing asked for is named.
#[test]
fn weights_with_more_layers_than_the_config() {
    let dir = scratch("arch-extra-layer");
    let one = config_of("llama").replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1");
    let d = hf_dir(&dir, "m", &one, &weights_of("llama"));
    let e = Model::load(&d).unwrap_err();
    match &e {
        Error::UnexpectedTensor { name, .. } => assert!(name.starts_with("model.layers.1."), "{e}"),
        e => panic!("expected an unexpected tensor, got: {e}"),
    }
    says(
        &e,
        &d,
        &[
            "unexpected tensor `model.layers.1.",
            "not part of this model",
        ],
    );
}

/// A small BERT config (all-MiniLM-L6-v2's fields, tiny sizes).
const BERT_CONFIG: &str = r#"{"model_type": "bert", "hidden_act": "gelu", "hidden_size": 64,
  "intermediate_size": 128, "layer_norm_eps": 1e-12, "max_position_embeddings": 64,
  "num_attention_heads": 4, "num_hidden_layers": 1, "type_vocab_size": 2, "vocab_size": 256}"#;

#[test]
fn encoder_given_a_language_model() {
    let dir = scratch("arch-lm-as-encoder");
    // The LM's own directory: its config is refused, naming config.json and the model type.
    let d = hf_dir(&dir, "as-is", &config_of("gpt2"), &weights_of("gpt2"));
    let e = Encoder::load(&d).unwrap_err().to_string();
    let cfg = d.join("config.json").display().to_string();
    assert!(
        e.contains(&cfg) && e.contains("\"gpt2\"") && e.contains("bert"),
        "{e}"
    );
    // A BERT config over the LM's weights: the first encoder tensor is missing.
    for arch in ["gpt2", "llama"] {
        let d = hf_dir(&dir, arch, BERT_CONFIG, &weights_of(arch));
        let e = Encoder::load(&d).unwrap_err();
        assert_eq!(missing(&e).0, "embeddings.word_embeddings.weight");
        assert!(missing(&e).1);
        says(
            &e,
            &d,
            &[
                "missing tensor `embeddings.word_embeddings.weight`",
                "another architecture",
            ],
        );
    }
}

#[test]
fn language_model_given_an_encoder() {
    let dir = scratch("arch-encoder-as-lm");
    // A BERT checkpoint's first tensors (names as on the hub, with the `bert.` prefix).
    let src = dir.join("bert.safetensors");
    let t = |shape: &[usize]| Tensor::from_vec(vec![0.0; shape.iter().product()], shape).unwrap();
    let (word, pos, ln) = (t(&[256, 64]), t(&[64, 64]), t(&[64]));
    save(
        &src,
        &[
            ("bert.embeddings.word_embeddings.weight", &word),
            ("bert.embeddings.position_embeddings.weight", &pos),
            ("bert.embeddings.LayerNorm.weight", &ln),
        ],
        &[],
    )
    .unwrap();
    for (arch, first_tensor) in [
        ("gpt2", "transformer.wte.weight"),
        ("llama", "model.embed_tokens.weight"),
    ] {
        let d = hf_dir(&dir, arch, &config_of(arch), &src);
        let e = Model::load(&d).unwrap_err();
        assert_eq!(missing(&e).0, first_tensor);
        says(
            &e,
            &d,
            &[
                &format!("missing tensor `{first_tensor}`"),
                "`bert.embeddings.LayerNorm.weight`",
                "another architecture",
            ],
        );
    }
    // The BERT directory itself: the LM loader refuses its config, naming the file and the type.
    let d = hf_dir(&dir, "bert", BERT_CONFIG, &src);
    let e = Model::load(&d).unwrap_err().to_string();
    let cfg = d.join("config.json").display().to_string();
    assert!(e.contains(&cfg) && e.contains("model_type `bert`"), "{e}");
}
