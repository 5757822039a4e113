//! Reading and writing tensor files: our own safetensors reader (memory-mapped, zero-copy) and writer.

mod error;
pub mod safetensors;

pub use error::{Error, Result};
