//! Gradient checks of the gather / scatter ops that mixture-of-experts dispatch uses, and of
//! `permute`: finite differences, inputs used twice, backward twice (all inside `check`).

mod gradcheck;

use anvil::autograd::ops::gather::topk_indices;
use anvil::autograd::{Graph, Var};
use anvil::tensor::{Error, Tensor};
use gradcheck::{analytic, check, tensor};

#[test]
fn index_select_repeats_and_skips_rows() {
    // Row 1 twice, row 3 never: its gradient must stay zero, row 1's must sum.
    let rows = [1u32, 0, 1, 2];
    check("index_select", &[tensor(&[4, 3], 1)], |g, v| {
        g.index_select(v[0], &rows)
    });
    check("index_select 3-d", &[tensor(&[3, 2, 2], 2)], |g, v| {
        g.index_select(v[0], &[2, 2, 0])
    });
    check("index_select x twice", &[tensor(&[2, 3], 3)], |g, v| {
        let s = g.index_select(v[0], &[1, 0])?;
        g.mul(s, v[0])
    });
}

#[test]
fn index_add_sums_repeated_targets() {
    check("index_add", &[tensor(&[5, 3], 4)], |g, v| {
        g.index_add(v[0], &[2, 0, 2, 3, 2], 4)
    });
    check("index_add src twice", &[tensor(&[3, 2], 5)], |g, v| {
        let s = g.index_add(v[0], &[2, 1, 0], 3)?;
        g.mul(s, v[0])
    });
}

#[test]
fn take_and_topk() {
    let cols = [3u32, 1, 0, 0, 2, 3];
    check("take", &[tensor(&[3, 4], 6)], |g, v| g.take(v[0], &cols, 2));
    // Values spaced far wider than the finite-difference step, so no probe changes the selection.
    check("topk", &[spaced(&[2, 3, 5])], |g, v| Ok(g.topk(v[0], 2)?.0));
    check("topk x twice", &[spaced(&[2, 4])], |g, v| {
        let (t, _) = g.topk(v[0], 4)?;
        g.mul(t, v[0])
    });
}

/// Distinct values `0.1 * (k * 7 mod n)`: a permutation, spaced 0.1 apart.
fn spaced(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n).map(|k| 0.1 * ((k * 7) % n) as f32 - 1.0).collect();
    Tensor::from_vec(v, shape).unwrap()
}

#[test]
fn topk_orders_largest_first_with_stable_ties_and_nan_last() {
    let x = [1.0, 5.0, 5.0, f32::NAN, -2.0, 7.0];
    assert_eq!(topk_indices(&x, 6, 4), [5, 1, 2, 0]);
    assert_eq!(topk_indices(&x, 3, 2), [1, 2, 2, 1]);
    assert_eq!(topk_indices(&[f32::NAN, -1.0], 2, 2), [1, 0]);
}

#[test]
fn scale_rows_gradients_reach_weights_and_rows() {
    let ins = [tensor(&[4, 3], 9), tensor(&[4], 10)];
    check("scale_rows", &ins, |g, v| g.scale_rows(v[0], v[1]));
    // The weights are a column of x itself.
    check("scale_rows w from x", &[tensor(&[3, 3], 11)], |g, v| {
        let w = g.narrow(v[0], 1, 0, 1)?;
        g.scale_rows(v[0], w)
    });
}

#[test]
fn index_add_scaled_gradients_reach_parts_and_weights() {
    // Four rows of k = 2 slots, two parts. Output row 1 (slots 2, 3) gets three rows, slot 2
    // twice (its weight's gradient must sum), row 2 (slots 4, 5) none (stays zero).
    let ins = [tensor(&[3, 2], 20), tensor(&[2, 2], 21), tensor(&[8], 22)];
    let slots = [vec![2u32, 0, 3], vec![6, 2]];
    check("index_add_scaled", &ins, |g, v| {
        g.index_add_scaled(&v[..2], v[2], &slots, 2, 4)
    });
    check(
        "index_add_scaled 3-d parts",
        &[tensor(&[2, 2, 3], 23), tensor(&[3], 24)],
        |g, v| g.index_add_scaled(&v[..1], v[1], &[vec![2, 0]], 1, 3),
    );
    // One part twice, and the weights a column of that part.
    check(
        "index_add_scaled part twice",
        &[tensor(&[4, 3], 25)],
        |g, v| {
            let w = g.narrow(v[0], 1, 1, 1)?;
            let w = g.reshape(w, &[4])?;
            g.index_add_scaled(
                &[v[0], v[0]],
                w,
                &[vec![1, 2, 3, 0], vec![3, 0, 2, 1]],
                2,
                2,
            )
        },
    );
}

/// A graph function, as `check` takes.
type GraphFn<'a> = &'a dyn Fn(&mut Graph, &[Var]) -> Result<Var, Error>;

/// The three-op combine that `index_add_scaled` replaces in the mixture of experts.
fn combine_in_three_ops(
    g: &mut Graph,
    parts: &[Var],
    w: Var,
    slots: &[Vec<u32>],
    k: usize,
    n: usize,
) -> Result<Var, Error> {
    let mut scaled = Vec::new();
    let mut rows = Vec::new();
    for (&p, s) in parts.iter().zip(slots) {
        let we = g.index_select(w, s)?;
        scaled.push(g.scale_rows(p, we)?);
        rows.extend(s.iter().map(|&s| s / k as u32));
    }
    let all = g.concat(&scaled, 0)?;
    g.index_add(all, &rows, n)
}

#[test]
fn index_add_scaled_has_the_bits_of_scale_concat_index_add() {
    // Zeros in a part, a zero weight and a -0 weight, rows with one, two or no contributions.
    let mut a = tensor(&[5, 4], 30);
    a.make_mut()[4..8].fill(0.0);
    let b = tensor(&[3, 4], 31);
    let mut w = tensor(&[12], 32);
    w.make_mut()[3] = 0.0;
    w.make_mut()[7] = -0.0;
    let slots = vec![vec![0u32, 3, 4, 7, 10], vec![1, 5, 8]];
    let ins = [a, b, w];
    let fused = |g: &mut Graph, v: &[Var]| g.index_add_scaled(&v[..2], v[2], &slots, 2, 6);
    let three = |g: &mut Graph, v: &[Var]| combine_in_three_ops(g, &v[..2], v[2], &slots, 2, 6);
    let mut g = Graph::new().unwrap();
    let values = |g: &mut Graph, f: GraphFn| {
        let v: Vec<Var> = ins.iter().map(|t| g.input(t, false)).collect();
        let y = f(g, &v).unwrap();
        let out: Vec<u32> = g.value(y).unwrap().iter().map(|x| x.to_bits()).collect();
        g.clear();
        out
    };
    assert_eq!(
        values(&mut g, &fused),
        values(&mut g, &three),
        "forward bits"
    );
    let bits = |gs: Vec<Vec<f32>>| -> Vec<Vec<u32>> {
        gs.iter()
            .map(|v| v.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    assert_eq!(
        bits(analytic(&mut g, &ins, &fused)),
        bits(analytic(&mut g, &ins, &three)),
        "gradient bits"
    );
}

#[test]
fn logsumexp_rows() {
    check("logsumexp", &[tensor(&[3, 5], 17)], |g, v| {
        g.logsumexp(v[0])
    });
    check("logsumexp squared", &[tensor(&[2, 4], 18)], |g, v| {
        let l = g.logsumexp(v[0])?;
        g.mul(l, l)
    });
    let mut g = Graph::new().unwrap();
    let x = g.input(
        &Tensor::from_vec(vec![1000.0, 1000.0, -1.0, -2.0], &[2, 2]).unwrap(),
        false,
    );
    let l = g.logsumexp(x).unwrap();
    let v = g.value(l).unwrap();
    assert_eq!(g.shape(l).unwrap(), [2]);
    assert!(
        (v[0] - (1000.0 + 2f32.ln())).abs() < 1e-3,
        "no overflow: {v:?}"
    );
    assert!((v[1] - (-1.0 + (1.0 + (-1f32).exp()).ln())).abs() < 1e-6);
}

#[test]
fn permute_any_axes() {
    let x = [tensor(&[2, 3, 4, 5], 12)];
    for axes in [[0, 2, 1, 3], [3, 2, 1, 0], [1, 3, 0, 2], [0, 1, 2, 3]] {
        check(&format!("permute {axes:?}"), &x, |g, v| {
            g.permute(v[0], &axes)
        });
    }
    check("permute x twice", &[tensor(&[3, 3], 13)], |g, v| {
        let t = g.permute(v[0], &[1, 0])?;
        g.add(t, v[0])
    });
}

#[test]
fn permute_matches_transpose_and_index_math() {
    let mut g = Graph::new().unwrap();
    let t = tensor(&[2, 3, 4], 14);
    let x = g.input(&t, false);
    let p = g.permute(x, &[2, 0, 1]).unwrap();
    assert_eq!(g.shape(p).unwrap(), [4, 2, 3]);
    let (xv, pv) = (t.as_slice(), g.value(p).unwrap());
    for a in 0..2 {
        for b in 0..3 {
            for c in 0..4 {
                assert_eq!(pv[(c * 2 + a) * 3 + b], xv[(a * 3 + b) * 4 + c]);
            }
        }
    }
    let tr = g.transpose(x).unwrap();
    let pt = g.permute(x, &[0, 2, 1]).unwrap();
    assert_eq!(g.value(tr).unwrap(), g.value(pt).unwrap());
}

#[test]
fn bad_indices_and_axes_are_errors_naming_the_op() {
    let mut g = Graph::new().unwrap();
    let a = g.input(&tensor(&[2, 3], 15), true);
    let w = g.input(&tensor(&[3], 16), true);
    let op = |r: Result<anvil::autograd::Var, Error>| match r {
        Err(Error::Shape { op, detail }) => format!("{op}: {detail}"),
        other => panic!("expected a shape error, got {other:?}"),
    };
    assert!(op(g.index_select(a, &[0, 2])).starts_with("index_select: index 2"));
    assert!(op(g.index_add(a, &[0], 4)).starts_with("index_add: 1 indices"));
    assert!(op(g.index_add(a, &[0, 5], 4)).starts_with("index_add: index 5"));
    assert!(op(g.take(a, &[0, 3], 1)).starts_with("take: index 3"));
    assert!(op(g.take(a, &[0], 1)).starts_with("take: 1 indices"));
    assert!(op(g.topk(a, 4).map(|r| r.0)).starts_with("topk: k = 4"));
    assert!(op(g.scale_rows(a, w)).starts_with("scale_rows: weights [3]"));
    let s2 = [vec![0u32, 1]];
    assert!(op(g.index_add_scaled(&[], w, &[], 1, 3)).starts_with("index_add_scaled: no parts"));
    assert!(
        op(g.index_add_scaled(&[a], w, &s2, 2, 3)).starts_with("index_add_scaled: weights [3]")
    );
    assert!(op(g.index_add_scaled(&[a], w, &[], 1, 3)).starts_with("index_add_scaled: 0 slot"));
    assert!(
        op(g.index_add_scaled(&[a], w, &[vec![0]], 1, 3))
            .starts_with("index_add_scaled: part [2, 3] with 1 slots")
    );
    assert!(
        op(g.index_add_scaled(&[a], w, &[vec![0, 3]], 1, 3))
            .starts_with("index_add_scaled: index 3")
    );
    assert!(op(g.permute(a, &[0, 0])).starts_with("permute: axes [0, 0]"));
    assert!(op(g.permute(a, &[1])).starts_with("permute: axes [1]"));
    let s = g.input(&Tensor::scalar(1.0), false);
    assert!(op(g.index_select(s, &[0])).contains("scalar"));
}
