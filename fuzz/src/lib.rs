//! Helpers shared by the fuzz targets, so a target for a new loader is a few lines:
//!
//! ```ignore
//! fuzz_target!(|data: &[u8]| {
//!     // A loader that takes bytes and a name for its errors:
//!     anvil_fuzz::refused_or(anvil::tokenizer::from_json_bytes(data, NAME), NAME, |tok| { /* use it */ });
//!     // A loader that only takes a path: the bytes are written to a scratch file of that name first.
//!     anvil_fuzz::load_file(data, "config.json", |p| Config::from_file(p), |cfg| { /* use it */ });
//! });
//! ```
//!
//! Both check the one property every loader owes its caller: hostile bytes give an error whose message names
//! the file (or they load); never a panic, an abort or an out-of-bounds read (the sanitizer sees those).

use std::fmt::Display;
use std::path::{Path, PathBuf};

/// `result` is either an error whose message contains `name`, or a value handed to `use_it`.
///
/// # Panics
/// When the error message does not name the file: the fuzzer reports it as a crash.
pub fn refused_or<T, E: Display>(result: Result<T, E>, name: &str, use_it: impl FnOnce(T)) {
    match result {
        Ok(v) => use_it(v),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(name), "error does not name `{name}`: {msg}");
        }
    }
}

/// Writes `data` to a scratch file called `name` (one directory per process) and runs `load` on its path,
/// then as [`refused_or`].
///
/// # Panics
/// When the scratch file cannot be written, or as [`refused_or`].
pub fn load_file<T, E: Display>(
    data: &[u8],
    name: &str,
    load: impl FnOnce(&Path) -> Result<T, E>,
    use_it: impl FnOnce(T),
) {
    let path = scratch_dir().join(name);
    std::fs::write(&path, data).expect("scratch file");
    refused_or(load(&path), name, use_it);
}

/// `$TMPDIR/anvil-fuzz-{pid}`, created on first use.
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("anvil-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Splits `data` into at most `n` parts at 0xFF bytes. 0xFF never occurs in UTF-8, so text seeds stay text
/// and every part but the last is free of it; the last part keeps any further 0xFF bytes.
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n, |&b| b == 0xFF).collect()
}
