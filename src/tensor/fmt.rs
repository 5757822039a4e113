//! `Debug` and `Display` for tensors: shape, dtype, storage kind and a summary of the values (the first and
//! last few when there are many), without decoding or copying the whole storage.

use super::{Storage, Tensor};
use std::fmt;

/// Tensors with more elements than this print only their first and last [`EDGE`] values.
const SUMMARY_OVER: usize = 8;
const EDGE: usize = 3;

impl Tensor {
    /// Element `i` of this view as f32, decoding just that element for packed storage.
    fn value_at(&self, i: usize) -> f32 {
        match &self.storage {
            Storage::Packed(p) => {
                let mut v = [0.0f32];
                p.decode_into(self.offset + i, &mut v);
                v[0]
            }
            _ => self.as_slice()[i],
        }
    }

    fn write_values(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.numel();
        let shown: Vec<usize> = if n > SUMMARY_OVER {
            (0..EDGE).chain(n - EDGE..n).collect()
        } else {
            (0..n).collect()
        };
        f.write_str("[")?;
        for (k, &i) in shown.iter().enumerate() {
            if k > 0 {
                f.write_str(", ")?;
            }
            if n > SUMMARY_OVER && k == EDGE {
                f.write_str("..., ")?;
            }
            write!(f, "{:?}", self.value_at(i))?;
        }
        f.write_str("]")
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor {{ shape: {:?}, storage: {:?}, offset: {}, values: ",
            self.shape, self.storage, self.offset
        )?;
        self.write_values(f)?;
        f.write_str(" }")
    }
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{:?} {} ", self.shape, self.dtype())?;
        self.write_values(f)
    }
}
