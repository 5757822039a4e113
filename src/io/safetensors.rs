//! Our own safetensors reader (memory-mapped; f32, f16, bf16 and int8 tensors borrowed without a copy) and
//! writer (temporary file, fsync, rename).
//!
//! Int8 tensors carry per-row scales in a companion F32 tensor named `"{name}:scales"` of shape
//! (rows) = all axes but the last; [`SCALES_SUFFIX`] names the convention. Other readers see two plain
//! tensors.

mod header;
mod scan;
mod write;

pub use header::{Header, MAX_HEADER_LEN, METADATA_KEY, TensorInfo, parse_header};
pub use scan::{NonFinite, count_non_finite};
pub use write::save;

use crate::io::{Error, Result};
use crate::tensor::{DType, Tensor, map_file};
use memmap2::{Mmap, MmapOptions};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Appended to an int8 tensor's name to name its per-row f32 scales.
pub const SCALES_SUFFIX: &str = ":scales";

/// The element types the safetensors format defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileDtype {
    Bool,
    U8,
    I8,
    F8E4M3,
    F8E5M2,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    I64,
    U64,
    F64,
}

const DTYPES: [(FileDtype, &str, usize); 15] = [
    (FileDtype::Bool, "BOOL", 1),
    (FileDtype::U8, "U8", 1),
    (FileDtype::I8, "I8", 1),
    (FileDtype::F8E4M3, "F8_E4M3", 1),
    (FileDtype::F8E5M2, "F8_E5M2", 1),
    (FileDtype::I16, "I16", 2),
    (FileDtype::U16, "U16", 2),
    (FileDtype::F16, "F16", 2),
    (FileDtype::BF16, "BF16", 2),
    (FileDtype::I32, "I32", 4),
    (FileDtype::U32, "U32", 4),
    (FileDtype::F32, "F32", 4),
    (FileDtype::I64, "I64", 8),
    (FileDtype::U64, "U64", 8),
    (FileDtype::F64, "F64", 8),
];

impl FileDtype {
    /// The dtype spelled `name` in a header (`"F32"`, `"BF16"`, ...), if the format defines it.
    pub fn from_name(name: &str) -> Option<Self> {
        DTYPES.iter().find(|d| d.1 == name).map(|d| d.0)
    }

    /// The header spelling.
    pub fn name(self) -> &'static str {
        DTYPES.iter().find(|d| d.0 == self).map_or("?", |d| d.1)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        DTYPES.iter().find(|d| d.0 == self).map_or(1, |d| d.2)
    }

    /// The file dtype storing a tensor of `dtype`.
    pub fn of(dtype: DType) -> Self {
        match dtype {
            DType::F32 => FileDtype::F32,
            DType::F16 => FileDtype::F16,
            DType::BF16 => FileDtype::BF16,
            DType::I8 => FileDtype::I8,
        }
    }
}

/// An open safetensors file: its validated header and a shared read-only mapping of its bytes.
///
/// The mapping is shared with every tensor borrowed from it, so tensors outlive this value. The file must
/// not be truncated or rewritten in place while any of them is alive (see [`crate::tensor::map_file`]).
pub struct SafeTensors {
    path: PathBuf,
    map: Arc<Mmap>,
    header: Header,
}

impl SafeTensors {
    /// Opens, maps and validates `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened or mapped; any validation error of [`parse_header`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |op| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, op, source }
        };
        let file = File::open(path).map_err(io("open"))?;
        let len = file.metadata().map_err(io("stat"))?.len();
        if len < 8 {
            // Also spares us mapping an empty file, which some platforms refuse.
            return Err(Error::Truncated {
                path: path.to_path_buf(),
                len,
            });
        }
        let map = Arc::new(map_file(&file).map_err(io("mmap"))?);
        let header = parse_header(path, &map)?;
        Ok(SafeTensors {
            path: path.to_path_buf(),
            map,
            header,
        })
    }

    /// Validates safetensors `bytes` already in memory (received over a network, embedded in a binary),
    /// copying them once into an anonymous read-only mapping so tensors borrow them exactly as from
    /// [`SafeTensors::open`]; `name` stands for the file in errors.
    ///
    /// # Errors
    /// [`Error::Truncated`] below 8 bytes, [`Error::Io`] when the mapping cannot be made; any validation
    /// error of [`parse_header`].
    pub fn from_bytes(name: impl AsRef<Path>, bytes: &[u8]) -> Result<Self> {
        let path = name.as_ref();
        if bytes.len() < 8 {
            return Err(Error::Truncated {
                path: path.to_path_buf(),
                len: bytes.len() as u64,
            });
        }
        // Header first: hostile bytes are refused before any copy is made.
        let header = parse_header(path, bytes)?;
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            op: "map anonymous memory",
            source,
        };
        let mut map = MmapOptions::new().len(bytes.len()).map_anon().map_err(io)?;
        map.copy_from_slice(bytes);
        Ok(SafeTensors {
            path: path.to_path_buf(),
            map: Arc::new(map.make_read_only().map_err(io)?),
            header,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names in header order (int8 scale companions included).
    pub fn names(&self) -> Vec<&str> {
        self.header
            .tensors
            .iter()
            .map(|t| t.name.as_str())
            .collect()
    }

    /// Every tensor's validated entry, in header order.
    pub fn infos(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The `__metadata__` map in file order (empty when absent).
    pub fn metadata(&self) -> &[(String, String)] {
        &self.header.metadata
    }

    /// The whole mapped file (to check that a tensor's values lie inside it, i.e. were not copied).
    pub fn mapped_bytes(&self) -> &[u8] {
        &self.map
    }

    /// The entry of tensor `name`.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.header
            .tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::NotFound {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// The raw little-endian bytes of tensor `name`, borrowed from the mapping.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.info(name)?;
        Ok(&self.map[info.range.clone()])
    }

    /// Tensor `name` in its own dtype, borrowed from the mapping: f32 is viewed in place (copied once only
    /// if the file misaligns it), f16/bf16 stay packed and decode on use, int8 takes its per-row scales from
    /// `"{name}:scales"`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::UnsupportedDtype`] for dtypes a [`Tensor`] does not store (integers
    /// other than int8-with-scales, f64, f8, bool) or an int8 tensor without valid scales.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self.info(name)?;
        let dtype = match info.dtype {
            FileDtype::F32 => DType::F32,
            FileDtype::F16 => DType::F16,
            FileDtype::BF16 => DType::BF16,
            FileDtype::I8 => return self.tensor_i8(info),
            _ => return Err(self.unsupported(info, "a tensor")),
        };
        Tensor::from_mmap(self.map.clone(), info.range.clone(), dtype, &info.shape).map_err(
            |source| Error::Tensor {
                path: self.path.clone(),
                name: name.to_string(),
                source,
            },
        )
    }

    /// Tensor `name` converted to owned f32 (a zero-copy view when it is f32 already).
    ///
    /// # Errors
    /// As [`SafeTensors::tensor`].
    pub fn tensor_f32(&self, name: &str) -> Result<Tensor> {
        Ok(self.tensor(name)?.to_f32())
    }

    fn tensor_i8(&self, info: &TensorInfo) -> Result<Tensor> {
        let scales_name = format!("{}{SCALES_SUFFIX}", info.name);
        let scales = match self.info(&scales_name) {
            Ok(s) if s.dtype == FileDtype::F32 => s,
            _ => {
                return Err(self.unsupported(info, &format!("int8 without an F32 `{scales_name}`")));
            }
        };
        let scales: Vec<f32> = self.map[scales.range.clone()]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Tensor::from_mmap_i8(self.map.clone(), info.range.clone(), scales, &info.shape).map_err(
            |source| Error::Tensor {
                path: self.path.clone(),
                name: info.name.clone(),
                source,
            },
        )
    }

    /// The values of an I64 tensor (token ids), flattened row-major.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::UnsupportedDtype`] when the tensor is not I64.
    pub fn i64s(&self, name: &str) -> Result<Vec<i64>> {
        let info = self.info(name)?;
        if info.dtype != FileDtype::I64 {
            return Err(self.unsupported(info, "i64"));
        }
        Ok(self.map[info.range.clone()]
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect())
    }

    /// Every floating-point tensor holding NaN or infinite values, in header order, with their counts and
    /// the first offending index. Such files load (the values are data, not damage); callers such as
    /// `anvil info` report them. Integer and bool tensors are never listed.
    pub fn non_finite(&self) -> Vec<NonFinite> {
        self.header
            .tensors
            .iter()
            .filter_map(|t| {
                let mut report = count_non_finite(t.dtype, &self.map[t.range.clone()])?;
                report.name.clone_from(&t.name);
                Some(report)
            })
            .collect()
    }

    fn unsupported(&self, info: &TensorInfo, wanted: &str) -> Error {
        Error::UnsupportedDtype {
            path: self.path.clone(),
            name: info.name.clone(),
            dtype: info.dtype.name().to_string(),
            wanted: wanted.to_string(),
        }
    }
}
