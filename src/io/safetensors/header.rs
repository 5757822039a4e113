//! The safetensors header: parsed with `anvil::json` and validated against the file it came from.
//!
//! Layout: `u64` little-endian header length `n`, `n` bytes of JSON, then the data region. The JSON maps
//! tensor names to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the data
//! region) plus an optional `"__metadata__"` string-to-string map. Every number is checked before it is
//! used, and nothing is allocated from a header value beyond what the file's own bytes back.

use super::FileDtype;
use crate::io::{Error, Result};
use crate::json::{self, Value};
use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The largest header we parse, as the reference implementation caps it. Parsing builds a JSON tree a
/// bounded multiple of the header's size (34 heap bytes per header byte measured for a long `[0,0,...]`,
/// the densest case; `tests/malformed` asserts at most 64), so this caps what a hostile header can make us
/// allocate at a few GB whatever the file's size; real headers are about 100 bytes per tensor.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// The reserved header key holding the file's string metadata.
pub const METADATA_KEY: &str = "__metadata__";

/// One tensor's entry, validated: its byte range lies inside the file and matches dtype x shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: FileDtype,
    pub shape: Vec<usize>,
    /// Bytes in the whole file (the data region's offset already added).
    pub range: Range<usize>,
}

/// A validated header: tensors in header order, the metadata, and where the data region starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub tensors: Vec<TensorInfo>,
    pub metadata: Vec<(String, String)>,
    pub data_start: usize,
}

/// Parses and validates the header of the safetensors bytes `file`; `path` only names it in errors.
///
/// Tensors may leave gaps between them and bytes after the last one (we never rely on dense packing), but
/// no two may share a byte.
///
/// # Errors
/// [`Error::Truncated`], [`Error::HeaderTooLong`], [`Error::HeaderTooLarge`], [`Error::InvalidHeader`],
/// [`Error::InvalidEntry`], [`Error::UnknownDtype`], [`Error::ElementCountOverflow`], [`Error::OffsetsOutOfRange`],
/// [`Error::ByteLengthMismatch`], [`Error::Overlap`] or [`Error::DuplicateName`], each naming the file and,
/// where one is concerned, the tensor.
pub fn parse_header(path: &Path, file: &[u8]) -> Result<Header> {
    let p = || path.to_path_buf();
    let file_len = file.len() as u64;
    let Some((len_bytes, rest)) = file.split_first_chunk::<8>() else {
        return Err(Error::Truncated {
            path: p(),
            len: file_len,
        });
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    if header_len > MAX_HEADER_LEN && header_len <= file_len - 8 {
        return Err(Error::HeaderTooLarge {
            path: p(),
            header_len,
            limit: MAX_HEADER_LEN,
        });
    }
    let json_bytes = usize::try_from(header_len)
        .ok()
        .and_then(|n| rest.get(..n))
        .ok_or(Error::HeaderTooLong {
            path: p(),
            header_len,
            file_len,
        })?;
    let data_start = 8 + json_bytes.len();
    let invalid = |detail: String| Error::InvalidHeader { path: p(), detail };
    let text = std::str::from_utf8(json_bytes).map_err(|e| invalid(format!("not UTF-8 ({e})")))?;
    let value = json::parse_str(text).map_err(|e| invalid(e.to_string()))?;
    let Value::Object(pairs) = value else {
        return Err(invalid("the header is not a JSON object".into()));
    };

    let data_len = file.len() - data_start;
    let mut seen = HashSet::new();
    let mut tensors = Vec::new();
    let mut metadata = None;
    for (name, entry) in &pairs {
        if !seen.insert(name.as_str()) {
            return Err(Error::DuplicateName {
                path: p(),
                name: name.clone(),
            });
        }
        if name == METADATA_KEY {
            metadata = Some(parse_metadata(path, entry)?);
            continue;
        }
        let mut info = parse_entry(path, name, entry, data_len)?;
        info.range = info.range.start + data_start..info.range.end + data_start;
        tensors.push(info);
    }
    check_overlaps(path, &tensors)?;
    Ok(Header {
        tensors,
        metadata: metadata.unwrap_or_default(),
        data_start,
    })
}

fn parse_metadata(path: &Path, entry: &Value) -> Result<Vec<(String, String)>> {
    let invalid = |detail: String| Error::InvalidHeader {
        path: path.to_path_buf(),
        detail,
    };
    let pairs = entry
        .as_object()
        .ok_or_else(|| invalid(format!("`{METADATA_KEY}` is not an object")))?;
    let mut keys = HashSet::new();
    pairs
        .iter()
        .map(|(k, v)| {
            if !keys.insert(k.as_str()) {
                return Err(invalid(format!("metadata key `{k}` appears twice")));
            }
            let v = v
                .as_str()
                .ok_or_else(|| invalid(format!("metadata value of `{k}` is not a string")))?;
            Ok((k.clone(), v.to_string()))
        })
        .collect()
}

/// One entry, with `range` still relative to the data region of `data_len` bytes.
fn parse_entry(path: &Path, name: &str, entry: &Value, data_len: usize) -> Result<TensorInfo> {
    let p = || path.to_path_buf();
    let invalid = |detail: &str| Error::InvalidEntry {
        path: p(),
        name: name.to_string(),
        detail: detail.to_string(),
    };
    if entry.as_object().is_none() {
        return Err(invalid("entry is not an object"));
    }
    let dtype_str = entry
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("`dtype` missing or not a string"))?;
    let dtype = FileDtype::from_name(dtype_str).ok_or_else(|| Error::UnknownDtype {
        path: p(),
        name: name.to_string(),
        dtype: dtype_str.to_string(),
    })?;

    let dims = entry
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("`shape` missing or not an array"))?;
    let dims: Vec<u64> = dims
        .iter()
        .map(|d| {
            d.as_u64()
                .ok_or_else(|| invalid("`shape` has an entry that is not a non-negative integer"))
        })
        .collect::<Result<_>>()?;
    let overflow = || Error::ElementCountOverflow {
        path: p(),
        name: name.to_string(),
        shape: dims.clone(),
    };
    let shape: Vec<usize> = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| overflow()))
        .collect::<Result<_>>()?;
    let nbytes = shape
        .iter()
        .try_fold(dtype.size(), |n, &d| n.checked_mul(d))
        .ok_or_else(overflow)?;

    let offsets = entry
        .get("data_offsets")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("`data_offsets` missing or not an array"))?;
    let [begin, end] = offsets else {
        return Err(invalid("`data_offsets` is not two integers"));
    };
    let (Some(begin), Some(end)) = (begin.as_u64(), end.as_u64()) else {
        return Err(invalid("`data_offsets` is not two non-negative integers"));
    };
    if begin > end || end > data_len as u64 {
        return Err(Error::OffsetsOutOfRange {
            path: p(),
            name: name.to_string(),
            begin,
            end,
            data_len: data_len as u64,
        });
    }
    if end - begin != nbytes as u64 {
        return Err(Error::ByteLengthMismatch {
            path: p(),
            name: name.to_string(),
            expected: nbytes,
            actual: end - begin,
        });
    }
    // Both fit in usize: they are at most `data_len`.
    Ok(TensorInfo {
        name: name.to_string(),
        dtype,
        shape,
        range: begin as usize..end as usize,
    })
}

/// Refuses two non-empty tensors sharing a byte (sorted by start; each against the furthest end so far).
fn check_overlaps(path: &Path, tensors: &[TensorInfo]) -> Result<()> {
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| !t.range.is_empty()).collect();
    order.sort_by_key(|t| (t.range.start, t.range.end));
    let mut furthest: Option<&TensorInfo> = None;
    for t in order {
        if let Some(f) = furthest
            && t.range.start < f.range.end
        {
            return Err(Error::Overlap {
                path: PathBuf::from(path),
                name: t.name.clone(),
                other: f.name.clone(),
            });
        }
        if furthest.is_none_or(|f| t.range.end > f.range.end) {
            furthest = Some(t);
        }
    }
    Ok(())
}
