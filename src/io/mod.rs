//! Reading and writing tensor files: our own safetensors reader (memory-mapped, zero-copy) and writer, and the
//! atomic write every file writer of the library goes through.

mod atomic;
mod error;
pub mod safetensors;

pub use atomic::{is_temp_name, write_atomic};
pub use error::{Error, Result};
