//! The io layer's error type: every variant names the file, and the tensor where one is concerned.

use std::fmt;
use std::path::PathBuf;

/// What reading or writing a tensor file refused, with the file, the tensor and what was wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The operating system refused an operation on `path` (`op` says which: open, map, write, ...).
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    /// The file ends before its fixed-size parts (the 8-byte header length).
    Truncated { path: PathBuf, len: u64 },
    /// The header length field claims more bytes than the file holds after it.
    HeaderTooLong {
        path: PathBuf,
        header_len: u64,
        file_len: u64,
    },
    /// The header length field is backed by the file but exceeds [`super::safetensors::MAX_HEADER_LEN`].
    HeaderTooLarge {
        path: PathBuf,
        header_len: u64,
        limit: u64,
    },
    /// The header is not UTF-8, not JSON, not an object, or its `__metadata__` is not a string map.
    InvalidHeader { path: PathBuf, detail: String },
    /// A tensor entry lacks a field or has one of the wrong type (or a name we refuse).
    InvalidEntry {
        path: PathBuf,
        name: String,
        detail: String,
    },
    /// A dtype string the format does not define.
    UnknownDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// The shape's element count (or its byte length) does not fit in `usize`.
    ElementCountOverflow {
        path: PathBuf,
        name: String,
        shape: Vec<u64>,
    },
    /// `data_offsets` reversed or past the end of the data region.
    OffsetsOutOfRange {
        path: PathBuf,
        name: String,
        begin: u64,
        end: u64,
        data_len: u64,
    },
    /// `data_offsets` span a different number of bytes than dtype x shape needs.
    ByteLengthMismatch {
        path: PathBuf,
        name: String,
        expected: usize,
        actual: u64,
    },
    /// Two tensors' data ranges share bytes.
    Overlap {
        path: PathBuf,
        name: String,
        other: String,
    },
    /// The same tensor name twice in one file.
    DuplicateName { path: PathBuf, name: String },
    /// No tensor of that name in the file.
    NotFound { path: PathBuf, name: String },
    /// The tensor exists but cannot be read as asked (`wanted`), e.g. an I64 tensor as a `Tensor`.
    UnsupportedDtype {
        path: PathBuf,
        name: String,
        dtype: String,
        wanted: String,
    },
    /// The tensor layer refused the values (shape checks on construction).
    Tensor {
        path: PathBuf,
        name: String,
        source: crate::tensor::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, op, source } => write!(f, "{}: {op}: {source}", path.display()),
            Error::Truncated { path, len } => write!(
                f,
                "{}: truncated: {len} bytes, fewer than the 8-byte header length",
                path.display()
            ),
            Error::HeaderTooLong {
                path,
                header_len,
                file_len,
            } => write!(
                f,
                "{}: header length {header_len} exceeds the {file_len}-byte file",
                path.display()
            ),
            Error::HeaderTooLarge {
                path,
                header_len,
                limit,
            } => write!(
                f,
                "{}: header length {header_len} exceeds the {limit}-byte limit on headers",
                path.display()
            ),
            Error::InvalidHeader { path, detail } => {
                write!(f, "{}: invalid header: {detail}", path.display())
            }
            Error::InvalidEntry { path, name, detail } => {
                write!(f, "{}: tensor `{name}`: {detail}", path.display())
            }
            Error::UnknownDtype { path, name, dtype } => {
                write!(
                    f,
                    "{}: tensor `{name}`: unknown dtype `{dtype}`",
                    path.display()
                )
            }
            Error::ElementCountOverflow { path, name, shape } => write!(
                f,
                "{}: tensor `{name}`: shape {shape:?} has more bytes than fit in memory",
                path.display()
            ),
            Error::OffsetsOutOfRange {
                path,
                name,
                begin,
                end,
                data_len,
            } => write!(
                f,
                "{}: tensor `{name}`: data_offsets [{begin}, {end}] outside the {data_len}-byte data region",
                path.display()
            ),
            Error::ByteLengthMismatch {
                path,
                name,
                expected,
                actual,
            } => write!(
                f,
                "{}: tensor `{name}`: data_offsets span {actual} bytes, dtype and shape need {expected}",
                path.display()
            ),
            Error::Overlap { path, name, other } => write!(
                f,
                "{}: tensor `{name}`: data overlaps tensor `{other}`",
                path.display()
            ),
            Error::DuplicateName { path, name } => {
                write!(f, "{}: tensor `{name}` appears twice", path.display())
            }
            Error::NotFound { path, name } => {
                write!(f, "{}: no tensor `{name}`", path.display())
            }
            Error::UnsupportedDtype {
                path,
                name,
                dtype,
                wanted,
            } => write!(
                f,
                "{}: tensor `{name}`: dtype {dtype} cannot be read as {wanted}",
                path.display()
            ),
            Error::Tensor { path, name, source } => {
                write!(f, "{}: tensor `{name}`: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Tensor { source, .. } => Some(source),
            _ => None,
        }
    }
}
