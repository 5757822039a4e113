//! Anvil's kernels: plain slices in, plain slices out, with runtime ISA dispatch.
//!
//! Every op family lives in one file (or folder) holding its scalar reference first and then one
//! module per instruction set. The instruction set is chosen once per process ([`kernels`]) from what
//! the CPU reports, or forced with `ANVIL_ISA=scalar|avx2|avx512`; a [`Kernels`] value for any tier
//! the host supports can also be made directly ([`Kernels::new`]), which is how the tests run every
//! kernel on every tier in turn.

pub mod adamw;
pub mod attention;
pub mod colsum;
pub mod convert;
pub mod cross_entropy;
mod error;
pub mod gelu;
pub mod gemm;
mod isa;
pub mod layernorm;
mod math;
mod par;
pub mod qgemm;
pub mod rmsnorm;
mod roofline;
pub mod rope;
pub mod silu;
mod simd;
pub mod softmax;

pub use cross_entropy::IGNORE_INDEX;
pub use error::KernelError;
pub use gelu::Gelu;
pub use gemm::{GemmJob, MatMut, MatRef};
pub use isa::{Features, Isa};
pub use softmax::CausalMask;

use std::sync::OnceLock;

/// Result of every fallible kernel entry point.
pub type Result<T> = std::result::Result<T, KernelError>;

/// A handle on one instruction-set tier. Copy it freely: it is one byte of state.
///
/// All kernel entry points are methods on it, so that a caller (or a test) can pick the tier
/// explicitly; [`kernels`] gives the process-wide choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernels {
    isa: Isa,
}

impl Kernels {
    /// Kernels for `isa`.
    ///
    /// # Errors
    /// [`KernelError::IsaUnavailable`] when this CPU lacks `isa`; the error lists what it has.
    pub fn new(isa: Isa) -> Result<Self> {
        let have = Isa::supported();
        if have.contains(&isa) {
            Ok(Self { isa })
        } else {
            Err(KernelError::IsaUnavailable {
                requested: isa,
                available: have,
            })
        }
    }

    /// The best tier this CPU supports, ignoring `ANVIL_ISA`.
    pub fn best() -> Self {
        Self { isa: Isa::best() }
    }

    /// Every tier this process may use, slowest first: all tiers the CPU supports, capped by
    /// `ANVIL_ISA` when it is set (so `ANVIL_ISA=avx2` runs the suite as on an AVX2-only CPU).
    ///
    /// # Errors
    /// As [`kernels`], when `ANVIL_ISA` is malformed or names a tier the CPU lacks.
    pub fn available() -> Result<Vec<Self>> {
        let cap = kernels()?.isa;
        Ok(Isa::supported()
            .into_iter()
            .filter(|&i| i <= cap)
            .map(|isa| Self { isa })
            .collect())
    }

    /// The tier these kernels run on.
    pub fn isa(&self) -> Isa {
        self.isa
    }
}

/// The process-wide kernels: `ANVIL_ISA` when set, else the best tier the CPU has. Decided on the
/// first call and cached.
///
/// # Errors
/// [`KernelError::UnknownIsa`] for a value of `ANVIL_ISA` that names no tier, and
/// [`KernelError::IsaUnavailable`] for a tier this CPU lacks.
pub fn kernels() -> Result<Kernels> {
    static CHOICE: OnceLock<Result<Kernels>> = OnceLock::new();
    CHOICE
        .get_or_init(|| match std::env::var("ANVIL_ISA") {
            Ok(v) if !v.trim().is_empty() => Kernels::new(v.trim().parse::<Isa>()?),
            _ => Ok(Kernels::best()),
        })
        .clone()
}
