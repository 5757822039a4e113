//! Gradient checks of every autograd op: central finite differences, an input used twice, and
//! backward twice on a fresh graph giving identical bits (all inside `common::check`).

mod gradcheck;

use anvil::autograd::{CausalMask, Gelu, IGNORE_INDEX, Rng};
use gradcheck::{check, tensor};

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
