//! f16/bf16 to f32 conversion kernels: every tier bit-exact against the scalar reference and against
//! `half`, over all 65536 inputs, every tail length, and unaligned sources. Integer-exact: no tolerance.

use anvil::kernels::convert::reference;
use anvil::kernels::{KernelError, Kernels};
use half::{bf16, f16};
use proptest::prelude::*;

/// Every u16 as little-endian bytes, behind one leading byte so the vector loads are unaligned.
fn all_inputs_unaligned() -> Vec<u8> {
    let mut bytes = vec![0xAB];
    bytes.extend((0..=u16::MAX).flat_map(u16::to_le_bytes));
    bytes
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn reference_matches_half_for_every_input() {
    for h in 0..=u16::MAX {
        assert_eq!(
            reference::f16_to_f32(h).to_bits(),
            f16::from_bits(h).to_f32().to_bits(),
            "f16 {h:#06x}"
        );
        assert_eq!(
            reference::bf16_to_f32(h).to_bits(),
            bf16::from_bits(h).to_f32().to_bits(),
            "bf16 {h:#06x}"
        );
    }
}

#[test]
fn every_tier_is_bit_exact_for_every_input() {
    let bytes = all_inputs_unaligned();
    let src = &bytes[1..];
    let want_h: Vec<u32> = (0..=u16::MAX)
        .map(|h| f16::from_bits(h).to_f32().to_bits())
        .collect();
    let want_b: Vec<u32> = (0..=u16::MAX)
        .map(|h| bf16::from_bits(h).to_f32().to_bits())
        .collect();
    for k in Kernels::available().unwrap() {
        let mut out = vec![0.0f32; 1 << 16];
        k.f16_to_f32(src, &mut out).unwrap();
        assert_eq!(bits(&out), want_h, "f16 on {:?}", k.isa());
        k.bf16_to_f32(src, &mut out).unwrap();
        assert_eq!(bits(&out), want_b, "bf16 on {:?}", k.isa());
    }
}

#[test]
fn short_sources_are_refused() {
    for k in Kernels::available().unwrap() {
        let mut out = [0.0f32; 4];
        let err = k.f16_to_f32(&[0; 7], &mut out).unwrap_err();
        assert!(
            matches!(
                err,
                KernelError::BadLength {
                    needed: 8,
                    got: 7,
                    ..
                }
            ),
            "{err}"
        );
        assert!(k.bf16_to_f32(&[0; 3], &mut out).is_err());
        // Extra source bytes are ignored; empty outputs are fine.
        k.f16_to_f32(&[0; 9], &mut out).unwrap();
        k.bf16_to_f32(&[], &mut []).unwrap();
    }
}

proptest! {
    /// Lengths 0..=4*16+3 (every tail of the widest tier), at any byte offset, with special values mixed in.
    #[test]
    fn tiers_match_the_reference_on_any_length_and_offset(
        halves in proptest::collection::vec(
            prop_oneof![
                any::<u16>(),
                Just(0x0000u16), Just(0x8000), Just(0x7c00), Just(0xfc00), Just(0x7e00), Just(0x7d01),
                Just(0x0001), Just(0x03ff), Just(0x7f80), Just(0xff81), Just(0x0080),
            ],
            0..=67,
        ),
        offset in 0usize..4,
    ) {
        let mut bytes = vec![0x5A; offset];
        bytes.extend(halves.iter().flat_map(|h| h.to_le_bytes()));
        let src = &bytes[offset..];
        let n = halves.len();
        let mut want_h = vec![0.0; n];
        let mut want_b = vec![0.0; n];
        reference::f16_slice(src, &mut want_h);
        reference::bf16_slice(src, &mut want_b);
        for k in Kernels::available().unwrap() {
            // NaN sentinels past the end catch stray writes.
            let mut out = vec![f32::NAN; n + 5];
            k.f16_to_f32(src, &mut out[..n]).unwrap();
            prop_assert_eq!(bits(&out[..n]), bits(&want_h));
            prop_assert!(out[n..].iter().all(|v| v.is_nan()));
            k.bf16_to_f32(src, &mut out[..n]).unwrap();
            prop_assert_eq!(bits(&out[..n]), bits(&want_b));
        }
    }
}
