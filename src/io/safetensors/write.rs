//! The safetensors writer: header and data go through [`crate::io::write_atomic`] (temporary file, fsync,
//! rename, directory fsync), so a failed or interrupted save leaves the old file intact (and readers that
//! mapped the old file keep its inode).

use super::{FileDtype, METADATA_KEY, SCALES_SUFFIX};
use crate::io::{Error, Result, write_atomic};
use crate::json::Value;
use crate::tensor::{DType, Tensor};
use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;

/// One tensor as it goes to the file.
struct Out<'a> {
    name: String,
    dtype: FileDtype,
    shape: Vec<usize>,
    bytes: Cow<'a, [u8]>,
}

/// Writes `tensors` (in their own dtypes) and the string `metadata` to `path` as safetensors.
///
/// Int8 tensors also write their per-row scales as `"{name}:scales"`; an int8 view whose rows no longer
/// match its storage rows (a reshape changed the last axis) is requantized per row first. Data is laid out
/// densely (readers such as the reference implementation refuse gaps), widest elements first, with the
/// header padded so the data region starts 8-byte aligned: every tensor is then aligned to its element size
/// and f32 tensors can be mapped without a copy.
///
/// # Errors
/// [`Error::DuplicateName`] for a repeated name (or one clashing with an int8 scales companion);
/// [`Error::InvalidEntry`] for the reserved name `__metadata__`; [`Error::Io`] when creating, writing,
/// syncing or renaming the file fails (the temporary file is removed, the old file untouched).
pub fn save(
    path: impl AsRef<Path>,
    tensors: &[(&str, &Tensor)],
    metadata: &[(&str, &str)],
) -> Result<()> {
    let path = path.as_ref();
    let outs = collect(path, tensors)?;
    let (header, order) = layout(&outs, metadata);
    write_atomic(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(header.as_bytes())?;
        for &i in &order {
            w.write_all(&outs[i].bytes)?;
        }
        Ok(())
    })
}

fn collect<'a>(path: &Path, tensors: &[(&str, &'a Tensor)]) -> Result<Vec<Out<'a>>> {
    let mut outs = Vec::with_capacity(tensors.len());
    for &(name, t) in tensors {
        if name == METADATA_KEY {
            return Err(Error::InvalidEntry {
                path: path.to_path_buf(),
                name: name.to_string(),
                detail: format!("`{METADATA_KEY}` is reserved for the metadata map"),
            });
        }
        if t.dtype() != DType::I8 {
            outs.push(Out {
                name: name.to_string(),
                dtype: FileDtype::of(t.dtype()),
                shape: t.shape().to_vec(),
                bytes: t.raw_bytes(),
            });
            continue;
        }
        let (q, scales) = match t.i8_scales() {
            Some(s) => (t.raw_bytes(), s.to_vec()),
            None => {
                let r = t.to_f32().to_dtype(DType::I8);
                let s = r.i8_scales().map(<[f32]>::to_vec).unwrap_or_default();
                (Cow::Owned(r.raw_bytes().into_owned()), s)
            }
        };
        outs.push(Out {
            name: name.to_string(),
            dtype: FileDtype::I8,
            shape: t.shape().to_vec(),
            bytes: q,
        });
        outs.push(Out {
            name: format!("{name}{SCALES_SUFFIX}"),
            dtype: FileDtype::F32,
            shape: vec![scales.len()],
            bytes: Cow::Owned(scales.iter().flat_map(|s| s.to_le_bytes()).collect()),
        });
    }
    let mut seen = HashSet::new();
    if let Some(dup) = outs.iter().find(|o| !seen.insert(o.name.as_str())) {
        return Err(Error::DuplicateName {
            path: path.to_path_buf(),
            name: dup.name.clone(),
        });
    }
    Ok(outs)
}

/// The padded header JSON and the order in which the tensors' bytes follow it.
fn layout(outs: &[Out<'_>], metadata: &[(&str, &str)]) -> (String, Vec<usize>) {
    // Widest elements first; within a width, byte lengths that are multiples of 8 first, so they stay
    // 8-aligned. Each group then starts at a multiple of its element size.
    let mut order: Vec<usize> = (0..outs.len()).collect();
    order.sort_by_key(|&i| {
        (
            std::cmp::Reverse(outs[i].dtype.size()),
            !outs[i].bytes.len().is_multiple_of(8),
        )
    });
    let mut offsets = vec![(0usize, 0usize); outs.len()];
    let mut at = 0;
    for &i in &order {
        offsets[i] = (at, at + outs[i].bytes.len());
        at += outs[i].bytes.len();
    }

    let mut pairs = Vec::with_capacity(outs.len() + 1);
    if !metadata.is_empty() {
        let map = metadata
            .iter()
            .map(|&(k, v)| (k.to_string(), Value::from(v)))
            .collect();
        pairs.push((METADATA_KEY.to_string(), Value::Object(map)));
    }
    for (o, &(begin, end)) in outs.iter().zip(&offsets) {
        let ints = |xs: &[usize]| Value::Array(xs.iter().map(|&x| Value::Int(x as i128)).collect());
        let entry = vec![
            ("dtype".to_string(), Value::from(o.dtype.name())),
            ("shape".to_string(), ints(&o.shape)),
            ("data_offsets".to_string(), ints(&[begin, end])),
        ];
        pairs.push((o.name.clone(), Value::Object(entry)));
    }
    let mut header = Value::Object(pairs).to_json();
    // Trailing spaces are JSON whitespace: the data region then starts at a multiple of 8.
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    (header, order)
}
