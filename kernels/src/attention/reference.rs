//! The scalar oracle: each query row's attention in f64 from the f32 inputs, whole rows at a
//! time (no blocking, no online softmax), rounded to f32 once at the end.

use super::{Attn, AttnDims};

/// The visible keys of row `i` (query head `h` of batch `b`) and their probabilities, in f64.
fn probs(a: &Attn, b: usize, h: usize, i: usize) -> Vec<(usize, f64)> {
    let AttnDims {
        tq, tk, hq, hkv, d, ..
    } = a.dims;
    let g = h / a.dims.group();
    let q = &a.q[((b * tq + i) * hq + h) * d..][..d];
    let keys: Vec<usize> = a.range(i).filter(|&j| a.real(b, j)).collect();
    let s: Vec<f64> = keys
        .iter()
        .map(|&j| {
            let k = &a.k[((b * tk + j) * hkv + g) * d..][..d];
            let dot: f64 = q.iter().zip(k).map(|(&x, &y)| x as f64 * y as f64).sum();
            dot * a.spec.scale as f64
        })
        .collect();
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|&x| (x - m).exp()).collect();
    let sum: f64 = e.iter().sum();
    keys.into_iter().zip(e).map(|(j, e)| (j, e / sum)).collect()
}

/// `out: (B, Tq, Hq, D)`; empty rows are zeros.
///
/// # Panics
/// If a slice is shorter than the dims need (the kernels return errors instead).
pub fn attention_fwd(a: &Attn, out: &mut [f32]) {
    let AttnDims {
        batch,
        tq,
        tk,
        hq,
        hkv,
        d,
    } = a.dims;
    for b in 0..batch {
        for h in 0..hq {
            let g = h / a.dims.group();
            for i in 0..tq {
                let mut o = vec![0.0f64; d];
                for (j, p) in probs(a, b, h, i) {
                    let v = &a.v[((b * tk + j) * hkv + g) * d..][..d];
                    o.iter_mut().zip(v).for_each(|(o, &v)| *o += p * v as f64);
                }
                let dst = &mut out[((b * tq + i) * hq + h) * d..][..d];
                dst.iter_mut().zip(o).for_each(|(d, o)| *d = o as f32);
            }
        }
    }
}

/// Adds the gradients of `sum(out * dout)` into `dq, dk, dv` (shapes as q, k, v), in f64 per
/// row, recomputing the probabilities: `dv_j += p_j dO`, `dp_j = dO . v_j`,
/// `ds_j = p_j (dp_j - sum_l p_l dp_l)`, `dq += scale ds_j k_j`, `dk_j += scale ds_j q`.
///
/// # Panics
/// If a slice is shorter than the dims need.
pub fn attention_bwd(a: &Attn, dout: &[f32], dq: &mut [f32], dk: &mut [f32], dv: &mut [f32]) {
    let AttnDims {
        batch,
        tq,
        tk,
        hq,
        hkv,
        d,
    } = a.dims;
    let mut gk = vec![0.0f64; dk.len()];
    let mut gv = vec![0.0f64; dv.len()];
    let sc = a.spec.scale as f64;
    for b in 0..batch {
        for h in 0..hq {
            let g = h / a.dims.group();
            for i in 0..tq {
                let qo = ((b * tq + i) * hq + h) * d;
                let (q, go) = (&a.q[qo..][..d], &dout[qo..][..d]);
                let kv = |j: usize| ((b * tk + j) * hkv + g) * d;
                let p = probs(a, b, h, i);
                let dp: Vec<f64> = p
                    .iter()
                    .map(|&(j, _)| {
                        let v = &a.v[kv(j)..][..d];
                        go.iter().zip(v).map(|(&x, &y)| x as f64 * y as f64).sum()
                    })
                    .collect();
                let dsum: f64 = p.iter().zip(&dp).map(|(&(_, p), dp)| p * dp).sum();
                let mut gq = vec![0.0f64; d];
                for (&(j, pj), dpj) in p.iter().zip(&dp) {
                    let ds = pj * (dpj - dsum) * sc;
                    for c in 0..d {
                        gv[kv(j) + c] += pj * go[c] as f64;
                        gk[kv(j) + c] += ds * q[c] as f64;
                        gq[c] += ds * a.k[kv(j) + c] as f64;
                    }
                }
                for (dst, g) in dq[qo..][..d].iter_mut().zip(gq) {
                    *dst = (*dst as f64 + g) as f32;
                }
            }
        }
    }
    for (dst, g) in dk.iter_mut().zip(gk).chain(dv.iter_mut().zip(gv)) {
        *dst = (*dst as f64 + g) as f32;
    }
}
