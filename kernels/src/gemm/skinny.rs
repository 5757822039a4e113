//! GEMV-like shapes (at most [`SKINNY_M`] rows of A): B is read in place, once, with no packing,
//! and the columns of C are split between threads.
//!
//! Two layouts of op(B) are served: unit column stride ("axpy form", B is (k, n) row-major: each k
//! step adds `A[i, p] * B[p, j..]` to a row of accumulators) and unit row stride ("dot form", B is
//! a transposed (n, k) matrix such as a Linear weight: each C element is a dot product of two
//! contiguous rows, reduced across lanes at the end). Each C element is computed by the same
//! instructions whatever the tile it falls in or the thread that runs it.

use super::loops::Problem;

/// Up to this many rows of A, the unpacked path wins: packing B would cost as much as using it.
pub(crate) const SKINNY_M: usize = 8;

/// The vector operations the skinny kernels need, per instruction set. Implementations are
/// `#[inline(always)]` and only called from `#[target_feature]` functions of their tier.
pub(crate) trait Simd {
    type V: Copy;
    const LANES: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    /// The first `n < LANES` lanes from `p`, zeros in the rest.
    unsafe fn load_part(p: *const f32, n: usize) -> Self::V;
    unsafe fn store_part(p: *mut f32, n: usize, v: Self::V);
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn hsum(v: Self::V) -> f32;
}

/// Below this many bytes of B a skinny GEMM runs on the calling thread even when the caller
/// offers none: a fork-join costs a few microseconds, about what one core takes to stream 256 KiB
/// from L2 or L3. A GEMV reads each weight once for one multiply-add, so it pays for a fork from
/// far fewer multiply-adds than the packed path's threshold (`loops::PAR_MIN_FMAS`).
const PAR_MIN_B_BYTES: usize = 256 * 1024;

/// From this many bytes of B the skinny kernels prefetch one pass ahead: B then comes from DRAM
/// (or L3), where each pass's rows would otherwise start as cold streams. (With B in L2 the
/// prefetches only cost load slots: 30 against 38 GB/s on one core, measured on the axpy form.)
const PREFETCH_MIN_B_BYTES: usize = 2 * 1024 * 1024;

/// Whether `p`'s B is large enough for [`PREFETCH_MIN_B_BYTES`].
fn prefetches(p: &Problem) -> bool {
    p.k.saturating_mul(p.n).saturating_mul(4) >= PREFETCH_MIN_B_BYTES
}

/// Asks for the cache line at `p` (a hint: it never faults, so `p` may lie past the problem).
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86-64; a prefetch reads nothing and never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Runs `p` on the skinny path if its shape suits and returns true; false leaves it to the packed
/// path. `threads`: the threads the caller offers; a B of [`PAR_MIN_B_BYTES`] or more is split
/// over the whole rayon pool regardless.
///
/// # Safety
/// As `loops::gemm`, and the CPU supports `S`'s instruction set.
pub(crate) unsafe fn try_run<S: Simd>(
    p: &Problem,
    threads: usize,
    axpy: unsafe fn(&Problem, usize, usize),
    dot: unsafe fn(&Problem, usize, usize),
) -> bool {
    if p.m > SKINNY_M {
        return false;
    }
    let big = p.k.saturating_mul(p.n).saturating_mul(4) >= PAR_MIN_B_BYTES;
    if p.csb == 1 && big && p.k > AXPY_ROWS {
        // SAFETY: forwarded contract.
        unsafe { k_split(p, axpy) };
        return true;
    }
    let kernel = if p.csb == 1 {
        axpy
    } else if p.rsb == 1 && p.csa == 1 {
        dot
    } else {
        return false;
    };
    let threads = if threads <= 1 && big {
        rayon::current_num_threads()
    } else {
        threads
    };
    // Column blocks of whole vectors, so no vector of C straddles a cut; each C element is
    // computed the same way whichever block it falls in.
    let unit = S::LANES;
    let parts = if threads > 1 {
        threads.min(p.n.div_ceil(unit))
    } else {
        1
    };
    if parts <= 1 {
        // SAFETY: the whole problem (caller's contract).
        unsafe { kernel(p, 0, p.n) };
        return true;
    }
    use rayon::prelude::*;
    let units = p.n.div_ceil(unit);
    (0..parts).into_par_iter().for_each(|t| {
        let lo = (units * t / parts * unit).min(p.n);
        let hi = (units * (t + 1) / parts * unit).min(p.n);
        // SAFETY: disjoint column ranges of the checked problem.
        unsafe { kernel(p, lo, hi) };
    });
    true
}

/// Bytes of B per task when [`run_many`] splits dot-form products between threads. Tasks go to
/// whichever thread is free (rayon's stealing), so jobs of different sizes still share the
/// threads evenly, and a thread the OS takes away holds back at most one task. Each task's
/// columns come from eight regions ([`dot_cols`]), so a task of 512 KiB streams eight runs of
/// 64 KiB. Measured on the tiny MoE's decode (2 threads, the same model alternated in one
/// process): 512 KiB gave 1.027-1.065x the tokens/s of 128 KiB (runs of 16 KiB); one task per
/// thread's share gave 1.00-1.10x.
const DOT_TASK_B_BYTES: usize = 512 * 1024;

/// Whether `p` takes the dot form on the skinny path exactly as [`try_run`] would send it there
/// (so that [`run_many`] computes every element as a lone GEMM does).
fn dot_form(p: &Problem) -> bool {
    p.m >= 1
        && p.m <= SKINNY_M
        && p.n > 0
        && p.k > 0
        && p.alpha != 0.0
        && p.csb != 1
        && p.rsb == 1
        && p.csa == 1
        && p.bias.is_null()
        && p.bpk.is_null()
}

/// Runs independent dot-form GEMMs in one parallel region and returns true; false (nothing run)
/// when any of them is not in the dot form. One fork-join for the k matrices a mixture's chosen
/// experts apply to the same tokens, instead of one per matrix.
///
/// # Safety
/// As [`try_run`] for each problem; their outputs do not overlap.
pub(crate) unsafe fn run_many<S: Simd>(
    ps: &[Problem],
    dot: unsafe fn(&Problem, usize, usize),
) -> bool {
    if !ps.iter().all(dot_form) {
        return false;
    }
    let bytes = ps.iter().fold(0usize, |s, p| {
        s.saturating_add(p.k.saturating_mul(p.n).saturating_mul(4))
    });
    // SAFETY: forwarded contract; every problem is in the dot form.
    unsafe { dot_tasks(ps, S::LANES, dot, bytes >= PAR_MIN_B_BYTES) };
    true
}

/// The dot form of every problem in `ps`, cut by columns into tasks of at most
/// [`DOT_TASK_B_BYTES`] of B and at most a thread's share (whole groups of `unit` columns), run
/// on the rayon pool when `parallel`. Each C element is one dot product whichever task holds it,
/// so the cut changes no bit.
///
/// # Safety
/// As [`try_run`] for each problem, each in the dot form; their outputs do not overlap.
unsafe fn dot_tasks(
    ps: &[Problem],
    unit: usize,
    dot: unsafe fn(&Problem, usize, usize),
    parallel: bool,
) {
    let threads = rayon::current_num_threads();
    if !parallel || threads <= 1 {
        for p in ps {
            // SAFETY: the whole problem (caller's contract).
            unsafe { dot(p, 0, p.n) };
        }
        return;
    }
    let mut tasks = Vec::new();
    for (i, p) in ps.iter().enumerate() {
        let by_bytes = DOT_TASK_B_BYTES / p.k.saturating_mul(4).max(1) / unit * unit;
        let share = p.n.div_ceil(threads).next_multiple_of(unit);
        let cols = by_bytes.min(share).max(unit);
        tasks.extend(
            (0..p.n)
                .step_by(cols)
                .map(|lo| (i, lo, (lo + cols).min(p.n))),
        );
    }
    use rayon::prelude::*;
    tasks
        .into_par_iter()
        .with_max_len(1)
        .for_each(|(i, lo, hi)| {
            // SAFETY: disjoint column ranges of the checked problems, whose outputs do not overlap.
            unsafe { dot(&ps[i], lo, hi) };
        });
}

/// Slices of k a large GEMV in the axpy form is cut into (fewer when k is short). A split by
/// columns would give each thread a strided part of every row of B; a split by k gives each a
/// contiguous run of whole rows, which streams from memory at a higher rate (measured on the
/// tiny GPT's decode). The cut depends on the shape only, never on the thread count, and the
/// slices' partial sums are added in slice order, so results are bit-identical on any number of
/// threads. Eight slices keep 1, 2, 4 and 8 threads evenly loaded.
const K_SLICES: usize = 8;

/// The axpy form cut along k into at most [`K_SLICES`] slices of whole passes: each slice's
/// partial product `P_s (m, n)` goes to its own buffer (in parallel), then `C = alpha * (P_0 +
/// P_1 + ...) + beta * C`, summed in slice order.
///
/// # Safety
/// As [`try_run`]; `p` is in the axpy form (`csb == 1`).
unsafe fn k_split(p: &Problem, axpy: unsafe fn(&Problem, usize, usize)) {
    thread_local! {
        /// The partial sums, kept per calling thread and reused: one decode step makes several
        /// of these GEMVs per layer, and a fresh buffer per call costs allocation and page faults.
        static PARTS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    PARTS.with(|cell| {
        // A GEMV that rayon runs on this thread while it waits below finds the buffer taken and
        // uses a fresh one.
        let mut spare = Vec::new();
        let mut guard = cell.try_borrow_mut();
        let buf = match guard.as_deref_mut() {
            Ok(b) => b,
            Err(_) => &mut spare,
        };
        // SAFETY: forwarded contract.
        unsafe { k_split_into(p, axpy, buf) }
    });
}

/// [`k_split`] with its partial sums in `part` (grown as needed; stale values are never read:
/// each slice's product is stored with beta 0, which does not read C).
///
/// # Safety
/// As [`k_split`].
unsafe fn k_split_into(p: &Problem, axpy: unsafe fn(&Problem, usize, usize), part: &mut Vec<f32>) {
    use rayon::prelude::*;
    let rows = p.k.div_ceil(K_SLICES).next_multiple_of(AXPY_ROWS);
    let slices = p.k.div_ceil(rows);
    let (m, n) = (p.m, p.n);
    if part.len() < slices * m * n {
        part.resize(slices * m * n, 0.0);
    }
    let part = &mut part[..slices * m * n];
    part.par_chunks_mut(m * n).enumerate().for_each(|(s, buf)| {
        let k0 = s * rows;
        let q = Problem {
            k: rows.min(p.k - k0),
            alpha: 1.0,
            // Pointer arithmetic only: rows k0.. of B and columns k0.. of A lie inside the problem.
            a: p.a.wrapping_add(k0 * p.csa),
            b: p.b.wrapping_add(k0 * p.rsb),
            beta: 0.0,
            bias: std::ptr::null(),
            c: buf.as_mut_ptr(),
            ldc: n,
            ..*p
        };
        // SAFETY: rows k0..k0 + q.k of the checked problem; C is this slice's own (m, n) buffer.
        unsafe { axpy(&q, 0, n) };
    });
    // The sum of the slices is itself an axpy-form product: row i of C is
    // `alpha * ones(1, S) (P_0[i]; P_1[i]; ...) + beta * C[i]`, summed over the slices in order
    // (an FMA by 1 adds exactly as an add), stored as every other skinny product.
    let ones = [1.0f32; K_SLICES];
    for i in 0..m {
        let q = Problem {
            m: 1,
            k: slices,
            a: ones.as_ptr(),
            rsa: slices,
            csa: 1,
            b: part.as_ptr().wrapping_add(i * n),
            rsb: m * n,
            c: p.c.wrapping_add(i * p.ldc),
            bias: std::ptr::null(),
            ..*p
        };
        // SAFETY: `slices` rows of partial sums m * n apart, each holding row i's n values; row i of C (caller's contract).
        unsafe { axpy(&q, 0, n) };
    }
}

/// `y[j] = alpha * (x . w[j * ldw..][..x.len()])` for `j < y.len()`, on the calling thread: the
/// dot form for one row of A, for callers that already run inside a parallel task (attention's
/// decode step scores one query against the cached keys of one head, `ldw` apart).
///
/// # Panics
/// When `w` is too short for `y.len()` rows of `x.len()` values `ldw` apart (callers derive every
/// length from checked shapes, so this is a bug, not bad input).
pub(crate) fn gemv_dot(
    isa: crate::Isa,
    alpha: f32,
    x: &[f32],
    w: &[f32],
    ldw: usize,
    y: &mut [f32],
) {
    let (n, k) = (y.len(), x.len());
    if n == 0 {
        return;
    }
    assert!(
        ldw >= k && w.len() >= (n - 1) * ldw + k,
        "gemv_dot: {n} rows of {k} values {ldw} apart need more than {} weights",
        w.len()
    );
    let p = Problem {
        m: 1,
        n,
        k,
        alpha,
        a: x.as_ptr(),
        rsa: k,
        csa: 1,
        b: w.as_ptr(),
        rsb: 1,
        csb: ldw,
        beta: 0.0,
        c: y.as_mut_ptr(),
        ldc: n,
        bias: std::ptr::null(),
        bpk: std::ptr::null(),
        bnp: 0,
        bj0: 0,
    };
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the assert above bounds every row of w; x and y have k and n values; the table only holds tiers the CPU has.
        crate::Isa::Avx512 => unsafe { super::avx512::skinny_dot(&p, 0, n) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        crate::Isa::Avx2 => unsafe { super::avx2::skinny_dot(&p, 0, n) },
        _ => {
            // The scalar reference order: k in order, one f32 sum.
            for (j, yj) in y.iter_mut().enumerate() {
                let row = &w[j * ldw..][..k];
                let acc = x.iter().zip(row).fold(0.0f32, |s, (a, b)| s + a * b);
                *yj = alpha * acc;
            }
        }
    }
}

/// Stores one row of results: `c = alpha * acc + beta * c` (C not read when `beta == 0`).
#[inline(always)]
unsafe fn store<S: Simd>(c: *mut f32, n: usize, acc: S::V, alpha: S::V, beta: f32) {
    // SAFETY: c holds n <= LANES writable values (caller's contract).
    unsafe {
        let mut r = S::mul(alpha, acc);
        if beta != 0.0 {
            r = S::fma(S::splat(beta), S::load_part(c, n), r);
        }
        S::store_part(c, n, r);
    }
}

/// Accumulators of the axpy form: a block of `M x (AXPY_ACC / M)` stays in L1 (16 KiB) while B
/// streams through, so with fewer rows each pass reads longer contiguous runs of B's rows.
const AXPY_ACC: usize = 4096;
/// Rows of B per pass over an accumulator block: each pass reads this many rows of B side by side
/// and loads and stores the accumulators once. The rows of a pass come from as many regions of B,
/// spread evenly over k ([`spread`]), not from adjacent rows: a row of a narrow B (384 values)
/// is 1.5 KiB, so eight adjacent rows keep only three pages streaming at once, too few for the
/// hardware prefetchers to hide DRAM's latency. Measured on one core over 40 MB of (384, 384)
/// weights: 0.64 of the read probe's rate with adjacent rows, 0.84 with spread rows; (1536, 384)
/// 0.66 -> 0.83-0.90, (768, 768) 0.77 -> 0.86-0.90.
const AXPY_ROWS: usize = 8;

/// Item `t` of each of the `N` regions of `per` items that cover `0..len` (the last region may be
/// shorter, so it may have no item `t`): the rows of B that pass `t` of [`axpy_cols`] reads, in
/// the order it adds them, or the columns that group `t` of [`dot_cols`] computes. Returns the
/// items and how many there are.
#[inline(always)]
fn spread<const N: usize>(t: usize, per: usize, len: usize) -> ([usize; N], usize) {
    let items = std::array::from_fn(|r| t + r * per);
    let count = items.iter().take_while(|&&i| i < len).count();
    (items, count)
}

/// Axpy form over columns `j0..j1` with `M` rows: `acc[i, j] += A[i, p] * B[p, j]` for p in the
/// order of [`spread`], which depends on k alone, so each element's sum runs in the same order
/// whatever the blocking. Columns go `U` vectors at a time (`M * U` independent accumulators hide
/// the FMA latency), then one at a time.
#[inline(always)]
pub(crate) unsafe fn axpy_cols<S: Simd, const M: usize, const U: usize>(
    p: &Problem,
    j0: usize,
    j1: usize,
) {
    let mut buf = [0.0f32; AXPY_ACC];
    let lanes = S::LANES;
    // No wider than the columns asked for: a narrow GEMV then zeroes only the accumulators it uses.
    let cols = (AXPY_ACC / M / lanes * lanes).min(j1.saturating_sub(j0).next_multiple_of(lanes));
    for jb in (j0..j1).step_by(cols.max(1)) {
        let width = cols.min(j1 - jb);
        if jb > j0 {
            // The first block's accumulators are still the zeros `buf` started with.
            buf[..M * cols].fill(0.0);
        }
        let acc = Acc {
            ptr: buf.as_mut_ptr(),
            cols,
        };
        let (full, last) = (width / lanes, width % lanes);
        let pf = prefetches(p);
        let passes = p.k.div_ceil(AXPY_ROWS);
        for t in 0..passes {
            let (all, count) = spread::<AXPY_ROWS>(t, passes, p.k);
            let rows = &all[..count];
            // The next pass's rows (the row after each of this pass's), fetched while this pass
            // runs (none after the last).
            let ahead = pf && t + 1 < passes;
            let mut v = 0;
            // SAFETY: vectors v.. lie inside the block's `width` columns of B, inside `buf` (M x whole vectors) and rows inside k.
            unsafe {
                while v + U <= full {
                    axpy_tile::<S, M, U>(p, &acc, jb, v * lanes, rows, lanes, ahead);
                    v += U;
                }
                while v < full {
                    axpy_tile::<S, M, 1>(p, &acc, jb, v * lanes, rows, lanes, ahead);
                    v += 1;
                }
                if last > 0 {
                    axpy_tile::<S, M, 1>(p, &acc, jb, v * lanes, rows, last, ahead);
                }
            }
        }
        // SAFETY: only called from code of S's instruction set (caller's contract).
        let alpha = unsafe { S::splat(p.alpha) };
        for i in 0..M {
            for v in (0..width).step_by(lanes) {
                let n = lanes.min(width - v);
                // SAFETY: row i < m, columns jb + v..jb + v + n < n of C; accumulators in buf.
                unsafe {
                    let r = S::load(acc.ptr.add(i * cols + v));
                    store::<S>(p.c.add(i * p.ldc + jb + v), n, r, alpha, p.beta);
                }
            }
        }
    }
}

/// The axpy form's accumulator block: `M` rows of `cols` values.
struct Acc {
    ptr: *mut f32,
    cols: usize,
}

/// One tile of the axpy form: `U` vectors of columns from `jb + v` (the last holding `last`
/// columns), rows `rows` of B added into the accumulators in that order; with `ahead`, the same
/// columns of the row after each are prefetched.
///
/// # Safety
/// Rows `rows` of B and columns `jb + v..jb + v + (U - 1) * LANES + last` lie inside the problem;
/// the accumulators `v..v + U * LANES` of each of the `M` rows lie inside the block.
#[inline(always)]
unsafe fn axpy_tile<S: Simd, const M: usize, const U: usize>(
    p: &Problem,
    acc: &Acc,
    jb: usize,
    v: usize,
    rows: &[usize],
    last: usize,
    ahead: bool,
) {
    let lanes = S::LANES;
    // SAFETY: the caller's contract.
    unsafe {
        let mut r = [[S::zero(); U]; M];
        for (i, ri) in r.iter_mut().enumerate() {
            for (u, x) in ri.iter_mut().enumerate() {
                *x = S::load(acc.ptr.add(i * acc.cols + v + u * lanes));
            }
        }
        for &kk in rows {
            let bp = p.b.add(kk * p.rsb + jb + v);
            if ahead {
                let next = bp.wrapping_add(p.rsb);
                for u in 0..U {
                    prefetch(next.wrapping_add(u * lanes));
                }
            }
            let a: [S::V; M] = std::array::from_fn(|i| S::splat(*p.a.add(i * p.rsa + kk * p.csa)));
            for u in 0..U {
                let bv = if u + 1 < U || last == lanes {
                    S::load(bp.add(u * lanes))
                } else {
                    S::load_part(bp.add(u * lanes), last)
                };
                for (ri, &ai) in r.iter_mut().zip(&a) {
                    ri[u] = S::fma(ai, bv, ri[u]);
                }
            }
        }
        for (i, ri) in r.iter().enumerate() {
            for (u, x) in ri.iter().enumerate() {
                S::store_part(acc.ptr.add(i * acc.cols + v + u * lanes), lanes, *x);
            }
        }
    }
}

/// Dot form over columns `j0..j1`: `M` rows of A (contiguous along k) against groups of `J`
/// columns of op(B) (contiguous along k); `M * J` independent accumulators. A group's columns come
/// from `J` regions spread over `j0..j1` ([`spread`]), for the reason [`AXPY_ROWS`] gives: with a
/// short k (384 values, 1.5 KiB a column) `J` adjacent columns stream as only three pages. Each C
/// element is the same dot product whichever group holds it.
#[inline(always)]
pub(crate) unsafe fn dot_cols<S: Simd, const M: usize, const J: usize>(
    p: &Problem,
    j0: usize,
    j1: usize,
) {
    let full = p.k / S::LANES * S::LANES;
    let tail = p.k - full;
    let pf = prefetches(p);
    let width = j1.saturating_sub(j0);
    let groups = width.div_ceil(J);
    for t in 0..groups {
        let (idx, cols) = spread::<J>(t, groups, width);
        let idx = idx.map(|i| j0 + i);
        // The next group's columns (the column after each of this group's: the next rows of a
        // Linear weight), fetched while this group runs (none after the last).
        let ahead = pf && t + 1 < groups;
        // SAFETY: columns idx[..cols] < j1 <= n, rows < M = m, k values each: inside the problem.
        unsafe {
            let mut acc = [[S::zero(); J]; M];
            let bcol: [*const f32; J] =
                std::array::from_fn(|jj| p.b.add(idx[jj.min(cols - 1)] * p.csb));
            let mut kk = 0;
            while kk < full {
                if ahead {
                    for &c in &bcol {
                        prefetch(c.wrapping_add(p.csb + kk));
                    }
                }
                let bv: [S::V; J] = std::array::from_fn(|jj| S::load(bcol[jj].add(kk)));
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = S::load(p.a.add(i * p.rsa + kk));
                    for jj in 0..J {
                        row[jj] = S::fma(av, bv[jj], row[jj]);
                    }
                }
                kk += S::LANES;
            }
            if tail > 0 {
                let bv: [S::V; J] =
                    std::array::from_fn(|jj| S::load_part(bcol[jj].add(full), tail));
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = S::load_part(p.a.add(i * p.rsa + full), tail);
                    for jj in 0..J {
                        row[jj] = S::fma(av, bv[jj], row[jj]);
                    }
                }
            }
            for (i, row) in acc.iter().enumerate() {
                for (jj, &v) in row.iter().enumerate().take(cols) {
                    let c = p.c.add(i * p.ldc + idx[jj]);
                    let s = p.alpha * S::hsum(v);
                    *c = if p.beta == 0.0 {
                        s
                    } else {
                        p.beta.mul_add(*c, s)
                    };
                }
            }
        }
    }
}

/// Instantiates the kernels for each row count 1..=8 behind one `#[target_feature]` entry. The
/// axpy form unrolls over 8 / M vectors of columns (at most 8 accumulators); the dot form takes 8
/// columns at a time for one row of A, 4 for more.
macro_rules! skinny_entry {
    ($simd:ty, $feat:literal, $axpy:ident, $dot:ident) => {
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn $axpy(p: &crate::gemm::loops::Problem, j0: usize, j1: usize) {
            use crate::gemm::skinny::axpy_cols;
            // SAFETY: forwarded contract; m selects the instantiation.
            unsafe {
                match p.m {
                    1 => axpy_cols::<$simd, 1, 8>(p, j0, j1),
                    2 => axpy_cols::<$simd, 2, 4>(p, j0, j1),
                    3 => axpy_cols::<$simd, 3, 2>(p, j0, j1),
                    4 => axpy_cols::<$simd, 4, 2>(p, j0, j1),
                    5 => axpy_cols::<$simd, 5, 1>(p, j0, j1),
                    6 => axpy_cols::<$simd, 6, 1>(p, j0, j1),
                    7 => axpy_cols::<$simd, 7, 1>(p, j0, j1),
                    _ => axpy_cols::<$simd, 8, 1>(p, j0, j1),
                }
            }
        }

        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn $dot(p: &crate::gemm::loops::Problem, j0: usize, j1: usize) {
            use crate::gemm::skinny::dot_cols;
            // SAFETY: forwarded contract; rows are taken four at a time.
            unsafe {
                let mut i = 0;
                while i < p.m {
                    let q = crate::gemm::loops::Problem {
                        m: (p.m - i).min(4),
                        a: p.a.add(i * p.rsa),
                        c: p.c.add(i * p.ldc),
                        ..*p
                    };
                    match q.m {
                        1 => dot_cols::<$simd, 1, 8>(&q, j0, j1),
                        2 => dot_cols::<$simd, 2, 4>(&q, j0, j1),
                        3 => dot_cols::<$simd, 3, 4>(&q, j0, j1),
                        _ => dot_cols::<$simd, 4, 4>(&q, j0, j1),
                    }
                    i += 4;
                }
            }
        }
    };
}
pub(crate) use skinny_entry;
