//! The skinny (GEMV-like, m <= 8) GEMM path against the scalar reference on every tier: row
//! counts 1..=8 against column counts on both sides of each unroll width (8 / m vectors in the
//! axpy form, 4 or 8 columns in the dot form) and of the thread split, both layouts of B, NaN
//! sentinels in C's padding; and bit-identical results on 1 and 2 threads for GEMVs that are
//! split between threads below the packed path's threshold.

mod common;

use anvil::kernels::gemm::reference;
use anvil::kernels::{GemmJob, Kernels, MatMut, MatRef};

/// The k-term dot product is summed in a different order (FMA, lanes) than the reference:
/// |err| <= gamma_{k+2} * sum |terms|, doubled because both sides round.
fn tolerance(k: usize, magnitude: f32) -> f32 {
    let n = (k + 2) as f32 * f32::EPSILON;
    2.0 * n / (1.0 - n) * magnitude + f32::MIN_POSITIVE
}

/// `C = alpha * A B + beta * C` with A `(m, k)`, B `(k, n)` or, `dot`, stored `(n, k)`.
#[allow(clippy::too_many_arguments)]
fn run(
    kern: Option<&Kernels>,
    m: usize,
    n: usize,
    k: usize,
    dot: bool,
    alpha: f32,
    beta: f32,
    pad: usize,
) -> Vec<f32> {
    let a = common::noise(1, m * k);
    let b = common::noise(2, k * n);
    let ldc = n + pad;
    let mut c = common::noise(3, m * ldc);
    for i in 0..m {
        c[i * ldc + n..(i + 1) * ldc].fill(f32::NAN);
    }
    let av = MatRef::new(&a, m, k, k);
    let bv = if dot {
        MatRef::new(&b, n, k, k).t()
    } else {
        MatRef::new(&b, k, n, n)
    };
    let cm = MatMut::new(&mut c, m, n, ldc);
    match kern {
        Some(kern) => kern.sgemm(alpha, av, bv, beta, cm).unwrap(),
        None => reference::sgemm(alpha, av, bv, beta, cm).unwrap(),
    }
    c
}

#[test]
fn every_row_count_across_unroll_and_split_widths() {
    let widths = [1, 15, 16, 17, 31, 64, 127, 128, 129, 143, 200, 385, 1000];
    for kern in Kernels::available().unwrap() {
        for m in 1..=8 {
            for &n in &widths {
                for k in [1, 7, 8, 9, 33] {
                    for (dot, alpha, beta, pad) in [
                        (false, 1.0, 0.0, 0),
                        (true, 1.0, 0.0, 0),
                        (false, 0.5, 1.5, 3),
                        (true, -2.0, 0.25, 1),
                    ] {
                        let got = run(Some(&kern), m, n, k, dot, alpha, beta, pad);
                        let want = run(None, m, n, k, dot, alpha, beta, pad);
                        let c0 = common::noise(3, m * (n + pad));
                        for i in 0..m {
                            for j in 0..n + pad {
                                let (g, w) = (got[i * (n + pad) + j], want[i * (n + pad) + j]);
                                if j >= n {
                                    assert!(
                                        g.is_nan(),
                                        "{:?} m{m} n{n}: padding written",
                                        kern.isa()
                                    );
                                    continue;
                                }
                                let mag = alpha.abs() * k as f32
                                    + beta.abs() * c0[i * (n + pad) + j].abs();
                                assert!(
                                    (g - w).abs() <= tolerance(k, mag),
                                    "{:?} m{m} n{n} k{k} dot{dot}: C[{i},{j}] = {g}, reference {w}",
                                    kern.isa()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// GEMVs of the tiny and GPT-2 models' shapes, whose weights (>= 256 KiB) are split between
/// threads although they have fewer multiply-adds than the packed path's threshold.
#[test]
fn split_gemvs_bit_identical_across_thread_counts() {
    for kern in Kernels::available().unwrap() {
        for (m, n, k, dot) in [
            (1, 384, 384, false),
            (1, 1152, 384, false),
            (1, 384, 1536, true),
            (3, 1536, 384, true),
            (2, 200, 700, false),
        ] {
            let go = |t| common::pool(t).install(|| run(Some(&kern), m, n, k, dot, 1.0, 1.0, 0));
            let (one, two) = (go(1), go(2));
            assert!(
                common::same_bits(&one, &two),
                "{:?} {m}x{n}x{k} dot{dot}: 1 and 2 threads differ",
                kern.isa()
            );
        }
    }
}

/// GEMVs whose B holds 2 MiB or more, where the kernels prefetch the next pass of B (the next
/// group of rows in the axpy form, of columns in the dot form): against the reference on every
/// tier, with k and n not whole vectors and C padded with NaN sentinels, and bit-identical on 1
/// and 2 threads.
#[test]
fn prefetching_gemvs_match_the_reference_on_every_tier() {
    for (m, n, k, dot, pad) in [
        (1, 769, 700, false, 0),
        (1, 769, 700, true, 2),
        (3, 750, 701, false, 1),
        (5, 1001, 531, true, 0),
    ] {
        against_reference_on_threads(m, n, k, dot, pad, &[1, 2]);
    }
}

/// Axpy-form GEMVs of 256 KiB of B or more, cut along k into slices whose partial sums are added
/// in order: k short of the eight slices, k not whole passes, a last slice of a few rows, several
/// rows of A; against the reference on every tier and bit-identical on 1, 2 and 3 threads (three
/// threads do not divide the eight slices).
#[test]
fn k_split_gemvs_match_the_reference_and_any_thread_count() {
    for (m, n, k, pad) in [
        (1, 4001, 20, 0),
        (1, 3000, 67, 1),
        (2, 1025, 130, 3),
        (1, 1536, 384, 0),
        (4, 300, 1000, 0),
        (8, 257, 513, 2),
    ] {
        against_reference_on_threads(m, n, k, false, pad, &[1, 2, 3]);
    }
}

/// `run` on each tier and thread count against the reference (`alpha` 1, `beta` 0.5), every
/// thread count bit-identical to the first.
fn against_reference_on_threads(
    m: usize,
    n: usize,
    k: usize,
    dot: bool,
    pad: usize,
    threads: &[usize],
) {
    let (alpha, beta) = (1.0, 0.5);
    let want = run(None, m, n, k, dot, alpha, beta, pad);
    let c0 = common::noise(3, m * (n + pad));
    for kern in Kernels::available().unwrap() {
        let isa = kern.isa();
        let go = |t| common::pool(t).install(|| run(Some(&kern), m, n, k, dot, alpha, beta, pad));
        let first = go(threads[0]);
        for &t in &threads[1..] {
            let other = go(t);
            assert!(
                common::same_bits(&first, &other),
                "{isa:?} {m}x{n}x{k} dot{dot}: {} and {t} threads differ",
                threads[0]
            );
        }
        for (idx, (&g, &w)) in first.iter().zip(&want).enumerate() {
            if idx % (n + pad) >= n {
                assert!(g.is_nan(), "{isa:?} {m}x{n}x{k}: padding written");
                continue;
            }
            let mag = alpha * k as f32 + beta * c0[idx].abs();
            assert!(
                (g - w).abs() <= tolerance(k, mag),
                "{isa:?} {m}x{n}x{k} dot{dot}: C[{idx}] = {g}, reference {w}"
            );
        }
    }
}

/// One job of `sgemm_many`'s test: `(m, n, k, dot)`, B stored `(n, k)` when `dot`.
type Shape = (usize, usize, usize, bool);

/// Each job's C after `sgemm_many` (or, `alone`, after one `sgemm` per job) from the same inputs.
fn many(kern: &Kernels, shapes: &[Shape], alone: bool) -> Vec<Vec<f32>> {
    let ops: Vec<(Vec<f32>, Vec<f32>)> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(m, n, k, _))| {
            let s = 10 * i as u64;
            (common::noise(s + 1, m * k), common::noise(s + 2, k * n))
        })
        .collect();
    let mut cs: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(m, n, _, _))| common::noise(10 * i as u64 + 3, m * n))
        .collect();
    let mut jobs: Vec<GemmJob> = shapes
        .iter()
        .zip(&ops)
        .zip(&mut cs)
        .map(|((&(m, n, k, dot), (a, b)), c)| GemmJob {
            alpha: 0.75,
            a: MatRef::new(a, m, k, k),
            b: if dot {
                MatRef::new(b, n, k, k).t()
            } else {
                MatRef::new(b, k, n, n)
            },
            beta: if dot { 0.0 } else { 0.5 },
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
}

#[test]
fn many_gemms_in_one_region_equal_one_gemm_each_bit_for_bit() {
    // A decode step's expert matrices (split into tasks between threads), odd widths and k
    // tails, every row count of the skinny path, and a set with an axpy-form job (run one by one).
    let sets: [&[Shape]; 4] = [
        &[
            (1, 1000, 132, true),
            (1, 1000, 132, true),
            (1, 132, 1000, true),
        ],
        &[(2, 517, 300, true), (1, 9, 5, true), (8, 700, 129, true)],
        &[
            (3, 33, 17, true),
            (4, 1, 40, true),
            (5, 64, 64, true),
            (7, 250, 260, true),
        ],
        &[(1, 600, 200, true), (2, 300, 600, false), (9, 40, 30, true)],
    ];
    for kern in Kernels::available().unwrap() {
        let isa = kern.isa();
        for shapes in sets {
            let want = many(&kern, shapes, true);
            for threads in [1, 2, 3] {
                let got = common::pool(threads).install(|| many(&kern, shapes, false));
                for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        common::same_bits(g, w),
                        "{isa:?} {threads} threads: job {j} {:?} differs from sgemm",
                        shapes[j]
                    );
                }
            }
        }
    }
}

#[test]
fn many_gemms_refuse_a_bad_job() {
    let kern = Kernels::best();
    let (a, b) = (vec![1.0; 8], vec![1.0; 8 * 4]);
    let mut c = vec![0.0; 4];
    let mut short = vec![0.0; 3];
    let mut jobs = vec![
        GemmJob {
            alpha: 1.0,
            a: MatRef::new(&a, 1, 8, 8),
            b: MatRef::new(&b, 4, 8, 8).t(),
            beta: 0.0,
            c: MatMut::new(&mut c, 1, 4, 4),
        },
        GemmJob {
            alpha: 1.0,
            a: MatRef::new(&a, 1, 8, 8),
            b: MatRef::new(&b, 4, 8, 8).t(),
            beta: 0.0,
            c: MatMut::new(&mut short, 1, 4, 4),
        },
    ];
    let e = kern.sgemm_many(&mut jobs).unwrap_err().to_string();
    assert!(e.contains("sgemm_many"), "{e}");
    drop(jobs);
    assert_eq!(c, [0.0; 4], "nothing computed when a job is bad");
}
