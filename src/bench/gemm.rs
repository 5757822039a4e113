//! The `gemm` bench family: the shapes our models run.

use anvil_kernels::{Kernels, MatMut, MatRef};

/// One GEMM problem: `C (m, n) = A (m, k) * op(B)`, with B stored (n, k) when `bt` (a Linear
/// weight) and (k, n) otherwise.
#[derive(Clone, Copy, Debug)]
pub struct GemmShape {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub bt: bool,
}

impl GemmShape {
    pub fn label(&self) -> String {
        format!("{}x{}x{}", self.m, self.k, self.n)
    }

    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }
}

/// The shapes the kernels issue names: square 1024, the GPT MLP shapes, the encoder's, and the
/// decode GEMV; B is a (k, n) matrix in all but the last two (Linear weights stored (n, k)).
pub const GEMM_SHAPES: &[GemmShape] = &[
    GemmShape {
        m: 1024,
        k: 1024,
        n: 1024,
        bt: false,
    },
    GemmShape {
        m: 256,
        k: 768,
        n: 3072,
        bt: false,
    },
    GemmShape {
        m: 256,
        k: 3072,
        n: 768,
        bt: false,
    },
    GemmShape {
        m: 4096,
        k: 384,
        n: 1536,
        bt: false,
    },
    GemmShape {
        m: 256,
        k: 768,
        n: 3072,
        bt: true,
    },
    GemmShape {
        m: 1,
        k: 768,
        n: 3072,
        bt: false,
    },
    GemmShape {
        m: 1,
        k: 768,
        n: 3072,
        bt: true,
    },
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

/// Our sgemm on `s` with operands from [`operands`]; a closure for [`super::interleaved`].
pub fn gemm_ours<'a>(
    kern: Kernels,
    s: GemmShape,
    a: &'a [f32],
    b: &'a [f32],
    c: &'a mut [f32],
) -> impl FnMut() + 'a {
    move || {
        let bv = if s.bt {
            MatRef::new(b, s.n, s.k, s.k).t()
        } else {
            MatRef::new(b, s.k, s.n, s.n)
        };
        // The shapes are consistent by construction; an error here is a bug in this file.
        kern.sgemm(
            1.0,
            MatRef::new(a, s.m, s.k, s.k),
            bv,
            0.0,
            MatMut::new(c, s.m, s.n, s.n),
        )
        .expect("bench operands match their shape");
    }
}
