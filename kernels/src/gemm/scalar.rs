//! The portable micro-kernel: plain Rust arrays that the compiler vectorises for the baseline ISA.

use super::kernel::MicroKernel;

pub(crate) struct Scalar;

const MR: usize = 4;
const NR: usize = 8;

impl MicroKernel for Scalar {
    const MR: usize = MR;
    const NR: usize = NR;

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
    ) {
        debug_assert_eq!(lda, 0, "no direct A on this kernel");
        // SAFETY: the trait contract: `a` holds kc * MR values and `b` holds kc * NR.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(a, kc * MR),
                std::slice::from_raw_parts(b, kc * NR),
            )
        };
        let mut acc = [[0.0f32; NR]; MR];
        for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
            for i in 0..MR {
                for j in 0..NR {
                    acc[i][j] += ap[i] * bp[j];
                }
            }
        }
        for (i, row) in acc.iter().enumerate().take(mr) {
            for (j, &v) in row.iter().enumerate().take(nr) {
                // SAFETY: i < mr and j < nr: inside the caller's C block.
                let cij = unsafe { &mut *c.add(i * ldc + j) };
                let r = if beta == 0.0 {
                    alpha * v
                } else {
                    alpha * v + beta * *cij
                };
                *cij = if bias.is_null() {
                    r
                } else {
                    // SAFETY: a non-null bias holds nr > j values (trait contract).
                    r + unsafe { *bias.add(j) }
                };
            }
        }
    }
}
