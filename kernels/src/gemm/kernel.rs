//! The micro-kernel contract and the cache-block sizes derived from the host's caches.

use std::sync::OnceLock;

/// A register-blocked `MR x NR` update of C from packed panels.
///
/// With `lda == 0`, `a` is an A micro-panel: `kc` columns of `MR` values (`a[p * MR + i]`),
/// zero-padded past the matrix edge. With `lda > 0` (only for kernels with
/// [`MicroKernel::DIRECT_A`]), `a` is A itself, unpacked: row `i < mr` at `a[i * lda + p]`.
/// `b` is a B micro-panel: `kc` rows of `NR` values (`b[p * NR + j]`), zero-padded.
/// The kernel computes `acc = sum_p a[., p] b[p, .]` in k order and writes
/// `c[i, j] = alpha * acc[i, j] + beta * c[i, j]` for `i < mr`, `j < nr`, reading nothing of C when
/// `beta == 0`; then, when `bias` is not null, adds `bias[j]` (a separate rounding, so with
/// `beta == 0` the result is bit-identical to C prefilled with the bias and `beta == 1`).
/// Each element's arithmetic is the same whatever `mr` and `nr` are, so edge tiles
/// round exactly as full ones.
pub(crate) trait MicroKernel {
    const MR: usize;
    const NR: usize;

    /// # Safety
    /// `a` holds `kc * MR` values (`lda == 0`) or rows `i < mr` of `kc` values `lda` apart, `b`
    /// holds `kc * NR`, `bias` is null or holds `nr` values, and
    /// `c` points at an `mr x nr` block (rows `ldc` apart) valid for reads and writes, with `mr <= MR`, `nr <= NR`; the CPU has
    /// the kernel's instruction set.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        kc: usize,
        alpha: f32,
        a: *const f32,
        lda: usize,
        b: *const f32,
        beta: f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
    );

    /// Whether [`MicroKernel::run`] can read A in place (`lda > 0`).
    const DIRECT_A: bool = false;
}

/// Cache-block sizes for one micro-kernel shape.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Blocking {
    /// Depth of a packed panel: a `MR x KC` A micro-panel stays in L1 across LOOP 1.
    pub kc: usize,
    /// Rows of C in one chunk of the threaded loop nest (its A panels, MC x KC, fit in L2
    /// beside the B block).
    pub mc: usize,
    /// Columns of a packed B block: `KC x NC` stays in L2 across LOOP 2.
    pub nc: usize,
}

/// Data cache sizes in bytes: (L1d, L2) per core.
fn cache_sizes() -> (usize, usize) {
    static SIZES: OnceLock<(usize, usize)> = OnceLock::new();
    *SIZES.get_or_init(detect_caches)
}

#[cfg(target_arch = "x86_64")]
fn detect_caches() -> (usize, usize) {
    use std::arch::x86_64::__cpuid_count;
    let (mut l1, mut l2) = (32 << 10, 1 << 20);
    // The deterministic cache parameters: Intel's leaf 4, or AMD's leaf 0x8000001D in the same
    // format (an AMD EPYC 9004 returns nothing from leaf 4).
    let max_leaf = __cpuid_count(0, 0).eax;
    let max_ext = __cpuid_count(0x8000_0000, 0).eax;
    let leaves = [(4, max_leaf >= 4), (0x8000_001D, max_ext >= 0x8000_001D)];
    for (leaf, _) in leaves.into_iter().filter(|&(_, has)| has) {
        let mut found = false;
        for sub in 0..16 {
            let r = __cpuid_count(leaf, sub);
            let kind = r.eax & 0x1f;
            if kind == 0 {
                break;
            }
            let level = (r.eax >> 5) & 0x7;
            let ways = ((r.ebx >> 22) & 0x3ff) as usize + 1;
            let parts = ((r.ebx >> 12) & 0x3ff) as usize + 1;
            let line = (r.ebx & 0xfff) as usize + 1;
            let sets = r.ecx as usize + 1;
            let size = ways * parts * line * sets;
            match (level, kind) {
                (1, 1) => l1 = size, // level 1 data cache
                (2, 3) => l2 = size, // level 2 unified cache
                _ => {}
            }
            found = true;
        }
        if found {
            break;
        }
    }
    (l1.clamp(16 << 10, 1 << 20), l2.clamp(128 << 10, 64 << 20))
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_caches() -> (usize, usize) {
    (32 << 10, 1 << 20)
}

/// Block sizes for an `mr x nr` kernel: the A micro-panel takes up to 3/8 of L1 (the rest holds
/// the B lines streaming through and the C tile), KC at most 384; the B block 3/5 of L2 and the
/// packed A block an eighth, so both stay in L2 while LOOP 2 walks A. On a 48 KiB L1 / 2 MiB L2
/// core with the 8 x 48 AVX-512 kernel: KC 384, NC 816, MC 168 (measured single-threaded by CPU
/// time on the block's training shapes: NC 768 / MC 128 beat NC 672 / MC 1024 by 0-15%, most on
/// `dW = dY^T X` with N = 768, which no longer splits into two B blocks; NC 1536 lost up to 18%).
/// On a 32 KiB L1 / 1 MiB L2 core (AMD EPYC, Zen 4): KC 384, NC 384, MC 80. There a quarter of
/// L1 (KC 256) had cut the tiny GPT's `k = 384` products in two k blocks and its `dW` products
/// (`k = 1024`) in four; measured on 2 threads, each GEMM alternated in one process against KC
/// 256: AVX-512 1.003-1.037x on its 14 training shapes (the `dW` ones 1.003-1.037x), AVX2
/// 0.99-1.11x; the tiny GPT's and the tiny MoE's training steps 1.009x each (163 and 73 pairs).
/// KC 512 lost 2% on the `k = 1152` and `k = 4096` products.
pub(crate) fn blocking(mr: usize, nr: usize) -> Blocking {
    let (l1, l2) = cache_sizes();
    let kc = (l1 * 3 / 8 / (mr * 4)).clamp(64, 384) / 8 * 8;
    let nc = ((l2 * 3 / 5) / (kc * 4)).clamp(nr, 8192) / nr * nr;
    let mc = ((l2 / 8) / (kc * 4)).clamp(mr, 1024) / mr * mr;
    Blocking { kc, mc, nc }
}
