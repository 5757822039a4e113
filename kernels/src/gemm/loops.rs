//! The BLIS loop nest (LOOP 5..1) and the split of one GEMM between threads.
//!
//! Threads get disjoint rectangles of C whose edges fall on multiples of MR and NR, and every
//! thread uses the same KC, so each element of C is computed by the same instructions in the same
//! order whatever the thread count: results are bit-identical on 1 or N threads.

use super::kernel::{MicroKernel, blocking};
use super::pack::{pack_a, pack_b};
use super::{MatRef, scalar::Scalar, skinny};
use crate::Isa;
use rayon::prelude::*;
use std::cell::RefCell;

/// Below this many multiply-adds a GEMM runs on the calling thread: a fork-join costs a few
/// microseconds, about what 2^20 FMAs take on one core.
pub(super) const PAR_MIN_FMAS: usize = 1 << 20;

/// One GEMM as raw parts; `Problem::new`'s caller has checked every index it implies.
#[derive(Clone, Copy)]
pub(crate) struct Problem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub a: *const f32,
    pub rsa: usize,
    pub csa: usize,
    pub b: *const f32,
    pub rsb: usize,
    pub csb: usize,
    pub beta: f32,
    /// Null, or `n` values added to every row of C after the product (see [`MicroKernel`]).
    pub bias: *const f32,
    pub c: *mut f32,
    pub ldc: usize,
    /// Null, or B already packed (see [`super::PackedB`]): per k block, the panels of all
    /// `bnp` (padded) columns; this problem's columns start at column `bj0` of it.
    pub bpk: *const f32,
    pub bnp: usize,
    pub bj0: usize,
}

// SAFETY: a Problem is a view of slices its creator borrows for the whole call; threads given
// copies write disjoint rectangles of C (see `split`) and only read A and B.
unsafe impl Send for Problem {}
// SAFETY: as above; shared references only read the fields.
unsafe impl Sync for Problem {}

impl Problem {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &MatRef,
        b: &MatRef,
        beta: f32,
        c: *mut f32,
        ldc: usize,
    ) -> Self {
        Problem {
            m,
            n,
            k,
            alpha,
            a: a.data.as_ptr(),
            rsa: a.rs,
            csa: a.cs,
            b: b.data.as_ptr(),
            rsb: b.rs,
            csb: b.cs,
            beta,
            bias: std::ptr::null(),
            c,
            ldc,
            bpk: std::ptr::null(),
            bnp: 0,
            bj0: 0,
        }
    }

    /// The problem reading B from `packed` (panels of `n_pad` columns per k block) instead of
    /// packing it.
    pub fn with_packed_b(self, packed: &[f32], n_pad: usize) -> Self {
        Problem {
            bpk: packed.as_ptr(),
            bnp: n_pad,
            ..self
        }
    }

    /// The problem with `bias` (`n` values) added to every row of C.
    pub fn with_bias(self, bias: &[f32]) -> Self {
        Problem {
            bias: bias.as_ptr(),
            ..self
        }
    }

    /// The bias of columns `j0..` (null when there is none).
    fn bias_at(&self, j0: usize) -> *const f32 {
        if self.bias.is_null() {
            self.bias
        } else {
            self.bias.wrapping_add(j0)
        }
    }

    /// The sub-problem for rows `i0..i0 + m` and columns `j0..j0 + n` of C.
    pub(super) fn sub(&self, i0: usize, m: usize, j0: usize, n: usize) -> Self {
        Problem {
            m,
            n,
            // Pointer arithmetic only; the offsets stay inside the checked spans.
            a: self.a.wrapping_add(i0 * self.rsa),
            b: self.b.wrapping_add(j0 * self.csb),
            bias: self.bias_at(j0),
            c: self.c.wrapping_add(i0 * self.ldc + j0),
            bj0: self.bj0 + j0,
            ..*self
        }
    }
}

/// Runs one GEMM on `isa`, on the current rayon pool when `parallel` and the problem is large.
///
/// # Safety
/// The problem's pointers cover every element its sizes and strides imply, C's rows do not
/// overlap, and the CPU supports `isa`.
pub(crate) unsafe fn gemm(isa: Isa, p: &Problem, parallel: bool) {
    if p.m == 0 || p.n == 0 {
        return;
    }
    if p.k == 0 || p.alpha == 0.0 {
        // SAFETY: forwarded contract.
        unsafe {
            scale_c(p);
            add_bias(p);
        }
        return;
    }
    let threads = if parallel && p.m * p.n * p.k >= PAR_MIN_FMAS {
        rayon::current_num_threads()
    } else {
        1
    };
    // SAFETY: forwarded contract, per ISA.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                use super::avx512::{V512, skinny_axpy, skinny_dot};
                if p.bpk.is_null() && skinny::try_run::<V512>(p, threads, skinny_axpy, skinny_dot) {
                    add_bias(p);
                } else {
                    run::<super::avx512::Avx512>(p, threads)
                }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                use super::avx2::{V256, skinny_axpy, skinny_dot};
                if p.bpk.is_null() && skinny::try_run::<V256>(p, threads, skinny_axpy, skinny_dot) {
                    add_bias(p);
                } else {
                    run::<super::avx2::Avx2>(p, threads)
                }
            }
            _ => run::<Scalar>(p, threads),
        }
    }
}

/// Independent problems in one parallel region when every one suits the skinny dot form (see
/// `skinny::run_many`), else one after another, each on all threads.
///
/// # Safety
/// As [`gemm`], for each problem; their outputs do not overlap.
pub(crate) unsafe fn gemm_many(isa: Isa, ps: &[Problem]) {
    // SAFETY: forwarded contract, per ISA.
    let done = unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => skinny::run_many::<super::avx512::V512>(ps, super::avx512::skinny_dot),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => skinny::run_many::<super::avx2::V256>(ps, super::avx2::skinny_dot),
            _ => false,
        }
    };
    if !done {
        // SAFETY: as above.
        unsafe { super::tiles::run(isa, ps) };
    }
}

/// `batch` problems `strides` apart: in parallel over the batch when it can feed every thread,
/// else one after another, each on all threads.
///
/// # Safety
/// As [`gemm`], for each of the `batch` problems, whose outputs do not overlap.
pub(crate) unsafe fn gemm_batched(isa: Isa, p: &Problem, batch: usize, strides: [usize; 3]) {
    let at = |i: usize| Problem {
        a: p.a.wrapping_add(i * strides[0]),
        b: p.b.wrapping_add(i * strides[1]),
        c: p.c.wrapping_add(i * strides[2]),
        ..*p
    };
    let threads = rayon::current_num_threads();
    if threads > 1 && batch >= threads && batch * p.m * p.n * p.k.max(1) >= PAR_MIN_FMAS {
        (0..batch).into_par_iter().for_each(|i| {
            // SAFETY: each batch entry is a valid, disjoint problem (caller's contract).
            unsafe { gemm(isa, &at(i), false) }
        });
    } else {
        for i in 0..batch {
            // SAFETY: as above.
            unsafe { gemm(isa, &at(i), true) };
        }
    }
}

/// `C = beta * C` (the whole GEMM when `k == 0` or `alpha == 0`); `beta == 0` writes zeros.
unsafe fn scale_c(p: &Problem) {
    for i in 0..p.m {
        // SAFETY: row i < m of C holds n elements (caller's contract).
        let row = unsafe { std::slice::from_raw_parts_mut(p.c.add(i * p.ldc), p.n) };
        if p.beta == 0.0 {
            row.fill(0.0);
        } else if p.beta != 1.0 {
            row.iter_mut().for_each(|v| *v *= p.beta);
        }
    }
}

/// `C += bias` row by row, for the paths that do not fuse it (the skinny kernels, and `k == 0`):
/// the same single rounding after `alpha * A B + beta * C` as the micro-kernels' epilogue.
///
/// # Safety
/// As [`gemm`]; a non-null bias holds `n` values.
unsafe fn add_bias(p: &Problem) {
    if p.bias.is_null() {
        return;
    }
    // SAFETY: a non-null bias holds n values (caller's contract).
    let bias = unsafe { std::slice::from_raw_parts(p.bias, p.n) };
    for i in 0..p.m {
        // SAFETY: row i < m of C holds n elements (caller's contract).
        let row = unsafe { std::slice::from_raw_parts_mut(p.c.add(i * p.ldc), p.n) };
        row.iter_mut().zip(bias).for_each(|(c, b)| *c += b);
    }
}

/// How to cut C into `threads` rectangles: `(row parts, column parts)`, chosen to pack the least
/// (each row part packs its rows of A once per column part, and vice versa) while giving every
/// thread at least one micro-tile.
fn split(m: usize, n: usize, k: usize, threads: usize, mr: usize, nr: usize) -> (usize, usize) {
    let mut best = (1, 1, usize::MAX);
    for tm in 1..=threads {
        if !threads.is_multiple_of(tm) {
            continue;
        }
        let tn = threads / tm;
        if m.div_ceil(mr) < tm || n.div_ceil(nr) < tn {
            continue;
        }
        let cost = tn * m * k + tm * k * n;
        if cost < best.2 {
            best = (tm, tn, cost);
        }
    }
    (best.0, best.1)
}

/// Cuts `len` into `parts` ranges whose starts are multiples of `unit`.
pub(super) fn ranges(len: usize, parts: usize, unit: usize) -> Vec<(usize, usize)> {
    let units = len.div_ceil(unit);
    (0..parts)
        .map(|t| {
            let lo = (units * t / parts * unit).min(len);
            let hi = (units * (t + 1) / parts * unit).min(len);
            (lo, hi - lo)
        })
        .filter(|&(_, l)| l > 0)
        .collect()
}

/// Rows of micro-tiles per thread from which [`run`] shares the packed blocks between threads
/// ([`shared`]) rather than giving each thread its own rectangle of C. Sharing packs each operand
/// once, but every thread then reads B panels that another core packed (from that core's L2, through
/// L3) and each block costs two fork-joins; a rectangle packs its own half of B, which stays in
/// its core's L2, and re-packs only A, which is small while rows are few. Measured on 2 threads
/// (the same step alternated in one process, rectangles against sharing): GPT-2 124M training
/// (B 4, T 64: 256 rows) 1.077x; the tiny GPT's and its MoE's training (1024 rows) 1.011x and
/// 0.989x; prefill of a 64-token prompt 1.045-1.075x (tiny), 1.104-1.110x (GPT-2), of 256 tokens
/// 1.008x (tiny), 1.188x (GPT-2); an f32 GEMM repeated in cache: 1.11-1.43x from 64 to 256 rows,
/// 1.054x at 512 and 0.990-1.004x at 1024. (It was 4 tiles a thread: 64 rows on 2 threads.)
const SHARED_MIN_TILES: usize = 64;

/// Packed GEMM with kernel `K` on `threads` threads.
///
/// Tall problems ([`SHARED_MIN_TILES`]) share each packed block of A and of B between the
/// threads (each packed once, by all of them, then read by all) and cut the rows of C into
/// chunks. Shorter problems get rectangles of C instead, each packing its own operands.
unsafe fn run<K: MicroKernel>(p: &Problem, threads: usize) {
    if threads <= 1 {
        // SAFETY: forwarded contract.
        return unsafe { serial::<K>(p) };
    }
    if p.m >= threads * SHARED_MIN_TILES * K::MR {
        // SAFETY: forwarded contract.
        return unsafe { shared::<K>(p, threads) };
    }
    let (tm, tn) = split(p.m, p.n, p.k, threads, K::MR, K::NR);
    let mut parts = Vec::with_capacity(tm * tn);
    for &(i0, mi) in &ranges(p.m, tm, K::MR) {
        for &(j0, nj) in &ranges(p.n, tn, K::NR) {
            parts.push(p.sub(i0, mi, j0, nj));
        }
    }
    // SAFETY: the rectangles are disjoint, each inside the checked problem.
    parts.par_iter().for_each(|q| unsafe { serial::<K>(q) });
}

thread_local! {
    /// Packing buffers (A, B), kept per thread and reused: a fresh large buffer costs page faults.
    static PACK: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// The A and B blocks that [`shared`] packs for all threads, kept by the calling thread.
    static SHARED: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// At most this many packed A values (8 MiB) are kept: taller problems run as bands of rows.
const A_PACK_MAX: usize = 1 << 21;

/// A 64-byte-aligned window of `len` values inside `buf`, growing it if needed.
fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len + 16 {
        buf.resize(len + 16, 0.0);
    }
    let off = buf.as_ptr().align_offset(64).min(16);
    &mut buf[off..off + len]
}

/// One (pc, jc) block of the loop nest: the B block is packed in `bpack`.
#[derive(Clone, Copy)]
struct Block {
    jc: usize,
    nc: usize,
    pc: usize,
    kc: usize,
    beta: f32,
}

/// Bands of rows of at most `A_PACK_MAX` packed values of A each (a multiple of MR rows, so the
/// tile grid is the whole problem's), for `f` to run one after another.
unsafe fn bands<K: MicroKernel>(p: &Problem, mut f: impl FnMut(&Problem)) {
    let kc = balanced(p.k, blocking(K::MR, K::NR).kc, 8);
    let band = (A_PACK_MAX / kc / K::MR).max(1) * K::MR;
    for i0 in (0..p.m).step_by(band) {
        f(&p.sub(i0, band.min(p.m - i0), 0, p.n));
    }
}

/// The single-threaded loop nest.
pub(super) unsafe fn serial<K: MicroKernel>(p: &Problem) {
    let bl = blocking(K::MR, K::NR);
    PACK.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (abuf, bbuf) = &mut *guard;
        // SAFETY: each band is a problem inside the checked one.
        unsafe {
            bands::<K>(p, |p| {
                let (apack, bpack) = buffers::<K>(p, &bl, abuf, bbuf);
                for_blocks(p, bl.nc, bl.kc, K::NR, |blk| {
                    if blk.jc == 0 && !direct_a::<K>(p) {
                        // SAFETY: every row of the band, inside A; apack holds their panels.
                        pack_a_rows::<K>(p, &blk, 0, p.m, apack);
                    }
                    let bp: &[f32] = if p.bpk.is_null() {
                        // SAFETY: the block lies inside B; bpack holds nc_max * kc_max >= its panels.
                        pack_b_block::<K>(p, &blk, bpack);
                        bpack
                    } else {
                        // SAFETY: the packed B covers the block (caller's contract).
                        packed_block::<K>(p, &blk)
                    };
                    // SAFETY: every row of the band.
                    rows::<K>(p, &blk, apack, bp, 0, p.m);
                });
            })
        }
    });
}

/// Windows of `abuf` and `bbuf` for the packed A (all of `p`'s rows by one k block) and the
/// packed B block.
fn buffers<'b, K: MicroKernel>(
    p: &Problem,
    bl: &super::kernel::Blocking,
    abuf: &'b mut Vec<f32>,
    bbuf: &'b mut Vec<f32>,
) -> (&'b mut [f32], &'b mut [f32]) {
    let kc_max = bl.kc.min(p.k);
    let nc_max = if p.bpk.is_null() {
        bl.nc.min(p.n.div_ceil(K::NR) * K::NR)
    } else {
        0
    };
    (
        aligned(abuf, p.m.div_ceil(K::MR) * K::MR * kc_max),
        aligned(bbuf, nc_max * kc_max),
    )
}

/// `len` cut into as few blocks of at most `max` as possible, of equal size rounded up to a
/// multiple of `unit`: 1024 rows of k under a 384 limit become 344 + 344 + 336, not
/// 384 + 384 + 256, and 768 columns under a 672 limit one block of 384 twice, not 672 + 96.
fn balanced(len: usize, max: usize, unit: usize) -> usize {
    let blocks = len.div_ceil(max.max(1)).max(1);
    (len.div_ceil(blocks).div_ceil(unit) * unit).clamp(unit, max.max(unit))
}

/// The depth of the k blocks of a problem of depth `k` on kernel `K`: [`for_blocks`] cuts k
/// this way, and a [`super::PackedB`] is packed in blocks of it.
pub(crate) fn kc_block<K: MicroKernel>(k: usize) -> usize {
    balanced(k, blocking(K::MR, K::NR).kc, 8)
}

/// `(MR, NR, KC block)` of the kernel [`gemm`] runs on `isa` for depth `k`.
pub(crate) fn tier_shape(isa: Isa, k: usize) -> (usize, usize, usize) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            use super::avx512::Avx512 as K;
            (K::MR, K::NR, kc_block::<K>(k))
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            use super::avx2::Avx2 as K;
            (K::MR, K::NR, kc_block::<K>(k))
        }
        _ => (Scalar::MR, Scalar::NR, kc_block::<Scalar>(k)),
    }
}

/// LOOP 5 and LOOP 4: the shared dimension in blocks of at most `kc_max` (later blocks
/// accumulate into C), and within each, columns of C in blocks of at most `nc_max`. The k blocks
/// come outermost so that A is packed once per k block, not once per (k, column) block; each
/// element still sees its k blocks in order. Both block sizes depend only on the problem's
/// sizes, never on the thread count.
fn for_blocks(p: &Problem, nc_max: usize, kc_max: usize, nr: usize, mut f: impl FnMut(Block)) {
    let nc_blk = balanced(p.n, nc_max, nr);
    let kc_blk = balanced(p.k, kc_max, 8);
    for pc in (0..p.k).step_by(kc_blk) {
        for jc in (0..p.n).step_by(nc_blk) {
            f(Block {
                jc,
                nc: nc_blk.min(p.n - jc),
                pc,
                kc: kc_blk.min(p.k - pc),
                beta: if pc == 0 { p.beta } else { 1.0 },
            });
        }
    }
}

/// Packs rows `i0..i0 + m` of the k block of `blk` into panels at the start of `dst`.
unsafe fn pack_a_rows<K: MicroKernel>(
    p: &Problem,
    blk: &Block,
    i0: usize,
    m: usize,
    dst: &mut [f32],
) {
    // SAFETY: the rows lie inside A (caller's contract); dst holds their panels.
    unsafe {
        pack_a(
            K::MR,
            m,
            blk.kc,
            p.a.add(i0 * p.rsa + blk.pc * p.csa),
            p.rsa,
            p.csa,
            dst,
        )
    }
}

/// Packs the B block of `blk` into `bpack`.
unsafe fn pack_b_block<K: MicroKernel>(p: &Problem, blk: &Block, bpack: &mut [f32]) {
    // SAFETY: the block lies inside B (caller's contract).
    unsafe {
        pack_b(
            K::NR,
            blk.kc,
            blk.nc,
            p.b.add(blk.pc * p.rsb + blk.jc * p.csb),
            p.rsb,
            p.csb,
            bpack,
        )
    }
}

/// The B block of `blk` in the pre-packed B: its k block's panels start `pc * bnp` values in
/// (every earlier k block holds `bnp` columns of its depth), and column `c`'s panel `c * kc`
/// values into the k block.
///
/// # Safety
/// `p.bpk` is not null and holds the problem's B packed for `K` in k blocks of `blk.kc`.
unsafe fn packed_block<'p, K: MicroKernel>(p: &'p Problem, blk: &Block) -> &'p [f32] {
    let col = p.bj0 + blk.jc;
    debug_assert!(col.is_multiple_of(K::NR));
    let len = blk.nc.div_ceil(K::NR) * K::NR * blk.kc;
    // SAFETY: the block's panels lie inside the packed B (the function's contract).
    unsafe { std::slice::from_raw_parts(p.bpk.add(blk.pc * p.bnp + col * blk.kc), len) }
}

/// The threaded loop nest: per (k, column) block all threads pack the B block's panels, then run
/// LOOP 2..1 over chunks of rows (starts at multiples of MR, so the tile grid, and with it every
/// element's arithmetic, is the serial one), packing the chunk's A panels once per k block.
unsafe fn shared<K: MicroKernel>(p: &Problem, threads: usize) {
    let bl = blocking(K::MR, K::NR);
    SHARED.with(|cell| {
        // While this thread waits in a fork-join below, rayon may run another GEMM on it: that
        // one finds the buffers taken and packs into fresh ones.
        let mut spare = (Vec::new(), Vec::new());
        let mut guard = cell.try_borrow_mut();
        let (abuf, bbuf) = match guard.as_deref_mut() {
            Ok(b) => b,
            Err(_) => &mut spare,
        };
        // SAFETY: each band is a problem inside the checked one.
        unsafe { bands::<K>(p, |p| shared_band::<K>(p, threads, &bl, abuf, bbuf)) }
    });
}

/// [`shared`] on one band of rows.
unsafe fn shared_band<K: MicroKernel>(
    p: &Problem,
    threads: usize,
    bl: &super::kernel::Blocking,
    abuf: &mut Vec<f32>,
    bbuf: &mut Vec<f32>,
) {
    // Rows in chunks of about MC, a multiple of the thread count of them: rayon hands a slowed
    // thread's chunks to the other (the cores are shared), while on an idle machine the split
    // stays even.
    let chunks = threads * p.m.div_ceil(bl.mc * threads);
    let parts = ranges(p.m, chunks, K::MR);
    let (apack, bpack) = buffers::<K>(p, bl, abuf, bbuf);
    for_blocks(p, bl.nc, bl.kc, K::NR, |blk| {
        if !p.bpk.is_null() {
            // SAFETY: the packed B covers the block (caller's contract).
            let bp = unsafe { packed_block::<K>(p, &blk) };
            // SAFETY: as below.
            return unsafe { rows_in_chunks::<K>(p, &blk, &parts, apack, bp) };
        }
        let panel = K::NR * blk.kc;
        bpack[..blk.nc.div_ceil(K::NR) * panel]
            .par_chunks_mut(panel)
            .enumerate()
            .for_each(|(i, out)| {
                let one = Block {
                    jc: blk.jc + i * K::NR,
                    nc: K::NR.min(blk.nc - i * K::NR),
                    ..blk
                };
                // SAFETY: this panel's columns lie inside the block, inside B.
                unsafe { pack_b_block::<K>(p, &one, out) };
            });
        // SAFETY: the chunks are disjoint row ranges of the band.
        unsafe { rows_in_chunks::<K>(p, &blk, &parts, apack, bpack) };
    });
}

/// LOOP 3 of [`shared_band`]: the chunks of rows `parts` in parallel against the packed B block
/// `bpack` of `blk`. Each chunk's A panels are cut from `apack`; the first column block of each
/// k block packs them (inside the same fork-join as its compute: no extra barrier), the others
/// read them, whichever thread packed them.
///
/// # Safety
/// As [`gemm`]; `parts` are disjoint row ranges of `p` starting at multiples of MR, `apack`
/// holds their panels, and `bpack` the block's.
unsafe fn rows_in_chunks<K: MicroKernel>(
    p: &Problem,
    blk: &Block,
    parts: &[(usize, usize)],
    apack: &mut [f32],
    bpack: &[f32],
) {
    let blk = *blk;
    let mut rest = &mut apack[..];
    let mut mine = Vec::with_capacity(parts.len());
    for &(_, mi) in parts {
        let (head, tail) = rest.split_at_mut(mi.div_ceil(K::MR) * K::MR * blk.kc);
        mine.push(head);
        rest = tail;
    }
    mine.into_par_iter()
        .zip(parts.par_iter())
        .for_each(|(apanels, &(i0, mi))| {
            if blk.jc == 0 && !direct_a::<K>(p) {
                // SAFETY: the chunk's rows lie inside the band, inside A; apanels holds their panels.
                unsafe { pack_a_rows::<K>(p, &blk, i0, mi, apanels) };
            }
            // SAFETY: disjoint row ranges of the checked problem.
            unsafe { rows::<K>(p, &blk, apanels, bpack, i0, mi) }
        });
}

/// Whether the micro-kernel reads A in place rather than packed: when its kernel can, A's rows
/// are contiguous and apart (`X W` and `dY W^T`, not `dY^T X`, nor a row broadcast with row
/// stride 0, which the kernel's `lda == 0` would take for a packed panel), and C is one column
/// block. Packing A costs one copy of it per k block; in place, each column block reads A again,
/// so a problem of several blocks (n above NC) keeps the packed copy that all of them share.
/// Measured on 2 threads, the same GEMMs alternated in one process, in place against packed:
/// AVX-512 1.022-1.036x at 1024 rows with n = 384 (k 384 to 4096) and 256 rows with n = 768,
/// AVX2 1.04-1.08x; 0.975-0.991x (AVX-512) when n was 1152-4096 (two to five blocks), which keep
/// packing; the tiny GPT's training step 1.014x.
pub(super) fn direct_a<K: MicroKernel>(p: &Problem) -> bool {
    K::DIRECT_A && p.csa == 1 && p.rsa > 0 && p.n <= blocking(K::MR, K::NR).nc
}

/// LOOP 2..1 for rows `i0..i0 + m` (`i0` a multiple of MR) of C against the packed A panels of
/// those rows (`apack`, from row `i0`) and the packed B block of `blk`.
unsafe fn rows<K: MicroKernel>(
    p: &Problem,
    blk: &Block,
    apack: &[f32],
    bpack: &[f32],
    i0: usize,
    m: usize,
) {
    let kc = blk.kc;
    let direct = direct_a::<K>(p);
    // LOOP 2: an A micro-panel, kept in L1 while LOOP 1 streams B from L2.
    for ir in (i0..i0 + m).step_by(K::MR) {
        let (ap, lda) = if direct {
            // Rows ir.. of A's k block, in place.
            (p.a.wrapping_add(ir * p.rsa + blk.pc), p.rsa)
        } else {
            (apack[(ir - i0) * kc..].as_ptr(), 0)
        };
        // LOOP 1: the B micro-panels of the packed block.
        for jr in (0..blk.nc).step_by(K::NR) {
            let bp = bpack[jr * kc..].as_ptr();
            // The bias joins once, with the first block of k (as if C had been prefilled).
            let bias = if blk.pc == 0 {
                p.bias_at(blk.jc + jr)
            } else {
                std::ptr::null()
            };
            // SAFETY: the A panel (packed, or rows ir.. of A with kc values from column pc) and the B panel hold kc steps; the tile at (ir, jc + jr) is inside C, clipped to mr x nr, and its bias (if any) holds nr values.
            unsafe {
                K::run(
                    kc,
                    p.alpha,
                    ap,
                    lda,
                    bp,
                    blk.beta,
                    bias,
                    p.c.add(ir * p.ldc + blk.jc + jr),
                    p.ldc,
                    K::MR.min(i0 + m - ir),
                    K::NR.min(blk.nc - jr),
                )
            };
        }
    }
}
