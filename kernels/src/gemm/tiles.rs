//! Independent GEMMs in one parallel region (a mixture's experts): each cut into tiles of about
//! the same work, the tiles taken largest first by whichever thread is free.
//!
//! One GEMM per thread at a time leaves a thread idle for up to one GEMM at the end of the
//! region; tiles a quarter of a thread's share bound that to a fraction of a tile. A tile is a
//! block of rows or of columns of one product run by the single-threaded loop nest, whose
//! arithmetic for each element does not depend on where the cuts fall: every job gets the bits
//! of [`super::Kernels::sgemm`].

use super::kernel::MicroKernel;
use super::loops::{PAR_MIN_FMAS, Problem, direct_a, gemm, ranges, serial};
use super::skinny::SKINNY_M;
use crate::Isa;
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Tiles per thread that the cut aims for: the largest-first order then leaves the last thread
/// idle for at most about one small tile. Measured on the tiny MoE's training step (2 threads,
/// alternated in one process over 150 s): 1.012-1.015x against its experts run whole in the
/// same queue; 8 tiles a thread were another 1.008x (q1-q3 0.986-1.035), within the noise, for
/// more copies of A.
const TILES_PER_THREAD: usize = 4;

/// A piece of work: a whole problem for [`gemm`] (one that may take the skinny path, whose
/// arithmetic depends on its shape), or a tile for [`serial`].
struct Task {
    p: Problem,
    whole: bool,
    work: usize,
}

/// Runs `ps` on the current rayon pool.
///
/// # Safety
/// As `loops::gemm`, for each problem; their outputs do not overlap.
pub(crate) unsafe fn run(isa: Isa, ps: &[Problem]) {
    // SAFETY: forwarded contract, per ISA.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => run_on::<super::avx512::Avx512>(isa, ps),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => run_on::<super::avx2::Avx2>(isa, ps),
            _ => run_on::<super::scalar::Scalar>(isa, ps),
        }
    }
}

fn work(p: &Problem) -> usize {
    p.m * p.n * p.k.max(1)
}

unsafe fn run_on<K: MicroKernel>(isa: Isa, ps: &[Problem]) {
    let threads = rayon::current_num_threads();
    let total: usize = ps.iter().map(work).sum();
    if threads <= 1 || total < PAR_MIN_FMAS {
        for p in ps {
            // SAFETY: forwarded contract.
            unsafe { gemm(isa, p, false) };
        }
        return;
    }
    let mut tasks = cut::<K>(ps, total.div_ceil(threads * TILES_PER_THREAD));
    tasks.sort_by_key(|t| std::cmp::Reverse(t.work));
    let next = AtomicUsize::new(0);
    (0..threads.min(tasks.len())).into_par_iter().for_each(|_| {
        while let Some(t) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) {
            // Each task is a whole problem or a disjoint tile of one, and the caller's problems do
            // not overlap; whole ones go through `gemm`'s own dispatch.
            // SAFETY: the tasks' outputs are disjoint parts of the caller's checked problems.
            unsafe {
                if t.whole {
                    gemm(isa, &t.p, false)
                } else {
                    serial::<K>(&t.p)
                }
            }
        }
    });
}

/// The tasks of `ps`, tiles of about `target` multiply-adds. A product is cut along the operand
/// whose packing the tiles do not repeat: by columns when A is read in place or is the smaller
/// (each column tile packs A again), else by rows (each row tile packs B again). Cuts fall on
/// whole micro-tiles.
fn cut<K: MicroKernel>(ps: &[Problem], target: usize) -> Vec<Task> {
    let mut tasks = Vec::new();
    for p in ps.iter().filter(|p| p.m > 0 && p.n > 0) {
        let w = work(p);
        if p.m <= SKINNY_M || p.k == 0 || p.alpha == 0.0 {
            tasks.push(Task {
                p: *p,
                whole: true,
                work: w,
            });
            continue;
        }
        let by_cols = direct_a::<K>(p) || p.m <= p.n;
        let (len, unit) = if by_cols { (p.n, K::NR) } else { (p.m, K::MR) };
        let parts = w.div_ceil(target.max(1)).clamp(1, len.div_ceil(unit));
        for (lo, l) in ranges(len, parts, unit) {
            let tile = if by_cols {
                p.sub(0, p.m, lo, l)
            } else {
                p.sub(lo, l, 0, p.n)
            };
            tasks.push(Task {
                work: work(&tile),
                p: tile,
                whole: false,
            });
        }
    }
    tasks
}
