//! The `gemm` bench family: the shapes our models run.

use anvil_kernels::{Kernels, MatMut, MatRef};

/// One GEMM problem: `C (m, n) = op(A) * op(B)`, with A stored (k, m) when `at` (the
/// activation gradient in `dW = dY^T X`) and (m, k) otherwise, and B stored (n, k) when `bt` (a
/// Linear weight) and (k, n) otherwise.
#[derive(Clone, Copy, Debug)]
pub struct GemmShape {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub at: bool,
    pub bt: bool,
}

impl GemmShape {
    /// `op(A)` over `a` as [`operands`] lays it out: `m x k`, or read transposed from `k x m`.
    pub fn a_view<'a>(&self, a: &'a [f32]) -> MatRef<'a> {
        if self.at {
            MatRef::new(a, self.k, self.m, self.m).t()
        } else {
            MatRef::new(a, self.m, self.k, self.k)
        }
    }

    /// `op(B)` over `b`: `k x n`, or read transposed from `n x k`.
    pub fn b_view<'a>(&self, b: &'a [f32]) -> MatRef<'a> {
        if self.bt {
            MatRef::new(b, self.n, self.k, self.k).t()
        } else {
            MatRef::new(b, self.k, self.n, self.n)
        }
    }

    pub fn label(&self) -> String {
        format!("{}x{}x{}", self.m, self.k, self.n)
    }

    /// The name suffix: `_tn` when A is read transposed, `_nt` when B is, else `_nn`.
    pub fn suffix(&self) -> &'static str {
        match (self.at, self.bt) {
            (true, false) => "_tn",
            (true, true) => "_tt",
            (false, true) => "_nt",
            (false, false) => "_nn",
        }
    }

    /// The shape with B stored (k, n) and A (m, k).
    pub const fn nn(m: usize, k: usize, n: usize) -> Self {
        GemmShape {
            m,
            k,
            n,
            at: false,
            bt: false,
        }
    }

    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }
}

/// The shapes the kernels issue names: square 1024, the GPT MLP shapes, the encoder's, and the
/// decode GEMV; then the three GEMMs of each Linear of a GPT-2 block's training step at B4 x T256
/// (1024 tokens): forward `X W^T` (`_nt`), `dX = dY W`, and `dW = dY^T X` (`_tn`).
pub const GEMM_SHAPES: &[GemmShape] = &[
    GemmShape::nn(1024, 1024, 1024),
    GemmShape::nn(256, 768, 3072),
    GemmShape::nn(256, 3072, 768),
    GemmShape::nn(4096, 384, 1536),
    GemmShape {
        bt: true,
        ..GemmShape::nn(256, 768, 3072)
    },
    GemmShape::nn(1, 768, 3072),
    GemmShape {
        bt: true,
        ..GemmShape::nn(1, 768, 3072)
    },
    // QKV (768 -> 2304) and the MLP (768 -> 3072 -> 768) at 1024 tokens.
    GemmShape {
        bt: true,
        ..GemmShape::nn(1024, 768, 2304)
    },
    GemmShape::nn(1024, 2304, 768),
    GemmShape {
        at: true,
        ..GemmShape::nn(2304, 1024, 768)
    },
    GemmShape {
        bt: true,
        ..GemmShape::nn(1024, 768, 3072)
    },
    GemmShape::nn(1024, 3072, 768),
    GemmShape {
        at: true,
        ..GemmShape::nn(3072, 1024, 768)
    },
    GemmShape {
        bt: true,
        ..GemmShape::nn(1024, 3072, 768)
    },
    GemmShape::nn(1024, 768, 3072),
    GemmShape {
        at: true,
        ..GemmShape::nn(768, 1024, 3072)
    },
    // Inference on constant weights: GPT-2's QKV at a 64-token prefill (B read as the Linear
    // weight), and MiniLM's four Linears at a batch of 32 sentences (its weights stored (IN, OUT)):
    // fused QKV, attention output, MLP up and down.
    GemmShape {
        bt: true,
        ..GemmShape::nn(64, 768, 2304)
    },
    GemmShape::nn(512, 384, 1152),
    GemmShape::nn(512, 384, 384),
    GemmShape::nn(512, 384, 1536),
    GemmShape::nn(512, 1536, 384),
];

/// Operands for `s`: deterministic values in [-1, 1).
pub fn operands(s: &GemmShape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let fill = |len: usize, seed: u32| -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32 ^ seed).wrapping_mul(2654435761);
                (h >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    };
    (fill(s.m * s.k, 1), fill(s.k * s.n, 2), vec![0.0; s.m * s.n])
}

/// Our sgemm on `s` with B packed once beforehand (`Kernels::pack_b`, as inference does for a
/// constant weight); a closure for [`super::interleaved`]. A failed pack is a bug in this file.
pub fn gemm_packed_ours<'a>(
    kern: Kernels,
    s: GemmShape,
    a: &'a [f32],
    b: &'a [f32],
    c: &'a mut [f32],
) -> impl FnMut() + 'a {
    let packed = kern
        .pack_b(s.b_view(b))
        .expect("bench operands match their shape");
    move || {
        kern.sgemm_packed(
            1.0,
            s.a_view(a),
            &packed,
            0.0,
            MatMut::new(c, s.m, s.n, s.n),
        )
        .expect("bench operands match their shape");
    }
}

/// Our sgemm on `s` with operands from [`operands`]; a closure for [`super::interleaved`].
pub fn gemm_ours<'a>(
    kern: Kernels,
    s: GemmShape,
    a: &'a [f32],
    b: &'a [f32],
    c: &'a mut [f32],
) -> impl FnMut() + 'a {
    move || {
        // The shapes are consistent by construction; an error here is a bug in this file.
        kern.sgemm(
            1.0,
            s.a_view(a),
            s.b_view(b),
            0.0,
            MatMut::new(c, s.m, s.n, s.n),
        )
        .expect("bench operands match their shape");
    }
}
