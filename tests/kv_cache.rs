//! The key/value cache: logits from a cached prefill and token-by-token decode equal a full
//! recomputation at every step, for every architecture (the sliding-window ring included), with
//! rows of different lengths decoded together.

mod common;

use anvil::io::safetensors::SafeTensors;
use anvil::models::{Config, Model};
use std::path::PathBuf;

/// Max |diff| between cached and recomputed logits. Both run the same f32 kernels; the cached
/// path sums attention over a different key blocking (one query row), so results differ by a
/// few ulps of the logits (~1e-7 here), far inside this bound.
const CACHE_ATOL: f32 = 1e-5;

fn fixtures() -> PathBuf {
    match std::env::var_os("ANVIL_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"),
    }
}

fn fixture_ids(arch: &str) -> (Vec<u32>, usize) {
    let f = SafeTensors::open(fixtures().join(arch).join("expected.safetensors")).unwrap();
    let b = f.info("input_ids").unwrap().shape[0];
    let ids = f
        .i64s("input_ids")
        .unwrap()
        .into_iter()
        .map(|i| i as u32)
        .collect();
    (ids, b)
}

/// Full-sequence logits of each row, `(T, V)` flattened per row.
fn full_logits(m: &mut Model, ids: &[u32], b: usize) -> Vec<Vec<f32>> {
    let out = m.forward(ids, b, None).unwrap();
    let v = m.graph().value(out.logits).unwrap().to_vec();
    m.graph().clear();
    v.chunks_exact(v.len() / b).map(<[f32]>::to_vec).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Prefill row `r` with its first `prompt[r]` tokens, then decode all rows together one token
/// at a time (rows that are done sit out), comparing against the full forward.
fn check(name: &str, m: &mut Model, ids: &[u32], b: usize, prompt: &[usize]) {
    let t = ids.len() / b;
    let v = m.config().vocab_size;
    let want = full_logits(m, ids, b);
    let mut cache = m.new_cache(b, None);
    let mut last_cache = m.new_cache(b, None);
    let mut worst = 0.0f32;
    for r in 0..b {
        let p = prompt[r];
        let row = &ids[r * t..r * t + p];
        // The last position's logits alone (the head run on that position only).
        let l = m.forward_cached_last(row, &[r], &mut last_cache).unwrap();
        assert_eq!(m.graph().shape(l).unwrap(), [1, 1, v], "{name}");
        let got = m.graph().value(l).unwrap().to_vec();
        m.graph().clear();
        let d = max_diff(&got, &want[r][(p - 1) * v..p * v]);
        assert!(
            d <= CACHE_ATOL,
            "{name}: row {r} last of a prefill of {p}: {d}"
        );
        let l = m.forward_cached(row, &[r], &mut cache).unwrap();
        let got = m.graph().value(l).unwrap().to_vec();
        m.graph().clear();
        let d = max_diff(&got, &want[r][..p * v]);
        worst = worst.max(d);
        assert!(d <= CACHE_ATOL, "{name}: row {r} prefill of {p}: {d}");
    }
    loop {
        let rows: Vec<usize> = (0..b).filter(|&r| cache.seen(r) < t).collect();
        if rows.is_empty() {
            break;
        }
        let next: Vec<u32> = rows.iter().map(|&r| ids[r * t + cache.seen(r)]).collect();
        let pos: Vec<usize> = rows.iter().map(|&r| cache.seen(r)).collect();
        let l = m.forward_cached(&next, &rows, &mut cache).unwrap();
        let got = m.graph().value(l).unwrap().to_vec();
        m.graph().clear();
        for (i, (&r, &p)) in rows.iter().zip(&pos).enumerate() {
            let d = max_diff(&got[i * v..(i + 1) * v], &want[r][p * v..(p + 1) * v]);
            worst = worst.max(d);
            assert!(d <= CACHE_ATOL, "{name}: row {r} position {p}: {d}");
        }
    }
    println!("{name}: cached vs full max|diff| {worst:.2e}");
}

#[test]
fn cached_decode_equals_full_forward_for_every_architecture() {
    for arch in ["gpt2", "llama", "mistral", "mixtral"] {
        let mut m = Model::load(fixtures().join(arch)).unwrap();
        let (ids, b) = fixture_ids(arch);
        let t = ids.len() / b;
        // Different prompt lengths per row, one of them a single token.
        let prompt: Vec<usize> = (0..b).map(|r| [1, t / 2 + 1, 3][r % 3].min(t)).collect();
        check(arch, &mut m, &ids, b, &prompt);
    }
}

#[test]
fn sliding_window_ring_stays_bounded_and_exact() {
    let mut m = Model::load(fixtures().join("mistral")).unwrap();
    let w = m
        .config()
        .sliding_window
        .expect("mistral fixture has a window");
    let (ids, b) = fixture_ids("mistral");
    let t = ids.len() / b;
    let cache = m.new_cache(b, None);
    assert!(
        cache.is_ring() && cache.capacity() == w,
        "window {w} < context"
    );
    // The cache holds `w` positions however long the context.
    let long = m.new_cache(b, Some(m.config().max_seq_len));
    assert_eq!(long.bytes(), cache.bytes());
    // A prompt longer than the window, then decode past it.
    let prompt = vec![(w + 3).min(t); b];
    check("mistral ring", &mut m, &ids, b, &prompt);
}

#[test]
fn expert_model_cached_decode() {
    let c = Config {
        vocab_size: 61,
        d_model: 32,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 4,
        head_dim: 8,
        d_ff: 48,
        max_seq_len: 24,
        ..Config::expert(61)
    };
    let mut m = Model::new(c, 4).unwrap();
    let ids: Vec<u32> = (0..2 * 20).map(|i| (i * 13 % 61) as u32).collect();
    check("expert", &mut m, &ids, 2, &[4, 1]);
}

#[test]
fn cache_refuses_overflow_and_bad_rows() {
    let mut m = Model::load(fixtures().join("gpt2")).unwrap();
    let mut cache = m.new_cache(1, Some(4));
    let msg = |r: Result<anvil::autograd::Var, anvil::models::Error>| r.unwrap_err().to_string();
    let e = msg(m.forward_cached(&[1, 2, 3, 4, 5], &[0], &mut cache));
    assert!(e.contains("exceed the context length 4"), "{e}");
    assert!(msg(m.forward_cached(&[1], &[1], &mut cache)).contains("cache row 1 of 1"));
    assert!(msg(m.forward_cached(&[1, 2], &[0, 0], &mut cache)).contains("given twice"));
    assert!(msg(m.forward_cached(&[1, 2, 3], &[0, 0], &mut cache)).contains("do not split"));
    // Nothing was consumed by the refused calls.
    assert_eq!(cache.seen(0), 0);
    m.forward_cached(&[1, 2, 3, 4], &[0], &mut cache).unwrap();
    assert!(msg(m.forward_cached(&[1], &[0], &mut cache)).contains("exceed"));
    cache.reset(0);
    m.forward_cached(&[1], &[0], &mut cache).unwrap();
}

/// A prefill of several rows at once that keeps only each row's last logits.
#[test]
fn batched_prefill_of_last_logits() {
    for arch in ["gpt2", "mixtral"] {
        let mut m = Model::load(fixtures().join(arch)).unwrap();
        let (ids, b) = fixture_ids(arch);
        let (t, v) = (ids.len() / b, m.config().vocab_size);
        let want = full_logits(&mut m, &ids, b);
        let mut cache = m.new_cache(b, None);
        let rows: Vec<usize> = (0..b).collect();
        let l = m.forward_cached_last(&ids, &rows, &mut cache).unwrap();
        assert_eq!(m.graph().shape(l).unwrap(), [b, 1, v], "{arch}");
        let got = m.graph().value(l).unwrap().to_vec();
        m.graph().clear();
        for r in 0..b {
            let d = max_diff(&got[r * v..(r + 1) * v], &want[r][(t - 1) * v..t * v]);
            assert!(d <= CACHE_ATOL, "{arch}: row {r}: {d}");
        }
        assert!((0..b).all(|r| cache.seen(r) == t), "{arch}: cache advanced");
    }
}

/// The decode bench's tiny GPT and its mixture, cut to two layers: weights large enough for
/// huge pages (the 6 MB embedding) and for GEMVs split along k between threads (the 1.8 and
/// 2.4 MB projections). Cached logits equal the full forward, and greedy decoding gives the
/// same tokens on 1 and 2 threads.
#[test]
fn decode_with_split_gemvs_and_huge_pages_is_exact_on_any_thread_count() {
    use anvil::bench::decode::decode_models;
    use anvil::generate::{GenerateConfig, Sampling, generate};
    for dm in decode_models()
        .into_iter()
        .filter(|d| d.name.starts_with("tiny"))
    {
        let cfg = Config {
            n_layers: 2,
            max_seq_len: 48,
            ..dm.config
        };
        let mut m = Model::new(cfg, 3).unwrap();
        let embed = &m.params()[0];
        let storage = format!(
            "{:?}",
            m.graph_ref().param_tensor(embed.1).unwrap().storage()
        );
        assert!(storage.contains("huge pages"), "{}: {storage}", embed.0);
        let ids: Vec<u32> = (0..40).map(|i| (i * 2654435761u64 % 4096) as u32).collect();
        check(dm.name, &mut m, &ids, 2, &[3, 11]);
        let gen_cfg = GenerateConfig {
            sampling: Sampling::default(),
            max_new_tokens: 12,
            ..GenerateConfig::default()
        };
        let mut greedy = |threads| {
            common::pool(threads).install(|| {
                generate(&mut m, &[ids[..7].to_vec()], &gen_cfg, None, |_| {})
                    .unwrap()
                    .0[0]
                    .tokens
                    .clone()
            })
        };
        let (one, two) = (greedy(1), greedy(2));
        assert_eq!(one.len(), 12, "{}", dm.name);
        assert_eq!(one, two, "{}: 1 and 2 threads", dm.name);
    }
}

/// `Model::prepare_decode` lays GPT-2's `Conv1D` weights out `(out, in)`: a full forward keeps its
/// bits, cached decode (whose sums change order) stays within [`CACHE_ATOL`] of it; saving writes
/// the checkpoint layout back bit for bit; training refuses it.
#[test]
fn decode_layout_keeps_logits_checkpoint_and_refuses_training() {
    let dir = fixtures().join("gpt2");
    let (ids, b) = fixture_ids("gpt2");
    let t = ids.len() / b;
    let mut plain = Model::load(&dir).unwrap();
    let want = full_logits(&mut plain, &ids, b);
    let mut m = Model::load(&dir).unwrap();
    m.prepare_decode().unwrap();
    let got = full_logits(&mut m, &ids, b);
    // More than the skinny path's 8 rows: both layouts pack the same B, so the same bits.
    assert!(ids.len() > 8, "the fixture's forward takes the packed path");
    assert_eq!(got, want, "full forward, prepared vs as loaded");
    let prompt: Vec<usize> = (0..b).map(|r| [1, t / 2 + 1, 3][r % 3].min(t)).collect();
    check("gpt2 decode layout", &mut m, &ids, b, &prompt);

    let tmp = std::env::temp_dir().join(format!("anvil-layout-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (a, p) = (
        tmp.join("plain.safetensors"),
        tmp.join("prepared.safetensors"),
    );
    plain.save(&a).unwrap();
    m.save(&p).unwrap();
    let same = std::fs::read(&a).unwrap() == std::fs::read(&p).unwrap();
    std::fs::remove_dir_all(&tmp).unwrap();
    assert!(
        same,
        "a prepared model's checkpoint differs from the model's as loaded"
    );

    let groups = anvil::train::default_groups(&m, 1e-3, 0.0);
    let err = anvil::train::Trainer::new(m, groups, anvil::train::TrainConfig::default())
        .err()
        .expect("a trainer of a decode-prepared model");
    assert!(err.to_string().contains("prepare_decode"), "{err}");

    // A model without Conv1D weights is left as it is: every parameter still trainable.
    let mut llama = Model::load(fixtures().join("llama")).unwrap();
    let trainable = |m: &Model| -> Vec<Option<bool>> {
        let g = m.graph_ref();
        m.params()
            .iter()
            .map(|(_, p)| g.requires_grad(*p))
            .collect()
    };
    let before = trainable(&llama);
    assert!(before.iter().all(|t| *t == Some(true)), "{before:?}");
    llama.prepare_decode().unwrap();
    assert_eq!(
        trainable(&llama),
        before,
        "prepare_decode froze a LLaMA model"
    );
    let groups = anvil::train::default_groups(&llama, 1e-3, 0.0);
    assert!(
        anvil::train::Trainer::new(llama, groups, anvil::train::TrainConfig::default()).is_ok(),
        "a trainer of a LLaMA model after prepare_decode"
    );
}
