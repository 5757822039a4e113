//! AdamW over a flat parameter slice, as `torch.optim.AdamW` (default: no amsgrad, no maximize).
//!
//! On CPU PyTorch's default (`foreach=None`, `fused=None`) resolves to the single-tensor path,
//! `_single_tensor_adam` with `decoupled_weight_decay=True`, whose order we follow step for step
//! (scalars in f64 as Python floats, rounded once to f32 where they meet a tensor):
//!
//! ```text
//! param.mul_(1 - lr * wd)                       # skipped when wd == 0
//! m.lerp_(grad, 1 - b1)                         # m + (1 - b1) * (g - m)
//! v.mul_(b2).addcmul_(grad, grad, value=1 - b2) # v * b2 + ((1 - b2) * g) * g
//! step_size = lr / (1 - b1^t); bc2_sqrt = (1 - b2^t) ** 0.5
//! denom = (v.sqrt() / bc2_sqrt).add_(eps)
//! param.addcdiv_(m, denom, value=-step_size)    # param + (-step_size * m) / denom
//! ```
//!
//! Every tier uses exactly these f32 operations without FMA, so all tiers agree bit for bit with
//! [`reference::adamw`]. (PyTorch's vectorised `lerp` fuses `(1 - b1) * (g - m) + m` into one FMA;
//! that differs by at most one rounding per step in `m`.)

use crate::layernorm::{check_all, parallel};
use crate::{Isa, KernelError, Kernels, Result};
use rayon::prelude::*;

/// Elements per rayon task (256 KiB per operand).
const TASK_ELEMS: usize = 64 * 1024;

/// One task of [`Kernels::adamw_zero_grad`]: its chunks of `(param, grad)` and `(m, v)`.
type ZeroTask<'a> = (
    (&'a mut [f32], &'a mut [f32]),
    (&'a mut [f32], &'a mut [f32]),
);

/// AdamW hyper-parameters, in f64 as PyTorch keeps them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamW {
    /// `torch.optim.AdamW` defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2.
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

/// The f32 scalars of one step, derived from the hyper-parameters and the step count.
#[derive(Clone, Copy, Debug)]
struct Coeffs {
    /// `1 - lr * wd`, or `None` when `wd == 0` (PyTorch skips the multiply).
    decay: Option<f32>,
    /// `1 - b1`, the lerp weight.
    w1: f32,
    b2: f32,
    /// `1 - b2`.
    w2: f32,
    bc2_sqrt: f32,
    eps: f32,
    /// `-lr / (1 - b1^t)`.
    neg_step: f32,
}

impl Coeffs {
    fn new(h: &AdamW, t: u64) -> Result<Self> {
        if t == 0 {
            return Err(KernelError::BadShape {
                op: "adamw",
                detail: "step t is 0: bias correction needs t >= 1 (count after incrementing)"
                    .into(),
            });
        }
        // Python's float ** float; t beyond 2^53 only matters as "bias correction is 1".
        let tf = t as f64;
        let bc1 = 1.0 - h.beta1.powf(tf);
        let bc2 = 1.0 - h.beta2.powf(tf);
        Ok(Self {
            decay: (h.weight_decay != 0.0).then_some((1.0 - h.lr * h.weight_decay) as f32),
            w1: (1.0 - h.beta1) as f32,
            b2: h.beta2 as f32,
            w2: (1.0 - h.beta2) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            eps: h.eps as f32,
            neg_step: (-(h.lr / bc1)) as f32,
        })
    }

    /// One element's update, the reference order.
    #[inline(always)]
    fn update(&self, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
        if let Some(d) = self.decay {
            *p *= d;
        }
        *m += self.w1 * (g - *m);
        *v = *v * self.b2 + self.w2 * g * g;
        let denom = v.sqrt() / self.bc2_sqrt + self.eps;
        *p += self.neg_step * *m / denom;
    }
}

impl Kernels {
    /// One AdamW step `t` (1 for the first) over a flat slice, in place.
    /// `// param, grad, m, v: (n)`
    ///
    /// Element-wise; above 256 KiB per operand the slice is split over the current rayon pool.
    ///
    /// # Errors
    /// [`KernelError::BadLength`] when `grad`, `m` or `v` is shorter than `param`, and
    /// [`KernelError::BadShape`] when `t == 0`.
    pub fn adamw(
        &self,
        param: &mut [f32],
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        h: &AdamW,
        t: u64,
    ) -> Result<()> {
        let n = param.len();
        let c = prepare("adamw", n, [grad.len(), m.len(), v.len()], h, t)?;
        let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
        let isa = self.isa();
        if parallel(n) {
            param
                .par_chunks_mut(TASK_ELEMS)
                .zip(m.par_chunks_mut(TASK_ELEMS))
                .zip(v.par_chunks_mut(TASK_ELEMS))
                .enumerate()
                .for_each(|(i, ((p, m), v))| {
                    let g = &grad[i * TASK_ELEMS..][..p.len()];
                    run(isa, &c, p, g, m, v);
                });
        } else {
            run(isa, &c, param, grad, m, v);
        }
        Ok(())
    }
}

impl Kernels {
    /// [`Kernels::adamw`], then `grad` set to zero, chunk by chunk while it is in cache: the
    /// optimizer's step and the zeroing of the gradient for the next accumulation in one pass
    /// over memory instead of two. `param`, `m`, `v` come out bit-identical to `adamw`'s.
    /// `// param, grad, m, v: (n)`
    ///
    /// # Errors
    /// As [`Kernels::adamw`].
    pub fn adamw_zero_grad(
        &self,
        param: &mut [f32],
        grad: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
        h: &AdamW,
        t: u64,
    ) -> Result<()> {
        let n = param.len();
        let c = prepare("adamw_zero_grad", n, [grad.len(), m.len(), v.len()], h, t)?;
        let (grad, m, v) = (&mut grad[..n], &mut m[..n], &mut v[..n]);
        let isa = self.isa();
        let task = |((p, g), (m, v)): ZeroTask| {
            run(isa, &c, p, g, m, v);
            g.fill(0.0);
        };
        if parallel(n) {
            param
                .par_chunks_mut(TASK_ELEMS)
                .zip(grad.par_chunks_mut(TASK_ELEMS))
                .zip(
                    m.par_chunks_mut(TASK_ELEMS)
                        .zip(v.par_chunks_mut(TASK_ELEMS)),
                )
                .for_each(task);
        } else {
            task(((param, grad), (m, v)));
        }
        Ok(())
    }
}

/// The checks both entry points make: `grad`, `m`, `v` (lengths `lens`) at least `n` long, and
/// the step's coefficients.
fn prepare(op: &'static str, n: usize, lens: [usize; 3], h: &AdamW, t: u64) -> Result<Coeffs> {
    let [g, m, v] = lens;
    check_all(op, &[("grad", g, n), ("m", m, n), ("v", v, n)])?;
    Coeffs::new(h, t)
}

/// One step over equal-length slices on `isa`.
fn run(isa: Isa, c: &Coeffs, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX-512 F/BW/VL.
        Isa::Avx512 => unsafe { avx512::step(c, p, g, m, v) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Kernels` of this tier exists only when the CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { avx2::step(c, p, g, m, v) },
        _ => {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                c.update(p, g, m, v);
            }
        }
    }
}

/// The scalar reference, one element at a time. The test oracle.
pub mod reference {
    use super::{AdamW, Coeffs};
    use crate::Result;
    use crate::layernorm::check_all;

    /// As [`crate::Kernels::adamw`].
    /// `// param, grad, m, v: (n)`
    ///
    /// # Errors
    /// As [`crate::Kernels::adamw`].
    pub fn adamw(
        param: &mut [f32],
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        h: &AdamW,
        t: u64,
    ) -> Result<()> {
        let n = param.len();
        check_all(
            "adamw",
            &[
                ("grad", grad.len(), n),
                ("m", m.len(), n),
                ("v", v.len(), n),
            ],
        )?;
        let c = Coeffs::new(h, t)?;
        for i in 0..n {
            c.update(&mut param[i], grad[i], &mut m[i], &mut v[i]);
        }
        Ok(())
    }
}

/// AVX2: 8 lanes, the reference's operations in the same order (no FMA: bit-exact).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Coeffs;
    use crate::simd::avx2::{load, store};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn step(c: &Coeffs, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let w1 = _mm256_set1_ps(c.w1);
        let (b2, w2) = (_mm256_set1_ps(c.b2), _mm256_set1_ps(c.w2));
        let (bc2, eps) = (_mm256_set1_ps(c.bc2_sqrt), _mm256_set1_ps(c.eps));
        let ns = _mm256_set1_ps(c.neg_step);
        for i in (0..p.len()).step_by(8) {
            let (gv, mut pv) = (load(g, i), load(p, i));
            if let Some(d) = c.decay {
                pv = _mm256_mul_ps(pv, _mm256_set1_ps(d));
            }
            let mv = load(m, i);
            let mv = _mm256_add_ps(mv, _mm256_mul_ps(w1, _mm256_sub_ps(gv, mv)));
            let vv = _mm256_mul_ps(load(v, i), b2);
            let vv = _mm256_add_ps(vv, _mm256_mul_ps(_mm256_mul_ps(w2, gv), gv));
            let denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vv), bc2), eps);
            let pv = _mm256_add_ps(pv, _mm256_div_ps(_mm256_mul_ps(ns, mv), denom));
            store(m, i, mv);
            store(v, i, vv);
            store(p, i, pv);
        }
    }
}

/// AVX-512: 16 lanes, the reference's operations in the same order (no FMA: bit-exact).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Coeffs;
    use crate::simd::avx512::{load, store};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) fn step(c: &Coeffs, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let w1 = _mm512_set1_ps(c.w1);
        let (b2, w2) = (_mm512_set1_ps(c.b2), _mm512_set1_ps(c.w2));
        let (bc2, eps) = (_mm512_set1_ps(c.bc2_sqrt), _mm512_set1_ps(c.eps));
        let ns = _mm512_set1_ps(c.neg_step);
        for i in (0..p.len()).step_by(16) {
            let (gv, mut pv) = (load(g, i), load(p, i));
            if let Some(d) = c.decay {
                pv = _mm512_mul_ps(pv, _mm512_set1_ps(d));
            }
            let mv = load(m, i);
            let mv = _mm512_add_ps(mv, _mm512_mul_ps(w1, _mm512_sub_ps(gv, mv)));
            let vv = _mm512_mul_ps(load(v, i), b2);
            let vv = _mm512_add_ps(vv, _mm512_mul_ps(_mm512_mul_ps(w2, gv), gv));
            let denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vv), bc2), eps);
            let pv = _mm512_add_ps(pv, _mm512_div_ps(_mm512_mul_ps(ns, mv), denom));
            store(m, i, mv);
            store(v, i, vv);
            store(p, i, pv);
        }
    }
}
