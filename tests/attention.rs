//! Fused attention kernels against the f64 reference on every tier (odd sizes, Tq < Tk, GQA,
//! windows, padding with fully padded rows, large and small logits); the reference against a
//! naive dense f64 composition `softmax(Q K^T scale + mask) V`; errors; thread independence; the
//! packed inference variant against the reference on the padded batch.

mod common;

use anvil::kernels::attention::{Attn, AttnDims, AttnGrads, AttnSpec, PackedQkv, reference};
use anvil::kernels::{KernelError, Kernels};
use common::{noise, single_thread, tiers};
use proptest::prelude::*;

const EPS: f64 = f32::EPSILON as f64;

/// One random problem: dims, spec, inputs and the output gradient.
#[derive(Clone, Debug)]
struct Case {
    dims: AttnDims,
    spec: AttnSpec,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    mask: Option<Vec<bool>>,
    dout: Vec<f32>,
}

impl Case {
    fn attn(&self) -> Attn<'_> {
        Attn {
            dims: self.dims,
            spec: self.spec,
            q: &self.q,
            k: &self.k,
            v: &self.v,
            key_mask: self.mask.as_deref(),
        }
    }

    /// Error bound relative to a tensor's largest magnitude. A score `s = scale q.k` carries an
    /// absolute f32 error up to `(D + 2) eps |scale| sum|q_c k_c|` (the dot product in k order
    /// plus the scale), which becomes a relative error of each probability (twice: the numerator
    /// and the normaliser); the sums over keys and rows (`Tk`, `Tq * group` terms, f32 partial
    /// sums) and over D add `eps` per term; `exp` adds 1.5 ulp. Factor 4 covers the backward's
    /// extra products (`dP`, `dP - D`, then `dS K`), each bounded the same way.
    fn rtol(&self) -> f64 {
        let d = self.dims;
        let sum_qk = d.d as f64 * amax(&self.q) * amax(&self.k);
        let e_s = (d.d + 2) as f64 * EPS * (self.spec.scale as f64).abs() * sum_qk;
        4.0 * (2.0 * e_s + (d.d + d.tk + d.tq * d.group() + 16) as f64 * EPS)
    }
}

fn amax(x: &[f32]) -> f64 {
    x.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64))
}

impl Case {
    /// The size the errors of `[out, dq, dk, dv]` scale with, besides the result's own: a
    /// probability's error times `|v|` (out), times `|dO|` (dv), and `dS`'s error, which is
    /// relative to `|dP| <= D |dO| |v|` (the cancellation in `dP - rowsum(dO O)`), times
    /// `scale |k|` (dq) or `scale |q|` (dk).
    fn floors(&self) -> [f64; 4] {
        let dp = self.dims.d as f64 * amax(&self.dout) * amax(&self.v);
        let sc = (self.spec.scale as f64).abs();
        [
            amax(&self.v),
            sc * dp * amax(&self.k),
            sc * dp * amax(&self.q),
            amax(&self.dout),
        ]
    }
}

/// Every element of `got` within `rtol * max(max|want|, floor)` (+ the smallest normal) of `want`.
fn assert_close(
    what: &str,
    got: &[f32],
    want: &[f32],
    rtol: f64,
    floor: f64,
) -> Result<(), TestCaseError> {
    let scale = amax(want).max(floor);
    let tol = rtol * scale + f32::MIN_POSITIVE as f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs();
        prop_assert!(
            err <= tol,
            "{what}[{i}]: got {g} want {w} (err {err:e} > tol {tol:e})"
        );
    }
    Ok(())
}

fn case() -> impl Strategy<Value = Case> {
    cases(80, false)
}

/// Cases of up to `tk_max` keys; `one_row`: a single query row (a KV-cache decode step), which
/// takes the kernels' no-transpose path.
fn cases(tk_max: usize, one_row: bool) -> impl Strategy<Value = Case> {
    let dims = (
        1usize..3,
        1usize..=tk_max,
        1usize..3,
        1usize..4,
        1usize..=70,
    )
        .prop_flat_map(move |(batch, tk, hkv, group, d)| {
            (1..=if one_row { 1 } else { tk }).prop_map(move |tq| AttnDims {
                batch,
                tq,
                tk,
                hq: hkv * group,
                hkv,
                d,
            })
        });
    let knobs = (
        any::<bool>(),
        prop::option::of(1usize..90),
        prop::sample::select(vec![0.0f32, 1.0, 4.0, 1e-3]),
        prop::option::of(any::<u64>()),
        any::<u64>(),
    );
    (dims, knobs).prop_map(|(dims, (causal, window, sc, pad, seed))| {
        let scale = if sc == 0.0 {
            1.0 / (dims.d as f32).sqrt()
        } else {
            sc
        };
        let window = window.filter(|_| causal);
        let spec = AttnSpec {
            scale,
            causal,
            window,
        };
        let (nq, nkv) = (
            dims.batch * dims.tq * dims.hq * dims.d,
            dims.batch * dims.tk * dims.hkv * dims.d,
        );
        // Padding: about one key in four hidden, and batch 0 entirely padded one time in four.
        let mask = pad.map(|bits| {
            let r = noise(bits, dims.batch * dims.tk);
            let all_padded = bits % 4 == 0;
            (0..dims.batch * dims.tk)
                .map(|i| r[i] > -0.5 && !(all_padded && i < dims.tk))
                .collect()
        });
        Case {
            dims,
            spec,
            q: noise(seed, nq),
            k: noise(seed ^ 1, nkv),
            v: noise(seed ^ 2, nkv),
            mask,
            dout: noise(seed ^ 3, nq),
        }
    })
}

fn run_fwd(k: Kernels, c: &Case) -> (Vec<f32>, Vec<f32>) {
    let d = c.dims;
    let mut out = vec![f32::NAN; d.batch * d.tq * d.hq * d.d];
    let mut lse = vec![f32::NAN; d.lse_len()];
    k.attention_fwd(&c.attn(), &mut out, &mut lse).unwrap();
    (out, lse)
}

/// Gradients added onto a base of `base` everywhere.
fn run_bwd(k: Kernels, c: &Case, out: &[f32], lse: &[f32], base: f32) -> [Vec<f32>; 3] {
    let (mut dq, mut dk, mut dv) = (
        vec![base; c.q.len()],
        vec![base; c.k.len()],
        vec![base; c.v.len()],
    );
    let g = AttnGrads {
        dq: &mut dq,
        dk: &mut dk,
        dv: &mut dv,
    };
    k.attention_bwd(&c.attn(), out, lse, &c.dout, g).unwrap();
    [dq, dk, dv]
}

fn ref_bwd(c: &Case) -> [Vec<f32>; 3] {
    let (mut dq, mut dk, mut dv) = (
        vec![0.0; c.q.len()],
        vec![0.0; c.k.len()],
        vec![0.0; c.v.len()],
    );
    reference::attention_bwd(&c.attn(), &c.dout, &mut dq, &mut dk, &mut dv);
    [dq, dk, dv]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn every_tier_matches_the_reference(c in case()) {
        let d = c.dims;
        let mut want = vec![0.0f32; d.batch * d.tq * d.hq * d.d];
        reference::attention_fwd(&c.attn(), &mut want);
        let want_g = ref_bwd(&c);
        let rtol = c.rtol();
        for k in tiers() {
            let (out, lse) = run_fwd(k, &c);
            let isa = format!("{:?}", k.isa());
            let fl = c.floors();
            assert_close(&format!("{isa} out"), &out, &want, rtol, fl[0])?;
            let g = run_bwd(k, &c, &out, &lse, 0.0);
            let names = ["dq", "dk", "dv"];
            for (i, (got, want)) in g.iter().zip(&want_g).enumerate() {
                assert_close(&format!("{isa} {}", names[i]), got, want, rtol, fl[i + 1])?;
            }
        }
    }

    /// One query row (a decode step) against up to 200 keys: several key blocks, head sizes
    /// that are not a whole number of vectors, grouped heads, windows and padding.
    #[test]
    fn one_query_row_matches_the_reference_on_every_tier(c in cases(200, true)) {
        let d = c.dims;
        let mut want = vec![0.0f32; d.batch * d.tq * d.hq * d.d];
        reference::attention_fwd(&c.attn(), &mut want);
        for k in tiers() {
            let (out, lse) = run_fwd(k, &c);
            let isa = format!("{:?}", k.isa());
            assert_close(&format!("{isa} out"), &out, &want, c.rtol(), c.floors()[0])?;
            prop_assert!(lse.iter().all(|x| !x.is_nan()), "{isa}: lse not written");
        }
    }
}

/// Dense f64 composition: `P = softmax(Q K^T scale + mask)` per (b, h), an all-masked row giving
/// zeros, `O = P V`; backward `dV = P^T dO`, `dS = P (dO V^T - rowsum(P dO V^T))`,
/// `dQ = scale dS K`, `dK = scale dS^T Q`. The mask is written from the rules in the docs, not
/// from the kernel's helpers.
fn dense(c: &Case) -> [Vec<f64>; 4] {
    let AttnDims {
        batch,
        tq,
        tk,
        hq,
        hkv,
        d,
    } = c.dims;
    let sc = c.spec.scale as f64;
    let mut o = vec![0.0; c.q.len()];
    let (mut dq, mut dk, mut dv) = (
        vec![0.0; c.q.len()],
        vec![0.0; c.k.len()],
        vec![0.0; c.v.len()],
    );
    for b in 0..batch {
        for h in 0..hq {
            let g = h / (hq / hkv);
            let qi = |i: usize, x: usize| ((b * tq + i) * hq + h) * d + x;
            let kj = |j: usize, x: usize| ((b * tk + j) * hkv + g) * d + x;
            let mut p = vec![vec![0.0f64; tk]; tq];
            for (i, pr) in p.iter_mut().enumerate() {
                let pos = tk - tq + i;
                let s: Vec<f64> = (0..tk)
                    .map(|j| {
                        let vis = (!c.spec.causal || j <= pos)
                            && c.spec.window.is_none_or(|w| pos < j + w)
                            && c.mask.as_ref().is_none_or(|m| m[b * tk + j]);
                        if !vis {
                            return f64::NEG_INFINITY;
                        }
                        let dot: f64 = (0..d)
                            .map(|x| c.q[qi(i, x)] as f64 * c.k[kj(j, x)] as f64)
                            .sum();
                        dot * sc
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if m > f64::NEG_INFINITY {
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    for j in 0..tk {
                        pr[j] = (s[j] - m).exp() / z;
                    }
                }
            }
            for i in 0..tq {
                let dp: Vec<f64> = (0..tk)
                    .map(|j| {
                        (0..d)
                            .map(|x| c.dout[qi(i, x)] as f64 * c.v[kj(j, x)] as f64)
                            .sum()
                    })
                    .collect();
                let rs: f64 = (0..tk).map(|j| p[i][j] * dp[j]).sum();
                for j in 0..tk {
                    let ds = p[i][j] * (dp[j] - rs);
                    for x in 0..d {
                        o[qi(i, x)] += p[i][j] * c.v[kj(j, x)] as f64;
                        dv[kj(j, x)] += p[i][j] * c.dout[qi(i, x)] as f64;
                        dq[qi(i, x)] += sc * ds * c.k[kj(j, x)] as f64;
                        dk[kj(j, x)] += sc * ds * c.q[qi(i, x)] as f64;
                    }
                }
            }
        }
    }
    [o, dq, dk, dv]
}

/// The reference rounds an f64 result to f32 once: half an ulp, plus the f64 sums' own error.
const REF_RTOL: f64 = 1e-6;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn reference_equals_the_dense_f64_composition(c in case()) {
        let [o, dq, dk, dv] = dense(&c);
        let d = c.dims;
        let mut out = vec![0.0f32; d.batch * d.tq * d.hq * d.d];
        reference::attention_fwd(&c.attn(), &mut out);
        let g = ref_bwd(&c);
        let f = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<_>>();
        let fl = c.floors();
        assert_close("out", &out, &f(&o), REF_RTOL, fl[0])?;
        for (i, (got, want)) in g.iter().zip([dq, dk, dv]).enumerate() {
            assert_close(["dq", "dk", "dv"][i], got, &f(&want), REF_RTOL, fl[i + 1])?;
        }
    }
}

fn fixed_case(dims: AttnDims, spec: AttnSpec, mask: Option<Vec<bool>>) -> Case {
    let (nq, nkv) = (
        dims.batch * dims.tq * dims.hq * dims.d,
        dims.batch * dims.tk * dims.hkv * dims.d,
    );
    Case {
        dims,
        spec,
        q: noise(1, nq),
        k: noise(2, nkv),
        v: noise(3, nkv),
        mask,
        dout: noise(4, nq),
    }
}

#[test]
fn fully_padded_rows_give_zeros_and_no_gradient() {
    let dims = AttnDims {
        batch: 2,
        tq: 5,
        tk: 5,
        hq: 2,
        hkv: 1,
        d: 8,
    };
    // Batch 0 has no real key at all.
    let mask = (0..10).map(|i| i >= 5).collect();
    let c = fixed_case(dims, AttnSpec::causal(8), Some(mask));
    for k in tiers() {
        let (out, lse) = run_fwd(k, &c);
        let half = out.len() / 2;
        assert!(out[..half].iter().all(|&x| x == 0.0), "{:?}", k.isa());
        assert!(lse[..lse.len() / 2].iter().all(|&x| x == f32::NEG_INFINITY));
        assert!(out[half..].iter().all(|x| x.is_finite() && *x != 0.0));
        let [dq, dk, dv] = run_bwd(k, &c, &out, &lse, 1.0);
        // The base of ones is untouched for batch 0.
        for g in [&dq, &dk, &dv] {
            assert!(g[..g.len() / 2].iter().all(|&x| x == 1.0), "{:?}", k.isa());
        }
    }
}

/// Sequences of several 64-row blocks, where the causal products run in bands that skip the
/// masked triangle of each diagonal block: square (the diagonal at shift 0), fewer queries than
/// keys (shifted diagonals, a block the diagonal enters part-way), a window, and padding.
#[test]
fn long_causal_sequences_match_the_reference_on_every_tier() {
    let shapes = [
        (150, 150, None, false),
        (90, 200, None, false),
        (130, 190, Some(70), true),
    ];
    for (tq, tk, window, padded) in shapes {
        let dims = AttnDims {
            batch: 2,
            tq,
            tk,
            hq: 4,
            hkv: 2,
            d: 40,
        };
        let spec = AttnSpec {
            window,
            ..AttnSpec::causal(40)
        };
        let mask = padded.then(|| (0..2 * tk).map(|i| i % 7 != 3).collect());
        let c = fixed_case(dims, spec, mask);
        let mut want = vec![0.0f32; c.q.len()];
        reference::attention_fwd(&c.attn(), &mut want);
        let want_g = ref_bwd(&c);
        let fl = c.floors();
        for k in tiers() {
            let what = format!("{:?} tq {tq} tk {tk} window {window:?}", k.isa());
            let (out, lse) = run_fwd(k, &c);
            assert_close(&format!("{what} out"), &out, &want, c.rtol(), fl[0]).unwrap();
            let g = run_bwd(k, &c, &out, &lse, 0.0);
            for (i, (got, want)) in g.iter().zip(&want_g).enumerate() {
                let name = format!("{what} {}", ["dq", "dk", "dv"][i]);
                assert_close(&name, got, want, c.rtol(), fl[i + 1]).unwrap();
            }
        }
    }
}

#[test]
fn same_bits_on_one_and_two_threads() {
    let dims = AttnDims {
        batch: 2,
        tq: 150,
        tk: 200,
        hq: 6,
        hkv: 2,
        d: 64,
    };
    let spec = AttnSpec {
        window: Some(70),
        ..AttnSpec::causal(64)
    };
    let c = fixed_case(dims, spec, None);
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for k in tiers() {
        let run = || {
            let (out, lse) = run_fwd(k, &c);
            let g = run_bwd(k, &c, &out, &lse, 0.0);
            (out, lse, g)
        };
        let a = single_thread(run);
        let b = two.install(run);
        assert!(
            a == b,
            "{:?}: results differ between 1 and 2 threads",
            k.isa()
        );
        // Backward adds: onto a base of ones it gives 1 + the gradient, up to one rounding at
        // 1's ulp per block added in (a 64-row block: group * ceil(Tq / 64) into dk and dv,
        // ceil(Tk / 64) into dq; 13 here at most).
        let steps = (dims.hq / dims.hkv * dims.tq.div_ceil(64) + dims.tk.div_ceil(64)) as f32;
        let ones = run_bwd(k, &c, &a.0, &a.1, 1.0);
        for (g1, g0) in ones.iter().zip(&a.2) {
            for (&x, &y) in g1.iter().zip(g0) {
                let tol = steps * f32::EPSILON * (1.0 + y.abs());
                assert!((x - 1.0 - y).abs() <= tol, "{x} vs 1 + {y}");
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let k = Kernels::best();
    let dims = AttnDims {
        batch: 1,
        tq: 4,
        tk: 4,
        hq: 3,
        hkv: 2,
        d: 4,
    };
    let c = fixed_case(AttnDims { hq: 2, ..dims }, AttnSpec::causal(4), None);
    let (mut out, mut lse) = (vec![0.0; 64], vec![0.0; 16]);
    let run = |dims: AttnDims,
               spec: AttnSpec,
               mask: Option<&[bool]>,
               out: &mut [f32],
               lse: &mut [f32]| {
        let a = Attn {
            dims,
            spec,
            key_mask: mask,
            ..c.attn()
        };
        k.attention_fwd(&a, out, lse)
    };
    let spec = AttnSpec::causal(4);
    let shape = |r: Result<(), KernelError>| matches!(r, Err(KernelError::BadShape { .. }));
    assert!(shape(run(dims, spec, None, &mut out, &mut lse)), "Hq % Hkv");
    let tq5 = AttnDims {
        tq: 5,
        hq: 2,
        ..dims
    };
    assert!(shape(run(tq5, spec, None, &mut out, &mut lse)), "Tq > Tk");
    let ok = AttnDims { hq: 2, ..dims };
    let w0 = AttnSpec {
        window: Some(0),
        ..spec
    };
    assert!(shape(run(ok, w0, None, &mut out, &mut lse)), "window 0");
    let nc = AttnSpec {
        causal: false,
        window: Some(2),
        ..spec
    };
    assert!(
        shape(run(ok, nc, None, &mut out, &mut lse)),
        "window without causal"
    );
    let len = |r: Result<(), KernelError>, arg: &str| matches!(r, Err(KernelError::BadLength { arg: a, .. }) if a == arg);
    assert!(len(
        run(ok, spec, Some(&[true; 3]), &mut out, &mut lse),
        "key_mask"
    ));
    assert!(len(run(ok, spec, None, &mut out[..10], &mut lse), "out"));
    assert!(len(run(ok, spec, None, &mut out, &mut lse[..2]), "lse"));
    let big = AttnDims {
        d: 5,
        hq: 2,
        ..dims
    };
    assert!(len(run(big, spec, None, &mut out, &mut lse), "q"));
    assert!(run(ok, spec, None, &mut out, &mut lse).is_ok());
}

/// A packed problem for [`Kernels::attention_packed_fwd`]: sentence lengths (0 included), the
/// fused projection `qkv: (N, 3 H D)` and its bias.
#[derive(Clone, Debug)]
struct Packed {
    lens: Vec<usize>,
    heads: usize,
    d: usize,
    scale: f32,
    qkv: Vec<f32>,
    bias: Vec<f32>,
}

impl Packed {
    fn input(&self) -> PackedQkv<'_> {
        PackedQkv {
            qkv: &self.qkv,
            bias: &self.bias,
            lens: &self.lens,
            heads: self.heads,
            d: self.d,
            scale: self.scale,
        }
    }

    /// The same problem padded to a batch `(B, T, H, D)` with q, k, v split and biased, pad
    /// positions holding large values that the key mask must hide.
    fn padded(&self) -> Case {
        let (h, d) = (self.heads, self.d);
        let (b, t, hd) = (
            self.lens.len(),
            self.lens.iter().max().unwrap().max(&1),
            h * d,
        );
        let dims = AttnDims {
            batch: b,
            tq: *t,
            tk: *t,
            hq: h,
            hkv: h,
            d,
        };
        let mut parts = [
            vec![1e3f32; b * t * hd],
            vec![1e3; b * t * hd],
            vec![1e3; b * t * hd],
        ];
        let mut mask = vec![false; b * t];
        let mut row = 0;
        for (s, &l) in self.lens.iter().enumerate() {
            for i in 0..l {
                mask[s * t + i] = true;
                for (p, part) in parts.iter_mut().enumerate() {
                    for c in 0..hd {
                        part[(s * t + i) * hd + c] =
                            self.qkv[row * 3 * hd + p * hd + c] + self.bias[p * hd + c];
                    }
                }
                row += 1;
            }
        }
        let [q, k, v] = parts;
        Case {
            dims,
            spec: AttnSpec {
                scale: self.scale,
                causal: false,
                window: None,
            },
            q,
            k,
            v,
            mask: Some(mask),
            dout: Vec::new(),
        }
    }
}

fn packed() -> impl Strategy<Value = Packed> {
    let sizes = (
        prop::collection::vec(0usize..=70, 1..5),
        1usize..4,
        1usize..=70,
    );
    let knobs = (prop::sample::select(vec![0.0f32, 4.0, 1e-3]), any::<u64>());
    (sizes, knobs).prop_map(|((lens, heads, d), (sc, seed))| {
        let n: usize = lens.iter().sum();
        let scale = if sc == 0.0 {
            1.0 / (d as f32).sqrt()
        } else {
            sc
        };
        Packed {
            qkv: noise(seed, n * 3 * heads * d),
            bias: noise(seed ^ 1, 3 * heads * d),
            lens,
            heads,
            d,
            scale,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Packed attention from the fused projection equals the f64 reference run on the padded,
    /// split and biased batch with its key mask, row for row, on every tier.
    #[test]
    fn packed_matches_the_padded_reference_on_every_tier(p in packed()) {
        let c = p.padded();
        let t = c.dims.tq;
        let hd = p.heads * p.d;
        let mut want = vec![0.0f32; c.q.len()];
        reference::attention_fwd(&c.attn(), &mut want);
        // The real rows of the padded result, packed.
        let want: Vec<f32> = p.lens.iter().enumerate()
            .flat_map(|(s, &l)| want[s * t * hd..(s * t + l) * hd].to_vec())
            .collect();
        for k in tiers() {
            let mut out = vec![f32::NAN; want.len()];
            k.attention_packed_fwd(&p.input(), &mut out).unwrap();
            assert_close(&format!("{:?} packed", k.isa()), &out, &want, c.rtol(), amax(&c.v))?;
        }
    }
}

#[test]
fn packed_bad_shapes_are_errors() {
    let k = Kernels::best();
    let p = Packed {
        lens: vec![2, 3],
        heads: 2,
        d: 4,
        scale: 0.5,
        qkv: noise(1, 5 * 24),
        bias: noise(2, 24),
    };
    let mut out = vec![0.0; 5 * 8];
    assert!(k.attention_packed_fwd(&p.input(), &mut out).is_ok());
    let len = |r: Result<(), KernelError>, arg: &str| matches!(r, Err(KernelError::BadLength { arg: a, .. }) if a == arg);
    assert!(len(
        k.attention_packed_fwd(&p.input(), &mut out[..39]),
        "out"
    ));
    let long = PackedQkv {
        lens: &[2, 4],
        ..p.input()
    };
    assert!(len(k.attention_packed_fwd(&long, &mut [0.0; 48]), "qkv"));
    let bias = PackedQkv {
        bias: &p.bias[..23],
        ..p.input()
    };
    assert!(matches!(
        k.attention_packed_fwd(&bias, &mut out),
        Err(KernelError::BadShape { .. })
    ));
}
