//! Hostile files: every malformed safetensors checkpoint, `tokenizer.json` and `vocab.txt` is refused with an
//! `Error` whose message names the file, the tensor (where one is involved) and what is wrong; no header can
//! make the loader allocate more than a bounded multiple of the bytes the file backs; NaN/inf weights load
//! and are reported per tensor.
//!
//! A counting allocator (per thread, so parallel tests do not disturb each other) measures the peak heap
//! growth of each load.

//!
//! `safetensors.rs` holds the checkpoint cases, `tokenizer.rs` the `tokenizer.json` and `vocab.txt` ones,
//! `architecture.rs` weights paired with the wrong architecture's loader.

mod architecture;
mod quantized;
mod safetensors;
mod tokenizer;

use anvil::io::Error;
use anvil::io::safetensors::SafeTensors;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

/// Heap bytes a load may hold at its peak per byte of its file (the JSON tree of the header is the largest
/// part: a 32-byte value for a two-byte `0,` plus vector growth; see `MAX_HEADER_LEN`), plus a fixed slack.
const ALLOC_PER_FILE_BYTE: usize = 64;
const ALLOC_SLACK: usize = 1 << 20;

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add_signed(delta);
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: every call forwards to the system allocator unchanged; the counters are thread-local cells.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Both blocks may be live while the system allocator copies.
        track(new_size as isize);
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        track(-(layout.size() as isize));
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the peak heap growth on this thread while it ran.
fn peak_alloc<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    (r, PEAK.with(Cell::get) - base)
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("malformed-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A safetensors file from a header text and a data region.
fn file_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Writes `bytes` as `dir/name`, opens it, checks that the refusal allocated no more than the file backs,
/// and that its message names the file and contains every one of `needles`. Returns the error.
fn refused(dir: &Path, name: &str, bytes: &[u8], needles: &[&str]) -> Error {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let (result, peak) = peak_alloc(|| SafeTensors::open(&path));
    let Err(err) = result else {
        panic!("{name} was accepted")
    };
    let budget = ALLOC_PER_FILE_BYTE * bytes.len() + ALLOC_SLACK;
    assert!(
        peak <= budget,
        "{name}: {peak} bytes allocated for {} in the file",
        bytes.len()
    );
    let text = err.to_string();
    assert!(
        text.contains(name),
        "{name}: message does not name the file: {text}"
    );
    for needle in needles {
        assert!(
            text.contains(needle),
            "{name}: expected `{needle}` in: {text}"
        );
    }
    err
}
