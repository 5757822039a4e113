//! The `rows` bench family: row kernels on the shapes our models use, forward and backward.
//!
//! Bytes are counted as `benches/torch_rows.py` counts them for PyTorch (f32 values read plus
//! written by the op's definition), so that the two GB/s figures compare speeds directly; our
//! backward kernels also read the gradient they add into, which is not counted.

use anvil_kernels::Kernels;
use anvil_kernels::adamw::AdamW;

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
