//! f16/bf16 <-> f32 conversion kernels: every tier bit-exact against the scalar reference and against
//! `half`: to f32 over all 65536 inputs, from f32 over every exponent with the mantissas that decide
//! rounding (ties, carries, subnormals, NaN payloads); every tail length, unaligned byte slices.
//! Integer-exact: no tolerance.

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

/// Every f32 exponent and sign with the mantissas that decide rounding: zero, one ulp, just
/// below / at / above half of a dropped f16 (13 bits) or bf16 (16 bits) step, odd and even kept
/// bits (ties to even), all ones (carry into the exponent), NaN payloads that vanish when shifted.
fn rounding_cases() -> Vec<f32> {
    let mans = [
        0u32, 1, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000, 0x5000, 0x7fff, 0x8000, 0x8001,
        0x18000, 0x28000, 0xffff, 0x1_0000, 0x3f_e000, 0x40_0000, 0x40_1000, 0x7f_f000, 0x7f_ffff,
    ];
    let mut v = Vec::new();
    for sign in [0u32, 1 << 31] {
        for exp in 0u32..256 {
            for &m in &mans {
                v.push(f32::from_bits(sign | exp << 23 | m));
            }
        }
    }
    v
}

fn halves(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

#[test]
fn from_f32_reference_and_every_tier_match_half() {
    let x = rounding_cases();
    let want_h: Vec<u16> = x.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
    let want_b: Vec<u16> = x.iter().map(|&v| bf16::from_f32(v).to_bits()).collect();
    for (i, &v) in x.iter().enumerate() {
        assert_eq!(
            reference::f32_to_f16(v),
            want_h[i],
            "f16 of {:#010x}",
            v.to_bits()
        );
        assert_eq!(
            reference::f32_to_bf16(v),
            want_b[i],
            "bf16 of {:#010x}",
            v.to_bits()
        );
    }
    for k in Kernels::available().unwrap() {
        // One leading byte: the stores are unaligned.
        let mut out = vec![0u8; 2 * x.len() + 1];
        k.f32_to_f16(&x, &mut out[1..]).unwrap();
        assert_eq!(halves(&out[1..]), want_h, "f16 on {:?}", k.isa());
        k.f32_to_bf16(&x, &mut out[1..]).unwrap();
        assert_eq!(halves(&out[1..]), want_b, "bf16 on {:?}", k.isa());
    }
}

#[test]
fn short_destinations_are_refused() {
    for k in Kernels::available().unwrap() {
        let err = k.f32_to_f16(&[1.0; 4], &mut [0; 7]).unwrap_err();
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
        assert!(k.f32_to_bf16(&[1.0; 2], &mut [0; 3]).is_err());
        k.f32_to_bf16(&[], &mut []).unwrap();
    }
}

proptest! {
    /// Any f32 bits (special values mixed in), lengths 0..=67, any byte offset; the round trip
    /// through f16 / bf16 and back is what `half` gives.
    #[test]
    fn from_f32_tiers_match_the_reference_on_any_length_and_offset(
        raw in proptest::collection::vec(
            prop_oneof![
                any::<u32>(),
                Just(0u32), Just(0x8000_0000), Just(0x7f80_0000), Just(0xff80_0000),
                Just(0x7fc0_0000), Just(0x7f80_0001), Just(0x0000_0001), Just(0x3380_0000),
                Just(0x3380_0001), Just(0x477f_f000), Just(0x477f_efff), Just(0x7f7f_ffff),
            ],
            0..=67,
        ),
        offset in 0usize..4,
    ) {
        let x: Vec<f32> = raw.iter().map(|&b| f32::from_bits(b)).collect();
        let n = x.len();
        let want_h: Vec<u16> = x.iter().map(|&v| reference::f32_to_f16(v)).collect();
        let want_b: Vec<u16> = x.iter().map(|&v| reference::f32_to_bf16(v)).collect();
        for (i, &v) in x.iter().enumerate() {
            prop_assert_eq!(want_h[i], f16::from_f32(v).to_bits());
            prop_assert_eq!(want_b[i], bf16::from_f32(v).to_bits());
        }
        for k in Kernels::available().unwrap() {
            // Sentinel bytes around the output catch stray writes.
            let mut out = vec![0xEEu8; offset + 2 * n + 5];
            k.f32_to_f16(&x, &mut out[offset..offset + 2 * n]).unwrap();
            prop_assert_eq!(halves(&out[offset..offset + 2 * n]), want_h.clone());
            prop_assert!(out[..offset].iter().chain(&out[offset + 2 * n..]).all(|&b| b == 0xEE));
            k.f32_to_bf16(&x, &mut out[offset..offset + 2 * n]).unwrap();
            prop_assert_eq!(halves(&out[offset..offset + 2 * n]), want_b.clone());
            // And back: f32 -> bf16 -> f32 on this tier is half's round trip.
            let mut back = vec![0.0f32; n];
            k.bf16_to_f32(&out[offset..offset + 2 * n], &mut back).unwrap();
            let want: Vec<u32> = x.iter().map(|&v| bf16::from_f32(v).to_f32().to_bits()).collect();
            prop_assert_eq!(bits(&back), want);
        }
    }
}
