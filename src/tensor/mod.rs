//! The minimal tensor: a shape and contiguous row-major storage shared by cheap clones.
//!
//! Storage may be owned f32, f32 read in place from a memory-mapped file, or packed f16/bf16/int8
//! (see [`Storage`]); compute always sees a contiguous `&[f32]` through [`Tensor::as_slice`].

mod dtype;
mod error;
mod fmt;
mod storage;

pub use dtype::{DType, bf16_to_f32, f16_to_f32};
pub use error::{Error, Result};
pub use memmap2::Mmap;
pub use storage::{Bytes, HUGE_PAGE, MappedBytes, Packed, Storage, map_file};

use half::{bf16, f16};
use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

/// A contiguous row-major tensor. Cloning shares the storage.
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
    /// First element of this view in the storage (narrowing along the first axis moves it).
    offset: usize,
}

/// The number of elements of `shape`, or an error naming `op` when it overflows.
pub fn numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::Shape {
            op,
            detail: format!("shape {shape:?} has more elements than fit in memory"),
        })
}

impl Tensor {
    /// A tensor owning `data`, laid out as `shape`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `data.len()` is not the product of `shape`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        let n = numel("from_vec", shape)?;
        if n != data.len() {
            return Err(Error::Shape {
                op: "from_vec",
                detail: format!(
                    "{} values cannot be shaped {shape:?} ({n} elements)",
                    data.len()
                ),
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Storage::Owned(Arc::new(data)),
            offset: 0,
        })
    }

    /// A tensor of zeros.
    ///
    /// # Errors
    /// [`Error::Shape`] when the element count overflows.
    pub fn zeros(shape: &[usize]) -> Result<Self> {
        Self::from_vec(vec![0.0; numel("zeros", shape)?], shape)
    }

    /// A scalar (shape `[]`).
    pub fn scalar(v: f32) -> Self {
        Tensor {
            shape: Vec::new(),
            storage: Storage::Owned(Arc::new(vec![v])),
            offset: 0,
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32, row-major.
    ///
    /// For f32 storage (owned or mapped) this is the storage itself. For f16/bf16/int8 storage the whole
    /// storage is decoded to f32 on the first call and the decoding is kept (shared by clones), so weights
    /// used in compute cost their f32 size once; use [`Tensor::to_f32`] for a one-off copy of just this view.
    pub fn as_slice(&self) -> &[f32] {
        &self.storage.as_slice()[self.offset..self.offset + self.numel()]
    }

    /// The values as a fresh f32 vector.
    pub fn to_vec(&self) -> Vec<f32> {
        match &self.storage {
            Storage::Packed(p) => {
                let mut out = vec![0.0; self.numel()];
                p.decode_into(self.offset, &mut out);
                out
            }
            _ => self.as_slice().to_vec(),
        }
    }

    /// The same values under another shape with the same element count (no copy).
    ///
    /// # Errors
    /// [`Error::Shape`] when the element counts differ.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        let n = numel("reshape", shape)?;
        if n != self.numel() {
            return Err(Error::Shape {
                op: "reshape",
                detail: format!("cannot reshape {:?} into {shape:?}", self.shape),
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// Rows `start..start + len` of the first axis (no copy, whatever the storage: a mapped tensor stays
    /// mapped).
    ///
    /// # Errors
    /// [`Error::Shape`] for a scalar or a range past the first axis.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        let Some(&d0) = self.shape.first() else {
            return Err(Error::Shape {
                op: "narrow",
                detail: "a scalar has no first axis".into(),
            });
        };
        if start.checked_add(len).is_none_or(|end| end > d0) {
            return Err(Error::Shape {
                op: "narrow",
                detail: format!(
                    "rows {start}..{} of shape {:?}",
                    start.saturating_add(len),
                    self.shape
                ),
            });
        }
        let row: usize = self.shape[1..].iter().product();
        let mut shape = self.shape.clone();
        shape[0] = len;
        Ok(Tensor {
            shape,
            storage: self.storage.clone(),
            offset: self.offset + start * row,
        })
    }

    /// The same values in memory advised for transparent huge pages (a read-only mapping; the
    /// first write copies them back to owned memory, as for any mapped tensor). For weights that
    /// inference streams once per token: fewer TLB misses.
    ///
    /// # Errors
    /// The operating system's error when the mapping cannot be made.
    pub fn in_huge_pages(&self) -> std::io::Result<Self> {
        let bytes = storage::huge_page_copy(&self.to_vec())?;
        Ok(Tensor {
            shape: self.shape.clone(),
            storage: Storage::Mapped(bytes),
            offset: 0,
        })
    }

    /// The values for writing: copies them first if the storage is shared or this is a view. Mapped and
    /// packed storage become owned f32 (the file and the packed bytes are never written).
    pub fn make_mut(&mut self) -> &mut [f32] {
        let n = self.numel();
        let whole = matches!(&self.storage, Storage::Owned(v) if self.offset == 0 && v.len() == n);
        if !whole {
            self.storage = Storage::Owned(Arc::new(self.to_vec()));
            self.offset = 0;
        }
        match &mut self.storage {
            Storage::Owned(v) => Arc::make_mut(v).as_mut_slice(),
            Storage::Mapped(_) | Storage::Packed(_) => {
                unreachable!("replaced by owned storage above")
            }
        }
    }
}

/// The number of rows of `shape` for per-row int8 scales: every axis but the last (1 for a scalar).
fn rows_of(shape: &[usize]) -> usize {
    shape
        .split_last()
        .map_or(1, |(_, lead)| lead.iter().product())
}

/// The length of a row of `shape` for per-row int8 scales (1 for a scalar).
fn row_len_of(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(1)
}

impl Tensor {
    fn packed(dtype: DType, bytes: Bytes, scales: Vec<f32>, shape: &[usize]) -> Self {
        let row_len = row_len_of(shape);
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Packed(Arc::new(Packed::new(dtype, bytes, scales, row_len))),
            offset: 0,
        }
    }

    fn check_len(op: &'static str, len: usize, shape: &[usize]) -> Result<()> {
        let n = numel(op, shape)?;
        if n != len {
            return Err(Error::Shape {
                op,
                detail: format!("{len} values cannot be shaped {shape:?} ({n} elements)"),
            });
        }
        Ok(())
    }

    /// A tensor stored as f16 (compute decodes it to f32).
    ///
    /// # Errors
    /// [`Error::Shape`] when `data.len()` is not the product of `shape`.
    pub fn from_f16(data: Vec<f16>, shape: &[usize]) -> Result<Self> {
        Self::check_len("from_f16", data.len(), shape)?;
        let bytes = data
            .iter()
            .flat_map(|v| v.to_bits().to_le_bytes())
            .collect();
        Ok(Self::packed(
            DType::F16,
            Bytes::Owned(Arc::new(bytes)),
            Vec::new(),
            shape,
        ))
    }

    /// A tensor stored as bf16 (compute decodes it to f32).
    ///
    /// # Errors
    /// [`Error::Shape`] when `data.len()` is not the product of `shape`.
    pub fn from_bf16(data: Vec<bf16>, shape: &[usize]) -> Result<Self> {
        Self::check_len("from_bf16", data.len(), shape)?;
        let bytes = data
            .iter()
            .flat_map(|v| v.to_bits().to_le_bytes())
            .collect();
        Ok(Self::packed(
            DType::BF16,
            Bytes::Owned(Arc::new(bytes)),
            Vec::new(),
            shape,
        ))
    }

    /// A tensor stored as int8 with one f32 scale per row (last axis): `x = q * scales[row]`.
    /// q: shape, scales: (product of all axes but the last; 1 for a scalar).
    ///
    /// # Errors
    /// [`Error::Shape`] when `q.len()` is not the product of `shape` or `scales` is not one per row.
    pub fn from_i8(q: Vec<i8>, scales: Vec<f32>, shape: &[usize]) -> Result<Self> {
        Self::check_len("from_i8", q.len(), shape)?;
        Self::check_scales(scales.len(), shape)?;
        let bytes = q.into_iter().map(|v| v as u8).collect();
        Ok(Self::packed(
            DType::I8,
            Bytes::Owned(Arc::new(bytes)),
            scales,
            shape,
        ))
    }

    fn check_scales(len: usize, shape: &[usize]) -> Result<()> {
        let rows = rows_of(shape);
        if len != rows {
            return Err(Error::Shape {
                op: "from_i8",
                detail: format!("{len} scales for shape {shape:?} ({rows} rows)"),
            });
        }
        Ok(())
    }

    /// A tensor viewing bytes `range` of a memory-mapped file as `dtype` (little-endian), without a copy.
    ///
    /// f32 data is reinterpreted in place when it is 4-byte aligned. Mappings start on a page boundary, so
    /// only a file whose data offset is not a multiple of 4 is misaligned; reading `&[f32]` from such bytes
    /// would be undefined behaviour, so those values are copied once into owned storage instead (our writer
    /// aligns offsets so this does not happen for its files). f16/bf16/int8 are always borrowed: they are
    /// decoded byte-wise. Int8 needs per-row scales: use [`Tensor::from_mmap_i8`].
    ///
    /// # Errors
    /// [`Error::Shape`] when `range` lies outside the mapping, does not hold `shape` of `dtype`, or `dtype`
    /// is [`DType::I8`].
    pub fn from_mmap(
        map: Arc<Mmap>,
        range: Range<usize>,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Self> {
        if dtype == DType::I8 {
            return Err(Error::Shape {
                op: "from_mmap",
                detail: "int8 storage needs per-row scales (from_mmap_i8)".into(),
            });
        }
        let bytes = Self::mapped_range("from_mmap", map, range, dtype, shape)?;
        if dtype != DType::F32 {
            return Ok(Self::packed(dtype, Bytes::Mapped(bytes), Vec::new(), shape));
        }
        let storage = if bytemuck::try_cast_slice::<u8, f32>(bytes.bytes()).is_ok() {
            Storage::Mapped(bytes)
        } else {
            let mut v = vec![0.0; bytes.bytes().len() / 4];
            dtype::f32_le_to_f32(bytes.bytes(), &mut v);
            Storage::Owned(Arc::new(v))
        };
        Ok(Tensor {
            shape: shape.to_vec(),
            storage,
            offset: 0,
        })
    }

    /// An int8 tensor viewing bytes `range` of a mapping, with one scale per row (see [`Tensor::from_i8`]).
    ///
    /// # Errors
    /// [`Error::Shape`] when `range` lies outside the mapping or does not hold `shape`, or the scales are not
    /// one per row.
    pub fn from_mmap_i8(
        map: Arc<Mmap>,
        range: Range<usize>,
        scales: Vec<f32>,
        shape: &[usize],
    ) -> Result<Self> {
        let bytes = Self::mapped_range("from_mmap_i8", map, range, DType::I8, shape)?;
        Self::check_scales(scales.len(), shape)?;
        Ok(Self::packed(DType::I8, Bytes::Mapped(bytes), scales, shape))
    }

    fn mapped_range(
        op: &'static str,
        map: Arc<Mmap>,
        range: Range<usize>,
        dtype: DType,
        shape: &[usize],
    ) -> Result<MappedBytes> {
        let n = numel(op, shape)?;
        let want = n.checked_mul(dtype.size());
        let (start, end, map_len) = (range.start, range.end, map.len());
        let bytes = MappedBytes::new(map, range).ok_or_else(|| Error::Shape {
            op,
            detail: format!("bytes {start}..{end} outside a mapping of {map_len} bytes"),
        })?;
        if want != Some(end - start) {
            return Err(Error::Shape {
                op,
                detail: format!("{} bytes cannot hold {dtype} {shape:?}", end - start),
            });
        }
        Ok(bytes)
    }

    /// The storage dtype (compute always sees f32).
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// Whether the values are read in place from a memory-mapped file (no copy was made).
    pub fn is_mapped(&self) -> bool {
        self.storage.is_mapped()
    }

    /// The storage (for loaders and kernels that handle packed dtypes themselves).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// This view as an owned f32 tensor (a cheap clone when it already is f32).
    pub fn to_f32(&self) -> Tensor {
        match self.storage {
            Storage::Owned(_) | Storage::Mapped(_) => self.clone(),
            Storage::Packed(_) => Tensor {
                shape: self.shape.clone(),
                storage: Storage::Owned(Arc::new(self.to_vec())),
                offset: 0,
            },
        }
    }

    /// This view converted to `dtype`: f16/bf16 round to nearest even (the kernels' `convert`
    /// family, bit-exact against `half`); int8 quantizes each
    /// row symmetrically with the kernels' reference quantizer (`scale = amax / 127`).
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        let x = self.to_f32();
        let x = x.as_slice();
        let shape = &self.shape;
        let result = match dtype {
            DType::F32 => return self.to_f32(),
            DType::F16 | DType::BF16 => {
                let bytes = dtype::f32_to_half_le(x, dtype == DType::BF16);
                Ok(Self::packed(
                    dtype,
                    Bytes::Owned(Arc::new(bytes)),
                    Vec::new(),
                    shape,
                ))
            }
            DType::I8 => {
                let row_len = row_len_of(shape);
                let mut q = vec![0i8; x.len()];
                let mut scales = vec![1.0; rows_of(shape)];
                if row_len > 0 {
                    for ((xr, qr), s) in x
                        .chunks(row_len)
                        .zip(q.chunks_mut(row_len))
                        .zip(&mut scales)
                    {
                        *s = anvil_kernels::qgemm::quant::reference::quantize_row(xr, qr);
                    }
                }
                Self::from_i8(q, scales, shape)
            }
        };
        // The lengths come from this tensor's own shape, so the constructors cannot refuse them.
        result.unwrap_or_else(|e| unreachable!("to_dtype: {e}"))
    }

    /// The little-endian bytes of this view in its storage dtype (int8: the `q` bytes; see
    /// [`Tensor::i8_scales`]). Borrowed when the storage already holds exactly these bytes.
    pub fn raw_bytes(&self) -> Cow<'_, [u8]> {
        match &self.storage {
            Storage::Owned(_) | Storage::Mapped(_) => {
                Cow::Borrowed(bytemuck::cast_slice(self.as_slice()))
            }
            Storage::Packed(p) => {
                let size = p.dtype.size();
                Cow::Borrowed(
                    &p.bytes.as_slice()[self.offset * size..(self.offset + self.numel()) * size],
                )
            }
        }
    }

    /// For int8 storage, the scales of this view's rows, when the view's rows are whole storage rows
    /// (always, unless a reshape changed the last axis); `None` otherwise or for other dtypes.
    pub fn i8_scales(&self) -> Option<&[f32]> {
        let Storage::Packed(p) = &self.storage else {
            return None;
        };
        if p.dtype != DType::I8 || row_len_of(&self.shape) != p.row_len {
            return None;
        }
        if p.row_len == 0 {
            // Empty rows: the offset says nothing about which rows; only the whole storage is unambiguous.
            return (self.offset == 0 && rows_of(&self.shape) == p.scales.len())
                .then_some(&p.scales[..]);
        }
        if !self.offset.is_multiple_of(p.row_len) {
            return None;
        }
        let first = self.offset / p.row_len;
        p.scales.get(first..first + rows_of(&self.shape))
    }
}
