//! A pool of `Vec<f32>` buffers keyed by size class, so activations and gradients are reused
//! step to step instead of page-faulting fresh allocations in.
//!
//! A buffer's capacity is its length rounded up to a class (eight classes per power of two, so
//! at most 1/8 is slack): a mixture-of-experts layer, whose per-expert token counts change
//! every step, then finds last step's buffers instead of faulting in new ones.

use std::collections::HashMap;

/// At most this many free buffers of one class are kept; more are dropped (a model's
/// activations come in a handful of lengths, each repeated once per layer).
const MAX_PER_CLASS: usize = 256;

/// Classes per power of two: a buffer's capacity exceeds its length by less than `1 / CLASSES`.
const CLASSES: usize = 8;

/// At most this many bytes are kept free. A training step's tape must fit under it, or every
/// step page-faults its activations in afresh (the dense tiny GPT of `anvil bench train` frees
/// about 300 MB a step). Mixture-of-experts layers make buffers of a new length almost every
/// step (each expert's token count varies); classes absorb most of that, and past the bound the
/// classes least recently taken are dropped first.
const MAX_BYTES: usize = 1 << 30;

/// The capacity of buffers holding `len` elements: `len` rounded up to a multiple of the
/// largest power of two at most `len / CLASSES` (exact below `2 * CLASSES`).
fn class_of(len: usize) -> usize {
    if len < 2 * CLASSES {
        return len;
    }
    let step = 1usize << (len.ilog2() - CLASSES.ilog2());
    len.div_ceil(step) * step
}

/// The largest class at most `cap`: the class a buffer of capacity `cap` can serve.
fn class_below(cap: usize) -> usize {
    if cap < 2 * CLASSES {
        return cap;
    }
    let step = 1usize << (cap.ilog2() - CLASSES.ilog2());
    cap / step * step
}

/// Free buffers of one class, and when a buffer of that class was last taken or given.
#[derive(Debug, Default)]
struct Slot {
    bufs: Vec<Vec<f32>>,
    last_use: u64,
}

/// Free buffers by class (their capacity).
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
        let class = class_of(len);
        let found = self.free.get_mut(&class).and_then(|s| {
            s.last_use = clock;
            s.bufs.pop()
        });
        let mut v = match found {
            Some(v) => {
                self.held -= 4 * class;
                v
            }
            // Zeroed by the allocator (fresh pages), so nothing is written before the caller.
            None => vec![0.0; class],
        };
        // Shrinking is free; growing writes only the elements past the buffer's old length,
        // whose pages an earlier step already touched.
        if v.len() >= len {
            v.truncate(len);
        } else {
            v.resize(len, 0.0);
        }
        v
    }

    /// A buffer of `len` zeros (gradients, which backward adds into).
    pub(crate) fn take_zeroed(&mut self, len: usize) -> Vec<f32> {
        let mut v = self.take(len);
        crate::autograd::ops::zero_fill(&mut v);
        v
    }

    /// A copy of `src` in a pooled buffer.
    pub(crate) fn copy_of(&mut self, src: &[f32]) -> Vec<f32> {
        let mut v = self.take(src.len());
        v.copy_from_slice(src);
        v
    }

    /// Returns a buffer to the pool, into the largest class its capacity can serve.
    pub(crate) fn give(&mut self, v: Vec<f32>) {
        let class = class_below(v.capacity());
        let size = 4 * class;
        if class == 0 || size > MAX_BYTES {
            return;
        }
        self.clock += 1;
        if self.held + size > MAX_BYTES {
            self.evict(self.held + size - MAX_BYTES, class);
        }
        let slot = self.free.entry(class).or_default();
        slot.last_use = self.clock;
        if slot.bufs.len() < MAX_PER_CLASS {
            slot.bufs.push(v);
            self.held += size;
        }
    }

    /// Drops whole classes, least recently used first (never `keep`), until `need` bytes are
    /// freed or only `keep` is left.
    fn evict(&mut self, need: usize, keep: usize) {
        let mut classes: Vec<(u64, usize)> = self
            .free
            .iter()
            .filter(|(class, _)| **class != keep)
            .map(|(class, s)| (s.last_use, *class))
            .collect();
        classes.sort_unstable();
        let mut freed = 0;
        for (_, class) in classes {
            if freed >= need {
                break;
            }
            if let Some(s) = self.free.remove(&class) {
                freed += 4 * class * s.bufs.len();
            }
        }
        self.held -= freed.min(self.held);
        if freed < need {
            // Only `keep` is left: drop it too.
            self.free.clear();
            self.held = 0;
        }
    }

    /// Bytes held by free buffers (counted by class; a buffer's capacity may exceed it).
    pub(crate) fn bytes(&self) -> usize {
        self.free
            .iter()
            .map(|(class, s)| class * s.bufs.len() * std::mem::size_of::<f32>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_bound_the_slack_and_are_fixed_points() {
        for len in (1..5000).chain([1 << 20, (1 << 20) + 1, 3 << 27, usize::MAX >> 8]) {
            let c = class_of(len);
            assert!(c >= len, "class_of({len}) = {c}");
            assert!(
                c - len <= len / CLASSES,
                "class_of({len}) = {c}: over 1/{CLASSES} slack"
            );
            assert_eq!(class_of(c), c, "class_of({len}) = {c} is not a class");
            assert_eq!(class_below(c), c);
            let b = class_below(len);
            assert!(b <= len && class_of(b) == b, "class_below({len}) = {b}");
        }
    }

    #[test]
    fn lengths_of_one_class_share_a_buffer() {
        let mut p = Pool::default();
        let v = p.take(1010);
        assert_eq!(v.len(), 1010);
        let ptr = v.as_ptr();
        p.give(v);
        // A shorter length of the same class gets the same allocation back, then a longer one.
        let v = p.take(1000);
        assert_eq!((v.len(), v.as_ptr()), (1000, ptr));
        p.give(v);
        let v = p.take(1024);
        assert_eq!((v.len(), v.as_ptr()), (1024, ptr));
        p.give(v);
        assert_eq!(p.bytes(), 4 * 1024);
        // A length of the next class does not fit it.
        let w = p.take(1025);
        assert_ne!(w.as_ptr(), ptr);
        assert!(w.capacity() >= 1025);
        // A buffer made elsewhere, of capacity below any class it could serve whole, is kept
        // in the class under its capacity and served to lengths of that class.
        p.give(vec![1.0; 1000]);
        let x = p.take(950);
        assert_eq!(x.len(), 950);
        assert!(x.capacity() >= 950);
    }

    #[test]
    fn over_budget_drops_the_least_recently_used_classes() {
        let mut p = Pool::default();
        // Three classes that fit the budget together (8, 9 and 10 steps of 2^23 elements).
        let step = 1usize << 23;
        for len in [8 * step, 9 * step, 10 * step] {
            assert_eq!(class_of(len), len);
            p.give(vec![0.0; len]);
        }
        assert_eq!(p.bytes(), p.held);
        assert_eq!(p.free.len(), 3);
        // Use the first class again, then give a fourth: the second (least recent) goes.
        let v = p.take(8 * step - 5);
        p.give(v);
        p.give(vec![0.0; 11 * step]);
        assert!(p.held <= MAX_BYTES && p.bytes() == p.held);
        let classes: Vec<usize> = {
            let mut l: Vec<usize> = p.free.keys().copied().collect();
            l.sort_unstable();
            l
        };
        assert_eq!(classes, [8 * step, 10 * step, 11 * step]);
        // A buffer whose class is over the whole budget is not kept; the others stay.
        p.give(vec![0.0; MAX_BYTES / 4 + (1 << 25)]);
        assert_eq!(p.free.len(), 3);
    }
}
