//! The `qgemm` bench family: int8 GEMM (activations quantized per row on the fly, weights per
//! output channel) on each integer path, beside our f32 GEMM on the same Linear shape.

use super::gemm::{GemmShape, gemm_ours, operands};
use anvil_kernels::Kernels;
use anvil_kernels::qgemm::{QPath, QWeights};

/// The Linear shapes of the int8 issue: a prefill block and the decode GEMV. `y (m, n) = x (m, k)
/// W^T` with W stored (n, k).
pub const QGEMM_SHAPES: &[GemmShape] = &[
    GemmShape {
        m: 256,
        k: 768,
        n: 3072,
        at: false,
        bt: true,
    },
    GemmShape {
        m: 1,
        k: 768,
        n: 3072,
        at: false,
        bt: true,
    },
];

/// One contender on one shape: its name and a closure owning its buffers.
pub struct QRun {
    pub name: String,
    pub run: Box<dyn FnMut() + Send>,
}

/// The contenders on `s`: every vector integer path this tier may run, then f32 GEMM.
///
/// # Errors
/// A kernel error while preparing the weights (a bug for these fixed shapes, reported as text).
pub fn qgemm_runs(kern: Kernels, s: GemmShape) -> Result<Vec<QRun>, String> {
    let (x, w, y) = operands(&s);
    let qw = QWeights::per_channel(&kern, &w, s.n, s.k).map_err(|e| e.to_string())?;
    let qw = std::sync::Arc::new(qw);
    let mut runs = Vec::new();
    let paths = QPath::available(kern);
    // The scalar path is the reference, hundreds of times slower: only measured when it is all
    // this tier has.
    let fast: Vec<QPath> = paths
        .iter()
        .copied()
        .filter(|&p| p != QPath::Scalar)
        .collect();
    for path in if fast.is_empty() { paths } else { fast } {
        let (x, qw) = (x.clone(), qw.clone());
        // C starts on a cache line, as PyTorch's allocator (64-byte aligned) gives its output.
        let mut y = vec![0.0f32; s.m * s.n + 16];
        let at = (16 - (y.as_ptr() as usize % 64) / 4) % 16;
        runs.push(QRun {
            name: format!("anvil/qgemm_{path:?}").to_lowercase(),
            run: Box::new(move || {
                kern.qgemm_i8_on(path, &x, s.m, &qw, &mut y[at..at + s.m * s.n])
                    .expect("qgemm bench shapes");
            }),
        });
    }
    let mut y32 = y;
    runs.push(QRun {
        name: format!("anvil/sgemm_nt_{}", kern.isa()),
        run: Box::new(move || gemm_ours(kern, s, &x, &w, &mut y32)()),
    });
    Ok(runs)
}

/// Elements converted per call by [`convert_runs`]: one (3072, 768) Linear weight.
pub const CONVERT_LEN: usize = 3072 * 768;

/// A conversion contender: its name, the bytes it reads and writes per call, and its closure.
pub struct ConvertRun {
    pub name: String,
    pub bytes: f64,
    pub run: Box<dyn FnMut() + Send>,
}

/// f16 / bf16 <-> f32 over [`CONVERT_LEN`] elements (a Linear weight read from or written to
/// half-precision storage), on this tier and on the scalar reference, for GB/s rows.
pub fn convert_runs(kern: Kernels) -> Vec<ConvertRun> {
    use anvil_kernels::convert::reference;
    let n = CONVERT_LEN;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 2003) as f32 * 1e-3 - 1.0)
        .collect();
    let mut h = vec![0u8; 2 * n];
    reference::to_f16_slice(&x, &mut h);
    let mut b = vec![0u8; 2 * n];
    reference::to_bf16_slice(&x, &mut b);
    let bytes = 6.0 * n as f64;
    let tier = kern.isa().to_string();
    let mut runs = Vec::new();
    for simd in [true, false] {
        let label = if simd { tier.as_str() } else { "reference" };
        let (src, mut dst) = (h.clone(), vec![0.0f32; n]);
        runs.push(ConvertRun {
            name: format!("anvil/f16_to_f32_{label}"),
            bytes,
            run: Box::new(move || match simd {
                true => kern.f16_to_f32(&src, &mut dst).expect("sized"),
                false => reference::f16_slice(&src, &mut dst),
            }),
        });
        let (src, mut dst) = (b.clone(), vec![0.0f32; n]);
        runs.push(ConvertRun {
            name: format!("anvil/bf16_to_f32_{label}"),
            bytes,
            run: Box::new(move || match simd {
                true => kern.bf16_to_f32(&src, &mut dst).expect("sized"),
                false => reference::bf16_slice(&src, &mut dst),
            }),
        });
        let (src, mut dst) = (x.clone(), vec![0u8; 2 * n]);
        runs.push(ConvertRun {
            name: format!("anvil/f32_to_f16_{label}"),
            bytes,
            run: Box::new(move || match simd {
                true => kern.f32_to_f16(&src, &mut dst).expect("sized"),
                false => reference::to_f16_slice(&src, &mut dst),
            }),
        });
        let (src, mut dst) = (x.clone(), vec![0u8; 2 * n]);
        runs.push(ConvertRun {
            name: format!("anvil/f32_to_bf16_{label}"),
            bytes,
            run: Box::new(move || match simd {
                true => kern.f32_to_bf16(&src, &mut dst).expect("sized"),
                false => reference::to_bf16_slice(&src, &mut dst),
            }),
        });
    }
    runs
}
