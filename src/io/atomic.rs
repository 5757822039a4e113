//! The one way the library writes a file: to a fresh temporary file beside the target, fsynced, renamed over
//! the target, then the directory fsynced. A process killed at any point leaves either the old file or the
//! new one under the final name, never a mix (readers that mapped the old file keep its inode).
//!
//! Every file writer (safetensors checkpoints, tokenizers, and any format added later) goes through
//! [`write_atomic`]; `tests/crash.rs` kills a real child process while it writes.

use crate::io::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Runs `fill` on a new temporary file `.{name}.{pid}.{k}.tmp` beside `path`, fsyncs it, renames it to
/// `path` and fsyncs the directory so the rename itself is durable. On failure the temporary file is removed
/// and the old file is untouched.
///
/// # Errors
/// [`Error::Io`] naming the operation (`create temporary file`, `write`, `fsync`, `rename into place`,
/// `fsync directory`) and the file it concerned.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let io = |op: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| Error::Io { path, op, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp, file) = create_temp(&dir, &file_name).map_err(io("create temporary file", path))?;

    let result = (|| {
        let mut w = BufWriter::new(file);
        fill(&mut w).map_err(io("write", &tmp))?;
        let file = w
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(io("write", &tmp))?;
        // Data first: without it a crash after the rename could leave the new name pointing at empty blocks.
        file.sync_all().map_err(io("fsync", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io("rename into place", path))
    })();
    if result.is_err() {
        // Best effort: the error being reported is the one that matters.
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    sync_dir(&dir).map_err(io("fsync directory", &dir))
}

/// Whether `name` is one of [`write_atomic`]'s temporary files (left behind only by a killed process).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// A fresh `.{name}.{pid}.{k}.tmp` in `dir`, created exclusively (so concurrent saves never share one).
fn create_temp(dir: &Path, name: &str) -> std::io::Result<(PathBuf, File)> {
    let mut k = 0u32;
    loop {
        let tmp = dir.join(format!(".{name}.{}.{k}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && k < 10_000 => k += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    // Directories cannot be opened for syncing here; the rename is as durable as the platform makes it.
    Ok(())
}
