//! Fused log-softmax + cross-entropy over rows of logits, forward (mean loss) and backward.
//!
//! Per row `r` with target `t = targets[r]`: `lse = m + ln(sum(exp(x - m)))` with `m = max(x)`
//! (max and sum in f32), `loss_r = lse - x[t]`. The loss is the mean of `loss_r` over the rows whose
//! target is not `ignore_index`, summed in f64 in row order (so independent of the thread count),
//! then rounded to f32. With no counted row the loss is 0 and the backward adds nothing.
//!
//! Backward: `dlogits += (softmax(x) - onehot(t)) * dloss / count` on counted rows; ignored rows
//! get nothing added. It reuses the per-row `lse` the forward wrote, so it reads the logits once.
//! [`Kernels::cross_entropy_bwd_overwrite`] writes instead (ignored rows get zeros).
//!
//! Targets are `u32` token ids (what the tokenizer produces); `ignore_index` is any `u32`, commonly
//! [`IGNORE_INDEX`]. Logits are expected finite: a NaN or an infinity in a row makes its loss NaN.

use crate::error::check_len;
use crate::par::{SendPtr, for_ranges};
use crate::softmax::numel;
use crate::{Isa, KernelError, Kernels, Result};

/// The conventional "no target here" id (padding): `u32::MAX`.
pub const IGNORE_INDEX: u32 = u32::MAX;

/// The f64 oracle.
pub mod reference {
    /// `(mean loss, dlogits)` in f64 for logits: (rows, v), targets: (rows,), all in f64; the
    /// gradient is of the mean loss (`dloss = 1`).
    pub fn cross_entropy_f64(
        logits: &[f64],
        targets: &[u32],
        rows: usize,
        v: usize,
        ignore: u32,
    ) -> (f64, Vec<f64>) {
        let count = targets[..rows].iter().filter(|&&t| t != ignore).count();
        let mut grad = vec![0.0; rows * v];
        let mut sum = 0.0;
        if count == 0 {
            return (0.0, grad);
        }
        for r in 0..rows {
            let t = targets[r];
            if t == ignore {
                continue;
            }
            let x = &logits[r * v..][..v];
            let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = x.iter().map(|&a| (a - m).exp()).sum();
            let lse = m + s.ln();
            sum += lse - x[t as usize];
            for (c, g) in grad[r * v..][..v].iter_mut().enumerate() {
                *g = ((x[c] - lse).exp() - if c == t as usize { 1.0 } else { 0.0 }) / count as f64;
            }
        }
        (sum / count as f64, grad)
    }
}

fn check(
    op: &'static str,
    logits: usize,
    targets: &[u32],
    rows: usize,
    v: usize,
    ignore: u32,
) -> Result<usize> {
    let n = numel(op, rows, v)?;
    check_len(op, "logits", logits, n)?;
    check_len(op, "targets", targets.len(), rows)?;
    let mut count = 0;
    for (r, &t) in targets[..rows].iter().enumerate() {
        if t == ignore {
            continue;
        }
        if t as usize >= v {
            return Err(KernelError::BadShape {
                op,
                detail: format!("row {r}: target id {t} is not below the vocabulary size {v}"),
            });
        }
        count += 1;
    }
    Ok(count)
}

impl Kernels {
    /// Mean cross-entropy. logits: (rows, v), targets: (rows,) -> loss; lse: (rows,) receives each
    /// row's log-sum-exp for [`Kernels::cross_entropy_bwd`].
    ///
    /// # Errors
    /// [`KernelError::BadLength`] when a slice is shorter than its shape, and
    /// [`KernelError::BadShape`] naming the row and id of a target `>= v` that is not `ignore_index`.
    pub fn cross_entropy_fwd(
        &self,
        logits: &[f32],
        targets: &[u32],
        lse: &mut [f32],
        rows: usize,
        v: usize,
        ignore_index: u32,
    ) -> Result<f32> {
        let op = "cross_entropy_fwd";
        let count = check(op, logits.len(), targets, rows, v, ignore_index)?;
        check_len(op, "lse", lse.len(), rows)?;
        let (isa, lp) = (self.isa(), SendPtr::new(&mut lse[..rows]));
        for_ranges(rows, 4 * v, |rr| {
            // SAFETY: rr lies inside 0..rows; ranges are disjoint.
            let lse = unsafe { lp.slice(rr.clone()) };
            for (l, r) in lse.iter_mut().zip(rr) {
                let (m, s) = max_sum_exp(isa, &logits[r * v..][..v]);
                *l = m + s.ln();
            }
        });
        if count == 0 {
            return Ok(0.0);
        }
        let mut sum = 0.0f64;
        for (r, &t) in targets[..rows].iter().enumerate() {
            if t != ignore_index {
                sum += (lse[r] - logits[r * v + t as usize]) as f64;
            }
        }
        Ok((sum / count as f64) as f32)
    }

    /// Cross-entropy backward. logits: (rows, v), targets, lse: (rows,) from the forward;
    /// dlogits: (rows, v) `+= (softmax - onehot) * dloss / count` on rows not ignored.
    ///
    /// # Errors
    /// As [`Kernels::cross_entropy_fwd`].
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_bwd(
        &self,
        logits: &[f32],
        targets: &[u32],
        lse: &[f32],
        dloss: f32,
        dlogits: &mut [f32],
        rows: usize,
        v: usize,
        ignore_index: u32,
    ) -> Result<()> {
        let rv = [rows, v];
        self.cross_entropy_bwd_to(logits, targets, lse, dloss, dlogits, rv, ignore_index, true)
    }

    /// [`Kernels::cross_entropy_bwd`] writing `dlogits` instead of adding into it (ignored rows,
    /// and every row when none is counted, get zeros): for a gradient buffer that holds nothing
    /// yet, which then needs no zeroing pass and is never read.
    ///
    /// # Errors
    /// As [`Kernels::cross_entropy_fwd`].
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_bwd_overwrite(
        &self,
        logits: &[f32],
        targets: &[u32],
        lse: &[f32],
        dloss: f32,
        dlogits: &mut [f32],
        rows: usize,
        v: usize,
        ignore_index: u32,
    ) -> Result<()> {
        let rv = [rows, v];
        self.cross_entropy_bwd_to(
            logits,
            targets,
            lse,
            dloss,
            dlogits,
            rv,
            ignore_index,
            false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn cross_entropy_bwd_to(
        &self,
        logits: &[f32],
        targets: &[u32],
        lse: &[f32],
        dloss: f32,
        dlogits: &mut [f32],
        [rows, v]: [usize; 2],
        ignore_index: u32,
        acc: bool,
    ) -> Result<()> {
        let op = if acc {
            "cross_entropy_bwd"
        } else {
            "cross_entropy_bwd_overwrite"
        };
        let count = check(op, logits.len(), targets, rows, v, ignore_index)?;
        check_len(op, "lse", lse.len(), rows)?;
        check_len(op, "dlogits", dlogits.len(), rows * v)?;
        if count == 0 {
            if !acc {
                dlogits[..rows * v].fill(0.0);
            }
            return Ok(());
        }
        let scale = dloss / count as f32;
        let (isa, dp) = (self.isa(), SendPtr::new(&mut dlogits[..rows * v]));
        for_ranges(rows, 12 * v, |rr| {
            for r in rr {
                // SAFETY: row r lies inside dlogits[..rows * v]; each row goes to one call.
                let d = unsafe { dp.slice(r * v..(r + 1) * v) };
                let t = targets[r];
                if t == ignore_index {
                    if !acc {
                        d.fill(0.0);
                    }
                    continue;
                }
                let x = &logits[r * v..][..v];
                let t = t as usize;
                let old = if acc { d[t] } else { 0.0 };
                scaled_exp(isa, x, lse[r], scale, d, acc);
                // The target's entry as (p - 1) * scale, not p * scale - scale (one rounding less).
                d[t] = old + ((x[t] - lse[r]).exp() - 1.0) * scale;
            }
        });
        Ok(())
    }
}

fn max_sum_exp(isa: Isa, x: &[f32]) -> (f32, f32) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` holds a tier only when the CPU supports it.
        Isa::Avx512 => unsafe { crate::math::avx512::max_sum_exp(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { crate::math::avx2::max_sum_exp(x) },
        _ => crate::math::scalar::max_sum_exp(x),
    }
}

/// `d = exp(x - shift) * scale`, or `d +=` it when `acc` (`d: (v,)`).
fn scaled_exp(isa: Isa, x: &[f32], shift: f32, scale: f32, d: &mut [f32], acc: bool) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` holds a tier only when the CPU supports it.
        Isa::Avx512 => unsafe { avx512::scaled_exp(x, shift, scale, d, acc) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { avx2::scaled_exp(x, shift, scale, d, acc) },
        _ => {
            use crate::math::scalar::{exp, map};
            map([x], [d], acc, |[x]| [exp(x - shift) * scale]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::math::avx2::{exp, map};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn scaled_exp(x: &[f32], shift: f32, scale: f32, d: &mut [f32], acc: bool) {
        let (vs, vk) = (_mm256_set1_ps(shift), _mm256_set1_ps(scale));
        map([x], [d], acc, |[x]| {
            [_mm256_mul_ps(exp(_mm256_sub_ps(x, vs)), vk)]
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::math::avx512::{exp, map};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) fn scaled_exp(x: &[f32], shift: f32, scale: f32, d: &mut [f32], acc: bool) {
        let (vs, vk) = (_mm512_set1_ps(shift), _mm512_set1_ps(scale));
        map([x], [d], acc, |[x]| {
            [_mm512_mul_ps(exp(_mm512_sub_ps(x, vs)), vk)]
        });
    }
}
