//! The `rows` bench family: row kernels on the shapes our models use, forward and backward.
//!
//! Bytes are counted as `benches/torch_rows.py` counts them for PyTorch (f32 values read plus
//! written by the op's definition), so that the two GB/s figures compare speeds directly; our
//! backward kernels also read the gradient they add into, which is not counted.

use anvil_kernels::Kernels;
use anvil_kernels::adamw::AdamW;
use anvil_kernels::gelu::Gelu;

/// One row-kernel bench: a closure owning its buffers, and the bytes one call moves.
pub struct RowBench {
    pub name: &'static str,
    pub shape: String,
    pub bytes: f64,
    pub run: Box<dyn FnMut() + Send>,
}

/// Deterministic values in [-2, 2).
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32 ^ seed).wrapping_mul(2654435761);
            (h >> 8) as f32 / (1u32 << 22) as f32 - 2.0
        })
        .collect()
}

const F32: f64 = 4.0;

/// The row benches, each a closure that panics only on a bug in this file (the shapes are fixed).
pub fn row_benches(kern: Kernels) -> Vec<RowBench> {
    let mut v = Vec::new();
    softmax(kern, &mut v);
    gelu(kern, &mut v);
    cross_entropy(kern, &mut v);
    let (r, c) = (4096usize, 768usize);
    let shape = format!("{r}x{c}");
    let rc = (r * c) as f64;
    {
        let (x, w, b) = (values(r * c, 1), values(c, 2), values(c, 3));
        let (mut y, mut mean, mut rstd) = (vec![0.0; r * c], vec![0.0; r], vec![0.0; r]);
        v.push(RowBench {
            name: "layernorm_fwd",
            shape: shape.clone(),
            bytes: (2.0 * rc + 2.0 * c as f64 + 2.0 * r as f64) * F32,
            run: Box::new(move || {
                kern.layernorm_fwd(&x, &w, &b, &mut y, &mut mean, &mut rstd, r, c, 1e-5)
                    .expect("layernorm_fwd bench shapes");
            }),
        });
    }
    {
        let (x, w, dy) = (values(r * c, 1), values(c, 2), values(r * c, 4));
        let (mut y, mut mean, mut rstd) = (vec![0.0; r * c], vec![0.0; r], vec![0.0; r]);
        kern.layernorm_fwd(&x, &w, &w, &mut y, &mut mean, &mut rstd, r, c, 1e-5)
            .expect("layernorm_fwd bench shapes");
        let (mut dx, mut dw, mut db) = (vec![0.0; r * c], vec![0.0; c], vec![0.0; c]);
        v.push(RowBench {
            name: "layernorm_bwd",
            shape: shape.clone(),
            bytes: (3.0 * rc + 3.0 * c as f64 + 2.0 * r as f64) * F32,
            run: Box::new(move || {
                kern.layernorm_bwd(&x, &w, &mean, &rstd, &dy, &mut dx, &mut dw, &mut db, r, c)
                    .expect("layernorm_bwd bench shapes");
            }),
        });
    }
    {
        let (x, w) = (values(r * c, 1), values(c, 2));
        let (mut y, mut rstd) = (vec![0.0; r * c], vec![0.0; r]);
        v.push(RowBench {
            name: "rmsnorm_fwd",
            shape: shape.clone(),
            bytes: (2.0 * rc + c as f64 + r as f64) * F32,
            run: Box::new(move || {
                kern.rmsnorm_fwd(&x, &w, &mut y, &mut rstd, r, c, 1e-6)
                    .expect("rmsnorm_fwd bench shapes");
            }),
        });
    }
    {
        let (x, w, dy) = (values(r * c, 1), values(c, 2), values(r * c, 4));
        let (mut y, mut rstd) = (vec![0.0; r * c], vec![0.0; r]);
        kern.rmsnorm_fwd(&x, &w, &mut y, &mut rstd, r, c, 1e-6)
            .expect("rmsnorm_fwd bench shapes");
        let (mut dx, mut dw) = (vec![0.0; r * c], vec![0.0; c]);
        v.push(RowBench {
            name: "rmsnorm_bwd",
            shape,
            bytes: (3.0 * rc + 2.0 * c as f64 + r as f64) * F32,
            run: Box::new(move || {
                kern.rmsnorm_bwd(&x, &w, &rstd, &dy, &mut dx, &mut dw, r, c)
                    .expect("rmsnorm_bwd bench shapes");
            }),
        });
    }
    {
        let n = 10_000_000usize;
        let (mut p, g) = (values(n, 5), values(n, 6));
        let (mut m, mut s) = (vec![0.0; n], vec![0.0; n]);
        let h = AdamW::default();
        let mut t = 0u64;
        v.push(RowBench {
            name: "adamw",
            shape: format!("{n}"),
            // Reads param, grad, m, v; writes param, m, v.
            bytes: 7.0 * n as f64 * F32,
            run: Box::new(move || {
                t += 1;
                kern.adamw(&mut p, &g, &mut m, &mut s, &h, t)
                    .expect("adamw bench shapes");
            }),
        });
    }
    v
}

fn softmax(kern: Kernels, v: &mut Vec<RowBench>) {
    let (r, c) = (49152usize, 256usize);
    let rc = (r * c) as f64;
    let x = values(r * c, 1);
    let mut y = vec![0.0; r * c];
    kern.softmax_fwd(&x, &mut y, r, c)
        .expect("softmax bench shapes");
    let (y0, dy) = (y.clone(), values(r * c, 2));
    let mut dx = vec![0.0; r * c];
    v.push(RowBench {
        name: "softmax_fwd",
        shape: format!("{r}x{c}"),
        bytes: 2.0 * rc * F32,
        run: Box::new(move || {
            kern.softmax_fwd(&x, &mut y, r, c)
                .expect("softmax bench shapes")
        }),
    });
    v.push(RowBench {
        name: "softmax_bwd",
        shape: format!("{r}x{c}"),
        bytes: 3.0 * rc * F32,
        run: Box::new(move || {
            kern.softmax_bwd(&y0, &dy, &mut dx, r, c)
                .expect("softmax bench shapes")
        }),
    });
}

fn gelu(kern: Kernels, v: &mut Vec<RowBench>) {
    let (r, c) = (4096usize, 768usize);
    let n = r * c;
    for (kind, fwd, bwd) in [
        (Gelu::Tanh, "gelu_tanh_fwd", "gelu_tanh_bwd"),
        (Gelu::Erf, "gelu_erf_fwd", "gelu_erf_bwd"),
    ] {
        let (x, mut y) = (values(n, 1), vec![0.0; n]);
        let (x2, dy, mut dx) = (x.clone(), values(n, 2), vec![0.0; n]);
        v.push(RowBench {
            name: fwd,
            shape: format!("{r}x{c}"),
            bytes: 2.0 * n as f64 * F32,
            run: Box::new(move || {
                kern.gelu_fwd(kind, &x, &mut y, n)
                    .expect("gelu bench shapes")
            }),
        });
        v.push(RowBench {
            name: bwd,
            shape: format!("{r}x{c}"),
            bytes: 3.0 * n as f64 * F32,
            run: Box::new(move || {
                kern.gelu_bwd(kind, &x2, &dy, &mut dx, n)
                    .expect("gelu bench shapes")
            }),
        });
    }
}

fn cross_entropy(kern: Kernels, v: &mut Vec<RowBench>) {
    let (b, voc) = (512usize, 50257usize);
    let logits = values(b * voc, 1);
    let targets: Vec<u32> = (0..b as u32)
        .map(|i| i.wrapping_mul(7919) % voc as u32)
        .collect();
    let mut lse = vec![0.0; b];
    let ignore = u32::MAX;
    kern.cross_entropy_fwd(&logits, &targets, &mut lse, b, voc, ignore)
        .expect("cross-entropy bench shapes");
    let (logits2, targets2, lse2) = (logits.clone(), targets.clone(), lse.clone());
    let mut dlogits = vec![0.0; b * voc];
    let bv = (b * voc) as f64;
    v.push(RowBench {
        name: "cross_entropy_fwd",
        shape: format!("{b}x{voc}"),
        bytes: (bv + 2.0 * b as f64 + 1.0) * F32,
        run: Box::new(move || {
            kern.cross_entropy_fwd(&logits, &targets, &mut lse, b, voc, ignore)
                .expect("cross-entropy bench shapes");
        }),
    });
    v.push(RowBench {
        name: "cross_entropy_bwd",
        shape: format!("{b}x{voc}"),
        bytes: (2.0 * bv + 2.0 * b as f64) * F32,
        run: Box::new(move || {
            kern.cross_entropy_bwd(
                &logits2,
                &targets2,
                &lse2,
                1.0,
                &mut dlogits,
                b,
                voc,
                ignore,
            )
            .expect("cross-entropy bench shapes")
        }),
    });
}
