//! The proof for int8: a model trained for real on the built-in corpus (as `anvil train`
//! does, scaled down) loses at most 1% of held-out perplexity when every Linear, the head
//! included, runs int8, in both weight formats.

use anvil::corpus::{self, ASCII_VOCAB, Ascii};
use anvil::data::{Split, Tokens, Windows};
use anvil::kernels::qgemm::QFormat;
use anvil::models::{Config, Model};
use anvil::tokenizer::Tokenizer;
use anvil::train::{Decay, Schedule, TrainConfig, Trainer, default_groups, evaluate};
use std::sync::Arc;

/// The bound: int8 perplexity at most 1% above f32 perplexity.
const MAX_PPL_RISE: f64 = 0.01;

/// "Clearly below the unigram level": the trained model's held-out loss is at most this share of
/// the unigram entropy (a model that learnt nothing but character frequencies sits at 1.0).
const MAX_LOSS_VS_UNIGRAM: f64 = 0.6;

const SEED: u64 = 11;
const LINES: usize = 12_000;
const STEPS: u64 = 300;
const ROWS: usize = 8;
const SEQ: usize = 64;
const VAL_BATCHES: usize = 16;

fn config() -> Config {
    Config {
        vocab_size: ASCII_VOCAB,
        d_model: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 4,
        head_dim: 16,
        d_ff: 256,
        max_seq_len: SEQ,
        dropout: 0.0,
        ..Config::expert(ASCII_VOCAB)
    }
}

/// The entropy (nats) of the ids' unigram distribution.
fn unigram_entropy(ids: &[u32]) -> f64 {
    let mut counts = vec![0usize; ASCII_VOCAB];
    ids.iter().for_each(|&i| counts[i as usize] += 1);
    let n = ids.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

#[test]
fn int8_perplexity_of_a_trained_model_rises_by_at_most_one_percent() {
    let text = corpus::text(&corpus::generate(SEED, LINES));
    let ids = Ascii.encode(&text);
    let split = Split::new(ids.len(), 0.1).unwrap();
    let unigram = unigram_entropy(&ids[split.train.clone()]);
    let tokens = Arc::new(Tokens::Memory(ids));
    let mut train = Windows::new(Arc::clone(&tokens), split.train, ROWS, SEQ, SEED).unwrap();
    let val = Windows::new(tokens, split.validation, ROWS, SEQ, SEED + 1).unwrap();

    let mut model = Model::new(config(), SEED).unwrap();
    model.set_training(Some(SEED + 2));
    let groups = default_groups(&model, 3e-3, 0.1);
    let tc = TrainConfig {
        schedule: Schedule {
            warmup: 30,
            total: STEPS,
            decay: Decay::Cosine,
            min_ratio: 0.1,
        },
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(model, groups, tc).unwrap();
    for _ in 0..STEPS {
        trainer.step(&mut train).unwrap();
    }
    let mut model = trainer.model;
    model.graph().clear();
    let f32_eval = evaluate(&mut model, &mut val.clone(), VAL_BATCHES).unwrap();
    assert!(
        f32_eval.loss <= MAX_LOSS_VS_UNIGRAM * unigram,
        "the model did not learn: held-out loss {:.3} vs unigram entropy {unigram:.3}",
        f32_eval.loss
    );

    // Each format quantizes its own copy of the trained f32 weights.
    let dir = std::env::temp_dir().join(format!("anvil-qppl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trained.safetensors");
    model.save(&path).unwrap();
    for format in [QFormat::PerChannel, QFormat::Block32] {
        let mut q = Model::load(&path).unwrap();
        q.quantize_as(format).unwrap();
        assert_eq!(q.quant_format(), Some(format));
        let e = evaluate(&mut q, &mut val.clone(), VAL_BATCHES).unwrap();
        let rise = e.perplexity / f32_eval.perplexity - 1.0;
        eprintln!(
            "{format:?}: perplexity f32 {:.4} int8 {:.4} (rise {:+.3}%), loss {:.4} vs unigram {unigram:.4}, {} tokens",
            f32_eval.perplexity,
            e.perplexity,
            100.0 * rise,
            f32_eval.loss,
            e.tokens
        );
        assert!(e.perplexity.is_finite());
        assert_ne!(
            e.perplexity, f32_eval.perplexity,
            "{format:?}: int8 must differ at all"
        );
        assert!(
            rise <= MAX_PPL_RISE,
            "{format:?}: perplexity rises {:.3}%",
            100.0 * rise
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
