//! GELU, element-wise, forward and backward, in its tanh approximation and its exact erf form.
//!
//! - Tanh (PyTorch `approximate='tanh'`): `0.5 x (1 + tanh(u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`,
//!   computed as the identical `x * sigmoid(2u)` so the left tail has no cancellation.
//!   Derivative: `s + x s (1 - s) 2 u'`, `u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)`, `s = sigmoid(2u)`.
//! - Erf: `x Phi(x)` with `Phi(x) = (1 + erf(x/sqrt2)) / 2 = erfc(-x/sqrt2) / 2` (no cancellation in
//!   the tail either). Derivative: `Phi(x) + x phi(x)`, `phi(x) = exp(-x^2/2) / sqrt(2 pi)`.
//!
//! Limits are taken where the formula would give `inf * 0`: gelu(+inf) = +inf, gelu(-inf) = -0,
//! gelu'(+inf) = 1, gelu'(-inf) = 0. NaN propagates.

use crate::error::check_len;
use crate::par::elementwise;
use crate::{Isa, Kernels, Result};

/// Which GELU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gelu {
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    Tanh,
    /// `0.5 x (1 + erf(x / sqrt2))`.
    Erf,
}

const K: f32 = 0.797_884_6; // sqrt(2/pi)
const C: f32 = 0.044_715;
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// The f64 oracle, and the f64 erfc it needs.
pub mod reference {
    use super::Gelu;

    /// erfc in f64 to ~1e-13 relative: Taylor series of erf below 3, Laplace's continued
    /// fraction (depth 80) at and above.
    pub fn erfc_f64(z: f64) -> f64 {
        if z.is_nan() {
            return z;
        }
        if z < 0.0 {
            return 2.0 - erfc_f64(-z);
        }
        if z < 3.0 {
            let (mut s, mut t, mut n) = (0.0, z, 0.0);
            loop {
                let term = t / (2.0 * n + 1.0);
                s += term;
                if term.abs() <= 1e-17 * s.abs() {
                    break;
                }
                n += 1.0;
                t *= -z * z / n;
            }
            1.0 - std::f64::consts::FRAC_2_SQRT_PI * s
        } else if z.is_infinite() {
            0.0
        } else {
            let mut k = z;
            for n in (1..=80).rev() {
                k = z + (n as f64 / 2.0) / k;
            }
            (-z * z).exp() / std::f64::consts::PI.sqrt() / k
        }
    }

    /// The standard normal CDF in f64.
    pub fn norm_cdf_f64(x: f64) -> f64 {
        0.5 * erfc_f64(-x * std::f64::consts::FRAC_1_SQRT_2)
    }

    /// `(gelu(x), gelu'(x))` in f64, with the module's limits at +-inf.
    pub fn gelu_f64(kind: Gelu, x: f64) -> (f64, f64) {
        if x.is_infinite() {
            return if x > 0.0 { (x, 1.0) } else { (-0.0, 0.0) };
        }
        match kind {
            Gelu::Tanh => {
                let (k, c) = ((2.0 / std::f64::consts::PI).sqrt(), 0.044715);
                let u2 = 2.0 * k * (x + c * x * x * x);
                let (s, om) = (1.0 / (1.0 + (-u2).exp()), 1.0 / (1.0 + u2.exp()));
                let du2 = 2.0 * k * (1.0 + 3.0 * c * x * x);
                (x * s, s + x * s * om * du2)
            }
            Gelu::Erf => {
                let phi = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                let cdf = norm_cdf_f64(x);
                (x * cdf, cdf + x * phi)
            }
        }
    }

    /// x: (n,) -> y: (n,).
    pub fn gelu_fwd(kind: Gelu, x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = gelu_f64(kind, x as f64).0 as f32;
        }
    }

    /// x, dy: (n,); dx: (n,) += dy * gelu'(x).
    pub fn gelu_bwd(kind: Gelu, x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((d, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
            *d = (*d as f64 + g as f64 * gelu_f64(kind, x as f64).1) as f32;
        }
    }
}

impl Kernels {
    /// GELU forward. x: (n,) -> y: (n,) (any shape, flattened).
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when `x` or `y` holds fewer than `n` elements.
    pub fn gelu_fwd(&self, kind: Gelu, x: &[f32], y: &mut [f32], n: usize) -> Result<()> {
        check_len("gelu_fwd", "x", x.len(), n)?;
        check_len("gelu_fwd", "y", y.len(), n)?;
        let isa = self.isa();
        elementwise(n, [x], [y], |[x], [y]| match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernels` holds a tier only when the CPU supports it.
            Isa::Avx512 => unsafe { avx512::fwd(kind, x, y) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { avx2::fwd(kind, x, y) },
            _ => scalar::fwd(kind, x, y),
        });
        Ok(())
    }

    /// GELU of a biased input, row by row: `y[r, c] = gelu(x[r, c] + bias[c])`, the same bits
    /// as [`Kernels::gelu_fwd`] of the sum, in one pass (the inference path's Linear bias and
    /// GELU). `// x, y: (rows, C), bias: (C)`. Runs on the calling thread.
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when `x` or `y` holds fewer than `rows * C` elements,
    /// [`crate::KernelError::BadShape`] when that overflows.
    pub fn gelu_bias_fwd(
        &self,
        kind: Gelu,
        x: &[f32],
        bias: &[f32],
        y: &mut [f32],
        rows: usize,
    ) -> Result<()> {
        const OP: &str = "gelu_bias_fwd";
        let c = bias.len();
        let n = crate::qgemm::mul(OP, rows, c)?;
        check_len(OP, "x", x.len(), n)?;
        check_len(OP, "y", y.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let isa = self.isa();
        for (x, y) in x[..n].chunks_exact(c).zip(y[..n].chunks_exact_mut(c)) {
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: a `Kernels` holds a tier only when the CPU supports it.
                Isa::Avx512 => unsafe { avx512::fwd_bias(kind, x, bias, y) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                Isa::Avx2 => unsafe { avx2::fwd_bias(kind, x, bias, y) },
                _ => scalar::fwd_bias(kind, x, bias, y),
            }
        }
        Ok(())
    }

    /// GELU backward. x, dy: (n,); dx: (n,) `+= dy * gelu'(x)`.
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when a slice holds fewer than `n` elements.
    pub fn gelu_bwd(
        &self,
        kind: Gelu,
        x: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        n: usize,
    ) -> Result<()> {
        self.gelu_bwd_to(kind, x, dy, dx, n, true)
    }

    /// [`Kernels::gelu_bwd`] writing `dx` instead of adding into it: for a gradient buffer that
    /// holds nothing yet, which then needs no zeroing pass and is never read.
    ///
    /// # Errors
    /// As [`Kernels::gelu_bwd`].
    pub fn gelu_bwd_overwrite(
        &self,
        kind: Gelu,
        x: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        n: usize,
    ) -> Result<()> {
        self.gelu_bwd_to(kind, x, dy, dx, n, false)
    }

    fn gelu_bwd_to(
        &self,
        kind: Gelu,
        x: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        n: usize,
        acc: bool,
    ) -> Result<()> {
        let op = if acc {
            "gelu_bwd"
        } else {
            "gelu_bwd_overwrite"
        };
        check_len(op, "x", x.len(), n)?;
        check_len(op, "dy", dy.len(), n)?;
        check_len(op, "dx", dx.len(), n)?;
        let isa = self.isa();
        elementwise(n, [x, dy], [dx], |[x, dy], [dx]| match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernels` holds a tier only when the CPU supports it.
            Isa::Avx512 => unsafe { avx512::bwd(kind, x, dy, dx, acc) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { avx2::bwd(kind, x, dy, dx, acc) },
            _ => scalar::bwd(kind, x, dy, dx, acc),
        });
        Ok(())
    }
}

mod scalar {
    use super::{C, Gelu, INV_SQRT_2PI, K};
    use crate::math::scalar::{exp, map, norm_cdf, norm_cdf_gauss, sigmoid};

    fn value(kind: Gelu, x: f32) -> f32 {
        let p = match kind {
            Gelu::Tanh => sigmoid(x * (2.0 * K + (2.0 * K * C) * x * x)).0,
            Gelu::Erf => norm_cdf(x),
        };
        if p == 0.0 { -0.0 } else { x * p }
    }

    fn grad(kind: Gelu, x: f32) -> f32 {
        let x2 = x * x;
        // p' = w * du; where w is 0 the x * p' term is 0 (its limit), even when x or du is inf.
        let (p, w, du) = match kind {
            Gelu::Tanh => {
                let (s, om) = sigmoid(x * (2.0 * K + (2.0 * K * C) * x2));
                (s, s * om, 2.0 * K + (6.0 * K * C) * x2)
            }
            Gelu::Erf => {
                let g = exp(-0.5 * x2);
                (norm_cdf_gauss(x, g), g, INV_SQRT_2PI)
            }
        };
        if w == 0.0 { p } else { p + x * (w * du) }
    }

    pub(super) fn fwd(kind: Gelu, x: &[f32], y: &mut [f32]) {
        map([x], [y], false, |[x]| [value(kind, x)]);
    }

    pub(super) fn bwd(kind: Gelu, x: &[f32], dy: &[f32], dx: &mut [f32], acc: bool) {
        map([x, dy], [dx], acc, |[x, g]| [g * grad(kind, x)]);
    }

    pub(super) fn fwd_bias(kind: Gelu, x: &[f32], b: &[f32], y: &mut [f32]) {
        map([x, b], [y], false, |[x, b]| [value(kind, x + b)]);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{C, Gelu, INV_SQRT_2PI, K};
    use crate::math::avx2::{exp, map, norm_cdf, norm_cdf_gauss, sigmoid};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    fn value(kind: Gelu, x: __m256) -> __m256 {
        let p = match kind {
            Gelu::Tanh => {
                let x2 = _mm256_mul_ps(x, x);
                let u2 = _mm256_mul_ps(
                    x,
                    _mm256_fmadd_ps(_mm256_set1_ps(2.0 * K * C), x2, _mm256_set1_ps(2.0 * K)),
                );
                sigmoid(u2).0
            }
            Gelu::Erf => norm_cdf(x),
        };
        let zero = _mm256_cmp_ps::<_CMP_EQ_OQ>(p, _mm256_setzero_ps());
        _mm256_blendv_ps(_mm256_mul_ps(x, p), _mm256_set1_ps(-0.0), zero)
    }

    #[target_feature(enable = "avx2,fma")]
    fn grad(kind: Gelu, x: __m256) -> __m256 {
        let x2 = _mm256_mul_ps(x, x);
        // p' = w * du; where w is 0 the x * p' term is 0 (its limit), even when x or du is inf.
        let (p, w, du) = match kind {
            Gelu::Tanh => {
                let u2 = _mm256_mul_ps(
                    x,
                    _mm256_fmadd_ps(_mm256_set1_ps(2.0 * K * C), x2, _mm256_set1_ps(2.0 * K)),
                );
                let (s, om) = sigmoid(u2);
                let du2 = _mm256_fmadd_ps(_mm256_set1_ps(6.0 * K * C), x2, _mm256_set1_ps(2.0 * K));
                (s, _mm256_mul_ps(s, om), du2)
            }
            Gelu::Erf => {
                let e = exp(_mm256_mul_ps(_mm256_set1_ps(-0.5), x2));
                (norm_cdf_gauss(x, e), e, _mm256_set1_ps(INV_SQRT_2PI))
            }
        };
        let zero = _mm256_cmp_ps::<_CMP_EQ_OQ>(w, _mm256_setzero_ps());
        _mm256_blendv_ps(_mm256_fmadd_ps(x, _mm256_mul_ps(w, du), p), p, zero)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fwd(kind: Gelu, x: &[f32], y: &mut [f32]) {
        map([x], [y], false, |[x]| [value(kind, x)]);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fwd_bias(kind: Gelu, x: &[f32], b: &[f32], y: &mut [f32]) {
        map([x, b], [y], false, |[x, b]| {
            [value(kind, _mm256_add_ps(x, b))]
        });
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn bwd(kind: Gelu, x: &[f32], dy: &[f32], dx: &mut [f32], acc: bool) {
        map([x, dy], [dx], acc, |[x, g]| {
            [_mm256_mul_ps(g, grad(kind, x))]
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{C, Gelu, INV_SQRT_2PI, K};
    use crate::math::avx512::{exp, map, norm_cdf, norm_cdf_gauss, sigmoid};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    fn value(kind: Gelu, x: __m512) -> __m512 {
        let p = match kind {
            Gelu::Tanh => {
                let x2 = _mm512_mul_ps(x, x);
                let u2 = _mm512_mul_ps(
                    x,
                    _mm512_fmadd_ps(_mm512_set1_ps(2.0 * K * C), x2, _mm512_set1_ps(2.0 * K)),
                );
                sigmoid(u2).0
            }
            Gelu::Erf => norm_cdf(x),
        };
        let zero = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(p, _mm512_setzero_ps());
        _mm512_mask_blend_ps(zero, _mm512_mul_ps(x, p), _mm512_set1_ps(-0.0))
    }

    #[target_feature(enable = "avx512f")]
    fn grad(kind: Gelu, x: __m512) -> __m512 {
        let x2 = _mm512_mul_ps(x, x);
        // p' = w * du; where w is 0 the x * p' term is 0 (its limit), even when x or du is inf.
        let (p, w, du) = match kind {
            Gelu::Tanh => {
                let u2 = _mm512_mul_ps(
                    x,
                    _mm512_fmadd_ps(_mm512_set1_ps(2.0 * K * C), x2, _mm512_set1_ps(2.0 * K)),
                );
                let (s, om) = sigmoid(u2);
                let du2 = _mm512_fmadd_ps(_mm512_set1_ps(6.0 * K * C), x2, _mm512_set1_ps(2.0 * K));
                (s, _mm512_mul_ps(s, om), du2)
            }
            Gelu::Erf => {
                let e = exp(_mm512_mul_ps(_mm512_set1_ps(-0.5), x2));
                (norm_cdf_gauss(x, e), e, _mm512_set1_ps(INV_SQRT_2PI))
            }
        };
        let zero = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(w, _mm512_setzero_ps());
        _mm512_mask_blend_ps(zero, _mm512_fmadd_ps(x, _mm512_mul_ps(w, du), p), p)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn fwd(kind: Gelu, x: &[f32], y: &mut [f32]) {
        map([x], [y], false, |[x]| [value(kind, x)]);
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn fwd_bias(kind: Gelu, x: &[f32], b: &[f32], y: &mut [f32]) {
        map([x, b], [y], false, |[x, b]| {
            [value(kind, _mm512_add_ps(x, b))]
        });
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn bwd(kind: Gelu, x: &[f32], dy: &[f32], dx: &mut [f32], acc: bool) {
        map([x, dy], [dx], acc, |[x, g]| {
            [_mm512_mul_ps(g, grad(kind, x))]
        });
    }
}
