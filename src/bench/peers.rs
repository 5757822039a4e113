//! The peer GEMMs (`gemm` and `matrixmultiply` crates), called on the same operands as ours by
//! `anvil bench gemm` and the criterion bench. Only built with the `peers` feature; the library
//! proper never calls them.

use super::GemmShape;

pub fn init(threads: usize) {
    // matrixmultiply reads its thread count from the environment once, at first use.
    // SAFETY: called before any other thread of this process reads the environment.
    unsafe { std::env::set_var("MATMUL_NUM_THREADS", threads.to_string()) };
}

pub fn gemm_crate<'a>(
    s: GemmShape,
    threads: usize,
    a: &'a [f32],
    b: &'a [f32],
    c: &'a mut [f32],
) -> impl FnMut() + 'a {
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // Column and row strides of op(B) as the crate wants them (dst, lhs, rhs all row-major).
    let (rbc, rbr) = if s.bt {
        (s.k as isize, 1)
    } else {
        (1, s.n as isize)
    };
    // Column and row strides of op(A).
    let (rac, rar) = if s.at {
        (s.m as isize, 1)
    } else {
        (1, s.k as isize)
    };
    move || {
        // SAFETY: the pointers and strides describe the m x k, k x n and m x n buffers above.
        unsafe {
            gemm::gemm(
                s.m,
                s.n,
                s.k,
                c.as_mut_ptr(),
                1,
                s.n as isize,
                false,
                a.as_ptr(),
                rac,
                rar,
                b.as_ptr(),
                rbc,
                rbr,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                par,
            )
        }
    }
}

pub fn mm<'a>(s: GemmShape, a: &'a [f32], b: &'a [f32], c: &'a mut [f32]) -> impl FnMut() + 'a {
    let (rsb, csb) = if s.bt {
        (1, s.k as isize)
    } else {
        (s.n as isize, 1)
    };
    let (rsa, csa) = if s.at {
        (1, s.m as isize)
    } else {
        (s.k as isize, 1)
    };
    move || {
        // SAFETY: as above.
        unsafe {
            matrixmultiply::sgemm(
                s.m,
                s.k,
                s.n,
                1.0,
                a.as_ptr(),
                rsa,
                csa,
                b.as_ptr(),
                rsb,
                csb,
                0.0,
                c.as_mut_ptr(),
                s.n as isize,
                1,
            )
        }
    }
}
