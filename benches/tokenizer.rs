//! Tokenizer throughput in bytes/s: BPE training (word counting plus merges), BPE encode with a cold and a
//! warm word cache, and WordPiece encode (the MiniLM vocabulary when `ANVIL_MINILM_DIR` is set).

use anvil::tokenizer::{Bpe, Tokenizer, WordPiece};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

/// A deterministic English-like text of about `bytes` bytes (xorshift over a fixed word list).
fn corpus(bytes: usize) -> String {
    let words = [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "was",
        "that",
        "for",
        "on",
        "with",
        "as",
        "by",
        "tokenizer",
        "merges",
        "byte",
        "pairs",
        "model",
        "tensor",
        "engine",
        "naïve",
        "café",
        "2024",
        "3.14",
        "don't",
        "it's",
        "Hello",
        "World",
        "running",
        "quickly",
        "unbelievable",
        "—",
        "(",
        ")",
        ",",
        ".",
        "\n",
    ];
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = String::with_capacity(bytes + 16);
    while out.len() < bytes {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        // Squaring skews the pick toward the front of the list, roughly like word frequencies.
        let r = (s % 1000) as usize;
        out.push_str(words[r * r * words.len() / 1_000_000]);
        out.push(' ');
    }
    out
}

fn bench_bpe(c: &mut Criterion) {
    let text = corpus(1 << 20);
    let lines: Vec<&str> = text.lines().collect();
    let mut g = c.benchmark_group("bpe");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("train_1MiB_v2256", |b| {
        b.iter(|| {
            Bpe::train(black_box(&lines), 2256, 2, &["<|endoftext|>"]).map(|t| t.vocab_size())
        })
    });
    let bpe = Bpe::train(&lines, 2256, 2, &["<|endoftext|>"]).expect("training the bench corpus");
    g.bench_function("encode_1MiB_cold", |b| {
        b.iter(|| bpe.clone().encode(black_box(&text)).len())
    });
    let _ = bpe.encode(&text);
    g.bench_function("encode_1MiB_warm", |b| {
        b.iter(|| bpe.encode(black_box(&text)).len())
    });
    g.finish();
}

fn bench_wordpiece(c: &mut Criterion) {
    let text = corpus(1 << 20);
    let wp = match std::env::var_os("ANVIL_MINILM_DIR") {
        Some(dir) => WordPiece::from_vocab_file(std::path::Path::new(&dir).join("vocab.txt")),
        None => {
            let vocab = [
                "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "of", "and", "to", "##s", "##ing",
                "model",
            ];
            WordPiece::new(
                vocab.iter().map(|s| s.to_string()).collect(),
                "[UNK]",
                Default::default(),
            )
        }
    };
    let Ok(wp) = wp else { return };
    let mut g = c.benchmark_group("wordpiece");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("encode_1MiB", |b| {
        b.iter(|| wp.encode(black_box(&text)).len())
    });
    g.finish();
}

criterion_group!(benches, bench_bpe, bench_wordpiece);
criterion_main!(benches);
