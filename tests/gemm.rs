//! GEMM against the scalar reference on every tier: all small shapes, random larger ones, every
//! transpose combination, alpha/beta specials, wide leading dimensions with NaN sentinels in the
//! padding, the bias epilogue, batched GEMM, thread-count determinism, and shape errors.

mod common;

use anvil::kernels::gemm::reference;
use anvil::kernels::{GemmJob, KernelError, Kernels, MatMut, MatRef};
use proptest::prelude::*;

/// Each C element is a k-term f32 dot product plus a beta term, summed in a different order (KC
/// blocks, FMA) than the reference: the standard bound |err| <= gamma_{k+2} * sum |terms| with
/// gamma_n = n * eps / (1 - n * eps), doubled because both sides round.
fn tolerance(k: usize, magnitude: f32) -> f32 {
    let n = (k + 2) as f32 * f32::EPSILON;
    2.0 * n / (1.0 - n) * magnitude + f32::MIN_POSITIVE
}

/// A deterministic pseudo-random matrix in [-1, 1).
fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

struct Case {
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    alpha: f32,
    beta: f32,
    pad: usize,
}

/// Runs one case on `kern` and on the reference; checks every element within tolerance and that
/// the NaN sentinels in C's padding survive.
fn check(kern: &Kernels, c: &Case, seed: u64) {
    check_with(kern, c, seed, false);
}

/// As [`check`]; with `bias`, through `sgemm_bias` against the reference plus the bias.
fn check_with(kern: &Kernels, c: &Case, seed: u64, with_bias: bool) {
    let (m, n, k, pad) = (c.m, c.n, c.k, c.pad);
    // Stored shapes: A is (m, k) or, transposed, (k, m); likewise B.
    let (ar, ac) = if c.ta { (k, m) } else { (m, k) };
    let (br, bc) = if c.tb { (n, k) } else { (k, n) };
    let (lda, ldb, ldc) = (ac + pad, bc + pad, n + pad);
    let a = fill(ar * lda, seed);
    let b = fill(br * ldb, seed ^ 0x9e37);
    let mut c0 = fill(m * ldc, seed ^ 0x7f4a);
    for i in 0..m {
        c0[i * ldc + n..(i + 1) * ldc].fill(f32::NAN);
    }
    let mut av = MatRef::new(&a, ar, ac, lda);
    let mut bv = MatRef::new(&b, br, bc, ldb);
    if c.ta {
        av = av.t();
    }
    if c.tb {
        bv = bv.t();
    }
    let mut got = c0.clone();
    let mut want = c0.clone();
    let bias = fill(n, seed ^ 0xb1a5);
    if with_bias {
        kern.sgemm_bias(
            c.alpha,
            av,
            bv,
            c.beta,
            &bias,
            MatMut::new(&mut got, m, n, ldc),
        )
        .unwrap();
    } else {
        kern.sgemm(c.alpha, av, bv, c.beta, MatMut::new(&mut got, m, n, ldc))
            .unwrap();
    }
    reference::sgemm(c.alpha, av, bv, c.beta, MatMut::new(&mut want, m, n, ldc)).unwrap();
    if with_bias {
        for row in want.chunks_mut(ldc) {
            row.iter_mut().zip(&bias).for_each(|(w, b)| *w += b);
        }
    }
    for i in 0..m {
        for j in 0..n {
            let mag = c.alpha.abs() * k as f32
                + c.beta.abs() * c0[i * ldc + j].abs()
                + if with_bias { bias[j].abs() } else { 0.0 };
            let (g, w) = (got[i * ldc + j], want[i * ldc + j]);
            assert!(
                (g - w).abs() <= tolerance(k, mag),
                "{:?} m{m} n{n} k{k} ta{} tb{} alpha{} beta{} pad{pad} bias {with_bias}: C[{i},{j}] = {g}, reference {w}",
                kern.isa(),
                c.ta,
                c.tb,
                c.alpha,
                c.beta
            );
        }
        for j in n..ldc {
            assert!(
                got[i * ldc + j].is_nan(),
                "{:?}: padding C[{i},{j}] overwritten",
                kern.isa()
            );
        }
    }
}

#[test]
fn every_small_shape_every_transpose() {
    for kern in Kernels::available().unwrap() {
        for m in 0..=20 {
            for n in 0..=20 {
                for k in 0..=20 {
                    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                        let case = Case {
                            m,
                            n,
                            k,
                            ta,
                            tb,
                            alpha: 1.0,
                            beta: 0.0,
                            pad: 0,
                        };
                        check(&kern, &case, (m * 441 + n * 21 + k) as u64);
                    }
                }
            }
        }
    }
}

#[test]
fn alpha_beta_combinations_with_padding() {
    for kern in Kernels::available().unwrap() {
        for alpha in [0.0, 1.0, -0.75] {
            for beta in [0.0, 1.0, 2.5] {
                for (m, n, k) in [
                    (1, 1, 1),
                    (7, 13, 5),
                    (13, 33, 17),
                    (20, 20, 20),
                    (0, 5, 3),
                    (4, 4, 0),
                ] {
                    for (ta, tb) in [(false, false), (true, true), (false, true)] {
                        let case = Case {
                            m,
                            n,
                            k,
                            ta,
                            tb,
                            alpha,
                            beta,
                            pad: 3,
                        };
                        check(&kern, &case, 7);
                    }
                }
            }
        }
    }
}

#[test]
fn beta_zero_ignores_nan_in_c() {
    for kern in Kernels::available().unwrap() {
        let (m, n, k) = (5, 37, 9);
        let a = fill(m * k, 1);
        let b = fill(k * n, 2);
        let mut c = vec![f32::NAN; m * n];
        kern.sgemm(
            1.0,
            MatRef::new(&a, m, k, k),
            MatRef::new(&b, k, n, n),
            0.0,
            MatMut::new(&mut c, m, n, n),
        )
        .unwrap();
        assert!(c.iter().all(|v| v.is_finite()), "{:?}", kern.isa());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_shapes_up_to_300(m in 1usize..300, n in 1usize..300, k in 1usize..300,
                               ta: bool, tb: bool, pad in 0usize..5, seed: u64) {
        for kern in Kernels::available().unwrap() {
            check(&kern, &Case { m, n, k, ta, tb, alpha: 1.0, beta: 1.0, pad }, seed);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// The bias epilogue on every tier: edge tiles (m, n off the MR, NR grid), k past KC (the
    /// bias joins only the first k block), the skinny path (m <= 4), alpha and beta specials.
    #[test]
    fn bias_epilogue_random_shapes(m in 1usize..140, n in 1usize..140, k in 0usize..500,
                                   ta: bool, tb: bool, pad in 0usize..3, seed: u64,
                                   alpha in prop::sample::select(vec![0.0f32, 1.0, -0.5]),
                                   beta in prop::sample::select(vec![0.0f32, 1.0, 2.0])) {
        for kern in Kernels::available().unwrap() {
            check_with(&kern, &Case { m, n, k, ta, tb, alpha, beta, pad }, seed, true);
        }
    }
}

/// With `beta == 0`, `sgemm_bias` is bit-identical to prefilling C with the bias and running
/// `sgemm` with `beta == 1` (the two-pass form callers used), on every tier and path: skinny
/// (m <= 4), packed with edge tiles, several k blocks and NC blocks, k == 0, and two threads.
#[test]
fn bias_epilogue_equals_prefilled_c() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for kern in Kernels::available().unwrap() {
        for (m, n, k, tb) in [
            (1, 300, 70, true),
            (3, 77, 40, false),
            (13, 50, 9, false),
            (9, 47, 900, true),
            (130, 900, 850, true),
            (70, 1700, 100, false),
            (6, 20, 0, false),
        ] {
            let a = fill(m * k, 21);
            let b = fill(k * n, 22);
            let bias = fill(n, 23);
            let bv = if tb {
                MatRef::new(&b, n, k, k).t()
            } else {
                MatRef::new(&b, k, n, n)
            };
            let av = MatRef::new(&a, m, k, k);
            let mut fused = vec![f32::NAN; m * n];
            let mut two_pass: Vec<f32> = bias.iter().copied().cycle().take(m * n).collect();
            pool.install(|| {
                kern.sgemm_bias(0.5, av, bv, 0.0, &bias, MatMut::new(&mut fused, m, n, n))
                    .unwrap();
                kern.sgemm(0.5, av, bv, 1.0, MatMut::new(&mut two_pass, m, n, n))
                    .unwrap();
            });
            assert!(
                common::same_bits(&fused, &two_pass),
                "{:?} {m}x{n}x{k}: fused bias differs from the prefilled C",
                kern.isa()
            );
        }
    }
}

#[test]
fn large_shapes_cross_block_boundaries() {
    // k past KC, m past MC, n past NC on every tier: the blocked loops' seams (the last with A
    // read transposed, as `dW = dY^T X` does, and k cut into balanced blocks).
    for kern in Kernels::available().unwrap() {
        for (m, n, k, ta) in [
            (1100, 70, 600, false),
            (40, 4200, 300, false),
            (2, 5000, 700, false),
            (300, 300, 1300, false),
            (170, 850, 1030, true),
        ] {
            check(
                &kern,
                &Case {
                    m,
                    n,
                    k,
                    ta,
                    tb: !ta,
                    alpha: 0.5,
                    beta: 1.0,
                    pad: 1,
                },
                3,
            );
        }
    }
}

/// A read in place (row-major A, one column block of C) and packed (the same values stored
/// transposed) give the same bits: the in-place micro-kernel does the packed one's arithmetic, edge
/// rows included (m not a multiple of MR, rows past it re-read and never stored), with a padded
/// leading dimension, k not a multiple of the unroll, beta and the bias.
#[test]
fn a_read_in_place_matches_a_packed_bit_for_bit() {
    for kern in Kernels::available().unwrap() {
        for (m, n, k, pad) in [
            (1, 48, 1, 0),
            (7, 47, 5, 3),
            (13, 100, 130, 0),
            (29, 384, 383, 5),
            (100, 96, 700, 1),
            (1030, 130, 400, 0),
            (64, 1500, 50, 2),
        ] {
            let lda = k + pad;
            let a = fill(m * lda, 21);
            let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * lda + i / m]).collect();
            let b = fill(k * n, 22);
            let bias = fill(n, 23);
            let run = |av: MatRef| {
                let mut c = fill(m * n, 24);
                let bv = MatRef::new(&b, k, n, n);
                kern.sgemm_bias(0.5, av, bv, 1.5, &bias, MatMut::new(&mut c, m, n, n))
                    .unwrap();
                c
            };
            let direct = run(MatRef::new(&a, m, k, lda));
            let packed = run(MatRef::new(&at, k, m, m).t());
            assert!(
                common::same_bits(&direct, &packed),
                "{:?} {m}x{n}x{k} pad {pad}: A in place and A packed differ",
                kern.isa()
            );
        }
    }
}

/// A whose rows all alias one row (row stride 0, a broadcast) is packed, not read in place
/// (the in-place kernel's `lda == 0` means a packed panel): the same bits as the rows written out.
#[test]
fn a_row_broadcast_matches_its_rows_written_out() {
    for kern in Kernels::available().unwrap() {
        let (m, n, k) = (20, 48, 33);
        let row = fill(k, 25);
        let rows: Vec<f32> = (0..m).flat_map(|_| row.iter().copied()).collect();
        let b = fill(k * n, 26);
        let run = |av: MatRef| {
            let mut c = vec![0.0; m * n];
            kern.sgemm(
                1.0,
                av,
                MatRef::new(&b, k, n, n),
                0.0,
                MatMut::new(&mut c, m, n, n),
            )
            .unwrap();
            c
        };
        let broadcast = run(MatRef::from_strides(&row, m, k, 0, 1));
        let written = run(MatRef::new(&rows, m, k, k));
        assert!(
            common::same_bits(&broadcast, &written),
            "{:?}: a broadcast A differs from its rows written out",
            kern.isa()
        );
    }
}

/// `rows x cols`, stored transposed when `t`.
fn view(d: &[f32], rows: usize, cols: usize, t: bool) -> MatRef<'_> {
    if t {
        MatRef::new(d, cols, rows, rows).t()
    } else {
        MatRef::new(d, rows, cols, cols)
    }
}

/// `sgemm_many` on products big enough to be cut into tiles (by columns when A is read in place
/// or is the smaller operand, by rows otherwise; a skinny one kept whole), on 1, 2 and 3 threads:
/// each job's C has the bits of one `sgemm` call.
#[test]
fn many_gemms_cut_into_tiles_equal_one_gemm_each_bit_for_bit() {
    // (m, n, k, A transposed, B transposed)
    let shapes = [
        (200, 384, 256, false, true),
        (300, 130, 200, true, false),
        (100, 900, 150, false, false),
        (5, 300, 400, false, true),
        (97, 50, 333, true, true),
    ];
    let ops: Vec<(Vec<f32>, Vec<f32>)> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(m, n, k, _, _))| (fill(m * k, 30 + i as u64), fill(k * n, 40 + i as u64)))
        .collect();
    for kern in Kernels::available().unwrap() {
        let run = |alone: bool| {
            let mut cs: Vec<Vec<f32>> = shapes
                .iter()
                .enumerate()
                .map(|(i, &(m, n, ..))| fill(m * n, 50 + i as u64))
                .collect();
            let mut jobs: Vec<GemmJob> = shapes
                .iter()
                .zip(&ops)
                .zip(&mut cs)
                .map(|((&(m, n, k, ta, tb), (a, b)), c)| GemmJob {
                    alpha: 0.75,
                    a: view(a, m, k, ta),
                    b: view(b, k, n, tb),
                    beta: 0.5,
                    c: MatMut::new(c, m, n, n),
                })
                .collect();
            if alone {
                for j in jobs {
                    kern.sgemm(j.alpha, j.a, j.b, j.beta, j.c).unwrap();
                }
            } else {
                kern.sgemm_many(&mut jobs).unwrap();
            }
            cs
        };
        let want = run(true);
        for threads in [1, 2, 3] {
            let got = common::pool(threads).install(|| run(false));
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    common::same_bits(g, w),
                    "{:?} {threads} threads: job {j} {:?} differs from sgemm",
                    kern.isa(),
                    shapes[j]
                );
            }
        }
    }
}

/// The same product on 1-, 2- and 3-thread pools, bit for bit (tall shapes cut their rows into
/// several chunks per thread; one reads A transposed, as `dW = dY^T X` does).
#[test]
fn bit_identical_across_thread_counts_and_serial() {
    let pool = |t| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
    };
    for kern in Kernels::available().unwrap() {
        for (m, n, k, ta, tb) in [
            (256, 768, 300, false, false),
            (97, 515, 333, false, true),
            (1, 3072, 768, false, true),
            (4, 3072, 768, false, false),
            (1030, 130, 400, false, false),
            (1600, 100, 300, false, false),
            (700, 300, 500, true, false),
        ] {
            let a = fill(m * k, 11);
            let b = fill(k * n, 12);
            let run = |threads, serial: bool| {
                let mut c = fill(m * n, 13);
                let bv = if tb {
                    MatRef::new(&b, n, k, k).t()
                } else {
                    MatRef::new(&b, k, n, n)
                };
                let av = if ta {
                    MatRef::new(&a, k, m, m).t()
                } else {
                    MatRef::new(&a, m, k, k)
                };
                let cm = MatMut::new(&mut c, m, n, n);
                pool(threads).install(|| {
                    if serial {
                        kern.sgemm_serial(1.0, av, bv, 1.0, cm).unwrap()
                    } else {
                        kern.sgemm(1.0, av, bv, 1.0, cm).unwrap()
                    }
                });
                c
            };
            let one = run(1, false);
            let serial = run(3, true);
            assert!(
                common::same_bits(&one, &serial),
                "{:?} {m}x{n}x{k}: sgemm and sgemm_serial differ",
                kern.isa()
            );
            for threads in [2, 3] {
                let many = run(threads, false);
                assert!(
                    common::same_bits(&one, &many),
                    "{:?} {m}x{n}x{k}: 1 and {threads} threads differ",
                    kern.isa()
                );
            }
        }
    }
}

#[test]
fn batched_matches_one_by_one() {
    for kern in Kernels::available().unwrap() {
        for (batch, m, n, k) in [
            (12, 16, 16, 64),
            (3, 33, 17, 9),
            (1, 64, 64, 64),
            (40, 2, 3, 4),
        ] {
            let (sa, sb, sc) = (m * k + 1, k * n + 2, m * n + 3);
            let a = fill(batch * sa, 1);
            let b = fill(batch * sb, 2);
            let c0 = fill(batch * sc, 3);
            let mut got = c0.clone();
            kern.sgemm_batched(
                batch,
                0.5,
                MatRef::new(&a, m, k, k),
                sa,
                MatRef::new(&b, n, k, k).t(),
                sb,
                1.0,
                MatMut::new(&mut got, m, n, n),
                sc,
            )
            .unwrap();
            let mut want = c0.clone();
            for i in 0..batch {
                kern.sgemm(
                    0.5,
                    MatRef::new(&a[i * sa..], m, k, k),
                    MatRef::new(&b[i * sb..], n, k, k).t(),
                    1.0,
                    MatMut::new(&mut want[i * sc..], m, n, n),
                )
                .unwrap();
            }
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{:?} batch {batch}",
                kern.isa()
            );
        }
    }
}

#[test]
fn shape_and_length_errors() {
    let kern = Kernels::best();
    let a = vec![0.0; 6];
    let b = vec![0.0; 6];
    let mut c = vec![0.0; 4];
    // Inner dimensions disagree: (2, 3) x (2, 3).
    let e = kern.sgemm(
        1.0,
        MatRef::new(&a, 2, 3, 3),
        MatRef::new(&b, 2, 3, 3),
        0.0,
        MatMut::new(&mut c, 2, 3, 3),
    );
    assert!(matches!(e, Err(KernelError::BadShape { .. })), "{e:?}");
    // A slice too short for its shape.
    let e = kern.sgemm(
        1.0,
        MatRef::new(&a[..5], 2, 3, 3),
        MatRef::new(&b, 3, 2, 2),
        0.0,
        MatMut::new(&mut c, 2, 2, 2),
    );
    assert!(
        matches!(e, Err(KernelError::BadLength { arg: "a", .. })),
        "{e:?}"
    );
    // C's leading dimension below its width.
    let e = kern.sgemm(
        1.0,
        MatRef::new(&a, 2, 3, 3),
        MatRef::new(&b, 3, 2, 2),
        0.0,
        MatMut::new(&mut c, 2, 2, 1),
    );
    assert!(matches!(e, Err(KernelError::BadShape { .. })), "{e:?}");
    // Strides whose span overflows.
    let e = kern.sgemm(
        1.0,
        MatRef::new(&a, 2, 3, usize::MAX),
        MatRef::new(&b, 3, 2, 2),
        0.0,
        MatMut::new(&mut c, 2, 2, 2),
    );
    assert!(matches!(e, Err(KernelError::BadShape { .. })), "{e:?}");
    // A bias that does not match C's columns.
    let e = kern.sgemm_bias(
        1.0,
        MatRef::new(&a, 2, 3, 3),
        MatRef::new(&b, 3, 2, 2),
        0.0,
        &[0.0; 3],
        MatMut::new(&mut c, 2, 2, 2),
    );
    assert!(matches!(e, Err(KernelError::BadShape { .. })), "{e:?}");
    // Batched outputs that would overlap.
    let e = kern.sgemm_batched(
        2,
        1.0,
        MatRef::new(&a, 1, 3, 3),
        3,
        MatRef::new(&b, 3, 1, 1),
        3,
        0.0,
        MatMut::new(&mut c, 1, 1, 1),
        0,
    );
    assert!(matches!(e, Err(KernelError::BadShape { .. })), "{e:?}");
}

#[test]
fn forcing_an_unknown_or_missing_isa_is_an_error() {
    assert!(matches!(
        "sse9".parse::<anvil::kernels::Isa>(),
        Err(KernelError::UnknownIsa { .. })
    ));
    for isa in anvil::kernels::Isa::ALL {
        let r = Kernels::new(isa);
        assert_eq!(r.is_ok(), isa.is_supported(), "{isa}");
        if let Err(e) = r {
            assert!(e.to_string().contains("it has: scalar"), "{e}");
        }
    }
}
