//! GEMM entry points on arbitrary sizes, strides and slice lengths: every call either returns an
//! error or agrees with the scalar reference; none panics or reads out of bounds.
#![no_main]

use anvil_kernels::gemm::reference;
use anvil_kernels::{Kernels, MatMut, MatRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let d = |i: usize| data[i] as usize % 24;
    let (m, n, k) = (d(0), d(1), d(2));
    let (rsa, csa, rsb, csb, ldc) = (d(3), d(4), d(5), d(6), d(7));
    let (la, lb, lc) = (d(8) * 24, d(9) * 24, d(10) * 24);
    let (alpha, beta) = ([0.0, 1.0, -0.5][data[11] as usize % 3], [0.0, 1.0, 2.0][data[11] as usize / 3 % 3]);
    let a: Vec<f32> = (0..la).map(|i| (i % 7) as f32 - 3.0).collect();
    let b: Vec<f32> = (0..lb).map(|i| (i % 5) as f32 - 2.0).collect();
    let c0: Vec<f32> = (0..lc).map(|i| (i % 3) as f32).collect();
    for kern in Kernels::available().unwrap_or_default() {
        let av = MatRef::from_strides(&a, m, k, rsa, csa);
        let bv = MatRef::from_strides(&b, k, n, rsb, csb);
        let mut got = c0.clone();
        let mut want = c0.clone();
        let r1 = kern.sgemm(alpha, av, bv, beta, MatMut::new(&mut got, m, n, ldc));
        let r2 = reference::sgemm(alpha, av, bv, beta, MatMut::new(&mut want, m, n, ldc));
        assert_eq!(r1.is_ok(), r2.is_ok());
        if r1.is_ok() {
            // Small integers: every product and partial sum is exact in f32.
            assert_eq!(got, want);
        }
    }
});
