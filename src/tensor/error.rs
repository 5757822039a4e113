//! The tensor layer's error type.

use std::fmt;

/// What a tensor operation refuses, naming the op and the shapes.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// Shapes that do not fit the op.
    Shape { op: &'static str, detail: String },
    /// A kernel refused its arguments.
    Kernel(anvil_kernels::KernelError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { op, detail } => write!(f, "{op}: {detail}"),
            Error::Kernel(e) => write!(f, "kernel: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Kernel(e) => Some(e),
            Error::Shape { .. } => None,
        }
    }
}

impl From<anvil_kernels::KernelError> for Error {
    fn from(e: anvil_kernels::KernelError) -> Self {
        Error::Kernel(e)
    }
}
