//! f32 GEMM: `C = alpha * op(A) * op(B) + beta * C`, laid out as the BLIS layers.
//!
//! - `loops.rs`: the loop nest (LOOP 5..1) and the split of the work between threads;
//! - `pack.rs`: packing of A and B into micro-panels;
//! - `kernel.rs`: the [`MicroKernel`](kernel::MicroKernel) trait and the cache-block sizes;
//! - `scalar.rs`, `avx2.rs`, `avx512.rs`: one micro-kernel per instruction set;
//! - `skinny.rs`: GEMV-like shapes (few rows of A), which skip packing;
//! - `packed.rs`: a B operand packed once ([`PackedB`]) for GEMMs on a constant weight.
//!
//! Transposes cost nothing: a [`MatRef`] carries a row and a column stride, and `.t()` swaps them,
//! so backward passes (`dW = dY^T X`, `dX = dY W`) read their operands in place.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod kernel;
mod loops;
pub(crate) mod pack;
mod packed;
mod scalar;
mod skinny;
mod tiles;

pub use packed::PackedB;
pub(crate) use skinny::gemv_dot;

use crate::error::check_len;
use crate::{KernelError, Kernels, Result};

/// A read-only matrix view: `rows x cols`, element `(i, j)` at `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix with leading dimension `ld` (the distance between rows, `>= cols`).
    pub fn new(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Self::from_strides(data, rows, cols, ld, 1)
    }

    /// A matrix with arbitrary row and column strides (in elements).
    pub fn from_strides(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// The transpose, as a view of the same data.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Elements spanned from the first to the last, or an error if that overflows.
    fn span(&self, op: &'static str, arg: &'static str) -> Result<usize> {
        span(self.rows, self.cols, self.rs, self.cs).ok_or_else(|| KernelError::BadShape {
            op,
            detail: format!(
                "`{arg}` {}x{} with strides ({}, {}) overflows the address space",
                self.rows, self.cols, self.rs, self.cs
            ),
        })
    }
}

/// A mutable row-major matrix view: `rows x cols` with leading dimension `ld >= cols`.
/// Elements between `cols` and `ld` are never read or written.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    ld: usize,
}

impl<'a> MatMut<'a> {
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            ld,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// One product of [`Kernels::sgemm_many`]: `c = alpha * a * b + beta * c` (C not read when
/// `beta == 0`).
#[derive(Debug)]
pub struct GemmJob<'a> {
    pub alpha: f32,
    pub a: MatRef<'a>,
    pub b: MatRef<'a>,
    pub beta: f32,
    pub c: MatMut<'a>,
}

fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)?
        .checked_add(1)
}

/// Checks the shapes of one GEMM (or of one batch of them, `batch` apart by the strides) and
/// returns the problem sizes `(m, n, k)`.
fn check(
    op: &'static str,
    a: &MatRef,
    b: &MatRef,
    c: &MatMut,
    batch: usize,
    strides: [usize; 3],
) -> Result<(usize, usize, usize)> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || c.rows != m || c.cols != n {
        return Err(KernelError::BadShape {
            op,
            detail: format!(
                "op(A) is {}x{}, op(B) is {}x{}, C is {}x{}: need A (m, k), B (k, n), C (m, n)",
                a.rows, a.cols, b.rows, b.cols, c.rows, c.cols
            ),
        });
    }
    if c.rows > 1 && c.ld < c.cols {
        return Err(KernelError::BadShape {
            op,
            detail: format!(
                "C's leading dimension {} is below its {} columns",
                c.ld, c.cols
            ),
        });
    }
    let c_span = span(c.rows, c.cols, c.ld, 1).unwrap_or(usize::MAX);
    if batch > 1 && c_span > 0 && strides[2] < c_span {
        return Err(KernelError::BadShape {
            op,
            detail: format!(
                "C's batch stride {} is below one matrix's span {c_span}: outputs would overlap",
                strides[2]
            ),
        });
    }
    let spans = [
        (a.span(op, "a")?, a.data.len(), strides[0], "a"),
        (b.span(op, "b")?, b.data.len(), strides[1], "b"),
        (c_span, c.data.len(), strides[2], "c"),
    ];
    for (one, len, stride, arg) in spans {
        if one == 0 || batch == 0 {
            continue;
        }
        let needed = (batch - 1)
            .checked_mul(stride)
            .and_then(|s| s.checked_add(one))
            .ok_or_else(|| KernelError::BadShape {
                op,
                detail: format!("`{arg}`: batch {batch} x stride {stride} overflows"),
            })?;
        check_len(op, arg, len, needed)?;
    }
    Ok((m, n, k))
}

impl Kernels {
    /// `c = alpha * a * b + beta * c`, with `a: (m, k)`, `b: (k, n)`, `c: (m, n)`.
    ///
    /// Transposed operands are views (`MatRef::t`). When `beta == 0`, `c` is not read (NaN in it
    /// does not propagate); when `alpha == 0` or `k == 0`, `a` and `b` are not read. Runs on the
    /// current rayon pool above a size threshold; the result is bit-identical for any thread count.
    ///
    /// # Errors
    /// [`KernelError::BadShape`] when the shapes disagree, and [`KernelError::BadLength`] when a
    /// slice is shorter than its shape and strides need.
    pub fn sgemm(&self, alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) -> Result<()> {
        let (m, n, k) = check("sgemm", &a, &b, &c, 1, [0; 3])?;
        let p = loops::Problem::new(m, n, k, alpha, &a, &b, beta, c.data.as_mut_ptr(), c.ld);
        // SAFETY: `check` proved every element the problem touches lies inside the slices, and the rows of C (ld >= cols) do not overlap.
        unsafe { loops::gemm(self.isa(), &p, true) };
        Ok(())
    }

    /// As [`Kernels::sgemm`] (the same bits), without splitting the product between threads:
    /// for callers that run independent GEMMs in parallel themselves ([`Kernels::sgemm_many`] does
    /// that for a set of them, in tiles).
    ///
    /// # Errors
    /// As [`Kernels::sgemm`].
    pub fn sgemm_serial(
        &self,
        alpha: f32,
        a: MatRef,
        b: MatRef,
        beta: f32,
        c: MatMut,
    ) -> Result<()> {
        let (m, n, k) = check("sgemm_serial", &a, &b, &c, 1, [0; 3])?;
        let p = loops::Problem::new(m, n, k, alpha, &a, &b, beta, c.data.as_mut_ptr(), c.ld);
        // SAFETY: `check` proved every element the problem touches lies inside the slices, and the rows of C (ld >= cols) do not overlap.
        unsafe { loops::gemm(self.isa(), &p, false) };
        Ok(())
    }

    /// `c = alpha * a * b + beta * c + bias`, the bias (`n` values) added to every row of C: a
    /// Linear layer's forward without a separate pass to prefill C. The bias is added after the
    /// product, in its own rounding, so with `beta == 0` the result is bit-identical to
    /// [`Kernels::sgemm`] on C prefilled with the bias and `beta == 1`.
    ///
    /// # Errors
    /// As [`Kernels::sgemm`], and [`KernelError::BadShape`] when `bias` does not hold `n` values.
    pub fn sgemm_bias(
        &self,
        alpha: f32,
        a: MatRef,
        b: MatRef,
        beta: f32,
        bias: &[f32],
        c: MatMut,
    ) -> Result<()> {
        let (m, n, k) = check("sgemm_bias", &a, &b, &c, 1, [0; 3])?;
        if bias.len() != n {
            return Err(KernelError::BadShape {
                op: "sgemm_bias",
                detail: format!("bias holds {} values, C has {n} columns", bias.len()),
            });
        }
        let p = loops::Problem::new(m, n, k, alpha, &a, &b, beta, c.data.as_mut_ptr(), c.ld)
            .with_bias(bias);
        // SAFETY: as in `sgemm`, and the bias holds n values.
        unsafe { loops::gemm(self.isa(), &p, true) };
        Ok(())
    }

    /// Independent GEMMs `c = alpha * a * b + beta * c`, one per job, with the results of as many
    /// [`Kernels::sgemm`] calls (bit for bit), all in one parallel region. When every job is
    /// GEMV-like with B read along its rows (a Linear weight `(out, in)` seen as `.t()`, at most 8
    /// rows of A), they are split into tasks of a few hundred KiB of B that idle threads take in
    /// turn: a decode step's expert matrices cost one fork-join, not one each. Otherwise each job
    /// is cut into tiles of rows or columns (about a quarter of a thread's share of the work
    /// each), taken largest first by whichever thread is free: a mixture's experts, of unequal
    /// sizes, keep both threads busy to the end.
    ///
    /// # Errors
    /// As [`Kernels::sgemm`], for the first job whose shapes or lengths are wrong (then nothing
    /// is computed).
    pub fn sgemm_many(&self, jobs: &mut [GemmJob]) -> Result<()> {
        let mut ps = Vec::with_capacity(jobs.len());
        for j in jobs.iter_mut() {
            let (m, n, k) = check("sgemm_many", &j.a, &j.b, &j.c, 1, [0; 3])?;
            let c = j.c.data.as_mut_ptr();
            ps.push(loops::Problem::new(
                m, n, k, j.alpha, &j.a, &j.b, j.beta, c, j.c.ld,
            ));
        }
        // SAFETY: `check` bounds every problem in its slices; each job borrows its own C, so no outputs overlap.
        unsafe { loops::gemm_many(self.isa(), &ps) };
        Ok(())
    }

    /// `batch` independent GEMMs whose operands lie `stride_*` elements apart in the same slices
    /// (attention heads): `c[i] = alpha * a[i] * b[i] + beta * c[i]`. The views give the first
    /// matrix of each batch.
    ///
    /// # Errors
    /// As [`Kernels::sgemm`], plus C's batch stride must keep the outputs apart.
    #[allow(clippy::too_many_arguments)]
    pub fn sgemm_batched(
        &self,
        batch: usize,
        alpha: f32,
        a: MatRef,
        stride_a: usize,
        b: MatRef,
        stride_b: usize,
        beta: f32,
        c: MatMut,
        stride_c: usize,
    ) -> Result<()> {
        let (m, n, k) = check(
            "sgemm_batched",
            &a,
            &b,
            &c,
            batch,
            [stride_a, stride_b, stride_c],
        )?;
        if batch == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        let p = loops::Problem::new(m, n, k, alpha, &a, &b, beta, c.data.as_mut_ptr(), c.ld);
        // SAFETY: `check` proved each of the `batch` problems lies inside the slices and that the outputs, `stride_c` apart, do not overlap.
        unsafe { loops::gemm_batched(self.isa(), &p, batch, [stride_a, stride_b, stride_c]) };
        Ok(())
    }
}

/// The scalar reference: a plain triple loop, summing over k in order in f32.
pub mod reference {
    use super::{MatMut, MatRef, check};
    use crate::Result;

    /// `c = alpha * a * b + beta * c`, as [`crate::Kernels::sgemm`] defines it.
    ///
    /// # Errors
    /// As [`crate::Kernels::sgemm`].
    pub fn sgemm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) -> Result<()> {
        let (m, n, k) = check("sgemm", &a, &b, &c, 1, [0; 3])?;
        for i in 0..m {
            for j in 0..n {
                let ci = i * c.ld + j;
                let mut acc = 0.0f32;
                if alpha != 0.0 {
                    for p in 0..k {
                        acc += a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs];
                    }
                }
                let old = if beta == 0.0 { 0.0 } else { beta * c.data[ci] };
                c.data[ci] = alpha * acc + old;
            }
        }
        Ok(())
    }
}
