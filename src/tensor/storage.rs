//! Where a tensor's values live: owned f32, f32 read in place from a memory-mapped file, or packed
//! f16/bf16/int8 bytes (owned or mapped) decoded to f32 on first use.
//!
//! The one `unsafe` memory-mapping call of the crate is [`map_file`]; everything else views the mapping
//! through safe slices with ranges checked once at construction.

use super::dtype::{self, DType};
use memmap2::Mmap;
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

// Mapped f32 data is reinterpreted in place, and safetensors is little-endian by definition.
#[cfg(target_endian = "big")]
compile_error!(
    "anvil reads little-endian tensor files in place and supports little-endian hosts only"
);

/// Maps `file` read-only.
///
/// # Errors
/// The operating system's error when the file cannot be mapped.
///
/// # Contract
/// The mapping is only sound while nobody truncates or rewrites the file in place; the caller opens files
/// it owns (model checkpoints). Anvil's own writer never does either: it writes a new file and renames it
/// over the old one, which leaves existing mappings on the old inode intact.
pub fn map_file(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: `Mmap::map` is unsafe because another process could truncate or modify the file while it is mapped, which would make the `&[u8]` we hand out change underneath us or fault (SIGBUS). We map read-only, never write through the mapping, and document the contract above: files must not be truncated or modified in place while any tensor borrowed from them is alive.
    unsafe { Mmap::map(file) }
}

/// The transparent huge page size of x86-64 and aarch64 (4 KiB base pages).
pub const HUGE_PAGE: usize = 2 << 20;

/// `values` copied into an anonymous mapping advised for transparent huge pages, starting on a
/// huge-page boundary: a weight streamed once per decoded token then costs one TLB entry per
/// 2 MiB instead of one per 4 KiB. The mapping is read-only once filled. Its last huge page is
/// backed whole, so up to 2 MiB past the values may be resident: worth it for weights of several
/// huge pages.
///
/// # Errors
/// The operating system's error when the mapping cannot be made.
pub fn huge_page_copy(values: &[f32]) -> std::io::Result<MappedBytes> {
    let bytes: &[u8] = bytemuck::cast_slice(values);
    // Room to start on a huge-page boundary; the pages before it are never touched, so never
    // backed.
    let mut map = memmap2::MmapMut::map_anon(bytes.len() + HUGE_PAGE)?;
    // Without THP support the kernel refuses the advice; the copy then lives in small pages.
    let _ = map.advise(memmap2::Advice::HugePage);
    let start = (map.as_ptr() as usize).next_multiple_of(HUGE_PAGE) - map.as_ptr() as usize;
    map[start..start + bytes.len()].copy_from_slice(bytes);
    let map = Arc::new(map.make_read_only()?);
    Ok(MappedBytes {
        map,
        range: start..start + bytes.len(),
        anonymous: true,
    })
}

/// A byte range of a shared memory mapping.
#[derive(Clone)]
pub struct MappedBytes {
    map: Arc<Mmap>,
    range: Range<usize>,
    /// Memory of ours ([`huge_page_copy`]), not a file's pages.
    anonymous: bool,
}

impl MappedBytes {
    /// The bytes `range` of `map`, or `None` when the range lies outside the mapping.
    pub fn new(map: Arc<Mmap>, range: Range<usize>) -> Option<Self> {
        (range.start <= range.end && range.end <= map.len()).then_some(MappedBytes {
            map,
            range,
            anonymous: false,
        })
    }

    /// The bytes (checked in range at construction).
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }

    /// The whole mapping this range belongs to.
    pub fn map(&self) -> &Arc<Mmap> {
        &self.map
    }
}

/// Bytes of a packed (non-f32) storage: owned, or borrowed from a mapping.
#[derive(Clone)]
pub enum Bytes {
    Owned(Arc<Vec<u8>>),
    Mapped(MappedBytes),
}

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Mapped(m) => m.bytes(),
        }
    }
}

/// f16, bf16 or int8 values with their f32 decoding computed once, on first use, and shared by clones.
pub struct Packed {
    pub(super) dtype: DType,
    pub(super) bytes: Bytes,
    /// Int8 only: one scale per row of `row_len` elements (empty for f16/bf16).
    pub(super) scales: Vec<f32>,
    pub(super) row_len: usize,
    decoded: OnceLock<Vec<f32>>,
}

impl Packed {
    /// `bytes` must hold a whole number of `dtype` elements; int8 needs a scale per `row_len` elements.
    pub(super) fn new(dtype: DType, bytes: Bytes, scales: Vec<f32>, row_len: usize) -> Self {
        debug_assert!(dtype != DType::F32);
        debug_assert_eq!(bytes.as_slice().len() % dtype.size(), 0);
        Packed {
            dtype,
            bytes,
            scales,
            row_len,
            decoded: OnceLock::new(),
        }
    }

    /// The storage dtype (never f32).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The packed little-endian bytes of the whole storage.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// Int8: one scale per row of [`Packed::row_len`] elements (empty for f16/bf16).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Int8: elements per scale (the last axis at construction).
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    pub(super) fn len(&self) -> usize {
        self.bytes.as_slice().len() / self.dtype.size()
    }

    /// Elements `first..first + dst.len()` decoded into `dst`.
    pub(super) fn decode_into(&self, first: usize, dst: &mut [f32]) {
        let size = self.dtype.size();
        let src = &self.bytes.as_slice()[first * size..(first + dst.len()) * size];
        match self.dtype {
            DType::F16 => dtype::f16_le_to_f32(src, dst),
            DType::BF16 => dtype::bf16_le_to_f32(src, dst),
            DType::I8 => dtype::i8_to_f32(src, &self.scales, self.row_len, first, dst),
            DType::F32 => dtype::f32_le_to_f32(src, dst),
        }
    }

    /// Every element as f32, decoded on the first call and cached.
    pub(super) fn decoded(&self) -> &[f32] {
        self.decoded.get_or_init(|| {
            let mut out = vec![0.0; self.len()];
            self.decode_into(0, &mut out);
            out
        })
    }
}

/// Where a tensor's values live.
#[derive(Clone)]
pub enum Storage {
    /// f32 values owned in memory, shared between clones.
    Owned(Arc<Vec<f32>>),
    /// f32 values read in place from a memory-mapped file (the range is 4-byte aligned: checked when built).
    Mapped(MappedBytes),
    /// f16, bf16 or int8 values, decoded to f32 on first use.
    Packed(Arc<Packed>),
}

impl Storage {
    pub(super) fn as_slice(&self) -> &[f32] {
        match self {
            Storage::Owned(v) => v,
            // Alignment and length were checked by `Tensor::from_mmap`; an empty range casts to `&[]`.
            Storage::Mapped(m) => bytemuck::try_cast_slice(m.bytes()).unwrap_or(&[]),
            Storage::Packed(p) => p.decoded(),
        }
    }

    pub(super) fn dtype(&self) -> DType {
        match self {
            Storage::Owned(_) | Storage::Mapped(_) => DType::F32,
            Storage::Packed(p) => p.dtype,
        }
    }

    /// Whether the values are read in place from a memory mapping (no copy of the file's bytes).
    pub(super) fn is_mapped(&self) -> bool {
        match self {
            Storage::Owned(_) => false,
            Storage::Mapped(m) => !m.anonymous,
            Storage::Packed(p) => matches!(p.bytes, Bytes::Mapped(_)),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Storage::Owned(_) => "owned",
            Storage::Mapped(m) if m.anonymous => "owned, huge pages",
            Storage::Mapped(_) => "mapped",
            Storage::Packed(p) if matches!(p.bytes, Bytes::Mapped(_)) => "packed, mapped",
            Storage::Packed(_) => "packed",
        }
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the values: a storage may hold millions of them (`Tensor`'s Debug summarises).
        write!(f, "Storage({}, {})", self.dtype(), self.kind())
    }
}
