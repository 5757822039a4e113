//! A pool of `Vec<f32>` buffers keyed by length, so activations and gradients are reused step
//! to step instead of page-faulting fresh allocations in.

use std::collections::HashMap;

/// At most this many free buffers of one length are kept; more are dropped (a model's
/// activations come in a handful of lengths, each repeated once per layer).
const MAX_PER_LEN: usize = 256;

/// At most this many bytes are kept free. A training step's tape must fit under it, or every
/// step page-faults its activations in afresh (the dense tiny GPT of `anvil bench train` frees
/// about 300 MB a step). Mixture-of-experts layers make buffers of a new length almost every
/// step (each expert's token count varies), so without a bound the pool would grow with the
/// number of steps; past it the lengths least recently taken are dropped first.
const MAX_BYTES: usize = 1 << 30;

/// Free buffers of one length, and when a buffer of that length was last taken or given.
#[derive(Debug, Default)]
struct Slot {
    bufs: Vec<Vec<f32>>,
    last_use: u64,
}

/// Free buffers by length.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    free: HashMap<usize, Slot>,
    /// Bytes held by `free`.
    held: usize,
    /// Counts takes and gives: the clock of `Slot::last_use`.
    clock: u64,
}

impl Pool {
    /// A buffer of `len` elements holding stale values: callers overwrite every element.
    pub(crate) fn take(&mut self, len: usize) -> Vec<f32> {
        self.clock += 1;
        let clock = self.clock;
        let found = self.free.get_mut(&len).and_then(|s| {
            s.last_use = clock;
            s.bufs.pop()
        });
        match found {
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
        let size = 4 * v.len();
        if v.is_empty() || size > MAX_BYTES {
            return;
        }
        self.clock += 1;
        if self.held + size > MAX_BYTES {
            self.evict(self.held + size - MAX_BYTES, v.len());
        }
        let slot = self.free.entry(v.len()).or_default();
        slot.last_use = self.clock;
        if slot.bufs.len() < MAX_PER_LEN {
            slot.bufs.push(v);
            self.held += size;
        }
    }

    /// Drops whole lengths, least recently used first (never `keep`), until `need` bytes are
    /// freed or only `keep` is left.
    fn evict(&mut self, need: usize, keep: usize) {
        let mut lens: Vec<(u64, usize)> = self
            .free
            .iter()
            .filter(|(len, _)| **len != keep)
            .map(|(len, s)| (s.last_use, *len))
            .collect();
        lens.sort_unstable();
        let mut freed = 0;
        for (_, len) in lens {
            if freed >= need {
                break;
            }
            if let Some(s) = self.free.remove(&len) {
                freed += 4 * len * s.bufs.len();
            }
        }
        self.held -= freed.min(self.held);
        if freed < need {
            // Only `keep` is left: drop it too.
            self.free.clear();
            self.held = 0;
        }
    }

    /// Bytes held by free buffers.
    pub(crate) fn bytes(&self) -> usize {
        self.free
            .iter()
            .map(|(len, s)| len * s.bufs.len() * std::mem::size_of::<f32>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_budget_drops_the_least_recently_used_lengths() {
        let mut p = Pool::default();
        // Three lengths of a third of the budget each (minus one element): all fit.
        let third = MAX_BYTES / 4 / 3 - 1;
        for len in [third, third - 1, third - 2] {
            p.give(vec![0.0; len]);
        }
        assert_eq!(p.bytes(), p.held);
        assert_eq!(p.free.len(), 3);
        // Use the first length again, then give a fourth: the second (least recent) goes.
        let v = p.take(third);
        p.give(v);
        p.give(vec![0.0; third - 3]);
        assert!(p.held <= MAX_BYTES && p.bytes() == p.held);
        let lens: Vec<usize> = {
            let mut l: Vec<usize> = p.free.keys().copied().collect();
            l.sort_unstable();
            l
        };
        assert_eq!(lens, [third - 3, third - 2, third]);
        // A buffer over the whole budget is not kept; the others stay.
        p.give(vec![0.0; MAX_BYTES / 4 + 1]);
        assert_eq!(p.free.len(), 3);
    }
}
