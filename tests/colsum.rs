//! Column sums (a bias's gradient) on every tier and thread count against the reference, bit for
//! bit: the tiers vectorise across columns only, so each column's sum keeps the reference's order.

mod common;

use anvil::kernels::KernelError;
use anvil::kernels::colsum::reference;
use common::{cols, pool, tiers, value};
use proptest::prelude::*;

/// Same bits, or both NaN (a NaN's payload is not part of the contract).
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Values with specials, infinities and NaN among them.
fn entry() -> impl Strategy<Value = f32> {
    prop_oneof![
        30 => value(1e3),
        1 => prop::sample::select(vec![f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX]),
    ]
}

fn matrix() -> impl Strategy<Value = (usize, Vec<f32>, Vec<f32>)> {
    (cols(), 0usize..9).prop_flat_map(|(c, rows)| {
        (
            Just(c),
            prop::collection::vec(entry(), rows * c),
            prop::collection::vec(entry(), c + 3),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Every tier, short and long rows (tails of each vector count), specials included; the
    /// three values past `cols` in `dst` are never written.
    #[test]
    fn column_sums_match_reference_bit_for_bit((c, src, dst0) in matrix()) {
        let mut want = dst0.clone();
        reference::add_col_sums(&mut want[..c], &src, c);
        for k in tiers() {
            let mut got = dst0.clone();
            k.add_col_sums(&mut got, &src, c).unwrap();
            for j in 0..c + 3 {
                prop_assert!(same(got[j], want[j]), "{:?} cols {c} col {j}: got {} want {}",
                    k.isa(), got[j], want[j]);
            }
        }
    }
}

/// Split between threads (strips of columns above 64 Ki values), each column still sums its rows
/// in order: the reference's bits on 1, 2 and 3 threads, edge strips included.
#[test]
fn column_sums_split_between_threads_keep_the_bits() {
    for (rows, cols) in [(1024, 1152), (700, 101), (3, 40_000), (1024, 4096)] {
        let src: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 7.0 - 71.0)
            .collect();
        let base: Vec<f32> = (0..cols).map(|j| j as f32 * 0.25).collect();
        let mut want = base.clone();
        reference::add_col_sums(&mut want, &src, cols);
        for k in tiers() {
            for threads in [1, 2, 3] {
                let mut got = base.clone();
                pool(threads).install(|| k.add_col_sums(&mut got, &src, cols).unwrap());
                let ok = got.iter().zip(&want).all(|(&a, &b)| same(a, b));
                assert!(ok, "{:?} {rows} x {cols} on {threads} threads", k.isa());
            }
        }
    }
}

#[test]
fn ragged_or_short_inputs_are_errors_naming_the_problem() {
    let k = anvil::kernels::kernels().unwrap();
    let mut dst = vec![0.0; 4];
    let e = k.add_col_sums(&mut dst, &[1.0; 10], 4).unwrap_err();
    assert!(matches!(e, KernelError::BadShape { .. }), "{e}");
    assert!(e.to_string().contains("10 values"), "{e}");
    let e = k.add_col_sums(&mut dst, &[1.0; 10], 0).unwrap_err();
    assert!(matches!(e, KernelError::BadShape { .. }), "{e}");
    let e = k.add_col_sums(&mut dst[..3], &[1.0; 8], 4).unwrap_err();
    assert!(matches!(e, KernelError::BadLength { .. }), "{e}");
    // No rows, or no columns and no values: nothing to add.
    k.add_col_sums(&mut dst, &[], 4).unwrap();
    k.add_col_sums(&mut dst, &[], 0).unwrap();
    assert_eq!(dst, [0.0; 4]);
}
