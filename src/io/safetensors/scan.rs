//! Counting NaN and infinite values in a tensor's raw little-endian bytes, for every floating-point dtype the
//! format defines, by bit pattern (no conversion, so f8 and f64 need no decoder).

use super::FileDtype;

/// A tensor with non-finite values: how many of each kind and the flat index of the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonFinite {
    pub name: String,
    pub dtype: FileDtype,
    pub nan: usize,
    pub pos_inf: usize,
    pub neg_inf: usize,
    /// Row-major index of the first NaN or infinity.
    pub first: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Finite,
    Nan,
    PosInf,
    NegInf,
}

/// Classifies one element from its bits: `exp` is the exponent mask, `man` the mantissa mask, `sign` the sign
/// bit (IEEE layouts: all-ones exponent is inf with a zero mantissa, NaN otherwise).
fn ieee(bits: u64, exp: u64, man: u64, sign: u64) -> Kind {
    if bits & exp != exp {
        Kind::Finite
    } else if bits & man != 0 {
        Kind::Nan
    } else if bits & sign != 0 {
        Kind::NegInf
    } else {
        Kind::PosInf
    }
}

/// `float8_e4m3fn`: no infinities; NaN is S.1111.111 only.
fn e4m3(b: u8) -> Kind {
    if b & 0x7F == 0x7F {
        Kind::Nan
    } else {
        Kind::Finite
    }
}

/// Counts the non-finite values of `bytes` read as `dtype`; `None` when there are none or the dtype is not
/// floating-point. `name` is left empty for the caller to fill. Trailing bytes short of an element are
/// ignored (a validated tensor has none).
pub fn count_non_finite(dtype: FileDtype, bytes: &[u8]) -> Option<NonFinite> {
    let classify: fn(&[u8]) -> Kind = match dtype {
        FileDtype::F64 => |b| {
            let bits = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            ieee(bits, 0x7FF0 << 48, (1 << 52) - 1, 1 << 63)
        },
        FileDtype::F32 => |b| {
            let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            ieee(u64::from(bits), 0x7F80_0000, 0x007F_FFFF, 0x8000_0000)
        },
        FileDtype::F16 => |b| {
            ieee(
                u64::from(u16::from_le_bytes([b[0], b[1]])),
                0x7C00,
                0x03FF,
                0x8000,
            )
        },
        FileDtype::BF16 => |b| {
            ieee(
                u64::from(u16::from_le_bytes([b[0], b[1]])),
                0x7F80,
                0x007F,
                0x8000,
            )
        },
        FileDtype::F8E5M2 => |b| ieee(u64::from(b[0]), 0x7C, 0x03, 0x80),
        FileDtype::F8E4M3 => |b| e4m3(b[0]),
        _ => return None,
    };
    let mut report = NonFinite {
        name: String::new(),
        dtype,
        nan: 0,
        pos_inf: 0,
        neg_inf: 0,
        first: usize::MAX,
    };
    for (i, el) in bytes.chunks_exact(dtype.size()).enumerate() {
        let slot = match classify(el) {
            Kind::Finite => continue,
            Kind::Nan => &mut report.nan,
            Kind::PosInf => &mut report.pos_inf,
            Kind::NegInf => &mut report.neg_inf,
        };
        *slot += 1;
        report.first = report.first.min(i);
    }
    (report.first != usize::MAX).then_some(report)
}
