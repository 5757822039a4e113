//! GEMV-like shapes (a few rows of A): no packing of B, parallel over columns of C.

use super::loops::Problem;

/// Runs `p` without packing if its shape suits; false if the packed path should take it.
pub(crate) unsafe fn try_run_avx512(_p: &Problem, _threads: usize) -> bool {
    false
}

/// Runs `p` without packing if its shape suits; false if the packed path should take it.
pub(crate) unsafe fn try_run_avx2(_p: &Problem, _threads: usize) -> bool {
    false
}
