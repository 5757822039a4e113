//! The roofline probes: the read probe sums exactly what it is given on every tier (every
//! length's tail, unaligned starts, special values), so its timing measures a real read of the
//! whole buffer. Small integers sum exactly in any order: no tolerance.

mod common;

use proptest::prelude::*;

/// The exact sum of small integers, in f64.
fn exact(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x)).sum()
}

proptest! {
    #[test]
    fn read_probe_sums_every_value(
        vals in proptest::collection::vec(-64i32..64, 0..6000),
        skip in 0usize..4,
    ) {
        let data: Vec<f32> = vals.iter().map(|&v| v as f32).collect();
        let data = &data[skip.min(data.len())..];
        for k in common::tiers() {
            prop_assert_eq!(f64::from(k.read_probe(data)), exact(data), "{:?}", k.isa());
        }
    }
}

#[test]
fn read_probe_reads_long_buffers_and_every_stream_boundary() {
    // Around multiples of 8 streams x 16 lanes, and a buffer past any L2. Values in -1..=1
    // keep every partial sum below 2^24, so every order of summing is exact.
    for len in [
        127usize,
        128,
        129,
        255,
        256,
        257,
        1023,
        1024,
        1025,
        (1 << 20) + 7,
    ] {
        let data: Vec<f32> = (0..len).map(|i| ((i * 7919) % 3) as f32 - 1.0).collect();
        for k in common::tiers() {
            assert_eq!(
                f64::from(k.read_probe(&data)),
                exact(&data),
                "{:?} {len}",
                k.isa()
            );
        }
    }
}

#[test]
fn read_probe_propagates_special_values() {
    for at in [0, 100, 999] {
        let mut data = vec![1.0f32; 1000];
        data[at] = f32::NAN;
        for k in common::tiers() {
            assert!(k.read_probe(&data).is_nan(), "{:?} NaN at {at}", k.isa());
        }
        data[at] = f32::INFINITY;
        for k in common::tiers() {
            assert_eq!(
                k.read_probe(&data),
                f32::INFINITY,
                "{:?} inf at {at}",
                k.isa()
            );
        }
    }
}
