//! The tape itself: accumulation, parameters (trainable and frozen), no-grad mode, clearing,
//! the buffer pool, errors on bad input, and bit-identical results on 1 and 2 threads.

mod common;
mod gradcheck;

use anvil::autograd::{AttnConfig, CausalMask, Gelu, Graph, ParamId, Var};
use anvil::tensor::{Error, Tensor};
use gradcheck::tensor;

/// A small MLP block step: `sum(linear2(rmsnorm(linear1(x))))`; returns the loss value.
fn mlp_step(g: &mut Graph, ps: &[ParamId], x: &Tensor) -> f32 {
    let x = g.input(x, false);
    let [w1, b1, nw, w2] = [0, 1, 2, 3].map(|i| g.param(ps[i]).unwrap());
    let h = g.linear(x, w1, Some(b1)).unwrap();
    let h = g.rmsnorm(h, nw, 1e-6).unwrap();
    let y = g.linear(h, w2, None).unwrap();
    let loss = g.mean(y).unwrap();
    let l = g.value(loss).unwrap()[0];
    g.backward(loss).unwrap();
    l
}

fn mlp_params(g: &mut Graph, c: usize, ff: usize) -> Vec<ParamId> {
    vec![
        g.add_param("w1", &tensor(&[ff, c], 1), true),
        g.add_param("b1", &tensor(&[ff], 2), true),
        g.add_param("norm", &tensor(&[ff], 3), true),
        g.add_param("w2", &tensor(&[c, ff], 4), true),
    ]
}

/// A transformer-ish step touching the other kernels: embedding, layernorm, GELU, SwiGLU,
/// causal softmax, batched matmul, tied-weight logits and cross-entropy; returns the loss.
fn lm_step(g: &mut Graph, ps: &[ParamId], ids: &[u32], t: usize) -> f32 {
    let [emb, lw, lb, w_up, w_gate, w_down] = [0, 1, 2, 3, 4, 5].map(|i| g.param(ps[i]).unwrap());
    let rows = ids.len();
    let c = g.shape(emb).unwrap()[1];
    let x = g.embedding(emb, ids, &[rows / t, t]).unwrap();
    let h = g.layernorm(x, lw, lb, 1e-5).unwrap();
    // Self-attention scores with q = k = v = h (one head).
    let ht = g.transpose(h).unwrap();
    let scores = g.matmul(h, ht).unwrap();
    let scores = g.scale(scores, 1.0 / (c as f32).sqrt()).unwrap();
    let att = g.softmax_causal(scores, CausalMask::causal(t)).unwrap();
    let a = g.matmul(att, h).unwrap();
    let x = g.add(x, a).unwrap();
    let up = g.linear(x, w_up, None).unwrap();
    let gate = g.linear(x, w_gate, None).unwrap();
    let gate = g.gelu(gate, Gelu::Tanh).unwrap();
    let f = g.swiglu(gate, up).unwrap();
    let f = g.linear(f, w_down, None).unwrap();
    let x = g.add(x, f).unwrap();
    let logits = g.linear(x, emb, None).unwrap();
    let targets: Vec<u32> = ids.iter().map(|&i| (i * 7 + 3) % 512).collect();
    let loss = g.cross_entropy(logits, &targets, u32::MAX).unwrap();
    let l = g.value(loss).unwrap()[0];
    g.backward(loss).unwrap();
    l
}

fn lm_params(g: &mut Graph, v: usize, c: usize, ff: usize) -> Vec<ParamId> {
    vec![
        g.add_param("emb", &tensor(&[v, c], 21), true),
        g.add_param("ln_w", &tensor(&[c], 22), true),
        g.add_param("ln_b", &tensor(&[c], 23), true),
        g.add_param("up", &tensor(&[ff, c], 24), true),
        g.add_param("gate", &tensor(&[ff, c], 25), true),
        g.add_param("down", &tensor(&[c, ff], 26), true),
    ]
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn param_used_twice_sums_and_grads_accumulate_across_steps() {
    let mut g = Graph::new().unwrap();
    let p = g.add_param("p", &Tensor::from_vec(vec![1.0, -2.0], &[2]).unwrap(), true);
    // loss = sum(p * p) + sum(p): dp = 2p + 1.
    let step = |g: &mut Graph| {
        let (a, b) = (g.param(p).unwrap(), g.param(p).unwrap());
        let sq = g.mul(a, b).unwrap();
        let s = g.add(sq, a).unwrap();
        let loss = g.sum(s).unwrap();
        g.backward(loss).unwrap();
    };
    step(&mut g);
    assert_eq!(g.param_grad(p).unwrap().unwrap(), &[3.0, -3.0]);
    step(&mut g);
    assert_eq!(g.param_grad(p).unwrap().unwrap(), &[6.0, -6.0]);
    g.zero_grads();
    assert_eq!(g.param_grad(p).unwrap().unwrap(), &[0.0, 0.0]);
}

/// `zero_grads` only marks the gradients zero: they read as zeros, the next backward writes
/// them (the weight-gradient GEMMs with `beta = 0`, the embedding and norms onto zeroed
/// buffers), and the one after adds into them again, as onto a graph's first zeros.
#[test]
fn zeroed_gradients_read_as_zero_and_the_next_backward_overwrites_them() {
    let (v, c, ff, t) = (512, 16, 24, 8);
    let ids: Vec<u32> = (0..2 * t as u32).map(|i| (i * 37 + 5) % v as u32).collect();
    let x = tensor(&[10, 16], 7);
    let graph = || {
        let mut g = Graph::new().unwrap();
        let ps: Vec<ParamId> = lm_params(&mut g, v, c, ff)
            .into_iter()
            .chain(mlp_params(&mut g, 16, 12))
            .collect();
        (g, ps)
    };
    let grads = |g: &Graph, ps: &[ParamId]| -> Vec<Vec<f32>> {
        ps.iter()
            .map(|&p| g.param_grad(p).unwrap().unwrap().to_vec())
            .collect()
    };
    let run = |g: &mut Graph, ps: &[ParamId]| {
        lm_step(g, &ps[..6], &ids, t);
        mlp_step(g, &ps[6..], &x);
    };
    let (mut g, ps) = graph();
    run(&mut g, &ps);
    let once = grads(&g, &ps);
    assert!(once.iter().all(|gr| gr.iter().any(|&x| x != 0.0)));
    run(&mut g, &ps);
    let twice = grads(&g, &ps);
    assert_ne!(twice, once);

    let (mut g, ps) = graph();
    for _ in 0..3 {
        run(&mut g, &ps);
        g.zero_grads();
        assert!(grads(&g, &ps).iter().flatten().all(|&x| x == 0.0));
    }
    run(&mut g, &ps);
    assert_eq!(
        grads(&g, &ps),
        once,
        "a backward after zero_grads adds to stale values"
    );
    run(&mut g, &ps);
    assert_eq!(
        grads(&g, &ps),
        twice,
        "the second backward overwrites instead of adding"
    );
    // A zeroed gradient handed out for editing is zeroed first.
    g.zero_grad(ps[6]).unwrap();
    let w1 = g.param_grad_mut(ps[6]).unwrap().unwrap();
    assert!(w1.iter().all(|&x| x == 0.0));
    w1[0] = 1.0;
    assert_eq!(g.param_grad(ps[6]).unwrap().unwrap()[0], 1.0);
}

#[test]
fn param_gradient_equals_input_gradient() {
    // The same graph with w as a parameter and as a trainable input: identical bits.
    let (xt, wt, bt) = (tensor(&[6, 5], 30), tensor(&[4, 5], 31), tensor(&[4], 32));
    let mut g = Graph::new().unwrap();
    let (wp, bp) = (g.add_param("w", &wt, true), g.add_param("b", &bt, true));
    let x = g.input(&xt, false);
    let (w, b) = (g.param(wp).unwrap(), g.param(bp).unwrap());
    let y = g.linear(x, w, Some(b)).unwrap();
    let y = g.gelu(y, Gelu::Erf).unwrap();
    let loss = g.sum(y).unwrap();
    g.backward(loss).unwrap();
    let x = g.input(&xt, false);
    let (w, b) = (g.input(&wt, true), g.input(&bt, true));
    let y = g.linear(x, w, Some(b)).unwrap();
    let y = g.gelu(y, Gelu::Erf).unwrap();
    let loss = g.sum(y).unwrap();
    let grads = g.backward(loss).unwrap();
    assert_eq!(
        bits(g.param_grad(wp).unwrap().unwrap()),
        bits(grads.get(w).unwrap())
    );
    assert_eq!(
        bits(g.param_grad(bp).unwrap().unwrap()),
        bits(grads.get(b).unwrap())
    );
}

#[test]
fn frozen_param_gets_no_gradient() {
    let mut g = Graph::new().unwrap();
    let w = g.add_param("w", &tensor(&[3, 4], 5), false);
    let b = g.add_param("b", &tensor(&[3], 6), true);
    let x = g.input(&tensor(&[2, 4], 7), true);
    let (wv, bv) = (g.param(w).unwrap(), g.param(b).unwrap());
    let y = g.linear(x, wv, Some(bv)).unwrap();
    let loss = g.sum(y).unwrap();
    let grads = g.backward(loss).unwrap();
    assert_eq!(g.param_grad(w).unwrap(), None);
    assert_eq!(g.param_grad(b).unwrap().unwrap(), &[2.0, 2.0, 2.0]);
    assert!(grads.get(x).is_some(), "the input still gets its gradient");
    // Unfreezing gives it a gradient on the next step.
    g.set_requires_grad(w, true).unwrap();
    let x = g.input(&tensor(&[2, 4], 7), false);
    let wv = g.param(w).unwrap();
    let y = g.linear(x, wv, None).unwrap();
    let loss = g.sum(y).unwrap();
    g.backward(loss).unwrap();
    assert!(g.param_grad(w).unwrap().unwrap().iter().any(|&v| v != 0.0));
}

#[test]
fn all_frozen_records_nothing() {
    let mut g = Graph::new().unwrap();
    let w = g.add_param("w", &tensor(&[3, 4], 8), false);
    let x = g.input(&tensor(&[2, 4], 9), false);
    let wv = g.param(w).unwrap();
    let y = g.linear(x, wv, None).unwrap();
    assert_eq!(g.recorded_ops(), 0);
    let loss = g.sum(y).unwrap();
    assert!(g.backward(loss).unwrap().get(x).is_none());
}

#[test]
fn no_grad_records_nothing_and_saves_nothing() {
    let mut g = Graph::new().unwrap();
    let ps = mlp_params(&mut g, 8, 16);
    let ln_w = g.add_param("ln_w", &tensor(&[8], 10), true);
    let ln_b = g.add_param("ln_b", &tensor(&[8], 11), true);
    let (nodes, recorded, value) = g.no_grad(|g| {
        let x = g.input(&tensor(&[4, 8], 12), true);
        let [w1, b1, nw, w2] = [0, 1, 2, 3].map(|i| g.param(ps[i]).unwrap());
        let (lw, lb) = (g.param(ln_w).unwrap(), g.param(ln_b).unwrap());
        let x = g.layernorm(x, lw, lb, 1e-5).unwrap();
        let h = g.linear(x, w1, Some(b1)).unwrap();
        let h = g.rmsnorm(h, nw, 1e-6).unwrap();
        let y = g.linear(h, w2, None).unwrap();
        let loss = g.sum(y).unwrap();
        let v = g.value(loss).unwrap()[0];
        let (len, recorded) = (g.len(), g.recorded_ops());
        // Backward in no-grad mode finds nothing to do.
        let grads = g.backward(loss).unwrap();
        assert!(grads.get(x).is_none());
        (len, recorded, v)
    });
    assert!(nodes > 0 && value.is_finite());
    assert_eq!(recorded, 0);
    assert!(g.grad_enabled(), "no_grad restores recording");
    for p in ps {
        assert!(g.param_grad(p).unwrap().unwrap().iter().all(|&v| v == 0.0));
    }
}

#[test]
fn no_grad_values_can_be_released_as_they_die() {
    let mut g = Graph::new().unwrap();
    let w = g.add_param("w", &tensor(&[16, 16], 19), true);
    g.set_grad_enabled(false);
    let wv = g.param(w).unwrap();
    let mut x = g.input(&tensor(&[8, 16], 20), false);
    let before = g.pooled_bytes();
    for _ in 0..4 {
        let y = g.linear(x, wv, None).unwrap();
        g.release(x).unwrap();
        x = y;
    }
    // Each dead (8, 16) activation went back to the pool (and was reused by the next layer).
    assert!(g.pooled_bytes() > before);
    assert_eq!(g.shape(x).unwrap(), &[8, 16]);
    let dead = Var::clone(&x);
    g.release(dead).unwrap();
    assert!(matches!(
        g.value(dead),
        Err(Error::Shape { op: "value", .. })
    ));
    assert!(g.release(dead).is_err());
    g.set_grad_enabled(true);
    g.clear();
    // With a recorded op on the tape, nothing may be released.
    let wv = g.param(w).unwrap();
    let x = g.input(&tensor(&[8, 16], 20), false);
    let _y = g.linear(x, wv, None).unwrap();
    assert!(matches!(
        g.release(x),
        Err(Error::Shape { op: "release", .. })
    ));
}

#[test]
fn tape_is_cleared_and_buffers_reused() {
    let mut g = Graph::new().unwrap();
    let ps = mlp_params(&mut g, 16, 32);
    let x = tensor(&[8, 16], 13);
    mlp_step(&mut g, &ps, &x);
    assert!(g.is_empty(), "backward clears the tape");
    let pooled = g.pooled_bytes();
    assert!(pooled > 0, "buffers went back to the pool");
    for _ in 0..3 {
        mlp_step(&mut g, &ps, &x);
        assert_eq!(
            g.pooled_bytes(),
            pooled,
            "a repeated step allocates nothing new"
        );
    }
}

#[test]
fn stale_handles_and_pending_tape_are_refused() {
    let mut g = Graph::new().unwrap();
    let p = g.add_param("p", &tensor(&[2], 14), true);
    let x = g.input(&tensor(&[2], 15), true);
    let pv = g.param(p).unwrap();
    assert!(
        g.param_update(p).is_err(),
        "a recorded tape reads params in place"
    );
    let y = g.mul(x, pv).unwrap();
    let loss = g.sum(y).unwrap();
    g.backward(loss).unwrap();
    assert!(matches!(g.value(x), Err(Error::Shape { op: "value", .. })));
    assert!(g.add(x, x).is_err());
    let (v, grad) = g.param_update(p).unwrap();
    v.iter_mut().zip(grad).for_each(|(v, g)| *v -= 0.1 * g);
}

#[test]
fn user_errors_name_the_op_and_shapes() {
    let mut g = Graph::new().unwrap();
    let a = g.input(&tensor(&[2, 3], 16), true);
    let b = g.input(&tensor(&[4, 5], 17), true);
    let op = |r: Result<Var, Error>| match r {
        Err(Error::Shape { op, detail }) => (op, detail),
        other => panic!("expected a shape error, got {other:?}"),
    };
    let (name, detail) = op(g.matmul(a, b));
    assert_eq!(name, "matmul");
    assert!(
        detail.contains("[2, 3]") && detail.contains("[4, 5]"),
        "{detail}"
    );
    assert_eq!(op(g.add(a, b)).0, "add");
    assert_eq!(op(g.linear(a, b, None)).0, "linear");
    let w2 = g.input(&tensor(&[4, 3], 19), true);
    let (name, detail) = op(g.linear_grouped(a, &[w2], &[1]));
    assert_eq!(name, "linear_grouped");
    assert!(detail.contains("groups [1]"), "{detail}");
    assert!(op(g.linear_grouped(a, &[], &[])).1.contains("groups []"));
    let (_, detail) = op(g.linear_grouped(a, &[w2, b], &[1, 1]));
    assert!(
        detail.contains("(4, 3)") && detail.contains("[4, 5]"),
        "{detail}"
    );
    let (name, detail) = op(g.linear_in_out(a, b, None));
    assert_eq!(name, "linear_in_out");
    assert!(
        detail.contains("(3, OUT)") && detail.contains("[4, 5]"),
        "{detail}"
    );
    let w = g.input(&tensor(&[3, 4], 18), true);
    assert_eq!(op(g.linear_in_out(a, w, Some(a))).0, "linear_in_out");
    assert_eq!(op(g.embedding(b, &[0, 4], &[2])).0, "embedding");
    assert_eq!(op(g.embedding(b, &[0, 1], &[3])).0, "embedding");
    assert_eq!(op(g.narrow(a, 1, 2, 2)).0, "narrow");
    assert_eq!(op(g.narrow(a, 2, 0, 1)).0, "narrow");
    assert_eq!(op(g.reshape(a, &[5])).0, "reshape");
    assert_eq!(op(g.reshape(a, &[usize::MAX, 3])).0, "reshape");
    assert_eq!(op(g.embedding(b, &[0], &[usize::MAX, 2])).0, "embedding");
    assert_eq!(op(g.concat(&[a, b], 0)).0, "concat");
    assert_eq!(op(g.concat(&[], 0)).0, "concat");
    assert_eq!(op(g.layernorm(a, a, a, 1e-5)).0, "layernorm");
    assert_eq!(op(g.rmsnorm(a, b, 1e-5)).0, "rmsnorm");
    assert_eq!(op(g.add_bias(a, b)).0, "add_bias");
    assert_eq!(op(g.swiglu(a, b)).0, "swiglu");
    assert_eq!(op(g.cross_entropy(a, &[0], u32::MAX)).0, "cross_entropy");
    assert!(matches!(
        g.cross_entropy(a, &[0, 3], u32::MAX),
        Err(Error::Kernel(_))
    ));
    let s = g.sum(a).unwrap();
    assert_eq!(op(g.transpose(s)).0, "transpose");
    assert_eq!(op(g.softmax(s)).0, "softmax");
    let mut rng = anvil::autograd::Rng::new(1);
    assert_eq!(op(g.dropout(a, 1.0, &mut rng)).0, "dropout");
    assert!(matches!(
        g.backward(a),
        Err(Error::Shape { op: "backward", .. })
    ));
}

#[test]
fn bit_identical_on_one_and_two_threads() {
    // Large enough for the GEMM and the norm kernels to split work over threads.
    let (c, ff, rows) = (128, 512, 256);
    let x = tensor(&[rows, c], 18);
    let run = |threads: usize| {
        common::pool(threads).install(|| {
            let mut g = Graph::new().unwrap();
            let ps = mlp_params(&mut g, c, ff);
            let loss = mlp_step(&mut g, &ps, &x);
            let mut out = vec![loss.to_bits()];
            for p in ps {
                out.extend(bits(g.param_grad(p).unwrap().unwrap()));
            }
            out
        })
    };
    assert_eq!(run(1), run(2));
}

/// The tape's memory-bound passes split between threads from 64 Ki elements (`split`'s copies,
/// the add, gradient accumulation into fresh and used slots, `narrow`'s backward): the gradient
/// is exact, and the same bits on 1 and 2 threads.
#[test]
fn split_element_wise_passes_are_exact_on_one_and_two_threads() {
    // Each third of a row is 600 x 128 = 76,800 elements, above the 65,536 split threshold.
    let (rows, c) = (600, 128);
    let x = tensor(&[rows, 3 * c], 29);
    let run = |threads: usize| {
        common::pool(threads).install(|| {
            let mut g = Graph::new().unwrap();
            let p = g.add_param("x", &x, true);
            let xv = g.param(p).unwrap();
            // A node, not the parameter: its gradient starts as a fresh slot.
            let h = g.scale(xv, 1.0).unwrap();
            let parts = g.split(h, 1, &[c, c, c]).unwrap();
            let s = g.add(parts[0], parts[1]).unwrap();
            let m = g.mul(s, parts[2]).unwrap();
            let loss = g.sum(m).unwrap();
            g.backward(loss).unwrap();
            g.param_grad(p).unwrap().unwrap().to_vec()
        })
    };
    // d sum((q + k) * v) = (v, v, q + k), row by row.
    let want: Vec<f32> = x
        .as_slice()
        .chunks_exact(3 * c)
        .flat_map(|r| {
            let (q, kv) = r.split_at(c);
            let (k, v) = kv.split_at(c);
            let qk = q.iter().zip(k).map(|(a, b)| a + b);
            v.iter().chain(v).copied().chain(qk).collect::<Vec<_>>()
        })
        .collect();
    let one = run(1);
    assert_eq!(bits(&one), bits(&want));
    assert_eq!(bits(&run(2)), bits(&one));
}

#[test]
fn lm_step_bit_identical_on_one_and_two_threads() {
    let (v, c, ff, t) = (512, 128, 256, 64);
    let ids: Vec<u32> = (0..4 * t as u32)
        .map(|i| (i * 37 + 11) % v as u32)
        .collect();
    let run = |threads: usize| {
        common::pool(threads).install(|| {
            let mut g = Graph::new().unwrap();
            let ps = lm_params(&mut g, v, c, ff);
            let loss = lm_step(&mut g, &ps, &ids, t);
            assert!(loss.is_finite());
            let mut out = vec![loss.to_bits()];
            for p in ps {
                out.extend(bits(g.param_grad(p).unwrap().unwrap()));
            }
            out
        })
    };
    assert_eq!(run(1), run(2));
}

/// Attention composed from primitive graph ops, head by head:
/// `softmax_causal(scale q_h k_g^T + pad) v_g`, heads concatenated back into `(B, Tq, Hq*D)`.
/// The padding enters as an added `(B, Tq, Tk)` constant of 0 / -inf.
fn composed_attention(
    g: &mut Graph,
    [q, k, v]: [Var; 3],
    cfg: AttnConfig,
    pad: Option<&[bool]>,
) -> anvil::tensor::Result<Var> {
    let (qs, ks) = (g.shape(q)?.to_vec(), g.shape(k)?.to_vec());
    let (b, tq, tk) = (qs[0], qs[1], ks[1]);
    let d = qs[2] / cfg.heads;
    let split = |g: &mut Graph, x: Var, t: usize, h: usize, heads: usize| {
        let x4 = g.reshape(x, &[b, t, heads, d])?;
        let xh = g.narrow(x4, 2, h, 1)?;
        g.reshape(xh, &[b, t, d])
    };
    let bias = pad.map(|m| {
        let vals = (0..b * tq * tk)
            .map(|i| {
                if m[i / (tq * tk) * tk + i % tk] {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        g.input(&Tensor::from_vec(vals, &[b, tq, tk]).unwrap(), false)
    });
    let mut heads = Vec::new();
    for h in 0..cfg.heads {
        let kvh = h / (cfg.heads / cfg.kv_heads);
        let qh = split(g, q, tq, h, cfg.heads)?;
        let kh = split(g, k, tk, kvh, cfg.kv_heads)?;
        let vh = split(g, v, tk, kvh, cfg.kv_heads)?;
        let kt = g.transpose(kh)?;
        let s = g.matmul(qh, kt)?;
        let mut s = g.scale(s, cfg.spec.scale)?;
        if let Some(bias) = bias {
            s = g.add(s, bias)?;
        }
        let p = if cfg.spec.causal {
            let mask = CausalMask {
                block_rows: tq,
                offset: tk - tq,
                window: cfg.spec.window,
            };
            g.softmax_causal(s, mask)?
        } else {
            g.softmax(s)?
        };
        let o = g.matmul(p, vh)?;
        heads.push(g.reshape(o, &[b, tq, 1, d])?);
    }
    let o = g.concat(&heads, 2)?;
    g.reshape(o, &[b, tq, cfg.heads * d])
}

/// Both paths are f32; they differ in summation order (blocked online softmax vs whole rows,
/// the GEMM vs the attention tiles): a few ulp of the largest magnitudes involved.
const FUSED_VS_COMPOSED_RTOL: f32 = 2e-5;

fn assert_close_rel(what: &str, a: &[f32], b: &[f32]) {
    let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= FUSED_VS_COMPOSED_RTOL * scale,
            "{what}[{i}]: fused {x} vs composed {y}"
        );
    }
}

#[test]
fn fused_attention_equals_the_composition_forward_and_backward() {
    let pad: Vec<bool> = (0..2 * 70).map(|i| i % 70 >= 3 && i != 100).collect();
    let cases = [
        ("causal mha", 70, 70, 4, 4, 16, true, None, false),
        (
            "gqa window kv-offset",
            40,
            70,
            6,
            2,
            8,
            true,
            Some(20),
            false,
        ),
        ("gqa causal padded", 70, 70, 4, 2, 5, true, None, true),
        ("bidirectional padded", 70, 70, 2, 1, 12, false, None, true),
    ];
    for (name, tq, tk, hq, hkv, d, causal, window, padded) in cases {
        let cfg = AttnConfig {
            heads: hq,
            kv_heads: hkv,
            spec: anvil::autograd::AttnSpec {
                scale: 1.0 / (d as f32).sqrt(),
                causal,
                window,
            },
        };
        let mask = padded.then_some(pad.as_slice());
        let ts = [
            tensor(&[2, tq, hq * d], 60),
            tensor(&[2, tk, hkv * d], 61),
            tensor(&[2, tk, hkv * d], 62),
        ];
        let probe = tensor(&[2 * tq * hq * d], 63);
        let run = |fused: bool| {
            let mut g = Graph::new().unwrap();
            let vars = ts.clone().map(|t| g.input(&t, true));
            let y = if fused {
                g.attention(vars[0], vars[1], vars[2], cfg, mask).unwrap()
            } else {
                composed_attention(&mut g, vars, cfg, mask).unwrap()
            };
            let out = g.value(y).unwrap().to_vec();
            let flat = g.reshape(y, &[2 * tq * hq * d]).unwrap();
            let p = g.input(&probe, false);
            let prod = g.mul(flat, p).unwrap();
            let loss = g.sum(prod).unwrap();
            let grads = g.backward(loss).unwrap();
            let gs: Vec<Vec<f32>> = vars
                .iter()
                .map(|v| grads.get(*v).unwrap().to_vec())
                .collect();
            (out, gs)
        };
        let (fo, fg) = run(true);
        let (co, cg) = run(false);
        assert_close_rel(&format!("{name} out"), &fo, &co);
        for (i, (a, b)) in fg.iter().zip(&cg).enumerate() {
            assert_close_rel(&format!("{name} d{}", ["q", "k", "v"][i]), a, b);
        }
    }
}

#[test]
fn attention_and_rope_bit_identical_on_one_and_two_threads() {
    let (b, t, h, d) = (2, 96, 4, 32);
    let x = tensor(&[b, t, 3 * h * d], 70);
    let pos: Vec<u32> = (0..t as u32).collect();
    let run = |threads: usize| {
        common::pool(threads).install(|| {
            let mut g = Graph::new().unwrap();
            let xv = g.input(&x, true);
            let parts = g.split(xv, 2, &[h * d, h * d, h * d]).unwrap();
            let q = g.rope(parts[0], d, &pos, 10000.0).unwrap();
            let k = g.rope(parts[1], d, &pos, 10000.0).unwrap();
            let cfg = AttnConfig::causal(h, d);
            let y = g.attention(q, k, parts[2], cfg, None).unwrap();
            let sq = g.mul(y, y).unwrap();
            let loss = g.sum(sq).unwrap();
            let mut out = bits(g.value(y).unwrap());
            let grads = g.backward(loss).unwrap();
            out.extend(bits(grads.get(xv).unwrap()));
            out
        })
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn attention_and_rope_shape_errors_name_the_op() {
    let mut g = Graph::new().unwrap();
    let q = g.input(&tensor(&[2, 3, 8], 1), true);
    let k = g.input(&tensor(&[2, 4, 4], 2), true);
    let flat = g.input(&tensor(&[8], 3), true);
    let op = |r: Result<Var, Error>| match r {
        Err(Error::Shape { op, detail }) => (op, detail),
        other => panic!("expected a shape error, got {other:?}"),
    };
    let cfg = AttnConfig {
        kv_heads: 1,
        ..AttnConfig::causal(2, 4)
    };
    assert!(g.attention(q, k, k, cfg, None).is_ok());
    let (name, detail) = op(g.attention(flat, k, k, cfg, None));
    assert_eq!(name, "attention");
    assert!(
        detail.contains("[8]") && detail.contains("[2, 4, 4]"),
        "{detail}"
    );
    assert_eq!(op(g.attention(q, q, k, cfg, None)).0, "attention");
    assert_eq!(op(g.attention(k, q, q, cfg, None)).0, "attention"); // Tq > Tk
    let three = AttnConfig { kv_heads: 3, ..cfg };
    assert_eq!(op(g.attention(q, k, k, three, None)).0, "attention");
    let odd = AttnConfig { heads: 3, ..cfg };
    assert_eq!(op(g.attention(q, k, k, odd, None)).0, "attention");
    assert!(matches!(
        g.attention(q, k, k, cfg, Some(&[true; 3])),
        Err(Error::Kernel(_))
    ));
    assert_eq!(op(g.rope(q, 3, &[0, 1, 2], 1e4)).0, "rope");
    assert_eq!(op(g.rope(flat, 4, &[0], 1e4)).0, "rope");
    assert!(matches!(g.rope(q, 4, &[0, 1], 1e4), Err(Error::Kernel(_))));
}

/// The bench's GPT-2 block on the graph and its twin issuing the same kernel calls by hand
/// compute the same loss and parameter gradients (so the bench's tape-overhead figure compares
/// like with like). Both are f32 with the same kernels; they differ in summation order (the
/// residual and LayerNorm gradients of x1 added in the other order, GEMMs adding into zeroed
/// slots vs overwriting), and those rounding differences travel through two LayerNorm and
/// three linear backward steps: tolerance 1e-4 of each tensor's largest entry, while a wrong
/// call would be off by O(1) of it.
#[test]
fn gpt2_block_on_the_graph_equals_its_raw_kernel_twin() {
    const RTOL: f32 = 1e-4;
    let k = anvil::kernels::kernels().unwrap();
    let mut g = anvil::bench::Gpt2Block::new(k, 2, 5).unwrap();
    let mut r = anvil::bench::RawBlock::new(k, 2, 5);
    let (lg, lr) = (g.step().unwrap(), r.step());
    assert!((lg - lr).abs() <= RTOL * lg.abs(), "loss {lg} vs {lr}");
    for i in 0..12 {
        let (a, b) = (g.param_grad(i).unwrap(), r.param_grad(i).unwrap());
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "parameter {i} got no gradient");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= RTOL * scale, "param {i}: {x} vs {y}");
        }
    }
}

/// A no-grad Linear on a parameter reads the weight's packed copy (made on first use): the same
/// bits as the recording path, on both weight layouts, and a fresh copy after every write of the
/// weight (`param_update`, `replace_param`).
#[test]
fn no_grad_linear_on_a_packed_weight_follows_updates() {
    let mut g = Graph::new().unwrap();
    // 20 rows: above the GEMM's skinny rows, so the packed copy is used.
    let xt = tensor(&[4, 5, 24], 90);
    let w = g.add_param("w", &tensor(&[40, 24], 91), true);
    let wio = g.add_param("wio", &tensor(&[24, 40], 92), true);
    let b = g.add_param("b", &tensor(&[40], 93), true);
    let run = |g: &mut Graph, in_out: bool| -> Vec<f32> {
        let x = g.input(&xt, false);
        let (wv, bv) = (
            g.param(if in_out { wio } else { w }).unwrap(),
            g.param(b).unwrap(),
        );
        let y = if in_out {
            g.linear_in_out(x, wv, Some(bv))
        } else {
            g.linear(x, wv, Some(bv))
        };
        let v = g.value(y.unwrap()).unwrap().to_vec();
        g.clear();
        v
    };
    for in_out in [false, true] {
        let recorded = run(&mut g, in_out);
        let packed = g.no_grad(|g| run(g, in_out));
        let again = g.no_grad(|g| run(g, in_out));
        assert_eq!(bits(&recorded), bits(&packed), "in_out {in_out}");
        assert_eq!(bits(&packed), bits(&again), "in_out {in_out}: reuse");
        // Write the weight: the next no-grad Linear must see the new values.
        let p = if in_out { wio } else { w };
        g.param_update(p)
            .unwrap()
            .0
            .iter_mut()
            .for_each(|v| *v += 0.5);
        let recorded = run(&mut g, in_out);
        let packed = g.no_grad(|g| run(g, in_out));
        assert_ne!(
            bits(&recorded),
            bits(&again),
            "in_out {in_out}: the update changed y"
        );
        assert_eq!(
            bits(&recorded),
            bits(&packed),
            "in_out {in_out}: after param_update"
        );
    }
    // Replacing a parameter's value drops its packed copy as well.
    g.replace_param(w, tensor(&[40, 24], 94)).unwrap();
    let recorded = run(&mut g, false);
    let packed = g.no_grad(|g| run(g, false));
    assert_eq!(bits(&recorded), bits(&packed), "after replace_param");
}
