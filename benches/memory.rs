//! Context building on a 10,000-message generated conversation (default budgets 2000/8000/4000, context
//! budget 4096, last 10 messages): keyword (BM25) scoring, and hybrid scoring with the hashed-trigram
//! test embedder and a warm embedding cache. The seeds' target is 20-30 ms per build.

use anvil::memory::{Config, ContextOptions, HashEmbedder, Memory, eval};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

const MESSAGES: usize = 10_000;

fn bench(c: &mut Criterion) {
    let conv = &eval::conversations(1, MESSAGES, 2024)[0];
    let mut m = Memory::new(Config::default()).expect("default config is valid");
    for msg in &conv.messages {
        m.add(msg);
    }
    let opts = ContextOptions::default();
    let e = HashEmbedder::default();
    let mut g = c.benchmark_group("memory_context_10k");
    let mut i = 0;
    g.bench_function("keywords", |b| {
        b.iter(|| {
            i = (i + 1) % conv.questions.len();
            black_box(
                m.build_context(&conv.questions[i].0, &opts, None)
                    .expect("keyword scoring cannot fail"),
            )
        })
    });
    g.bench_function("hybrid_hash_embedder", |b| {
        b.iter(|| {
            i = (i + 1) % conv.questions.len();
            black_box(
                m.build_context(&conv.questions[i].0, &opts, Some(&e))
                    .expect("hash embedder cannot fail"),
            )
        })
    });
    g.finish();
    let mut adds = c.benchmark_group("memory_add");
    adds.bench_function("add_10k_messages", |b| {
        b.iter(|| {
            let mut m = Memory::new(Config::default()).expect("default config is valid");
            for msg in &conv.messages {
                m.add(msg);
            }
            black_box(m.messages())
        })
    });
    adds.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
