//! Gradient checks of every autograd op: central finite differences, an input used twice, and
//! backward twice on a fresh graph giving identical bits (all inside `common::check`).

mod common;
mod gradcheck;

use anvil::autograd::{AttnConfig, AttnSpec, CausalMask, Gelu, IGNORE_INDEX, Rng};
use anvil::autograd::{Graph, Var};
use gradcheck::{analytic, check, tensor};

#[test]
fn matmul_2d_flattened_and_batched() {
    check(
        "matmul 2d",
        &[tensor(&[3, 4], 1), tensor(&[4, 5], 2)],
        |g, v| g.matmul(v[0], v[1]),
    );
    // Leading dims of a flattened into M against a shared b.
    let ins = [tensor(&[2, 3, 4], 3), tensor(&[4, 5], 4)];
    check("matmul shared b", &ins, |g, v| g.matmul(v[0], v[1]));
    // One product per leading index (sgemm_batched).
    let ins = [tensor(&[2, 3, 4], 5), tensor(&[2, 4, 5], 6)];
    check("matmul batched", &ins, |g, v| g.matmul(v[0], v[1]));
}

#[test]
fn matmul_input_used_twice() {
    check("matmul x x", &[tensor(&[4, 4], 7)], |g, v| {
        g.matmul(v[0], v[0])
    });
    let ins = [tensor(&[3, 4, 4], 8)];
    check("matmul batched x x", &ins, |g, v| g.matmul(v[0], v[0]));
}

#[test]
fn linear_with_and_without_bias() {
    let ins = [tensor(&[2, 3, 5], 9), tensor(&[4, 5], 10), tensor(&[4], 11)];
    check("linear bias", &ins, |g, v| g.linear(v[0], v[1], Some(v[2])));
    check("linear no bias", &ins[..2], |g, v| {
        g.linear(v[0], v[1], None)
    });
    // x used as both input and weight.
    check("linear x x", &[tensor(&[4, 4], 12)], |g, v| {
        g.linear(v[0], v[0], None)
    });
}

#[test]
fn linear_in_out_with_and_without_bias() {
    // w stored (IN, OUT), as GPT-2's Conv1D.
    let ins = [
        tensor(&[2, 3, 5], 60),
        tensor(&[5, 4], 61),
        tensor(&[4], 62),
    ];
    check("linear_in_out bias", &ins, |g, v| {
        g.linear_in_out(v[0], v[1], Some(v[2]))
    });
    check("linear_in_out no bias", &ins[..2], |g, v| {
        g.linear_in_out(v[0], v[1], None)
    });
    // x used as both input and weight, and b as a row of x.
    check("linear_in_out x x", &[tensor(&[4, 4], 63)], |g, v| {
        let b = g.narrow(v[0], 0, 1, 1)?;
        let b = g.reshape(b, &[4])?;
        g.linear_in_out(v[0], v[0], Some(b))
    });
}

#[test]
fn add_mul_scale() {
    let ins = [tensor(&[3, 5], 13), tensor(&[3, 5], 14)];
    check("add", &ins, |g, v| g.add(v[0], v[1]));
    check("mul", &ins, |g, v| g.mul(v[0], v[1]));
    check("scale", &ins[..1], |g, v| g.scale(v[0], -2.5));
    check("add x x", &ins[..1], |g, v| g.add(v[0], v[0]));
    check("mul x x", &ins[..1], |g, v| g.mul(v[0], v[0]));
    check("scale then add to self", &ins[..1], |g, v| {
        let s = g.scale(v[0], 3.0)?;
        g.add(s, v[0])
    });
}

#[test]
fn add_bias_row() {
    let ins = [tensor(&[2, 3, 4], 15), tensor(&[4], 16)];
    check("add_bias", &ins, |g, v| g.add_bias(v[0], v[1]));
    check("add_bias b twice", &[tensor(&[1, 4], 17)], |g, v| {
        let b = g.reshape(v[0], &[4])?;
        g.add_bias(v[0], b)
    });
}

#[test]
fn embedding_scatter_add() {
    // Ids repeat, so rows of the table are used several times.
    let ids = [2u32, 0, 2, 4, 2, 1];
    check("embedding", &[tensor(&[5, 3], 18)], |g, v| {
        g.embedding(v[0], &ids, &[2, 3])
    });
    check("embedding table twice", &[tensor(&[3, 3], 19)], |g, v| {
        let e = g.embedding(v[0], &[1, 1, 0], &[3])?;
        g.add(e, v[0])
    });
}

#[test]
fn layernorm_all_inputs() {
    let ins = [tensor(&[3, 2, 6], 20), tensor(&[6], 21), tensor(&[6], 22)];
    check("layernorm", &ins, |g, v| {
        g.layernorm(v[0], v[1], v[2], 1e-5)
    });
    check("layernorm x twice", &ins, |g, v| {
        let y = g.layernorm(v[0], v[1], v[2], 1e-5)?;
        g.mul(y, v[0])
    });
}

#[test]
fn rmsnorm_all_inputs() {
    let ins = [tensor(&[4, 7], 23), tensor(&[7], 24)];
    check("rmsnorm", &ins, |g, v| g.rmsnorm(v[0], v[1], 1e-6));
    check("rmsnorm x twice", &ins, |g, v| {
        let y = g.rmsnorm(v[0], v[1], 1e-6)?;
        g.add(y, v[0])
    });
}

#[test]
fn sum_and_mean() {
    let ins = [tensor(&[3, 4], 25)];
    check("sum", &ins, |g, v| g.sum(v[0]));
    check("mean", &ins, |g, v| g.mean(v[0]));
    check("sum x*x", &ins, |g, v| {
        let sq = g.mul(v[0], v[0])?;
        g.sum(sq)
    });
    check("mean + sum of x", &ins, |g, v| {
        let (m, s) = (g.mean(v[0])?, g.sum(v[0])?);
        g.add(m, s)
    });
}

#[test]
fn reshape_narrow_split_concat_transpose() {
    let x = [tensor(&[2, 3, 4], 26)];
    check("reshape", &x, |g, v| g.reshape(v[0], &[6, 4]));
    check("narrow axis 1", &x, |g, v| g.narrow(v[0], 1, 1, 2));
    check("narrow last axis", &x, |g, v| g.narrow(v[0], 2, 1, 3));
    // Two overlapping narrows of one input: the first backward writes a fresh slot (zeros
    // outside its part), the second adds into it.
    check("overlapping narrows", &x, |g, v| {
        let a = g.narrow(v[0], 2, 1, 2)?;
        let b = g.narrow(v[0], 2, 0, 2)?;
        g.mul(a, b)
    });
    check("narrow of a reshaped x, added to x", &x, |g, v| {
        let r = g.reshape(v[0], &[6, 4])?;
        let n = g.narrow(r, 0, 0, 6)?;
        let n = g.reshape(n, &[2, 3, 4])?;
        g.add(n, v[0])
    });
    check("split and re-add", &x, |g, v| {
        let p = g.split(v[0], 2, &[2, 2])?;
        g.add(p[0], p[1])
    });
    check("concat x x", &x, |g, v| g.concat(&[v[0], v[0]], 1));
    let pair = [tensor(&[2, 3, 4], 27), tensor(&[2, 3, 2], 28)];
    check("concat last axis", &pair, |g, v| g.concat(&[v[0], v[1]], 2));
    check("transpose", &x, |g, v| g.transpose(v[0]));
    check(
        "transpose + x on square",
        &[tensor(&[2, 3, 3], 29)],
        |g, v| {
            let t = g.transpose(v[0])?;
            g.add(t, v[0])
        },
    );
}

#[test]
fn dropout_seeded() {
    let x = [tensor(&[4, 8], 30)];
    check("dropout", &x, |g, v| g.dropout(v[0], 0.3, &mut Rng::new(7)));
    check("dropout x twice", &x, |g, v| {
        let d = g.dropout(v[0], 0.5, &mut Rng::new(8))?;
        g.mul(d, v[0])
    });
}

#[test]
fn softmax_plain_and_causal() {
    let x = [tensor(&[2, 3, 5], 31)];
    check("softmax", &x, |g, v| g.softmax(v[0]));
    check("softmax x twice", &x, |g, v| {
        let s = g.softmax(v[0])?;
        g.mul(s, v[0])
    });
    let sq = [tensor(&[2, 4, 4], 32)];
    check("softmax causal", &sq, |g, v| {
        g.softmax_causal(v[0], CausalMask::causal(4))
    });
    // A KV-cache offset with a sliding window of 2 keys.
    let m = CausalMask {
        block_rows: 3,
        offset: 2,
        window: Some(2),
    };
    let x = [tensor(&[2, 3, 5], 33)];
    check("softmax sliding window", &x, |g, v| {
        g.softmax_causal(v[0], m)
    });
}

#[test]
fn cross_entropy_with_ignore_index() {
    let logits = [tensor(&[2, 3, 6], 34)];
    let targets = [5u32, IGNORE_INDEX, 0, 2, 2, IGNORE_INDEX];
    check("cross_entropy", &logits, |g, v| {
        // Logits scaled to O(3) so the softmax is far from uniform.
        let l = g.scale(v[0], 3.0)?;
        g.cross_entropy(l, &targets, IGNORE_INDEX)
    });
    check("cross_entropy logits twice", &logits, |g, v| {
        let ce = g.cross_entropy(v[0], &targets, IGNORE_INDEX)?;
        let s = g.sum(v[0])?;
        g.mul(ce, s)
    });
    // Every row ignored: loss 0 and no gradient.
    check(
        "cross_entropy all ignored",
        &[tensor(&[2, 3], 35)],
        |g, v| g.cross_entropy(v[0], &[7, 7], 7),
    );
}

#[test]
fn gelu_silu_swiglu() {
    let x = [tensor(&[3, 7], 36), tensor(&[3, 7], 37)];
    // Scaled to cover both tails of the curves.
    check("gelu tanh", &x[..1], |g, v| {
        let s = g.scale(v[0], 3.0)?;
        g.gelu(s, Gelu::Tanh)
    });
    check("gelu erf", &x[..1], |g, v| {
        let s = g.scale(v[0], 3.0)?;
        g.gelu(s, Gelu::Erf)
    });
    check("gelu x twice", &x[..1], |g, v| {
        let y = g.gelu(v[0], Gelu::Erf)?;
        g.mul(y, v[0])
    });
    check("silu", &x[..1], |g, v| {
        let s = g.scale(v[0], 3.0)?;
        g.silu(s)
    });
    check("silu x twice", &x[..1], |g, v| {
        let y = g.silu(v[0])?;
        g.add(y, v[0])
    });
    check("swiglu", &x, |g, v| g.swiglu(v[0], v[1]));
    check("swiglu x x", &x[..1], |g, v| g.swiglu(v[0], v[0]));
}

/// Forward values against naive f64 references: finite differences only prove the backward
/// matches the forward, so a consistently wrong forward (a missing transpose, a misplaced bias)
/// is caught here instead. Tolerance: f32 sums of at most 8 O(1) products.
const FWD_TOL: f64 = 1e-5;

fn close(name: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (f64::from(g) - w).abs() <= FWD_TOL * (1.0 + w.abs());
        assert!(ok, "{name}: element {i}: {g} vs {w}");
    }
}

fn f64s(t: &anvil::tensor::Tensor) -> Vec<f64> {
    t.as_slice().iter().map(|&v| f64::from(v)).collect()
}

#[test]
fn forward_values_match_f64_references() {
    let mut g = anvil::autograd::Graph::new().unwrap();
    let (xt, wt, bt) = (
        tensor(&[2, 3, 5], 40),
        tensor(&[4, 5], 41),
        tensor(&[4], 42),
    );
    let (x, w, b) = (f64s(&xt), f64s(&wt), f64s(&bt));
    let (xv, wv, bv) = (
        g.input(&xt, false),
        g.input(&wt, false),
        g.input(&bt, false),
    );
    // linear: y[r, o] = sum_i x[r, i] w[o, i] + b[o].
    let y = g.linear(xv, wv, Some(bv)).unwrap();
    let want: Vec<f64> = (0..6 * 4)
        .map(|j| {
            (0..5)
                .map(|i| x[j / 4 * 5 + i] * w[j % 4 * 5 + i])
                .sum::<f64>()
                + b[j % 4]
        })
        .collect();
    assert_eq!(g.shape(y).unwrap(), &[2, 3, 4]);
    close("linear", g.value(y).unwrap(), &want);
    // linear_in_out: y[r, o] = sum_i x[r, i] w[i, o] + b[o], w stored (IN, OUT).
    let wio = tensor(&[5, 4], 44);
    let (w2, wiov) = (f64s(&wio), g.input(&wio, false));
    let y = g.linear_in_out(xv, wiov, Some(bv)).unwrap();
    let want: Vec<f64> = (0..6 * 4)
        .map(|j| {
            (0..5)
                .map(|i| x[j / 4 * 5 + i] * w2[i * 4 + j % 4])
                .sum::<f64>()
                + b[j % 4]
        })
        .collect();
    assert_eq!(g.shape(y).unwrap(), &[2, 3, 4]);
    close("linear_in_out", g.value(y).unwrap(), &want);
    // Batched matmul: (2, 3, 5) x (2, 5, 3).
    let mt = tensor(&[2, 5, 3], 43);
    let m = f64s(&mt);
    let mv = g.input(&mt, false);
    let y = g.matmul(xv, mv).unwrap();
    let want: Vec<f64> = (0..2 * 3 * 3)
        .map(|j| {
            let (bi, r, c) = (j / 9, j / 3 % 3, j % 3);
            (0..5)
                .map(|i| x[bi * 15 + r * 5 + i] * m[bi * 15 + i * 3 + c])
                .sum()
        })
        .collect();
    close("matmul batched", g.value(y).unwrap(), &want);
    // transpose: y[b, c, r] = x[b, r, c].
    let y = g.transpose(xv).unwrap();
    let want: Vec<f64> = (0..30)
        .map(|j| x[j / 15 * 15 + j % 3 * 5 + j / 3 % 5])
        .collect();
    close("transpose", g.value(y).unwrap(), &want);
    // narrow axis 2 columns 1..4, then concat with the rest along axis 2 rebuilds x.
    let mid = g.narrow(xv, 2, 1, 3).unwrap();
    let (lo, hi) = (
        g.narrow(xv, 2, 0, 1).unwrap(),
        g.narrow(xv, 2, 4, 1).unwrap(),
    );
    let back = g.concat(&[lo, mid, hi], 2).unwrap();
    close("narrow + concat", g.value(back).unwrap(), &x);
    // embedding and add_bias.
    let e = g.embedding(wv, &[3, 0, 3], &[3]).unwrap();
    let want: Vec<f64> = [3, 0, 3]
        .iter()
        .flat_map(|&r| w[r * 5..r * 5 + 5].to_vec())
        .collect();
    close("embedding", g.value(e).unwrap(), &want);
    let ct = tensor(&[5], 44);
    let (cb, cv) = (f64s(&ct), g.input(&ct, false));
    let y = g.add_bias(xv, cv).unwrap();
    let want: Vec<f64> = (0..30).map(|j| x[j] + cb[j % 5]).collect();
    close("add_bias", g.value(y).unwrap(), &want);
    // cross-entropy: mean over counted rows of lse - x[t].
    let logits = g.reshape(xv, &[6, 5]).unwrap();
    let targets = [1u32, 4, IGNORE_INDEX, 0, 2, 2];
    let l = g.cross_entropy(logits, &targets, IGNORE_INDEX).unwrap();
    let mut sum = 0.0;
    for (r, &t) in targets
        .iter()
        .enumerate()
        .filter(|(_, t)| **t != IGNORE_INDEX)
    {
        let row = &x[r * 5..r * 5 + 5];
        let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
        sum += lse - row[t as usize];
    }
    close("cross_entropy", g.value(l).unwrap(), &[sum / 5.0]);
    // Causal softmax over (2, 3, 5) blocks of 3 query rows, square mask: row q keeps 0..=q.
    let y = g.softmax_causal(xv, CausalMask::causal(3)).unwrap();
    let mut want = vec![0.0; 30];
    for r in 0..6 {
        let kept = r % 3 + 1;
        let row = &x[r * 5..r * 5 + kept];
        let z: f64 = row.iter().map(|v| v.exp()).sum();
        for c in 0..kept {
            want[r * 5 + c] = row[c].exp() / z;
        }
    }
    close("softmax causal", g.value(y).unwrap(), &want);
}

fn attn_cfg(
    heads: usize,
    kv_heads: usize,
    d: usize,
    causal: bool,
    window: Option<usize>,
) -> AttnConfig {
    AttnConfig {
        heads,
        kv_heads,
        spec: AttnSpec {
            scale: 1.0 / (d as f32).sqrt(),
            causal,
            window,
        },
    }
}

#[test]
fn attention_causal_multi_head() {
    // q, k, v: (B 2, T 5, H 2 * D 3).
    let ins = [
        tensor(&[2, 5, 6], 40),
        tensor(&[2, 5, 6], 41),
        tensor(&[2, 5, 6], 42),
    ];
    let cfg = attn_cfg(2, 2, 3, true, None);
    check("attention causal", &ins, |g, v| {
        g.attention(v[0], v[1], v[2], cfg, None)
    });
    let cfg = attn_cfg(2, 2, 3, false, None);
    check("attention bidirectional", &ins, |g, v| {
        g.attention(v[0], v[1], v[2], cfg, None)
    });
}

#[test]
fn attention_gqa_window_padding_and_kv_offset() {
    // 4 query heads on 2 kv heads of size 2; 3 queries at the end of 6 keys; window 3; batch 1
    // has its first two keys padded, batch 0 none.
    let ins = [
        tensor(&[2, 3, 8], 43),
        tensor(&[2, 6, 4], 44),
        tensor(&[2, 6, 4], 45),
    ];
    let cfg = attn_cfg(4, 2, 2, true, Some(3));
    let mask: Vec<bool> = (0..12).map(|i| !(6..8).contains(&i)).collect();
    check("attention gqa window pad", &ins, |g, v| {
        g.attention(v[0], v[1], v[2], cfg, Some(&mask))
    });
    // A fully padded batch: its outputs are 0 and no gradient flows from them.
    let mask: Vec<bool> = (0..12).map(|i| i >= 6).collect();
    let cfg = attn_cfg(4, 1, 2, false, None);
    let ins = [
        tensor(&[2, 3, 8], 46),
        tensor(&[2, 6, 2], 47),
        tensor(&[2, 6, 2], 48),
    ];
    check("attention fully padded", &ins, |g, v| {
        g.attention(v[0], v[1], v[2], cfg, Some(&mask))
    });
}

#[test]
fn attention_input_used_twice() {
    let ins = [tensor(&[2, 4, 6], 49)];
    let cfg = attn_cfg(2, 2, 3, true, None);
    check("attention x x x", &ins, |g, v| {
        g.attention(v[0], v[0], v[0], cfg, None)
    });
    let ins = [tensor(&[1, 4, 4], 50), tensor(&[1, 4, 4], 51)];
    let cfg = attn_cfg(2, 1, 2, true, Some(2));
    let ins2 = [ins[0].clone(), tensor(&[1, 4, 2], 51)];
    check("attention q k k", &ins2, |g, v| {
        g.attention(v[0], v[1], v[1], cfg, None)
    });
    let cfg = attn_cfg(2, 2, 2, true, None);
    check("attention then mul by q", &ins, |g, v| {
        let y = g.attention(v[0], v[1], v[1], cfg, None)?;
        g.mul(y, v[0])
    });
}

#[test]
fn rope_shared_and_per_token_positions() {
    // x: (B 2, T 3, H 2 * D 4).
    let ins = [tensor(&[2, 3, 8], 52)];
    check("rope", &ins, |g, v| g.rope(v[0], 4, &[0, 1, 2], 10000.0));
    check("rope per token", &ins, |g, v| {
        g.rope(v[0], 4, &[5, 6, 7, 100, 101, 102], 500000.0)
    });
    check("rope then mul by x", &ins, |g, v| {
        let y = g.rope(v[0], 2, &[3, 9, 27], 10000.0)?;
        g.mul(y, v[0])
    });
}

#[test]
fn linear_grouped_groups_of_rows_through_their_weights() {
    let ins = [
        tensor(&[7, 3], 40),
        tensor(&[4, 3], 41),
        tensor(&[4, 3], 42),
        tensor(&[4, 3], 43),
    ];
    // An empty group in the middle.
    check("linear_grouped", &ins, |g, v| {
        g.linear_grouped(v[0], &v[1..], &[3, 0, 4])
    });
    // One weight in two groups (its gradient sums both), and x used twice.
    check(
        "linear_grouped weight twice",
        &[tensor(&[5, 2], 44), tensor(&[2, 2], 45)],
        |g, v| {
            let y = g.linear_grouped(v[0], &[v[1], v[1]], &[2, 3])?;
            g.mul(y, v[0])
        },
    );
}

#[test]
fn linear_grouped_has_the_bits_of_one_linear_per_group() {
    let ins = [
        tensor(&[70, 24], 46),
        tensor(&[40, 24], 47),
        tensor(&[40, 24], 48),
    ];
    let groups = [33, 37];
    let grouped = |g: &mut Graph, v: &[Var]| g.linear_grouped(v[0], &v[1..], &groups);
    let one_by_one = |g: &mut Graph, v: &[Var]| {
        let a = g.narrow(v[0], 0, 0, groups[0])?;
        let b = g.narrow(v[0], 0, groups[0], groups[1])?;
        let ya = g.linear(a, v[1], None)?;
        let yb = g.linear(b, v[2], None)?;
        g.concat(&[ya, yb], 0)
    };
    let bits = |gs: Vec<Vec<f32>>| -> Vec<Vec<u32>> {
        gs.iter()
            .map(|v| v.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    for threads in [1, 2] {
        common::pool(threads).install(|| {
            let mut g = Graph::new().unwrap();
            let run = |g: &mut Graph, grouped: bool| {
                let v: Vec<Var> = ins.iter().map(|t| g.input(t, false)).collect();
                let y = if grouped {
                    g.linear_grouped(v[0], &v[1..], &groups).unwrap()
                } else {
                    one_by_one(g, &v).unwrap()
                };
                let out: Vec<u32> = g.value(y).unwrap().iter().map(|x| x.to_bits()).collect();
                g.clear();
                out
            };
            assert_eq!(run(&mut g, true), run(&mut g, false), "{threads} threads");
            assert_eq!(
                bits(analytic(&mut g, &ins, &grouped)),
                bits(analytic(&mut g, &ins, &one_by_one)),
                "gradients on {threads} threads"
            );
        });
    }
}

/// A Linear's backward runs its two products side by side on two threads and one after the
/// other (each split between threads) on one and three: the input, weight and bias gradients
/// have the same bits on all three, written into fresh slots by the first backward and added
/// into by the second. A Linear whose input is its own weight (one buffer for both gradients)
/// takes the two products in turn, and its gradient is `2 * colsum` per backward.
#[test]
fn linear_backward_bit_identical_on_one_two_and_three_threads() {
    // Sums of 128 products of values in [-1, 1): f32 rounding, far below this.
    const SUM_TOL: f32 = 1e-4;
    let (rows, c, out) = (256, 128, 192);
    let sq_t = tensor(&[c, c], 43);
    let run = |threads: usize| {
        common::pool(threads).install(|| {
            let mut g = Graph::new().unwrap();
            let w = g.add_param("w", &tensor(&[out, c], 40), true);
            let b = g.add_param("b", &tensor(&[out], 41), true);
            let x = g.add_param("x", &tensor(&[rows, c], 42), true);
            let sq = g.add_param("sq", &sq_t, true);
            let mut grads = Vec::new();
            for _ in 0..2 {
                let [wv, bv, xv, sqv] = [w, b, x, sq].map(|p| g.param(p).unwrap());
                // A node between, used again after the Linear: the backward reaches its
                // square first, so the Linear adds its input gradient into a used node slot.
                let h = g.scale(xv, 1.0).unwrap();
                let y = g.linear(h, wv, Some(bv)).unwrap();
                let y = g.gelu(y, Gelu::Erf).unwrap();
                let hh = g.mul(h, h).unwrap();
                let z = g.linear(sqv, sqv, None).unwrap();
                let ls = [y, hh, z].map(|v| g.sum(v).unwrap());
                let l = g.add(ls[0], ls[1]).unwrap();
                let loss = g.add(l, ls[2]).unwrap();
                g.backward(loss).unwrap();
                grads.push(
                    [w, b, x, sq]
                        .map(|p| {
                            g.param_grad(p)
                                .unwrap()
                                .unwrap()
                                .iter()
                                .map(|x| x.to_bits())
                                .collect::<Vec<u32>>()
                        })
                        .concat(),
                );
            }
            (grads, g.param_grad(sq).unwrap().unwrap().to_vec())
        })
    };
    let (one, sq_grad) = run(1);
    assert_ne!(one[0], one[1], "the second backward adds");
    for threads in [2, 3] {
        assert_eq!(run(threads).0, one, "{threads} threads");
    }
    // d sum(S S^T) / dS[i][j] = 2 sum_k S[k][j], twice over two backwards.
    for (i, &gv) in sq_grad.iter().enumerate() {
        let want: f32 = 4.0 * (0..c).map(|k| sq_t.as_slice()[k * c + i % c]).sum::<f32>();
        assert!(
            (gv - want).abs() <= SUM_TOL * (1.0 + want.abs()),
            "sq[{i}]: {gv} vs {want}"
        );
    }
}
