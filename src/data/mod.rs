//! The data pipeline: text files -> token ids in a memory-mapped token file -> batches of random
//! windows, deterministic from a seed, with a train / validation split.
//!
//! The token file is a 32-byte header then the ids, little-endian:
//! `b"ANVILTOK"`, version `u32` (1), bytes per id `u32` (2 or 4), id count `u64`, vocabulary
//! size `u64`. Ids are `u16` when the vocabulary fits, else `u32`.

mod file;
mod windows;

pub use file::{HEADER_LEN, MAGIC, TokenFile, TokenWriter, VERSION, encode_files};
pub use windows::{Split, Tokens, Windows};

use std::fmt;
use std::path::PathBuf;

/// What the data pipeline refused, naming the file and the problem.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing `path` failed.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `path` is not a well-formed token file; `detail` says which part and why.
    Format { path: PathBuf, detail: String },
    /// A request the data cannot serve (a window longer than the split, an id outside the
    /// vocabulary, a bad split fraction, ...).
    Config { detail: String },
    /// The tokenizer refused a file.
    Tokenizer(crate::tokenizer::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Format { path, detail } => {
                write!(f, "{}: not a valid token file: {detail}", path.display())
            }
            Error::Config { detail } => write!(f, "data: {detail}"),
            Error::Tokenizer(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Tokenizer(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for crate::models::Error {
    fn from(e: Error) -> Self {
        crate::models::Error::Config {
            detail: e.to_string(),
        }
    }
}

/// Result of the data pipeline.
pub type Result<T> = std::result::Result<T, Error>;
