//! One forward + backward of a pre-LN GPT-2 block (d 768, 12 heads, MLP 3072, GELU-tanh,
//! causal attention, loss `mean(y)`) at B 4 and T 64 / 256: on the autograd graph
//! (`graph`), and as the same kernel calls on preallocated buffers (`no_tape`); the difference
//! is the tape's overhead. The block and its raw twin live in `src/bench/block.rs`; PyTorch's
//! figure comes from `benches/torch_block.py` (`anvil bench block --torch PYTHON` runs both,
//! stepping them in turn). Runs on the global rayon pool; set RAYON_NUM_THREADS=2 to match.

use anvil::bench::{BLOCK_CONFIGS, Gpt2Block, RawBlock};
use anvil::kernels::kernels;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

fn block(c: &mut Criterion) {
    let k = kernels().expect("ANVIL_ISA names a tier this CPU has");
    let mut group = c.benchmark_group("gpt2_block");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for (b, t) in BLOCK_CONFIGS {
        group.throughput(Throughput::Elements((b * t) as u64));
        let mut g = Gpt2Block::new(k, b, t).expect("fixed block shapes");
        group.bench_function(format!("graph/B{b}xT{t}"), |bench| {
            bench.iter(|| black_box(g.step().expect("fixed block shapes")))
        });
        let mut r = RawBlock::new(k, b, t);
        group.bench_function(format!("no_tape/B{b}xT{t}"), |bench| {
            bench.iter(|| black_box(r.step()))
        });
    }
    group.finish();
}

criterion_group!(benches, block);
criterion_main!(benches);
