//! The kernels crate's one error type.

use crate::Isa;
use std::fmt;

/// What a kernel entry point refuses, with the op and the sizes involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelError {
    /// `ANVIL_ISA` (or a parse) named no known tier.
    UnknownIsa { value: String },
    /// A tier was asked for that this CPU does not have.
    IsaUnavailable { requested: Isa, available: Vec<Isa> },
    /// A slice is shorter than the shape it is said to hold.
    BadLength {
        op: &'static str,
        arg: &'static str,
        needed: usize,
        got: usize,
    },
    /// Shapes or strides that do not fit together.
    BadShape { op: &'static str, detail: String },
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownIsa { value } => write!(
                f,
                "unknown instruction set {value:?}: expected one of scalar, avx2, avx512"
            ),
            Self::IsaUnavailable {
                requested,
                available,
            } => {
                let names: Vec<_> = available.iter().map(|i| i.name()).collect();
                write!(
                    f,
                    "instruction set {} is not available on this CPU; it has: {}",
                    requested.name(),
                    names.join(", ")
                )
            }
            Self::BadLength {
                op,
                arg,
                needed,
                got,
            } => write!(
                f,
                "{op}: `{arg}` holds {got} elements but the shape needs {needed}"
            ),
            Self::BadShape { op, detail } => write!(f, "{op}: {detail}"),
        }
    }
}

impl std::error::Error for KernelError {}

/// Checks that `arg` holds at least `needed` elements.
pub(crate) fn check_len(
    op: &'static str,
    arg: &'static str,
    got: usize,
    needed: usize,
) -> Result<(), KernelError> {
    if got < needed {
        Err(KernelError::BadLength {
            op,
            arg,
            needed,
            got,
        })
    } else {
        Ok(())
    }
}
