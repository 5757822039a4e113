//! The quantized Linear, for no-grad inference: int8 weights per output channel (f32 scales),
//! packed once and kept in the graph beside the parameters; activations quantized per row on the
//! fly; the integer product through the kernels' `qgemm_i8`. It has no backward.

use crate::autograd::{Graph, ParamId, Var, shape_err};
use crate::kernels::qgemm::QWeights;
use crate::tensor::{Result, Tensor};

/// Packed int8 weights held by a [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QParamId(pub(crate) usize);

impl Graph {
    /// Keeps packed weights `(OUT, IN)` for [`Graph::qlinear`].
    pub fn add_qweights(&mut self, w: QWeights) -> QParamId {
        self.qweights.push(w);
        QParamId(self.qweights.len() - 1)
    }

    /// The packed weights `q`.
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] for an unknown id.
    pub fn qweights(&self, q: QParamId) -> Result<&QWeights> {
        self.qweights.get(q.0).ok_or_else(|| {
            shape_err(
                "qweights",
                format!("no quantized weight {} ({} held)", q.0, self.qweights.len()),
            )
        })
    }

    /// Replaces a parameter's value by `value` (e.g. its int8 form, kept for saving) and freezes
    /// it. The shape may change (a GPT-2 Conv1D weight `(in, out)` becomes `(out, in)` int8).
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] for an unknown id or while a tape is recorded.
    pub fn replace_param(&mut self, p: ParamId, value: Tensor) -> Result<()> {
        self.param_ref(p)?;
        self.check_no_tape("replace_param")?;
        let pr = &mut self.params[p.0];
        pr.shape = value.shape().to_vec();
        pr.value = value;
        pr.packed = None;
        pr.requires_grad = false;
        pr.transposed = false;
        self.param_grads[p.0] = Vec::new();
        Ok(())
    }

    /// Replaces a 2-D parameter's value by its transpose and freezes it, for inference: a GPT-2
    /// `Conv1D` weight `(in, out)` becomes `(out, in)`, which a decode step streams as dot
    /// products (the skinny GEMM's dot form) instead of as rows of 1.5-3 KiB (its axpy form).
    /// [`Graph::checkpoint_tensor`] gives the value back in its checkpoint form.
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] for an unknown id, a parameter that is not 2-D, or while a
    /// tape is recorded.
    pub fn transpose_param(&mut self, p: ParamId) -> Result<()> {
        self.param_ref(p)?;
        self.check_no_tape("transpose_param")?;
        let pr = &mut self.params[p.0];
        let &[r, c] = pr.shape.as_slice() else {
            return Err(shape_err(
                "transpose_param",
                format!("parameter {} is {:?}, not a matrix", pr.name, pr.shape),
            ));
        };
        pr.value = Tensor::from_vec(transpose(pr.value.as_slice(), r, c), &[c, r])?;
        pr.shape = vec![c, r];
        pr.packed = None;
        pr.requires_grad = false;
        pr.transposed = !pr.transposed;
        self.param_grads[p.0] = Vec::new();
        Ok(())
    }

    /// A parameter's value in its checkpoint form: the value itself, or its transpose back (in
    /// f32) when [`Graph::transpose_param`] laid it out for decoding.
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] for an unknown id.
    pub fn checkpoint_tensor(&self, p: ParamId) -> Result<std::borrow::Cow<'_, Tensor>> {
        let pr = self.param_ref(p)?;
        if !pr.transposed {
            return Ok(std::borrow::Cow::Borrowed(&pr.value));
        }
        let (r, c) = (pr.shape[0], pr.shape[1]);
        let back = Tensor::from_vec(transpose(pr.value.as_slice(), r, c), &[c, r])?;
        Ok(std::borrow::Cow::Owned(back))
    }

    /// Whether any parameter is laid out transposed from its checkpoint form.
    pub fn has_transposed_params(&self) -> bool {
        self.params.iter().any(|p| p.transposed)
    }

    /// `y = x W^T + b` through int8. `// x: (..., IN), W: packed (OUT, IN), b: (OUT) -> (..., OUT)`
    /// Inference only: the result carries no gradient.
    ///
    /// # Errors
    /// [`crate::tensor::Error::Shape`] for mismatched shapes, a stale handle, or an `x` that
    /// needs a gradient (the op has no backward).
    pub fn qlinear(&mut self, x: Var, w: QParamId, b: Option<Var>) -> Result<Var> {
        const OP: &str = "qlinear";
        if self.records(&[x]) {
            return Err(shape_err(
                OP,
                "int8 weights are inference-only: x needs a gradient".into(),
            ));
        }
        let xs = self.shape(x)?.to_vec();
        let qw = self.qweights(w)?;
        let (out, inp) = (qw.n(), qw.k());
        if xs.last() != Some(&inp) {
            return Err(shape_err(
                OP,
                format!("x {xs:?} needs last axis {inp} for w ({out}, {inp})"),
            ));
        }
        let rows = xs.iter().product::<usize>() / inp.max(1);
        let mut y = self.pool().take(rows * out);
        let (xv, qw) = (self.arg(OP, x)?.0, &self.qweights[w.0]);
        self.kernels.qgemm_i8(xv, rows, qw, &mut y)?;
        if let Some(b) = b {
            let (bv, bs) = self.arg(OP, b)?;
            if bs != [out] {
                return Err(shape_err(OP, format!("b {bs:?} for {out} outputs")));
            }
            for r in y.chunks_exact_mut(out.max(1)) {
                r.iter_mut().zip(bv).for_each(|(y, b)| *y += b);
            }
        }
        let mut shape = xs;
        if let Some(last) = shape.last_mut() {
            *last = out;
        }
        Ok(self.push(y, shape, crate::autograd::op::Op::Leaf))
    }
}

/// Quantizes `w` per output channel and packs it, with the int8 tensor `(OUT, IN)` (per-row
/// scales) that a checkpoint stores. `in_out`: `w` is `(IN, OUT)` (GPT-2's Conv1D).
/// `// w: (OUT, IN) or (IN, OUT) -> packed (OUT, IN)`
///
/// # Errors
/// [`crate::tensor::Error::Shape`] when `w` is not 2-D; kernel errors.
pub fn quantize_weight(
    kernels: &crate::kernels::Kernels,
    w: &Tensor,
    in_out: bool,
) -> Result<(QWeights, Tensor)> {
    let (out, inp, rows) = out_in_rows("quantize_weight", w, in_out)?;
    let qw = QWeights::per_channel(kernels, &rows, out, inp)?;
    let scales = qw.channel_scales().unwrap_or_default().to_vec();
    let t = Tensor::from_i8(qw.unpack(), scales, &[out, inp])?;
    Ok((qw, t))
}

/// Quantizes `w` per block of 32 along `IN` (f16 scale per block, ggml's Q8_0) and packs it.
/// The block format has no checkpoint form: the caller keeps the f32 parameter.
/// `// w: (OUT, IN) or (IN, OUT) -> packed (OUT, IN)`
///
/// # Errors
/// [`crate::tensor::Error::Shape`] when `w` is not 2-D; kernel errors.
pub fn quantize_weight_blocks(
    kernels: &crate::kernels::Kernels,
    w: &Tensor,
    in_out: bool,
) -> Result<QWeights> {
    let (out, inp, rows) = out_in_rows("quantize_weight_blocks", w, in_out)?;
    Ok(QWeights::block32(kernels, &rows, out, inp)?)
}

/// `w`'s values as rows of `(OUT, IN)`, transposed when `in_out`.
fn out_in_rows(op: &'static str, w: &Tensor, in_out: bool) -> Result<(usize, usize, Vec<f32>)> {
    let &[a, b] = w.shape() else {
        return Err(shape_err(
            op,
            format!("a Linear weight is 2-D, got {:?}", w.shape()),
        ));
    };
    let v = w.to_f32();
    let v = v.as_slice();
    if !in_out {
        return Ok((a, b, v.to_vec()));
    }
    let mut t = vec![0.0f32; a * b];
    for i in 0..a {
        for o in 0..b {
            t[o * a + i] = v[i * b + o];
        }
    }
    Ok((b, a, t))
}

/// Packs a stored int8 tensor `(OUT, IN)` (per-row scales) as it is: no requantization, so a
/// saved and reloaded model computes bit-identical results.
///
/// # Errors
/// [`crate::tensor::Error::Shape`] when `t` is not a 2-D int8 tensor with its row scales.
pub fn pack_int8(t: &Tensor) -> Result<QWeights> {
    let (&[out, inp], Some(scales)) = (t.shape(), t.i8_scales()) else {
        return Err(shape_err(
            "pack_int8",
            format!(
                "need a 2-D int8 tensor with row scales, got {} {:?}",
                t.dtype().name(),
                t.shape()
            ),
        ));
    };
    let q: Vec<i8> = t.raw_bytes().iter().map(|&b| b as i8).collect();
    Ok(QWeights::from_per_channel(&q, scales, out, inp)?)
}

/// The `(c, r)` transpose of row-major `(r, c)` values.
fn transpose(x: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; r * c];
    super::shape::transpose_into(x, &mut out, r, c, false);
    out
}
