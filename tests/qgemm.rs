//! Int8 quantization and integer GEMM: every path the host has, against the scalar references.

use anvil::kernels::qgemm::{MAX_K, QFormat, QK, QPath, QWeights, f16, quant, reference};
use anvil::kernels::{KernelError, Kernels};
use proptest::prelude::*;

/// Per-element bound on |x - dequant(quant(x))|: half a quantization step, plus f32 rounding of
/// `x * inv` and of `q * scale` (a few ulps of amax).
const HALF_STEP_SLACK: f32 = 1e-5;
/// Round-trip RMSE of uniform-ish data over its step: rounding error is uniform on
/// [-step/2, step/2], whose RMS is step / sqrt(12) = 0.289 step; 0.33 leaves room for sampling.
const RMSE_PER_STEP: f32 = 0.33;
/// Relative Frobenius error of the int8 product against the f32 product for Gaussian-like data
/// at k = 768: each operand carries ~0.75% relative RMS error (step ~ 3.3 sigma / 127), and the
/// two add in quadrature to ~1.1%; 2% bounds it with margin.
const MATMUL_REL_ERR: f64 = 0.02;

/// Every (tier, path) pair the process may run.
fn all_paths() -> Vec<(Kernels, QPath)> {
    let mut v = Vec::new();
    for k in Kernels::available().unwrap() {
        for p in QPath::available(k) {
            v.push((k, p));
        }
    }
    v
}

/// Deterministic data: xorshift64, uniform in [-1, 1).
struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// Roughly Gaussian (sum of 4 uniforms).
    fn g(&mut self) -> f32 {
        (self.f() + self.f() + self.f() + self.f()) * 0.866
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.g()).collect()
    }
}

fn i8_extreme() -> impl Strategy<Value = i8> {
    prop_oneof![Just(-127i8), Just(127i8), Just(0i8), -127i8..=127]
}

/// Checks every path's i32 product against the reference, for both formats.
fn check_i32(a: &[i8], w: &[i8], m: usize, n: usize, k: usize) {
    let want = reference::qgemm_i32(a, w, m, n, k);
    let pc = QWeights::from_per_channel(w, &vec![1.0; n], n, k).unwrap();
    let bs = vec![f16::ONE; n * k.div_ceil(QK)];
    let bl = QWeights::from_blocks(w, &bs, n, k).unwrap();
    assert_eq!(pc.unpack(), w);
    for (kern, path) in all_paths() {
        for packed in [&pc, &bl] {
            let mut c = vec![i32::MIN; m * n + 3];
            kern.qgemm_i8_i32(path, a, m, packed, &mut c).unwrap();
            assert_eq!(
                &c[..m * n],
                &want[..],
                "{path:?} on {} m={m} n={n} k={k}",
                kern.isa()
            );
            assert!(
                c[m * n..].iter().all(|&v| v == i32::MIN),
                "{path:?} wrote past C"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn i32_exact_small((m, n, k, a, w) in (1usize..=20, 1usize..=70, 0usize..=200).prop_flat_map(
        |(m, n, k)| (Just(m), Just(n), Just(k),
            prop::collection::vec(i8_extreme(), m * k), prop::collection::vec(i8_extreme(), n * k))
    )) {
        check_i32(&a, &w, m, n, k);
    }

    #[test]
    fn quantize_simd_matches_reference(x in prop::collection::vec(prop_oneof![
        Just(0.0f32), Just(-0.0), Just(1e30), Just(-1e30), Just(1e-30), Just(1e-40), Just(3e38),
        -1e3f32..1e3], 0..=4 * 16 + 3)) {
        let mut q0 = vec![0i8; x.len()];
        let s0 = quant::reference::quantize_row(&x, &mut q0);
        let nb = x.len().div_ceil(QK);
        let (mut b0, mut bs0) = (vec![0i8; x.len()], vec![f16::ZERO; nb]);
        quant::reference::quantize_blocks(&x, &mut b0, &mut bs0);
        prop_assert!(!q0.contains(&i8::MIN) && !b0.contains(&i8::MIN));
        for kern in Kernels::available().unwrap() {
            let mut q = vec![0i8; x.len()];
            prop_assert_eq!(kern.quantize_row_i8(&x, &mut q).unwrap().to_bits(), s0.to_bits());
            prop_assert_eq!(&q, &q0);
            let (mut b, mut bs) = (vec![0i8; x.len()], vec![f16::ZERO; nb]);
            kern.quantize_blocks_q8(&x, &mut b, &mut bs).unwrap();
            prop_assert_eq!(&b, &b0);
            prop_assert_eq!(&bs, &bs0);
            let (mut y0, mut y) = (vec![0.0f32; x.len()], vec![f32::NAN; x.len()]);
            quant::reference::dequantize_row(&q0, s0, &mut y0);
            kern.dequantize_row_i8(&q0, s0, &mut y).unwrap();
            prop_assert_eq!(bits(&y), bits(&y0));
            quant::reference::dequantize_blocks(&b0, &bs0, &mut y0);
            kern.dequantize_blocks_q8(&b0, &bs0, &mut y).unwrap();
            prop_assert_eq!(bits(&y), bits(&y0));
        }
    }
}

/// Shrunk proptest failure: a block scale clamped to f16::MAX leaves `x * inv` far outside i32,
/// which `cvtps2dq` turned into i32::MIN (-> -127) while the reference clamped to +127.
#[test]
fn regression_huge_block_value_clamps_before_converting() {
    let x = [3e38f32, -3e38, 1.0];
    let (mut q0, mut s0) = ([0i8; 3], [f16::ZERO]);
    quant::reference::quantize_blocks(&x, &mut q0, &mut s0);
    assert_eq!(q0, [127, -127, 0]);
    for kern in Kernels::available().unwrap() {
        let (mut q, mut s) = ([0i8; 3], [f16::ZERO]);
        kern.quantize_blocks_q8(&x, &mut q, &mut s).unwrap();
        assert_eq!((q, s), (q0, s0), "{}", kern.isa());
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn i32_exact_larger_shapes() {
    let mut r = Rng(7);
    for &(m, n, k) in &[
        (21, 33, 65),
        (32, 64, 64),
        (47, 97, 129),
        (64, 48, 300),
        (100, 35, 1000),
    ] {
        let a: Vec<i8> = (0..m * k).map(|_| (r.f() * 127.9) as i8).collect();
        let w: Vec<i8> = (0..n * k).map(|_| (r.f() * 127.9) as i8).collect();
        check_i32(&a, &w, m, n, k);
    }
}

/// Shapes whose weights span several of AMX's L2 chunks of column blocks (k large enough that a
/// chunk holds 1 or 4 blocks), with ragged m, n and k and values drawn mostly from -127, 0, 127;
/// on one thread (one call sees every chunk) and on two.
#[test]
fn i32_exact_across_column_chunks() {
    let mut r = Rng(23);
    let val = |r: &mut Rng| match (r.f() * 4.0 + 4.0) as i32 {
        0 => -127i8,
        1 => 127,
        2 => 0,
        _ => (r.f() * 127.9) as i8,
    };
    for &(m, n, k) in &[(40, 130, 6000), (33, 70, 25_000), (17, 97, 4000)] {
        let a: Vec<i8> = (0..m * k).map(|_| val(&mut r)).collect();
        let w: Vec<i8> = (0..n * k).map(|_| val(&mut r)).collect();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| check_i32(&a, &w, m, n, k));
        }
    }
}

/// One row (the decode GEMV) against weights large enough (over 512 KiB packed) that the kernels
/// prefetch the next panel pair while reading one: still exact, across 25 column blocks of 32
/// with a partial last one, and k not a multiple of 64.
#[test]
fn i32_exact_one_row_large_weights() {
    let mut r = Rng(13);
    let (m, n, k) = (1, 785, 700);
    let a: Vec<i8> = (0..m * k).map(|_| (r.f() * 127.9) as i8).collect();
    let w: Vec<i8> = (0..n * k).map(|_| (r.f() * 127.9) as i8).collect();
    check_i32(&a, &w, m, n, k);
}

/// The largest allowed k with every product at +-127 * 127: the sum sits just under 2^31, so any
/// saturation (e.g. in `vpmaddubsw`) or lost +128 correction would show.
#[test]
fn i32_extremes_at_max_k() {
    let k = MAX_K;
    let w: Vec<i8> = (0..2 * k).map(|i| if i < k { 127 } else { -127 }).collect();
    for av in [127i8, -127] {
        let a = vec![av; 2 * k];
        check_i32(&a, &w, 2, 2, k);
    }
    let bad = QWeights::from_per_channel(&vec![0i8; k + 1], &[1.0], 1, k + 1);
    assert!(matches!(bad, Err(KernelError::BadShape { .. })));
}

/// The scalar reference of `x (m x k) * w^T` with per-channel weights: each row of `x` quantized
/// on its own, the exact i32 products, then the dequantization.
fn per_channel_reference(x: &[f32], w: &QWeights, m: usize, n: usize, k: usize) -> Vec<f32> {
    let (wq, sw) = (w.unpack(), w.channel_scales().unwrap().to_vec());
    let mut aq = vec![0i8; m * k];
    let sa: Vec<f32> = (0..m)
        .map(|i| quant::reference::quantize_row(&x[i * k..][..k], &mut aq[i * k..][..k]))
        .collect();
    let c = reference::qgemm_i32(&aq, &wq, m, n, k);
    reference::dequant_per_channel(&c, &sa, &sw, m, n)
}

/// f32 outputs: bit-identical on every path, equal to the reference dequantization, and within
/// the worst-case bound of the f32 product.
#[test]
fn per_channel_f32_matches_reference_and_bound() {
    let mut r = Rng(11);
    for &(m, n, k) in &[(1, 50, 768), (5, 33, 100), (37, 64, 257), (64, 96, 768)] {
        let (x, wf) = (r.vec(m * k), r.vec(n * k));
        let kern0 = Kernels::available().unwrap()[0];
        let w = QWeights::per_channel(&kern0, &wf, n, k).unwrap();
        let (wq, sw) = (w.unpack(), w.channel_scales().unwrap().to_vec());
        let mut aq = vec![0i8; m * k];
        let sa: Vec<f32> = (0..m)
            .map(|i| quant::reference::quantize_row(&x[i * k..][..k], &mut aq[i * k..][..k]))
            .collect();
        let want = reference::dequant_per_channel(
            &reference::qgemm_i32(&aq, &wq, m, n, k),
            &sa,
            &sw,
            m,
            n,
        );
        for (kern, path) in all_paths() {
            let mut y = vec![f32::NAN; m * n];
            kern.qgemm_i8_on(path, &x, m, &w, &mut y).unwrap();
            assert_eq!(bits(&y), bits(&want), "{path:?} on {}", kern.isa());
        }
        check_error_bounds(&x, &wf, &want, &sa, |j, _| sw[j], (m, n, k));
    }
}

/// Block format: paths with a block kernel match the reference bit for bit; all stay within the
/// worst-case bound; a path without one refuses.
#[test]
fn block_f32_matches_reference_and_bound() {
    let mut r = Rng(13);
    for &(m, n, k) in &[(1, 40, 768), (7, 33, 100), (20, 64, 65), (40, 35, 300)] {
        let (x, wf) = (r.vec(m * k), r.vec(n * k));
        let kern0 = Kernels::available().unwrap()[0];
        let w = QWeights::block32(&kern0, &wf, n, k).unwrap();
        let (wq, sw) = (w.unpack(), w.block_scales().unwrap().to_vec());
        let nb = k.div_ceil(QK);
        let (mut aq, mut sa16) = (vec![0i8; m * k], vec![f16::ZERO; m * nb]);
        for i in 0..m {
            quant::reference::quantize_blocks(
                &x[i * k..][..k],
                &mut aq[i * k..][..k],
                &mut sa16[i * nb..][..nb],
            );
        }
        // Activation block scales are kept in f32; the f16-rounded values are what quantization
        // used, so they reproduce the kernels' scales exactly.
        let sa: Vec<f32> = sa16.iter().map(|s| s.to_f32()).collect();
        let want = reference::qgemm_blocks(&aq, &sa, &wq, &sw, (m, n, k));
        for (kern, path) in all_paths() {
            let mut y = vec![f32::NAN; m * n];
            let res = kern.qgemm_i8_on(path, &x, m, &w, &mut y);
            if path.supports(QFormat::Block32) {
                res.unwrap();
                assert_eq!(bits(&y), bits(&want), "{path:?} on {}", kern.isa());
            } else {
                assert!(matches!(res, Err(KernelError::BadShape { .. })));
            }
        }
        let mut y = vec![0.0; m * n];
        kern0.qgemm_i8(&x, m, &w, &mut y).unwrap();
        assert_eq!(bits(&y), bits(&want));
        check_error_bounds(
            &x,
            &wf,
            &want,
            &sa,
            |j, b| sw[j * nb + b].to_f32(),
            (m, n, k),
        );
    }
}

/// `|y - x w^T|` per element within `sum_k |x| dw + |w| dx + dx dw` (dx, dw half steps) plus f32
/// accumulation slack, and the relative Frobenius error within [`MATMUL_REL_ERR`].
fn check_error_bounds(
    x: &[f32],
    w: &[f32],
    y: &[f32],
    sa: &[f32],
    sw: impl Fn(usize, usize) -> f32,
    (m, n, k): (usize, usize, usize),
) {
    let spr = sa.len() / m;
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for i in 0..m {
        for j in 0..n {
            let (mut exact, mut bound, mut mag) = (0.0f64, 0.0f64, 0.0f64);
            for kk in 0..k {
                let b = if spr == 1 { 0 } else { kk / QK };
                let (xv, wv) = (x[i * k + kk] as f64, w[j * k + kk] as f64);
                let (dx, dw) = (sa[i * spr + b] as f64 / 2.0, sw(j, b) as f64 / 2.0);
                exact += xv * wv;
                bound += xv.abs() * dw + wv.abs() * dx + dx * dw;
                mag += xv.abs() * wv.abs();
            }
            let err = (y[i * n + j] as f64 - exact).abs();
            assert!(
                err <= bound * (1.0 + 1e-5) + mag * 1e-5,
                "({i},{j}): {err} > {bound}"
            );
            num += err * err;
            den += exact * exact;
        }
    }
    let rel = (num / den).sqrt();
    assert!(rel < MATMUL_REL_ERR, "relative error {rel}");
}

#[test]
fn quantize_round_trip_error() {
    let mut r = Rng(3);
    let x: Vec<f32> = (0..4096).map(|_| r.f() * 3.0).collect();
    for kern in Kernels::available().unwrap() {
        let mut q = vec![0i8; x.len()];
        let s = kern.quantize_row_i8(&x, &mut q).unwrap();
        let mut y = vec![0.0; x.len()];
        kern.dequantize_row_i8(&q, s, &mut y).unwrap();
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let mut se = 0.0f64;
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= s / 2.0 + amax * HALF_STEP_SLACK);
            se += ((a - b) as f64).powi(2);
        }
        assert!(((se / x.len() as f64).sqrt() as f32) < RMSE_PER_STEP * s);
        assert!(q.contains(&127) || q.contains(&-127));
    }
}

fn short<T>(r: Result<T, KernelError>) -> bool {
    matches!(r, Err(KernelError::BadLength { .. }))
}

#[test]
fn wrong_lengths_are_errors() {
    let k0 = Kernels::available().unwrap()[0];
    assert!(short(k0.quantize_row_i8(&[1.0; 5], &mut [0; 4])));
    assert!(short(k0.dequantize_row_i8(&[1; 5], 1.0, &mut [0.0; 4])));
    assert!(short(k0.quantize_blocks_q8(
        &[1.0; 33],
        &mut [0; 33],
        &mut [f16::ZERO; 1]
    )));
    assert!(short(k0.dequantize_blocks_q8(
        &[1; 33],
        &[f16::ZERO; 2],
        &mut [0.0; 32]
    )));
    assert!(short(QWeights::per_channel(&k0, &[1.0; 11], 3, 4)));
    assert!(short(QWeights::from_per_channel(&[1; 12], &[1.0; 2], 3, 4)));
    assert!(short(QWeights::from_blocks(&[1; 12], &[f16::ONE; 2], 3, 4)));
    let w = QWeights::per_channel(&k0, &[0.5; 12], 3, 4).unwrap();
    for (kern, path) in all_paths() {
        assert!(short(kern.qgemm_i8_on(
            path,
            &[1.0; 7],
            2,
            &w,
            &mut [0.0; 6]
        )));
        assert!(short(kern.qgemm_i8_on(
            path,
            &[1.0; 8],
            2,
            &w,
            &mut [0.0; 5]
        )));
        assert!(short(kern.qgemm_i8_i32(path, &[1; 7], 2, &w, &mut [0; 6])));
        assert!(short(kern.qgemm_i8_i32(path, &[1; 8], 2, &w, &mut [0; 5])));
        let r = kern.qgemm_i8_i32(path, &[-128, 0, 0, 0], 1, &w, &mut [0; 3]);
        assert!(matches!(r, Err(KernelError::BadShape { .. })));
    }
    let huge = QWeights::from_blocks(&[], &[], usize::MAX - 3, 0);
    assert!(matches!(huge, Err(KernelError::BadShape { .. })));
    assert!(matches!(
        QWeights::from_per_channel(&[-128; 4], &[1.0], 1, 4),
        Err(KernelError::BadShape { .. })
    ));
}

/// A capped tier never offers the AVX-512 paths (so `ANVIL_ISA=avx2` runs no AVX-512 or AMX).
#[test]
fn paths_follow_the_tier() {
    for kern in Kernels::available().unwrap() {
        eprintln!("tier {}: paths {:?}", kern.isa(), QPath::available(kern));
        for p in QPath::available(kern) {
            match p {
                QPath::Avx512Vnni | QPath::Amx => {
                    assert_eq!(kern.isa(), anvil::kernels::Isa::Avx512)
                }
                QPath::Avx2 | QPath::AvxVnni => assert!(kern.isa() >= anvil::kernels::Isa::Avx2),
                QPath::Scalar => {}
            }
        }
        let best = QPath::best(kern, 256, QFormat::PerChannel);
        assert_eq!(Some(&best), QPath::available(kern).last());
        let forced = kern.qgemm_i8_i32(
            QPath::Amx,
            &[],
            0,
            &QWeights::from_per_channel(&[], &[], 0, 0).unwrap(),
            &mut [],
        );
        assert_eq!(forced.is_ok(), QPath::Amx.is_available(kern));
    }
}

#[test]
fn empty_shapes() {
    for (kern, path) in all_paths() {
        let w = QWeights::from_per_channel(&[], &[1.0; 3], 3, 0).unwrap();
        let mut y = [f32::NAN; 6];
        kern.qgemm_i8_on(path, &[], 2, &w, &mut y).unwrap();
        assert!(y.iter().all(|&v| v == 0.0), "{path:?}: k = 0 gives zeros");
        // Shrunk proptest failure: block weights with k = 0 divided by the padded k.
        let w = QWeights::from_blocks(&[], &[], 3, 0).unwrap();
        kern.qgemm_i8_i32(path, &[], 2, &w, &mut [7; 6]).unwrap();
        let mut y = [f32::NAN; 6];
        if path.supports(QFormat::Block32) {
            kern.qgemm_i8_on(path, &[], 2, &w, &mut y).unwrap();
            assert!(
                y.iter().all(|&v| v == 0.0),
                "{path:?}: block k = 0 gives zeros"
            );
        }
        // n = 0 bounds nothing: m may be anything, and nothing is allocated for it.
        let w0 = QWeights::from_per_channel(&[], &[], 0, 0).unwrap();
        kern.qgemm_i8_on(path, &[], usize::MAX, &w0, &mut [])
            .unwrap();
        let w = QWeights::from_per_channel(&[], &[], 0, 5).unwrap();
        kern.qgemm_i8_on(path, &[1.0; 10], 2, &w, &mut []).unwrap();
        kern.qgemm_i8_on(path, &[], 0, &w, &mut []).unwrap();
    }
}

/// Results do not depend on the thread count: the columns split between threads, and each
/// element is computed by one thread in the same order.
#[test]
fn thread_count_does_not_change_results() {
    let (m, n, k) = (40, 160, 768); // above the parallel threshold
    let mut r = Rng(17);
    let x = r.vec(m * k);
    for (kern, path) in all_paths() {
        for format in [QFormat::PerChannel, QFormat::Block32] {
            if !path.supports(format) {
                continue;
            }
            let wf = r.vec(n * k);
            let w = match format {
                QFormat::PerChannel => QWeights::per_channel(&kern, &wf, n, k),
                QFormat::Block32 => QWeights::block32(&kern, &wf, n, k),
            }
            .unwrap();
            let run = |threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut y = vec![f32::NAN; m * n];
                pool.install(|| kern.qgemm_i8_on(path, &x, m, &w, &mut y))
                    .unwrap();
                bits(&y)
            };
            assert_eq!(run(1), run(3), "{path:?} {format:?} on {}", kern.isa());
        }
    }
}

/// Outputs of 1 MiB and more leave AMX through non-temporal stores of whole cache lines, joining
/// the halves of lines that straddle two column blocks: bit-identical to the reference for C at
/// every float offset from a 64-byte line (so rows start mid-line), with a partial last column
/// block, a last row block of 26 or 16 rows, on 1 and 2 threads, and nothing written outside C.
/// Each block is written a few rows per k-step of the next: k of 1, 2 and 5 tile steps (all rows
/// after the loop; all in one step; 8 rows a step, the 26-row block ending mid-step).
#[test]
fn f32_large_outputs_exact_at_every_alignment() {
    let mut r = Rng(29);
    let kern = Kernels::best();
    if !QPath::Amx.is_available(kern) {
        return;
    }
    for &(m, n, k) in &[(90, 3300, 70), (80, 3300, 64), (90, 3000, 300)] {
        let (x, wf) = (r.vec(m * k), r.vec(n * k));
        let w = QWeights::per_channel(&kern, &wf, n, k).unwrap();
        let want = per_channel_reference(&x, &w, m, n, k);
        assert!(
            m * n * 4 >= 1 << 20,
            "the shape must take the streaming path"
        );
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut buf = vec![f32::NAN; m * n + 64];
            let base = (16 - (buf.as_ptr() as usize % 64) / 4) % 16;
            for off in 0..16 {
                buf.fill(f32::NAN);
                let at = base + off;
                pool.install(|| kern.qgemm_i8_on(QPath::Amx, &x, m, &w, &mut buf[at..at + m * n]))
                    .unwrap();
                assert_eq!(
                    bits(&buf[at..at + m * n]),
                    bits(&want),
                    "m={m} n={n} offset {off}, {threads} threads"
                );
                let outside = buf[..at].iter().chain(&buf[at + m * n..]);
                assert!(
                    outside.into_iter().all(|v| v.is_nan()),
                    "wrote outside C at offset {off}"
                );
            }
        }
    }
}

/// AMX quantizes activations straight into its tile layout, in a buffer each thread keeps from
/// one call to the next: calls of shrinking and growing m and k on one thread, each laid over the
/// previous call's bytes, stay bit-identical to the reference (a stale byte in a real row would
/// show in the sums; padding meets zero weights or unstored rows either way).
#[test]
fn amx_activation_buffer_reuse_across_shapes() {
    let mut r = Rng(31);
    let kern = Kernels::best();
    if !QPath::Amx.is_available(kern) {
        return;
    }
    for &(m, n, k) in &[
        (70, 64, 300),
        (17, 40, 70),
        (40, 96, 129),
        (5, 33, 64),
        (33, 50, 1),
    ] {
        // Rows at +-127 after quantization: any stale padding byte would change the sums.
        let x: Vec<f32> = (0..m * k)
            .map(|_| if r.f() < 0.0 { -3.0 } else { 3.0 })
            .collect();
        let wf = r.vec(n * k);
        let w = QWeights::per_channel(&kern, &wf, n, k).unwrap();
        let want = per_channel_reference(&x, &w, m, n, k);
        let mut y = vec![f32::NAN; m * n];
        kern.qgemm_i8_on(QPath::Amx, &x, m, &w, &mut y).unwrap();
        assert_eq!(bits(&y), bits(&want), "m={m} n={n} k={k}");
    }
}
