//! A B operand packed once (a constant weight) and reused by every GEMM that reads it.
//!
//! [`Kernels::sgemm`] packs B into micro-panels on every call; for an inference weight that is a
//! copy of the whole weight per call (a GPT-2 `768 x 2304` projection is 7 MB), which rivals the
//! product itself when A has few rows. [`PackedB`] holds the panels in exactly the layout the
//! loop nest of `loops.rs` reads: per k block (the depth [`super::loops::kc_block`] gives), the
//! `kc x NR` panels of all columns. It is tagged with the tier and the shape, and using it on
//! another tier or shape is an error, never a misread.

use super::loops::{self, Problem};
use super::pack::pack_b;
use super::{MatMut, MatRef, check};
use crate::error::check_len;
use crate::{Isa, KernelError, Kernels, Result};

/// `B: (k, n)` packed for one tier's micro-kernel; made by [`Kernels::pack_b`].
#[derive(Clone)]
pub struct PackedB {
    isa: Isa,
    k: usize,
    n: usize,
    /// Columns rounded up to a multiple of NR (the panels are zero-padded).
    n_pad: usize,
    /// Depth of the k blocks (the last may be shorter).
    kc: usize,
    buf: Vec<f32>,
    /// Start of the 64-byte-aligned panels inside `buf`.
    off: usize,
}

/// The tier and the shape, not the (megabytes of) panels.
impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedB")
            .field("isa", &self.isa)
            .field("k", &self.k)
            .field("n", &self.n)
            .field("kc", &self.kc)
            .finish_non_exhaustive()
    }
}

impl PackedB {
    /// Rows of B (the GEMM's k).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of B (the GEMM's n).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The tier whose micro-kernel this layout is for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Bytes held (the panels, padding included).
    pub fn bytes(&self) -> usize {
        self.buf.len() * 4
    }

    fn panels(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.k * self.n_pad]
    }
}

impl Kernels {
    /// Packs `b: (k, n)` (any strides) for [`Kernels::sgemm_packed`] on this tier.
    ///
    /// # Errors
    /// [`KernelError::BadLength`] when `b`'s slice is shorter than its shape and strides need,
    /// [`KernelError::BadShape`] when they overflow.
    pub fn pack_b(&self, b: MatRef) -> Result<PackedB> {
        check_len("pack_b", "b", b.data.len(), b.span("pack_b", "b")?)?;
        let (k, n) = (b.rows, b.cols);
        let (_, nr, kc) = loops::tier_shape(self.isa(), k);
        let n_pad = n.div_ceil(nr) * nr;
        let len = k.checked_mul(n_pad).ok_or_else(|| KernelError::BadShape {
            op: "pack_b",
            detail: format!("{k}x{n} overflows the address space when packed"),
        })?;
        let mut buf = vec![0.0f32; len + 16];
        let off = buf.as_ptr().align_offset(64).min(16);
        if n > 0 {
            for (blk, dst) in buf[off..off + len].chunks_mut(kc * n_pad).enumerate() {
                let pc = blk * kc;
                let depth = kc.min(k - pc);
                // SAFETY: rows pc..pc + depth < k and columns < n of b lie inside its slice (checked above); dst holds depth * n_pad values, the block's panels.
                unsafe {
                    pack_b(
                        nr,
                        depth,
                        n,
                        b.data.as_ptr().add(pc * b.rs),
                        b.rs,
                        b.cs,
                        dst,
                    )
                };
            }
        }
        Ok(PackedB {
            isa: self.isa(),
            k,
            n,
            n_pad,
            kc,
            buf,
            off,
        })
    }

    /// `c = alpha * a * b + beta * c` with `b` packed by [`Kernels::pack_b`]: bit-identical to
    /// [`Kernels::sgemm`] on the unpacked B for problems it runs through the packed loop nest
    /// (it has no skinny path: every shape runs the micro-kernels).
    ///
    /// # Errors
    /// [`KernelError::BadShape`] when `b` was packed for another tier (or block depth) or the
    /// shapes disagree; [`KernelError::BadLength`] as [`Kernels::sgemm`].
    pub fn sgemm_packed(
        &self,
        alpha: f32,
        a: MatRef,
        b: &PackedB,
        beta: f32,
        c: MatMut,
    ) -> Result<()> {
        self.run_packed("sgemm_packed", alpha, a, b, beta, None, c)
    }

    /// [`Kernels::sgemm_packed`] plus `bias` (`n` values) added to every row of C, as
    /// [`Kernels::sgemm_bias`] adds it.
    ///
    /// # Errors
    /// As [`Kernels::sgemm_packed`], and [`KernelError::BadShape`] when `bias` does not hold `n`
    /// values.
    pub fn sgemm_packed_bias(
        &self,
        alpha: f32,
        a: MatRef,
        b: &PackedB,
        beta: f32,
        bias: &[f32],
        c: MatMut,
    ) -> Result<()> {
        self.run_packed("sgemm_packed_bias", alpha, a, b, beta, Some(bias), c)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_packed(
        &self,
        op: &'static str,
        alpha: f32,
        a: MatRef,
        b: &PackedB,
        beta: f32,
        bias: Option<&[f32]>,
        c: MatMut,
    ) -> Result<()> {
        let (_, _, kc) = loops::tier_shape(self.isa(), b.k);
        if b.isa != self.isa() || b.kc != kc {
            return Err(KernelError::BadShape {
                op,
                detail: format!(
                    "B was packed for {:?} in k blocks of {}, this call runs {:?} in blocks of {kc}",
                    b.isa,
                    b.kc,
                    self.isa()
                ),
            });
        }
        // The view only carries B's sizes into `check` (strides 0: it spans one value); the
        // packed panels are checked against those sizes by construction.
        let panels = b.panels();
        let shape = MatRef::from_strides(panels, b.k, b.n, 0, 0);
        let (m, n, k) = check(op, &a, &shape, &c, 1, [0; 3])?;
        if let Some(bias) = bias
            && bias.len() != n
        {
            return Err(KernelError::BadShape {
                op,
                detail: format!("bias holds {} values, C has {n} columns", bias.len()),
            });
        }
        let mut p = Problem::new(m, n, k, alpha, &a, &shape, beta, c.data.as_mut_ptr(), c.ld)
            .with_packed_b(panels, b.n_pad);
        if let Some(bias) = bias {
            p = p.with_bias(bias);
        }
        // SAFETY: `check` proved A and C cover the problem; the packed panels hold k * n_pad values laid out for this tier's kernel and block depth (checked above); a bias holds n values.
        unsafe { loops::gemm(self.isa(), &p, true) };
        Ok(())
    }
}
