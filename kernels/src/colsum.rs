//! Column sums of a row-major matrix added into a vector: a bias's gradient, `db += sum_i dy[i, .]`.
//!
//! Each column is summed over the rows in order, `((d + x0) + x1) + ...`, one rounding per add,
//! on every tier and however the columns are split between threads: the tiers vectorise across
//! columns, never within one, so they agree bit for bit with [`reference::add_col_sums`].
//!
//! The SIMD tiers keep up to 128 columns' sums in registers over all the rows (the plain loop
//! loads and stores each sum once per row, and without target features compiled to SSE). The
//! tiny GPT's training step spent 1.3% of its time in that loop (its upper bound, measured by
//! skipping the sums: 1.015x); with this kernel, alternated step by step in one process on 2
//! threads, the step ran 1.006x (139 pairs, q1-q3 0.985-1.032).

use crate::error::check_len;
use crate::{Isa, KernelError, Kernels, Result};

/// The portable order every tier reproduces.
pub mod reference {
    /// `dst[j] += sum over rows i of src[i * cols + j]`, rows in order. `// src: (rows, cols)`
    pub fn add_col_sums(dst: &mut [f32], src: &[f32], cols: usize) {
        if cols == 0 {
            return;
        }
        for row in src.chunks_exact(cols) {
            dst.iter_mut().zip(row).for_each(|(d, &s)| *d += s);
        }
    }
}

/// Below this many values of `src` the sums run on the calling thread (a fork costs a few us).
const PAR_MIN: usize = 64 * 1024;

impl Kernels {
    /// `dst[j] += sum_i src[i * cols + j]` for `j < cols`. `// src: (rows, cols), dst: (cols)`
    ///
    /// Above 64 Ki values the columns are cut into strips of whole cache lines, about four per
    /// thread of the current rayon pool; each column's sum keeps its order, so the result has the
    /// same bits on any thread count and tier.
    ///
    /// # Errors
    /// [`KernelError::BadShape`] when `src` is not whole rows of `cols` (or `cols` is 0 while
    /// `src` is not empty), and [`KernelError::BadLength`] when `dst` holds fewer than `cols`.
    pub fn add_col_sums(&self, dst: &mut [f32], src: &[f32], cols: usize) -> Result<()> {
        const OP: &str = "add_col_sums";
        if (cols == 0 && !src.is_empty()) || (cols > 0 && !src.len().is_multiple_of(cols)) {
            return Err(KernelError::BadShape {
                op: OP,
                detail: format!("{} values are not whole rows of {cols} columns", src.len()),
            });
        }
        check_len(OP, "dst", dst.len(), cols)?;
        if src.is_empty() {
            return Ok(());
        }
        let isa = self.isa();
        let threads = rayon::current_num_threads();
        if src.len() >= PAR_MIN && threads > 1 {
            use rayon::prelude::*;
            let strip = cols.div_ceil(4 * threads).div_ceil(16) * 16;
            dst[..cols]
                .par_chunks_mut(strip)
                .enumerate()
                .for_each(|(i, d)| strip_sums(isa, d, src, cols, i * strip));
        } else {
            strip_sums(isa, &mut dst[..cols], src, cols, 0);
        }
        Ok(())
    }
}

/// Columns `j0..j0 + dst.len()` of `src` (rows of `cols`) added into `dst`.
fn strip_sums(isa: Isa, dst: &mut [f32], src: &[f32], cols: usize, j0: usize) {
    debug_assert!(j0 + dst.len() <= cols && src.len().is_multiple_of(cols));
    match isa {
        #[cfg(target_arch = "x86_64")]
        // The strip lies inside every row (checked by the caller).
        // SAFETY: a `Kernels` holds a tier only when the CPU supports it; the strip is in bounds.
        Isa::Avx512 => unsafe { avx512::strip(dst, src, cols, j0) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { avx2::strip(dst, src, cols, j0) },
        _ => {
            for row in src.chunks_exact(cols) {
                dst.iter_mut().zip(&row[j0..]).for_each(|(d, &s)| *d += s);
            }
        }
    }
}

/// The shared body of a tier: blocks of up to `8 * LANES` columns, `V` vector sums kept in
/// registers over all the rows, the block's last vector masked. The tier's module provides
/// `LANES`, the vector type `Vec` and `load`, `store`, `add`.
macro_rules! strips {
    ($feat:literal) => {
        /// # Safety
        /// The CPU has the tier's features; `j0 + dst.len() <= cols` and `src` is whole rows of
        /// `cols`.
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn strip(dst: &mut [f32], src: &[f32], cols: usize, j0: usize) {
            let rows = src.len() / cols;
            let mut c = 0;
            while c < dst.len() {
                let n = (dst.len() - c).min(8 * LANES);
                let (d, s) = (dst[c..].as_mut_ptr(), src[j0 + c..].as_ptr());
                // The block's n columns lie inside dst and every row of src from column j0 + c.
                // SAFETY: the block is in bounds (the function's contract).
                unsafe {
                    match n.div_ceil(LANES) {
                        1 => block::<1>(d, s, cols, rows, n),
                        2 => block::<2>(d, s, cols, rows, n),
                        3 => block::<3>(d, s, cols, rows, n),
                        4 => block::<4>(d, s, cols, rows, n),
                        5 => block::<5>(d, s, cols, rows, n),
                        6 => block::<6>(d, s, cols, rows, n),
                        7 => block::<7>(d, s, cols, rows, n),
                        _ => block::<8>(d, s, cols, rows, n),
                    }
                }
                c += n;
            }
        }

        /// `n` columns (`(V - 1) * LANES < n <= V * LANES`) at `d` summed over `rows` rows of
        /// `s`, `cols` apart.
        ///
        /// # Safety
        /// As [`strip`]: `d[..n]` and `s[i * cols..][..n]` for `i < rows` are valid.
        #[target_feature(enable = $feat)]
        unsafe fn block<const V: usize>(
            d: *mut f32,
            s: *const f32,
            cols: usize,
            rows: usize,
            n: usize,
        ) {
            let last = n - (V - 1) * LANES;
            let count = |v: usize| if v + 1 == V { last } else { LANES };
            let mut acc: [Vec; V] = std::array::from_fn(|v| {
                // SAFETY: each vector's count keeps the loads to the block's n values.
                unsafe { load(d.add(v * LANES), count(v)) }
            });
            for i in 0..rows {
                // SAFETY: row i < rows holds the block's n columns.
                let row = unsafe { s.add(i * cols) };
                for (v, a) in acc.iter_mut().enumerate() {
                    // SAFETY: as above.
                    *a = add(*a, unsafe { load(row.add(v * LANES), count(v)) });
                }
            }
            for (v, a) in acc.iter().enumerate() {
                // SAFETY: as above.
                unsafe { store(d.add(v * LANES), count(v), *a) };
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::math::avx512::mask16;
    use std::arch::x86_64::*;

    const LANES: usize = 16;
    type Vec = __m512;

    /// # Safety
    /// `p[..n]` is readable, `n <= 16`.
    #[target_feature(enable = "avx512f")]
    unsafe fn load(p: *const f32, n: usize) -> Vec {
        // SAFETY: the mask keeps the load to p[..n] (the function's contract).
        unsafe { _mm512_maskz_loadu_ps(mask16(n), p) }
    }

    /// # Safety
    /// `p[..n]` is writable, `n <= 16`.
    #[target_feature(enable = "avx512f")]
    unsafe fn store(p: *mut f32, n: usize, v: Vec) {
        // SAFETY: the mask keeps the store to p[..n] (the function's contract).
        unsafe { _mm512_mask_storeu_ps(p, mask16(n), v) }
    }

    #[target_feature(enable = "avx512f")]
    fn add(a: Vec, b: Vec) -> Vec {
        _mm512_add_ps(a, b)
    }

    strips!("avx512f");
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::gemm::avx2::mask8;
    use std::arch::x86_64::*;

    const LANES: usize = 8;
    type Vec = __m256;

    /// # Safety
    /// `p[..n]` is readable, `n <= 8`.
    #[target_feature(enable = "avx2")]
    unsafe fn load(p: *const f32, n: usize) -> Vec {
        // SAFETY: the mask keeps the load to p[..n] (the function's contract).
        unsafe { _mm256_maskload_ps(p, mask8(n)) }
    }

    /// # Safety
    /// `p[..n]` is writable, `n <= 8`.
    #[target_feature(enable = "avx2")]
    unsafe fn store(p: *mut f32, n: usize, v: Vec) {
        // SAFETY: the mask keeps the store to p[..n] (the function's contract).
        unsafe { _mm256_maskstore_ps(p, mask8(n), v) }
    }

    #[target_feature(enable = "avx2")]
    fn add(a: Vec, b: Vec) -> Vec {
        _mm256_add_ps(a, b)
    }

    strips!("avx2");
}
