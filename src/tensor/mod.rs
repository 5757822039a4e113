//! The minimal tensor: a shape and contiguous row-major f32 storage shared by cheap clones.
//!
//! Storage kinds beyond owned f32 (memory-mapped files, f16/bf16/int8 for storage) extend
//! [`Storage`]; compute always sees a contiguous `&[f32]`.

mod error;

pub use error::{Error, Result};

use std::sync::Arc;

/// Where a tensor's values live.
#[derive(Clone, Debug)]
pub enum Storage {
    /// Values owned in memory, shared between clones.
    Owned(Arc<Vec<f32>>),
}

impl Storage {
    fn as_slice(&self) -> &[f32] {
        match self {
            Storage::Owned(v) => v,
        }
    }
}

/// A contiguous row-major f32 tensor. Cloning shares the storage.
#[derive(Clone, Debug)]
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

    /// The values, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.storage.as_slice()[self.offset..self.offset + self.numel()]
    }

    /// The values as a fresh vector.
    pub fn to_vec(&self) -> Vec<f32> {
        self.as_slice().to_vec()
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

    /// Rows `start..start + len` of the first axis (no copy).
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

    /// The values for writing: copies them first if the storage is shared or this is a view.
    pub fn make_mut(&mut self) -> &mut [f32] {
        let n = self.numel();
        let whole = matches!(&self.storage, Storage::Owned(v) if self.offset == 0 && v.len() == n);
        if !whole {
            self.storage = Storage::Owned(Arc::new(self.as_slice().to_vec()));
            self.offset = 0;
        }
        match &mut self.storage {
            Storage::Owned(v) => Arc::make_mut(v).as_mut_slice(),
        }
    }
}
