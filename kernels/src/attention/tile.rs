//! The attention blocks' inner loops, one module per tier: a small register-tiled product
//! (`C = alpha A B (+ C)` with B's rows contiguous, vectorised over C's columns; no packing, the
//! blocks are at most 64 x 64 and sit in L1), and the row `exp(x - m)` with its sum.
//!
//! Each element of C is computed by the same instructions in `k` order whatever its place in the
//! tiling, so edge tiles round exactly as full ones.

use crate::Isa;

/// `exp(x - m)` below this is subnormal (`e^-87.34 = 2^-126`) and is flushed to 0 instead of
/// computed: an exp that underflows runs microcode assists (measured: the exp pass took a third
/// of the causal forward at T = 64, where half of each diagonal block is `-inf`). The change is
/// below 2e-38 absolute on probabilities whose row sums to at least 1.
const EXP_FLUSH: f32 = -87.0;

/// Rows of C per band of a [`Causal`] product: a multiple of every tier's tile height (6 and 4),
/// small enough that the band's rectangle wastes little of the triangle it covers.
const BAND: usize = 12;

/// The causal shape of a block product: query row `i` of the block sees key `j` of the block
/// iff `j <= i + shift` (`shift` = the position of the block's first query minus that of its
/// first key). Bands of [`BAND`] rows of C then skip what the mask makes unused or zero.
#[derive(Clone, Copy, Debug)]
pub(super) enum Causal {
    /// C's rows are queries and its columns keys (`S = Q K^T`, `dP = dO V^T`): each band
    /// computes only the columns one of its rows sees; the others are left UNWRITTEN.
    Cols(isize),
    /// C's rows are queries and k runs over keys (`O += P V`, `dQ += dS K`): A is zero past
    /// each row's last visible key, so each band stops its sum there.
    KUpTo(isize),
    /// C's rows are keys and k runs over queries (`dV += P^T dO`, `dK += dS^T Q`): A is zero
    /// before the first query that sees the row's key, so each band starts its sum there.
    KFrom(isize),
}

/// One product `C (m x n) = alpha * A (m x k) * B (k x n)`, plus `C` when accumulating.
/// `A[i, p] = a[i * rsa + p * csa]`, `B[p, j] = b[p * rsb + j]`.
#[derive(Clone, Copy)]
pub(super) struct Mm<'a> {
    m: usize,
    n: usize,
    k: usize,
    a: &'a [f32],
    rsa: usize,
    csa: usize,
    b: &'a [f32],
    rsb: usize,
    causal: Option<Causal>,
}

impl<'a> Mm<'a> {
    pub(super) fn new(m: usize, n: usize, k: usize) -> Self {
        Self {
            m,
            n,
            k,
            a: &[],
            rsa: 0,
            csa: 0,
            b: &[],
            rsb: 0,
            causal: None,
        }
    }

    /// The product restricted to the causal triangle `c` (see [`Causal`]), if any.
    pub(super) fn causal(self, causal: Option<Causal>) -> Self {
        Self { causal, ..self }
    }

    pub(super) fn a(self, a: &'a [f32], rsa: usize, csa: usize) -> Self {
        Self {
            a,
            rsa,
            csa,
            ..self
        }
    }

    pub(super) fn b(self, b: &'a [f32], rsb: usize) -> Self {
        Self { b, rsb, ..self }
    }

    /// Asserts that A and B hold every element the product reads (the callers derive all
    /// offsets from checked shapes; a failure is a bug in this module, not bad input).
    fn check(&self) {
        if self.m == 0 || self.n == 0 || self.k == 0 {
            return;
        }
        let a_end = (self.m - 1) * self.rsa + (self.k - 1) * self.csa + 1;
        let b_end = (self.k - 1) * self.rsb + self.n;
        assert!(a_end <= self.a.len() && b_end <= self.b.len());
    }

    /// `c[i * ldc + j] = alpha * (A B)[i, j] (+ c[i * ldc + j] when `acc`)`.
    pub(super) fn run(&self, isa: Isa, alpha: f32, c: &mut [f32], ldc: usize, acc: bool) {
        if self.m == 0 || self.n == 0 {
            return;
        }
        assert!((self.m - 1) * ldc + self.n <= c.len());
        // SAFETY: the assert above bounds every write of C.
        unsafe { self.run_ptr(isa, alpha, c.as_mut_ptr(), ldc, acc) }
    }

    /// As [`Mm::run`] on a raw C.
    ///
    /// # Safety
    /// `c` is valid for reads and writes of the `m x n` block with rows `ldc` apart, and no
    /// other live reference covers those elements.
    pub(super) unsafe fn run_ptr(&self, isa: Isa, alpha: f32, c: *mut f32, ldc: usize, acc: bool) {
        if self.m == 0 || self.n == 0 {
            return;
        }
        self.check();
        let p = Raw {
            m: self.m,
            n: self.n,
            k: self.k,
            alpha,
            a: self.a.as_ptr(),
            rsa: self.rsa,
            csa: self.csa,
            b: self.b.as_ptr(),
            rsb: self.rsb,
            c,
            ldc,
            acc,
        };
        let Some(causal) = self.causal else {
            // SAFETY: `check` and the caller's contract bound every access.
            return unsafe { p.run(isa) };
        };
        for r0 in (0..p.m).step_by(BAND) {
            let r1 = (r0 + BAND).min(p.m);
            // The last visible column (or k) of the band's last row, and the first query that
            // sees the band's first key.
            let upto = |shift: isize| (r1 as isize + shift).clamp(0, isize::MAX) as usize;
            let (n, k0, k1) = match causal {
                Causal::Cols(shift) => (upto(shift).min(p.n), 0, p.k),
                Causal::KUpTo(shift) => (p.n, 0, upto(shift).min(p.k)),
                Causal::KFrom(shift) => (
                    p.n,
                    (r0 as isize - shift).clamp(0, p.k as isize) as usize,
                    p.k,
                ),
            };
            if n == 0 {
                continue;
            }
            let band = Raw {
                m: r1 - r0,
                n,
                k: k1.saturating_sub(k0),
                a: p.a.wrapping_add(r0 * p.rsa + k0 * p.csa),
                b: p.b.wrapping_add(k0 * p.rsb),
                c: p.c.wrapping_add(r0 * p.ldc),
                ..p
            };
            // SAFETY: the band's rows, columns and k range lie inside the checked product.
            unsafe { band.run(isa) };
        }
    }
}

impl Raw {
    /// The product on `isa`'s tile loop (an empty k writes `alpha * 0`, or leaves C when
    /// accumulating).
    ///
    /// # Safety
    /// As [`Mm::run_ptr`], for this product's pointers.
    unsafe fn run(&self, isa: Isa) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernels` holds a tier only when the CPU supports it; the caller bounds every access.
            Isa::Avx512 => unsafe { avx512::mm(self) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { avx2::mm(self) },
            // SAFETY: as above.
            _ => unsafe { scalar::mm(self) },
        }
    }
}

/// A checked product as raw parts.
#[derive(Clone, Copy)]
struct Raw {
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    rsb: usize,
    c: *mut f32,
    ldc: usize,
    acc: bool,
}

/// The largest element of `x` (`-inf` when empty).
pub(super) fn row_max(isa: Isa, x: &[f32]) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` holds a tier only when the CPU supports it.
        Isa::Avx512 => unsafe { crate::math::avx512::row_max(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { crate::math::avx2::row_max(x) },
        _ => x.iter().copied().fold(f32::NEG_INFINITY, f32::max),
    }
}

/// `x = exp(x - m)` in place; returns the sum of the new values.
pub(super) fn exp_sub(isa: Isa, x: &mut [f32], m: f32) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` holds a tier only when the CPU supports it.
        Isa::Avx512 => unsafe { avx512::exp_sub(x, m) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { avx2::exp_sub(x, m) },
        _ => scalar::exp_sub(x, m),
    }
}

mod scalar {
    use super::Raw;
    use crate::math::scalar::exp;
    use crate::simd::sum8;

    /// # Safety
    /// As [`super::Mm::run_ptr`].
    pub(super) unsafe fn mm(p: &Raw) {
        for i in 0..p.m {
            for j in 0..p.n {
                let mut s = 0.0f32;
                for q in 0..p.k {
                    // SAFETY: `Mm::check` bounds A and B; the caller bounds C.
                    s += unsafe { *p.a.add(i * p.rsa + q * p.csa) * *p.b.add(q * p.rsb + j) };
                }
                // SAFETY: as above.
                unsafe {
                    let c = p.c.add(i * p.ldc + j);
                    *c = if p.acc { p.alpha * s + *c } else { p.alpha * s };
                }
            }
        }
    }

    pub(super) fn exp_sub(x: &mut [f32], m: f32) -> f32 {
        x.iter_mut().for_each(|v| {
            let d = *v - m;
            *v = if d >= super::EXP_FLUSH { exp(d) } else { 0.0 };
        });
        sum8(x.len(), |j| x[j])
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Raw;
    use crate::math::avx2::exp;
    use crate::simd::avx2::{hsum, load, mask, store};
    use std::arch::x86_64::*;

    /// Columns per tile: two vectors of 8.
    const NV: usize = 2;

    /// # Safety
    /// As [`super::Mm::run_ptr`], and the CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn mm(p: &Raw) {
        let mut j = 0;
        while j < p.n {
            // SAFETY: forwarded.
            unsafe {
                if p.n - j <= 8 {
                    rows::<1>(p, j);
                } else {
                    rows::<NV>(p, j);
                }
            }
            j += 8 * NV;
        }
    }

    /// Every row tile of the columns `j..j + 8 V` (masked at the edge).
    ///
    /// # Safety
    /// As [`mm`].
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows<const V: usize>(p: &Raw, j: usize) {
        let mut i = 0;
        while i < p.m {
            // SAFETY: forwarded; the tile lies inside the m x n block.
            unsafe {
                match p.m - i {
                    1 => tile::<1, V>(p, i, j),
                    2 => tile::<2, V>(p, i, j),
                    3 => tile::<3, V>(p, i, j),
                    _ => tile::<4, V>(p, i, j),
                }
            }
            i += 4;
        }
    }

    /// Rows `i..i + MR`, columns `j..j + 8 V` (masked at the edge).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const MR: usize, const V: usize>(p: &Raw, i: usize, j: usize) {
        let rem = p.n - j;
        let mut masks = [_mm256_setzero_si256(); V];
        for (v, m) in masks.iter_mut().enumerate() {
            *m = _mm256_castps_si256(mask(rem.saturating_sub(8 * v)));
        }
        let mut c = [[_mm256_setzero_ps(); V]; MR];
        for q in 0..p.k {
            let mut bv = [_mm256_setzero_ps(); V];
            for v in 0..V {
                // SAFETY: masked-off lanes are not read; the rest lie inside B's checked span.
                bv[v] = unsafe { _mm256_maskload_ps(p.b.add(q * p.rsb + j + 8 * v), masks[v]) };
            }
            for (r, cr) in c.iter_mut().enumerate() {
                // SAFETY: row i + r < m and q < k lie inside A's checked span.
                let av = _mm256_set1_ps(unsafe { *p.a.add((i + r) * p.rsa + q * p.csa) });
                for v in 0..V {
                    cr[v] = _mm256_fmadd_ps(av, bv[v], cr[v]);
                }
            }
        }
        let alpha = _mm256_set1_ps(p.alpha);
        for (r, cr) in c.iter().enumerate() {
            for v in 0..V {
                if rem <= 8 * v {
                    break;
                }
                // SAFETY: masked lanes stay inside row i + r of the C block.
                unsafe {
                    let cp = p.c.add((i + r) * p.ldc + j + 8 * v);
                    let out = if p.acc {
                        _mm256_fmadd_ps(alpha, cr[v], _mm256_maskload_ps(cp, masks[v]))
                    } else {
                        _mm256_mul_ps(alpha, cr[v])
                    };
                    _mm256_maskstore_ps(cp, masks[v], out);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp_sub(x: &mut [f32], m: f32) -> f32 {
        let (vm, mut s) = (_mm256_set1_ps(m), _mm256_setzero_ps());
        let lo = _mm256_set1_ps(super::EXP_FLUSH);
        let mut i = 0;
        while i < x.len() {
            let d = _mm256_sub_ps(load(x, i), vm);
            let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(d, lo);
            let e = _mm256_and_ps(exp(_mm256_max_ps(d, lo)), keep);
            // Lanes past the end load 0 and give exp(-m): keep them out of the sum.
            s = _mm256_add_ps(s, _mm256_and_ps(e, mask(x.len() - i)));
            store(x, i, e);
            i += 8;
        }
        hsum(s)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Raw;
    use crate::math::avx512::exp;
    use crate::simd::avx512::{load, mask, store};
    use std::arch::x86_64::*;

    /// Columns per tile: four vectors of 16 (a whole 64-wide block).
    const NV: usize = 4;
    /// Rows per tile: 6 x 4 accumulators, 4 B vectors and a broadcast fit the 32 registers.
    const MR: usize = 6;

    /// # Safety
    /// As [`super::Mm::run_ptr`], and the CPU has AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn mm(p: &Raw) {
        let mut j = 0;
        while j < p.n {
            // A narrow block (a short sentence's keys, a head of 32) runs only the vectors it
            // covers, not four.
            // SAFETY: forwarded.
            unsafe {
                match (p.n - j).div_ceil(16) {
                    1 => rows::<1>(p, j),
                    2 => rows::<2>(p, j),
                    3 => rows::<3>(p, j),
                    _ => rows::<NV>(p, j),
                }
            }
            j += 16 * NV;
        }
    }

    /// Every row tile of the columns `j..j + 16 V` (masked at the edge).
    ///
    /// # Safety
    /// As [`mm`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const V: usize>(p: &Raw, j: usize) {
        let mut i = 0;
        while i < p.m {
            // SAFETY: forwarded; the tile lies inside the m x n block.
            unsafe {
                match p.m - i {
                    1 => tile::<1, V>(p, i, j),
                    2 => tile::<2, V>(p, i, j),
                    3 => tile::<3, V>(p, i, j),
                    4 => tile::<4, V>(p, i, j),
                    5 => tile::<5, V>(p, i, j),
                    _ => tile::<MR, V>(p, i, j),
                }
            }
            i += MR;
        }
    }

    /// Rows `i..i + R`, columns `j..j + 16 V` (masked at the edge).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const V: usize>(p: &Raw, i: usize, j: usize) {
        let rem = p.n - j;
        let mut masks = [0 as __mmask16; V];
        for (v, m) in masks.iter_mut().enumerate() {
            *m = mask(rem.saturating_sub(16 * v));
        }
        let mut c = [[_mm512_setzero_ps(); V]; R];
        for q in 0..p.k {
            let mut bv = [_mm512_setzero_ps(); V];
            for v in 0..V {
                // SAFETY: masked-off lanes are not read (nor fault); the rest lie in B's span.
                bv[v] = unsafe { _mm512_maskz_loadu_ps(masks[v], p.b.add(q * p.rsb + j + 16 * v)) };
            }
            for (r, cr) in c.iter_mut().enumerate() {
                // SAFETY: row i + r < m and q < k lie inside A's checked span.
                let av = _mm512_set1_ps(unsafe { *p.a.add((i + r) * p.rsa + q * p.csa) });
                for v in 0..V {
                    cr[v] = _mm512_fmadd_ps(av, bv[v], cr[v]);
                }
            }
        }
        let alpha = _mm512_set1_ps(p.alpha);
        for (r, cr) in c.iter().enumerate() {
            for v in 0..V {
                if masks[v] == 0 {
                    break;
                }
                // SAFETY: masked lanes stay inside row i + r of the C block.
                unsafe {
                    let cp = p.c.add((i + r) * p.ldc + j + 16 * v);
                    let out = if p.acc {
                        _mm512_fmadd_ps(alpha, cr[v], _mm512_maskz_loadu_ps(masks[v], cp))
                    } else {
                        _mm512_mul_ps(alpha, cr[v])
                    };
                    _mm512_mask_storeu_ps(cp, masks[v], out);
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn exp_sub(x: &mut [f32], m: f32) -> f32 {
        let (vm, mut s) = (_mm512_set1_ps(m), _mm512_setzero_ps());
        let lo = _mm512_set1_ps(super::EXP_FLUSH);
        let mut i = 0;
        while i < x.len() {
            let k = mask(x.len() - i);
            let d = _mm512_sub_ps(load(x, i), vm);
            let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(d, lo);
            let e = _mm512_maskz_mov_ps(keep, exp(_mm512_max_ps(d, lo)));
            s = _mm512_mask_add_ps(s, k, s, e);
            store(x, i, e);
            i += 16;
        }
        crate::simd::avx512::hsum(s)
    }
}
