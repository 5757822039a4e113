//! The models layer's error: every variant names the file and, where one is concerned, the tensor.

use std::fmt;
use std::path::PathBuf;

/// What building, loading or saving a model refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A configuration that cannot be read or does not fit together.
    Config { detail: String },
    /// `path` could not be read (a `config.json` or a directory listing).
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The tensor file refused: malformed, or a tensor in a dtype we cannot use.
    Io(crate::io::Error),
    /// The checkpoint lacks a tensor the model needs. `nearby`: a few tensors of the file that
    /// nothing used, nearest in name (sharing the longest dotted prefix); `first`: `name` was the
    /// first tensor asked for, so nothing in the file has matched the model (another architecture?).
    MissingTensor {
        path: PathBuf,
        name: String,
        nearby: Vec<String>,
        first: bool,
    },
    /// The checkpoint holds a tensor the model has no place for.
    UnexpectedTensor { path: PathBuf, name: String },
    /// A tensor's shape differs from what the configuration implies.
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    /// An op refused its inputs (a wrong batch shape, a token id out of the vocabulary, ...).
    Tensor(crate::tensor::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { detail } => write!(f, "model config: {detail}"),
            Error::Read { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Io(e) => write!(f, "{e}"),
            Error::MissingTensor {
                path,
                name,
                nearby,
                first,
            } => {
                write!(f, "{}: missing tensor `{name}`", path.display())?;
                let listed: Vec<String> = nearby.iter().map(|n| format!("`{n}`")).collect();
                match (first, listed.is_empty()) {
                    (_, true) => Ok(()),
                    (true, false) => write!(
                        f,
                        " (the first tensor the model needs; the file holds {}, ...: weights of another architecture than the config's?)",
                        listed.join(", ")
                    ),
                    (false, false) => write!(f, " (the file has {} instead)", listed.join(", ")),
                }
            }
            Error::UnexpectedTensor { path, name } => write!(
                f,
                "{}: unexpected tensor `{name}` (not part of this model)",
                path.display()
            ),
            Error::TensorShape {
                path,
                name,
                expected,
                actual,
            } => write!(
                f,
                "{}: tensor `{name}` has shape {actual:?}, the config needs {expected:?}",
                path.display()
            ),
            Error::Tensor(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Read { source, .. } => Some(source),
            Error::Io(e) => Some(e),
            Error::Tensor(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::io::Error> for Error {
    fn from(e: crate::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<crate::tensor::Error> for Error {
    fn from(e: crate::tensor::Error) -> Self {
        Error::Tensor(e)
    }
}

/// Result of the models layer.
pub type Result<T> = std::result::Result<T, Error>;

impl From<anvil_kernels::KernelError> for Error {
    fn from(e: anvil_kernels::KernelError) -> Self {
        Error::Tensor(crate::tensor::Error::Kernel(e))
    }
}
