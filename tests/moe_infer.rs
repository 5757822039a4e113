//! The mixture's decode fast path (no ops recorded, at most 8 tokens: src/nn/moe_infer.rs)
//! against the graph path it replaces, bit for bit: every kernel tier, 1 to 9 tokens, top-1 and
//! top-2, raw and renormalised weights, capacity dropping, and 1, 2 and 3 threads on experts
//! large enough to be split between threads. And the same for an attention's separate query,
//! key and value projections run in one region.

mod common;

use anvil::autograd::{Graph, Rng};
use anvil::kernels::Kernels;
use anvil::nn::{Builder, Moe, MoeStats, RandomInit, Routing};
use anvil::tensor::Tensor;

/// d with a tail after whole vectors; 132 x 1000 weights (528 KB) are split between threads.
const D: usize = 132;
const FF: usize = 1000;
const E: usize = 4;

fn layer(kern: Kernels, routing: Routing) -> (Graph, Moe) {
    let mut g = Graph::with_kernels(kern);
    let mut names = Vec::new();
    let mut src = RandomInit::new(7);
    let moe = {
        let mut b = Builder::new(&mut g, &mut src, &mut names);
        Moe::mixtral(&mut b, "moe", D, FF, E, routing).unwrap()
    };
    (g, moe)
}

/// The layer's output bits, statistics and tape length for `n` tokens, ops recorded or not.
fn forward(g: &mut Graph, moe: &Moe, n: usize, record: bool) -> (Vec<u32>, MoeStats, usize) {
    let mut r = Rng::new(n as u64);
    let x: Vec<f32> = (0..n * D).map(|_| 2.0 * r.next_f32() - 1.0).collect();
    let was = g.grad_enabled();
    g.set_grad_enabled(record);
    let x = g.input(&Tensor::from_vec(x, &[n, D]).unwrap(), false);
    let o = moe.forward(g, x, None).unwrap();
    let bits = g.value(o.y).unwrap().iter().map(|v| v.to_bits()).collect();
    let len = g.len();
    g.clear();
    g.set_grad_enabled(was);
    (bits, o.stats, len)
}

#[test]
fn fast_path_equals_the_graph_path_bit_for_bit() {
    let routings = [
        Routing::top_k(2),
        Routing::top_k(1),
        Routing {
            renormalize: false,
            ..Routing::top_k(2)
        },
        Routing {
            capacity_factor: Some(0.5),
            ..Routing::top_k(2)
        },
    ];
    for kern in Kernels::available().unwrap() {
        let isa = kern.isa();
        for routing in routings {
            let (mut g, moe) = layer(kern, routing);
            for n in 1..=9 {
                let (want, stats, graph_len) = forward(&mut g, &moe, n, true);
                for threads in [1, 2, 3] {
                    let (got, got_stats, len) =
                        common::pool(threads).install(|| forward(&mut g, &moe, n, false));
                    let what = format!("{isa:?} {routing:?} {n} tokens {threads} threads");
                    assert_eq!(got, want, "{what}: output");
                    assert_eq!(got_stats, stats, "{what}: statistics");
                    // The fast path leaves fewer nodes on the tape: it ran (up to 8 tokens).
                    assert_eq!(
                        len < graph_len,
                        n <= 8,
                        "{what}: {len} vs {graph_len} nodes"
                    );
                }
            }
        }
    }
}

/// An attention's separate query, key and value projections, run in one parallel region when
/// nothing is recorded and there are at most 8 rows (`linears_no_grad`), against the three
/// `Linear::forward`s of a recorded forward, bit for bit: every tier, 1 to 9 rows (9 takes the
/// recorded path either way), grouped-query heads with RoPE, on 1 and 2 threads, projections
/// large enough (528 KB and up) to be split between threads.
#[test]
fn separate_qkv_in_one_region_equals_three_linears_bit_for_bit() {
    use anvil::nn::{Attention, AttentionSpec};
    let spec = AttentionSpec {
        n_heads: 8,
        n_kv_heads: 2,
        head_dim: 64,
        rope_theta: Some(10000.0),
        window: None,
        causal: true,
    };
    let d = 1000;
    for kern in Kernels::available().unwrap() {
        let isa = kern.isa();
        let mut g = Graph::with_kernels(kern);
        let mut names = Vec::new();
        let mut src = RandomInit::new(11);
        let attn = {
            let mut b = Builder::new(&mut g, &mut src, &mut names);
            Attention::llama(&mut b, "attn", d, spec).unwrap()
        };
        for threads in [1, 2] {
            for t in 1..=9 {
                let mut r = Rng::new(t as u64);
                let x: Vec<f32> = (0..t * d).map(|_| 2.0 * r.next_f32() - 1.0).collect();
                let x = Tensor::from_vec(x, &[1, t, d]).unwrap();
                let mut run = |record: bool| {
                    common::pool(threads).install(|| {
                        g.set_grad_enabled(record);
                        let xv = g.input(&x, false);
                        let y = attn.forward(&mut g, xv, None).unwrap();
                        let bits: Vec<u32> =
                            g.value(y).unwrap().iter().map(|v| v.to_bits()).collect();
                        g.clear();
                        bits
                    })
                };
                let (recorded, fast) = (run(true), run(false));
                assert_eq!(
                    recorded, fast,
                    "{isa:?} {t} rows, {threads} threads: fast path differs"
                );
            }
        }
        g.set_grad_enabled(true);
    }
}
