//! Splitting independent rows (or elements) between rayon threads above a size threshold.
//!
//! Every item is computed the same way whichever thread runs it, so results are bit-identical for
//! any thread count.

use std::ops::Range;

/// Below this many bytes touched, a call runs on the calling thread (a fork costs a few us).
pub(crate) const PAR_MIN_BYTES: usize = 256 * 1024;
/// Bytes of work per task once split.
const TASK_BYTES: usize = 64 * 1024;

/// Calls `f` on ranges covering `0..n`, in parallel when `n * bytes_per_item` exceeds
/// [`PAR_MIN_BYTES`]. The ranges are disjoint.
pub(crate) fn for_ranges(n: usize, bytes_per_item: usize, f: impl Fn(Range<usize>) + Sync) {
    use rayon::prelude::*;
    let bytes_per_item = bytes_per_item.max(1);
    if n.saturating_mul(bytes_per_item) <= PAR_MIN_BYTES || rayon::current_num_threads() <= 1 {
        f(0..n);
        return;
    }
    let chunk = (TASK_BYTES / bytes_per_item).max(1);
    (0..n.div_ceil(chunk))
        .into_par_iter()
        .for_each(|c| f(c * chunk..n.min((c + 1) * chunk)));
}

/// A raw pointer that may cross threads; users hand each thread a disjoint range behind it.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(*mut T);

// SAFETY: the pointer is only dereferenced over disjoint ranges (see `for_ranges` callers), each
// by one thread, while the borrow it came from is held by the caller.
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    pub(crate) fn new(s: &mut [T]) -> Self {
        Self(s.as_mut_ptr())
    }

    /// The raw pointer, for callers that write strided rows no slice could cover alone.
    pub(crate) fn ptr(self) -> *mut T {
        self.0
    }

    /// The mutable subslice `r` of the slice this came from.
    ///
    /// # Safety
    /// `'a` does not outlive that slice's borrow; `r` lies inside the original slice, which is still mutably borrowed by the caller, and no
    /// other live reference covers `r`.
    pub(crate) unsafe fn slice<'a>(self, r: Range<usize>) -> &'a mut [T] {
        // SAFETY: forwarded contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(r.start), r.len()) }
    }
}

/// Runs an element-wise `leaf` over the first `n` elements of each slice, split between threads
/// as [`for_ranges`] does. The caller has checked that every slice holds at least `n` elements.
pub(crate) fn elementwise<const NI: usize, const NO: usize>(
    n: usize,
    ins: [&[f32]; NI],
    outs: [&mut [f32]; NO],
    leaf: impl Fn([&[f32]; NI], [&mut [f32]; NO]) + Sync,
) {
    let outs = outs.map(|o| SendPtr::new(&mut o[..n]));
    for_ranges(n, 4 * (NI + 2 * NO), |r| {
        // SAFETY: r lies inside 0..n, which every output holds; ranges are disjoint, so each element of an output is behind one live reference at a time.
        let o = outs.map(|p| unsafe { p.slice(r.clone()) });
        leaf(ins.map(|s| &s[r.clone()]), o);
    });
}
