//! GEMM on a pre-packed B (`Kernels::pack_b` + `sgemm_packed`) on every tier: against the scalar
//! reference (small shapes, random ones across the k and column blocks, alpha/beta specials, the
//! bias epilogue, NaN sentinels in C's padding), bit for bit against the unpacked `sgemm` where
//! that runs the packed loop nest too, on 1, 2 and 3 threads, and its errors.

mod common;

use anvil::kernels::gemm::reference;
use anvil::kernels::{KernelError, Kernels, MatMut, MatRef};
use proptest::prelude::*;

/// Above this many rows `sgemm` never takes its skinny (unpacked) path, so it runs the same loop
/// nest and micro-kernel as the packed GEMM (kernels/src/gemm/skinny.rs: `SKINNY_M`).
const PACKED_ROWS: usize = 8;

/// As in tests/gemm.rs: a k-term f32 dot product plus a beta term (and the bias), summed in
/// another order than the reference: gamma_{k+2} times the sum of |terms|, doubled (both round).
fn tolerance(k: usize, magnitude: f32) -> f32 {
    let n = (k + 2) as f32 * f32::EPSILON;
    2.0 * n / (1.0 - n) * magnitude + f32::MIN_POSITIVE
}

fn mat(c: &mut [f32], m: usize, n: usize, ld: usize) -> MatMut<'_> {
    MatMut::new(c, m, n, ld)
}

struct Case {
    m: usize,
    n: usize,
    k: usize,
    /// B stored `(n, k)` and viewed transposed (a Linear weight `(OUT, IN)`).
    tb: bool,
    alpha: f32,
    beta: f32,
    pad: usize,
    bias: bool,
}

/// Runs one case packed on `kern`: within tolerance of the reference, NaN sentinels in C's
/// padding intact, and bit-identical to the unpacked `sgemm` / `sgemm_bias` when `m` is above
/// the skinny path's rows.
fn check(kern: &Kernels, c: &Case, seed: u64) {
    let (m, n, k, pad) = (c.m, c.n, c.k, c.pad);
    let (br, bc) = if c.tb { (n, k) } else { (k, n) };
    let (lda, ldb, ldc) = (k + pad, bc + pad, n + pad);
    let a = common::noise(seed, m * lda);
    let b = common::noise(seed ^ 0x9e37, br * ldb);
    let bias = common::noise(seed ^ 0xb1a5, n);
    let mut c0 = common::noise(seed ^ 0x7f4a, m * ldc);
    for i in 0..m {
        c0[i * ldc + n..(i + 1) * ldc].fill(f32::NAN);
    }
    let av = MatRef::new(&a, m, k, lda);
    let bv = if c.tb {
        MatRef::new(&b, br, bc, ldb).t()
    } else {
        MatRef::new(&b, br, bc, ldb)
    };
    let packed = kern.pack_b(bv).unwrap();
    assert_eq!((packed.k(), packed.n(), packed.isa()), (k, n, kern.isa()));
    let (mut got, mut unpacked, mut want) = (c0.clone(), c0.clone(), c0.clone());
    if c.bias {
        kern.sgemm_packed_bias(
            c.alpha,
            av,
            &packed,
            c.beta,
            &bias,
            mat(&mut got, m, n, ldc),
        )
        .unwrap();
        kern.sgemm_bias(
            c.alpha,
            av,
            bv,
            c.beta,
            &bias,
            mat(&mut unpacked, m, n, ldc),
        )
        .unwrap();
    } else {
        kern.sgemm_packed(c.alpha, av, &packed, c.beta, mat(&mut got, m, n, ldc))
            .unwrap();
        kern.sgemm(c.alpha, av, bv, c.beta, mat(&mut unpacked, m, n, ldc))
            .unwrap();
    }
    reference::sgemm(c.alpha, av, bv, c.beta, MatMut::new(&mut want, m, n, ldc)).unwrap();
    let what = format!(
        "{:?} m{m} n{n} k{k} tb{} alpha{} beta{} pad{pad} bias{}",
        kern.isa(),
        c.tb,
        c.alpha,
        c.beta,
        c.bias
    );
    for i in 0..m {
        for j in 0..n {
            let bj = if c.bias { bias[j] } else { 0.0 };
            let mag = c.alpha.abs() * k as f32 + c.beta.abs() * c0[i * ldc + j].abs() + bj.abs();
            let (g, w) = (got[i * ldc + j], want[i * ldc + j] + bj);
            assert!(
                (g - w).abs() <= tolerance(k, mag),
                "{what}: C[{i},{j}] = {g}, reference {w}"
            );
        }
        for j in n..ldc {
            assert!(
                got[i * ldc + j].is_nan(),
                "{what}: padding C[{i},{j}] written"
            );
        }
    }
    if m > PACKED_ROWS {
        assert!(
            common::same_bits(&got, &unpacked),
            "{what}: packed and unpacked sgemm differ"
        );
    }
}

#[test]
fn every_small_shape() {
    for kern in Kernels::available().unwrap() {
        for m in 1..=17 {
            for n in 1..=50 {
                for (k, tb) in [(0, false), (1, true), (7, false), (9, true), (33, false)] {
                    let case = Case {
                        m,
                        n,
                        k,
                        tb,
                        alpha: 1.0,
                        beta: 0.5,
                        pad: 3,
                        bias: (m + n) % 2 == 0,
                    };
                    check(&kern, &case, (m * 1000 + n * 10 + k) as u64);
                }
            }
        }
    }
}

#[test]
fn alpha_beta_specials_and_nan_in_c() {
    for kern in Kernels::available().unwrap() {
        for (alpha, beta) in [(0.0, 0.0), (0.0, 2.0), (1.0, 0.0), (-1.5, 1.0), (2.0, -0.5)] {
            for bias in [false, true] {
                let case = Case {
                    m: 37,
                    n: 101,
                    k: 70,
                    tb: true,
                    alpha,
                    beta,
                    pad: 5,
                    bias,
                };
                check(&kern, &case, 7);
            }
        }
        // beta == 0 reads nothing of C: NaN there does not reach the result.
        let (m, n, k) = (20, 50, 30);
        let (a, b) = (common::noise(1, m * k), common::noise(2, k * n));
        let packed = kern.pack_b(MatRef::new(&b, k, n, n)).unwrap();
        let mut c = vec![f32::NAN; m * n];
        kern.sgemm_packed(
            1.0,
            MatRef::new(&a, m, k, k),
            &packed,
            0.0,
            MatMut::new(&mut c, m, n, n),
        )
        .unwrap();
        assert!(c.iter().all(|v| v.is_finite()), "{:?}", kern.isa());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    /// Shapes across the k blocks (KC 384 on AVX-512 hosts) and column blocks, with tails.
    #[test]
    fn random_shapes(m in 1usize..160, n in 1usize..260, k in 0usize..900, tb: bool,
                     pad in 0usize..4, bias: bool, beta in prop_oneof![Just(0.0f32), Just(1.0), -2.0f32..2.0],
                     seed: u64) {
        for kern in Kernels::available().unwrap() {
            check(&kern, &Case { m, n, k, tb, alpha: 1.0, beta, pad, bias }, seed);
        }
    }
}

/// The packed GEMM on 1-, 2- and 3-thread pools, bit for bit, and equal to the unpacked one: tall
/// shapes share B between threads by chunks of rows, short ones split C into rectangles.
#[test]
fn bit_identical_across_thread_counts() {
    for kern in Kernels::available().unwrap() {
        for (m, n, k, tb) in [
            (1600, 200, 384, false),
            (512, 1152, 384, false),
            (64, 2304, 768, true),
            (97, 515, 1000, false),
            (20, 3072, 768, true),
            (3, 300, 500, false),
        ] {
            let (a, b, bias) = (
                common::noise(11, m * k),
                common::noise(12, k * n),
                common::noise(14, n),
            );
            let bv = if tb {
                MatRef::new(&b, n, k, k).t()
            } else {
                MatRef::new(&b, k, n, n)
            };
            let av = MatRef::new(&a, m, k, k);
            let packed = kern.pack_b(bv).unwrap();
            let run = |threads: usize, packed_b: bool| {
                let mut c = common::noise(13, m * n);
                common::pool(threads).install(|| {
                    let cm = MatMut::new(&mut c, m, n, n);
                    if packed_b {
                        kern.sgemm_packed_bias(1.0, av, &packed, 1.0, &bias, cm)
                    } else {
                        kern.sgemm_bias(1.0, av, bv, 1.0, &bias, cm)
                    }
                    .unwrap()
                });
                c
            };
            let one = run(1, true);
            let same =
                |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
            for threads in [2, 3] {
                assert!(
                    same(&one, &run(threads, true)),
                    "{:?} {m}x{n}x{k}: 1 and {threads} threads differ",
                    kern.isa()
                );
            }
            if m > PACKED_ROWS {
                assert!(
                    same(&one, &run(2, false)),
                    "{:?} {m}x{n}x{k}: packed and unpacked differ",
                    kern.isa()
                );
            }
        }
    }
}

#[test]
fn mismatches_are_errors() {
    let tiers = Kernels::available().unwrap();
    let (m, n, k) = (16, 40, 24);
    let (a, b) = (common::noise(1, m * k), common::noise(2, k * n));
    let mut c = vec![0.0; m * n];
    for kern in &tiers {
        let packed = kern.pack_b(MatRef::new(&b, k, n, n)).unwrap();
        let bad_shape = |r: Result<(), KernelError>| {
            assert!(
                matches!(r, Err(KernelError::BadShape { .. })),
                "{:?}: {r:?}",
                kern.isa()
            )
        };
        // A's k is not B's.
        bad_shape(kern.sgemm_packed(
            1.0,
            MatRef::new(&a, m, k - 1, k),
            &packed,
            0.0,
            MatMut::new(&mut c, m, n, n),
        ));
        // C's columns are not B's.
        bad_shape(kern.sgemm_packed(
            1.0,
            MatRef::new(&a, m, k, k),
            &packed,
            0.0,
            MatMut::new(&mut c, m, n - 1, n),
        ));
        // The bias does not hold n values.
        bad_shape(kern.sgemm_packed_bias(
            1.0,
            MatRef::new(&a, m, k, k),
            &packed,
            0.0,
            &[0.0; 3],
            MatMut::new(&mut c, m, n, n),
        ));
        // B's slice is shorter than its shape.
        assert!(matches!(
            kern.pack_b(MatRef::new(&b[..k * n - 1], k, n, n)),
            Err(KernelError::BadLength { .. })
        ));
        // Packed for one tier, run on another.
        for other in tiers.iter().filter(|o| o.isa() != kern.isa()) {
            bad_shape(other.sgemm_packed(
                1.0,
                MatRef::new(&a, m, k, k),
                &packed,
                0.0,
                MatMut::new(&mut c, m, n, n),
            ));
        }
    }
}
