//! A pool of `Vec<f32>` buffers keyed by length, so activations and gradients are reused step
//! to step instead of page-faulting fresh allocations in.

use std::collections::HashMap;

/// At most this many free buffers of one length are kept; more are dropped (a model's
/// activations come in a handful of lengths, each repeated once per layer).
const MAX_PER_LEN: usize = 256;

/// At most this many bytes are kept free. Mixture-of-experts layers make buffers of a new length
/// almost every step (each expert's token count varies), so without a bound the pool grows
/// with the number of steps; past it the pool is emptied and refills with the lengths in use.
const MAX_BYTES: usize = 256 << 20;

/// Free buffers by length.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    /// Bytes held by `free`.
    held: usize,
}

impl Pool {
    /// A buffer of `len` elements holding stale values: callers overwrite every element.
    pub(crate) fn take(&mut self, len: usize) -> Vec<f32> {
        match self.free.get_mut(&len).and_then(Vec::pop) {
            Some(v) => {
                self.held -= 4 * len;
                v
            }
            None => vec![0.0; len],
        }
    }

    /// A buffer of `len` zeros (gradients, which backward adds into).
    pub(crate) fn take_zeroed(&mut self, len: usize) -> Vec<f32> {
        let mut v = self.take(len);
        v.fill(0.0);
        v
    }

    /// A copy of `src` in a pooled buffer.
    pub(crate) fn copy_of(&mut self, src: &[f32]) -> Vec<f32> {
        let mut v = self.take(src.len());
        v.copy_from_slice(src);
        v
    }

    /// Returns a buffer to the pool.
    pub(crate) fn give(&mut self, v: Vec<f32>) {
        if v.is_empty() {
            return;
        }
        let size = 4 * v.len();
        if self.held + size > MAX_BYTES {
            self.free.clear();
            self.held = 0;
        }
        let slot = self.free.entry(v.len()).or_default();
        if slot.len() < MAX_PER_LEN && size <= MAX_BYTES {
            slot.push(v);
            self.held += size;
        }
    }

    /// Bytes held by free buffers.
    pub(crate) fn bytes(&self) -> usize {
        self.free
            .iter()
            .map(|(len, vs)| len * vs.len() * std::mem::size_of::<f32>())
            .sum()
    }
}
