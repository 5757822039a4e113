//! SiLU (`x * sigmoid(x)`) and SwiGLU (`silu(gate) * up`), element-wise, forward and backward.
//!
//! `silu'(x) = s + x s (1 - s)` with `s = sigmoid(x)`; `s` and `1 - s` both come from
//! `exp(-|x|)` (no cancellation). Limits where the formula gives `inf * 0`: silu(+inf) = +inf,
//! silu(-inf) = -0, silu'(+inf) = 1, silu'(-inf) = 0. NaN propagates.
//! SwiGLU backward: `dgate += dy * up * silu'(gate)`, `dup += dy * silu(gate)`.

use crate::error::check_len;
use crate::par::elementwise;
use crate::{Isa, Kernels, Result};

/// The f64 oracle.
pub mod reference {
    /// `(silu(x), silu'(x))` in f64, with the module's limits at +-inf.
    pub fn silu_f64(x: f64) -> (f64, f64) {
        if x.is_infinite() {
            return if x > 0.0 { (x, 1.0) } else { (-0.0, 0.0) };
        }
        let (s, om) = (1.0 / (1.0 + (-x).exp()), 1.0 / (1.0 + x.exp()));
        (x * s, s + x * s * om)
    }

    /// x: (n,) -> y: (n,).
    pub fn silu_fwd(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = silu_f64(x as f64).0 as f32;
        }
    }

    /// x, dy: (n,); dx: (n,) += dy * silu'(x).
    pub fn silu_bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((d, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
            *d = (*d as f64 + g as f64 * silu_f64(x as f64).1) as f32;
        }
    }

    /// gate, up: (n,) -> y: (n,) = silu(gate) * up.
    pub fn swiglu_fwd(gate: &[f32], up: &[f32], y: &mut [f32]) {
        for ((y, &g), &u) in y.iter_mut().zip(gate).zip(up) {
            *y = (silu_f64(g as f64).0 * u as f64) as f32;
        }
    }

    /// gate, up, dy: (n,); dgate += dy * up * silu'(gate); dup += dy * silu(gate).
    pub fn swiglu_bwd(gate: &[f32], up: &[f32], dy: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
        for i in 0..dy.len() {
            let (v, d) = silu_f64(gate[i] as f64);
            let g = dy[i] as f64;
            dgate[i] = (dgate[i] as f64 + g * up[i] as f64 * d) as f32;
            dup[i] = (dup[i] as f64 + g * v) as f32;
        }
    }
}

macro_rules! dispatch {
    ($isa:expr, $f:ident, $ins:expr, $outs:expr) => {
        match $isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernels` holds a tier only when the CPU supports it.
            Isa::Avx512 => unsafe { avx512::$f($ins, $outs) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { avx2::$f($ins, $outs) },
            _ => scalar::$f($ins, $outs),
        }
    };
}

impl Kernels {
    /// SiLU forward. x: (n,) -> y: (n,).
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when a slice holds fewer than `n` elements.
    pub fn silu_fwd(&self, x: &[f32], y: &mut [f32], n: usize) -> Result<()> {
        check_len("silu_fwd", "x", x.len(), n)?;
        check_len("silu_fwd", "y", y.len(), n)?;
        let isa = self.isa();
        elementwise(n, [x], [y], |i, o| dispatch!(isa, silu_fwd, i, o));
        Ok(())
    }

    /// SiLU backward. x, dy: (n,); dx: (n,) `+= dy * silu'(x)`.
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when a slice holds fewer than `n` elements.
    pub fn silu_bwd(&self, x: &[f32], dy: &[f32], dx: &mut [f32], n: usize) -> Result<()> {
        check_len("silu_bwd", "x", x.len(), n)?;
        check_len("silu_bwd", "dy", dy.len(), n)?;
        check_len("silu_bwd", "dx", dx.len(), n)?;
        let isa = self.isa();
        elementwise(n, [x, dy], [dx], |i, o| dispatch!(isa, silu_bwd, i, o));
        Ok(())
    }

    /// SwiGLU forward. gate, up: (n,) -> y: (n,) `= silu(gate) * up`.
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when a slice holds fewer than `n` elements.
    pub fn swiglu_fwd(&self, gate: &[f32], up: &[f32], y: &mut [f32], n: usize) -> Result<()> {
        check_len("swiglu_fwd", "gate", gate.len(), n)?;
        check_len("swiglu_fwd", "up", up.len(), n)?;
        check_len("swiglu_fwd", "y", y.len(), n)?;
        let isa = self.isa();
        elementwise(n, [gate, up], [y], |i, o| dispatch!(isa, swiglu_fwd, i, o));
        Ok(())
    }

    /// SwiGLU backward. gate, up, dy: (n,); dgate: (n,) `+= dy * up * silu'(gate)`,
    /// dup: (n,) `+= dy * silu(gate)`.
    ///
    /// # Errors
    /// [`crate::KernelError::BadLength`] when a slice holds fewer than `n` elements.
    pub fn swiglu_bwd(
        &self,
        gate: &[f32],
        up: &[f32],
        dy: &[f32],
        dgate: &mut [f32],
        dup: &mut [f32],
        n: usize,
    ) -> Result<()> {
        self.swiglu_bwd_to(gate, up, dy, [dgate, dup], n, true)
    }

    /// [`Kernels::swiglu_bwd`] writing `dgate` and `dup` instead of adding into them: for
    /// gradient buffers that hold nothing yet, which then need no zeroing pass and are never
    /// read (a mixture's expert backward: five streams of `n` values become three).
    ///
    /// # Errors
    /// As [`Kernels::swiglu_bwd`].
    pub fn swiglu_bwd_overwrite(
        &self,
        gate: &[f32],
        up: &[f32],
        dy: &[f32],
        dgate: &mut [f32],
        dup: &mut [f32],
        n: usize,
    ) -> Result<()> {
        self.swiglu_bwd_to(gate, up, dy, [dgate, dup], n, false)
    }

    fn swiglu_bwd_to(
        &self,
        gate: &[f32],
        up: &[f32],
        dy: &[f32],
        [dgate, dup]: [&mut [f32]; 2],
        n: usize,
        acc: bool,
    ) -> Result<()> {
        let op = if acc {
            "swiglu_bwd"
        } else {
            "swiglu_bwd_overwrite"
        };
        check_len(op, "gate", gate.len(), n)?;
        check_len(op, "up", up.len(), n)?;
        check_len(op, "dy", dy.len(), n)?;
        check_len(op, "dgate", dgate.len(), n)?;
        check_len(op, "dup", dup.len(), n)?;
        let isa = self.isa();
        elementwise(n, [gate, up, dy], [dgate, dup], |i, o| match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `Kernels` holds a tier only when the CPU supports it.
            Isa::Avx512 => unsafe { avx512::swiglu_bwd(i, o, acc) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { avx2::swiglu_bwd(i, o, acc) },
            _ => scalar::swiglu_bwd(i, o, acc),
        });
        Ok(())
    }
}

mod scalar {
    use crate::math::scalar::{map, sigmoid};

    /// `(silu(x), silu'(x))`, with the limits at +-inf.
    fn both(x: f32) -> (f32, f32) {
        let (s, om) = sigmoid(x);
        let so = s * om;
        let v = if s == 0.0 { -0.0 } else { x * s };
        (v, if so == 0.0 { s } else { s + x * so })
    }

    pub(super) fn silu_fwd([x]: [&[f32]; 1], [y]: [&mut [f32]; 1]) {
        map([x], [y], false, |[x]| [both(x).0]);
    }

    pub(super) fn silu_bwd([x, dy]: [&[f32]; 2], [dx]: [&mut [f32]; 1]) {
        map([x, dy], [dx], true, |[x, g]| [g * both(x).1]);
    }

    pub(super) fn swiglu_fwd([g, u]: [&[f32]; 2], [y]: [&mut [f32]; 1]) {
        map([g, u], [y], false, |[g, u]| [both(g).0 * u]);
    }

    pub(super) fn swiglu_bwd([g, u, dy]: [&[f32]; 3], [dg, du]: [&mut [f32]; 2], acc: bool) {
        map([g, u, dy], [dg, du], acc, |[g, u, d]| {
            let (v, dv) = both(g);
            [d * u * dv, d * v]
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::math::avx2::{map, sigmoid};
    use std::arch::x86_64::*;

    /// `(silu(x), silu'(x))`, with the limits at +-inf.
    #[target_feature(enable = "avx2,fma")]
    fn both(x: __m256) -> (__m256, __m256) {
        let (s, om) = sigmoid(x);
        let so = _mm256_mul_ps(s, om);
        let zero = _mm256_setzero_ps();
        let v = _mm256_blendv_ps(
            _mm256_mul_ps(x, s),
            _mm256_set1_ps(-0.0),
            _mm256_cmp_ps::<_CMP_EQ_OQ>(s, zero),
        );
        let d = _mm256_blendv_ps(
            _mm256_fmadd_ps(x, so, s),
            s,
            _mm256_cmp_ps::<_CMP_EQ_OQ>(so, zero),
        );
        (v, d)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn silu_fwd([x]: [&[f32]; 1], [y]: [&mut [f32]; 1]) {
        map([x], [y], false, |[x]| [both(x).0]);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn silu_bwd([x, dy]: [&[f32]; 2], [dx]: [&mut [f32]; 1]) {
        map([x, dy], [dx], true, |[x, g]| [_mm256_mul_ps(g, both(x).1)]);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn swiglu_fwd([g, u]: [&[f32]; 2], [y]: [&mut [f32]; 1]) {
        map([g, u], [y], false, |[g, u]| [_mm256_mul_ps(both(g).0, u)]);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn swiglu_bwd([g, u, dy]: [&[f32]; 3], [dg, du]: [&mut [f32]; 2], acc: bool) {
        map([g, u, dy], [dg, du], acc, |[g, u, d]| {
            let (v, dv) = both(g);
            [_mm256_mul_ps(_mm256_mul_ps(d, u), dv), _mm256_mul_ps(d, v)]
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::math::avx512::{map, sigmoid};
    use std::arch::x86_64::*;

    /// `(silu(x), silu'(x))`, with the limits at +-inf.
    #[target_feature(enable = "avx512f")]
    fn both(x: __m512) -> (__m512, __m512) {
        let (s, om) = sigmoid(x);
        let so = _mm512_mul_ps(s, om);
        let zero = _mm512_setzero_ps();
        let v = _mm512_mask_blend_ps(
            _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(s, zero),
            _mm512_mul_ps(x, s),
            _mm512_set1_ps(-0.0),
        );
        let d = _mm512_mask_blend_ps(
            _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(so, zero),
            _mm512_fmadd_ps(x, so, s),
            s,
        );
        (v, d)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn silu_fwd([x]: [&[f32]; 1], [y]: [&mut [f32]; 1]) {
        map([x], [y], false, |[x]| [both(x).0]);
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn silu_bwd([x, dy]: [&[f32]; 2], [dx]: [&mut [f32]; 1]) {
        map([x, dy], [dx], true, |[x, g]| [_mm512_mul_ps(g, both(x).1)]);
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn swiglu_fwd([g, u]: [&[f32]; 2], [y]: [&mut [f32]; 1]) {
        map([g, u], [y], false, |[g, u]| [_mm512_mul_ps(both(g).0, u)]);
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn swiglu_bwd([g, u, dy]: [&[f32]; 3], [dg, du]: [&mut [f32]; 2], acc: bool) {
        map([g, u, dy], [dg, du], acc, |[g, u, d]| {
            let (v, dv) = both(g);
            [_mm512_mul_ps(_mm512_mul_ps(d, u), dv), _mm512_mul_ps(d, v)]
        });
    }
}
