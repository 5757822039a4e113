//! Instruction-set tiers and CPU feature detection.

use crate::KernelError;
use std::fmt;
use std::str::FromStr;

/// A tier of kernels, ordered slowest to fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, no intrinsics: the reference and the fallback on every CPU.
    Scalar,
    /// x86-64 with AVX2 and FMA (256-bit vectors).
    Avx2,
    /// x86-64 with AVX-512 F, BW and VL (512-bit vectors).
    Avx512,
}

impl Isa {
    /// Every tier, slowest first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// The lower-case name used by `ANVIL_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the tier.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The tiers this CPU supports, slowest first.
    pub fn supported() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_supported()).collect()
    }

    /// The fastest tier this CPU supports.
    pub fn best() -> Isa {
        Isa::supported().into_iter().last().unwrap_or(Isa::Scalar)
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = KernelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "scalar" => Ok(Isa::Scalar),
            "avx2" => Ok(Isa::Avx2),
            "avx512" => Ok(Isa::Avx512),
            _ => Err(KernelError::UnknownIsa {
                value: s.to_string(),
            }),
        }
    }
}

/// Optional CPU features beyond the tier, used by the integer and half-precision paths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    pub f16c: bool,
    pub avx512_vnni: bool,
    pub avx_vnni: bool,
    pub avx512_bf16: bool,
    pub amx_int8: bool,
}

impl Features {
    /// What this CPU reports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            Features {
                f16c: has!("f16c"),
                avx512_vnni: has!("avx512vnni"),
                avx_vnni: has!("avxvnni"),
                avx512_bf16: has!("avx512bf16"),
                amx_int8: amx_int8(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Features::default()
    }
}

/// AMX-TILE and AMX-INT8 (CPUID leaf 7, EDX bits 24 and 25) with the tile state enabled by the OS
/// in XCR0 (bits 17 and 18). The kernel must still grant the state per process before use.
#[cfg(target_arch = "x86_64")]
fn amx_int8() -> bool {
    use std::arch::x86_64::{__cpuid_count, _xgetbv};
    if !std::arch::is_x86_feature_detected!("xsave") || __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    let cpu = edx & (1 << 24) != 0 && edx & (1 << 25) != 0;
    let osxsave = __cpuid_count(1, 0).ecx & (1 << 27) != 0;
    if !cpu || !osxsave {
        return false;
    }
    // SAFETY: XGETBV is available: CPUID reports OSXSAVE.
    let xcr0 = unsafe { _xgetbv(0) };
    xcr0 & (0b11 << 17) == (0b11 << 17)
}
