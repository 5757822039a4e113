//! The mixture-of-experts layer: balancing losses at their balanced values, gradients through
//! routing checked by finite differences, capacity dropping, dropless equivalence, statistics.

use anvil::autograd::{Graph, ParamId, Rng, Var};
use anvil::models::{load_balancing_loss, router_z_loss};
use anvil::nn::{Builder, Moe, RandomInit, Routing};
use anvil::tensor::Tensor;

const D: usize = 6;
const FF: usize = 10;
const E: usize = 4;

/// Central-difference step and tolerance for the f32 forward (evaluated in f64 afterwards):
/// with h = 1e-3 the truncation error is ~1e-6 relative and f32 rounding of a loss of order 1
/// divided by 2h is ~1e-4, so 2e-3 absolute + 1e-2 relative separates right from wrong.
const H: f32 = 1e-3;
const ATOL: f64 = 2e-3;
const RTOL: f64 = 1e-2;

fn layer(routing: Routing, seed: u64) -> (Graph, Moe, Vec<(String, ParamId)>) {
    let mut g = Graph::new().unwrap();
    let mut names = Vec::new();
    let mut src = RandomInit::new(seed);
    let moe = {
        let mut b = Builder::new(&mut g, &mut src, &mut names);
        Moe::mixtral(&mut b, "moe", D, FF, E, routing).unwrap()
    };
    // Larger weights than the 0.02 default, so routing is decisive and outputs are O(1).
    for (_, p) in &names {
        let (v, _) = g.param_update(*p).unwrap();
        v.iter_mut().for_each(|x| *x *= 25.0);
    }
    (g, moe, names)
}

fn tokens(n: usize, seed: u64) -> Tensor {
    let mut r = Rng::new(seed);
    Tensor::from_vec(
        (0..n * D).map(|_| 2.0 * r.next_f32() - 1.0).collect(),
        &[n, D],
    )
    .unwrap()
}

/// `sum(y * probe) + aux`, the scalar whose gradients are checked.
fn objective(g: &mut Graph, moe: &Moe, x: Var, with_aux: bool) -> Var {
    let o = moe.forward(g, x, None).unwrap();
    let n = g.value(o.y).unwrap().len();
    let probe: Vec<f32> = (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
    let probe = g.input(
        &Tensor::from_vec(probe, g.shape(o.y).unwrap()).unwrap(),
        false,
    );
    let m = g.mul(o.y, probe).unwrap();
    let s = g.sum(m).unwrap();
    if !with_aux {
        return s;
    }
    let aux = load_balancing_loss(g, &[o.router_logits], E, moe.routing.top_k).unwrap();
    let z = router_z_loss(g, &[o.router_logits]).unwrap();
    let t = g.add(s, aux).unwrap();
    let z = g.scale(z, 0.1).unwrap();
    g.add(t, z).unwrap()
}

fn loss_at(g: &mut Graph, moe: &Moe, x: &Tensor, with_aux: bool) -> f64 {
    let xv = g.input(x, false);
    let l = objective(g, moe, xv, with_aux);
    let v = f64::from(g.value(l).unwrap()[0]);
    g.clear();
    v
}

fn gradcheck(name: &str, routing: Routing, with_aux: bool) {
    let (mut g, moe, names) = layer(routing, 3);
    let x = tokens(9, 4);
    let xv = g.input(&x, true);
    let l = objective(&mut g, &moe, xv, with_aux);
    let grads = g.backward(l).unwrap();
    let dx = grads.get(xv).unwrap().to_vec();
    let check = |what: &str, j: usize, a: f32, up: f64, down: f64| {
        let fd = (up - down) / (2.0 * f64::from(H));
        let a = f64::from(a);
        assert!(
            (a - fd).abs() <= ATOL + RTOL * fd.abs(),
            "{name}: {what}[{j}]: analytic {a} vs finite difference {fd}"
        );
    };
    for (j, &a) in dx.iter().enumerate() {
        let mut xp = x.clone();
        xp.make_mut()[j] += H;
        let up = loss_at(&mut g, &moe, &xp, with_aux);
        xp.make_mut()[j] -= 2.0 * H;
        let down = loss_at(&mut g, &moe, &xp, with_aux);
        check("x", j, a, up, down);
    }
    // The router and one weight of each expert projection.
    for (pname, p) in names
        .iter()
        .filter(|(n, _)| n.contains("gate") || n.ends_with("w2.weight"))
    {
        let grad = g.param_grad(*p).unwrap().unwrap().to_vec();
        let picks: Vec<usize> = if pname.contains("gate") {
            (0..grad.len()).collect()
        } else {
            vec![0, grad.len() / 2, grad.len() - 1]
        };
        for j in picks {
            let base = g.param_value(*p).unwrap().2[j];
            g.param_update(*p).unwrap().0[j] = base + H;
            let up = loss_at(&mut g, &moe, &x, with_aux);
            g.param_update(*p).unwrap().0[j] = base - H;
            let down = loss_at(&mut g, &moe, &x, with_aux);
            g.param_update(*p).unwrap().0[j] = base;
            check(pname, j, grad[j], up, down);
        }
    }
}

#[test]
fn gradients_through_routing_match_finite_differences() {
    gradcheck("top-2 renormalised", Routing::top_k(2), false);
    gradcheck("top-2 with aux and z losses", Routing::top_k(2), true);
    gradcheck(
        "top-1 raw probabilities",
        Routing {
            renormalize: false,
            ..Routing::top_k(1)
        },
        true,
    );
    gradcheck("top-3", Routing::top_k(3), false);
    let capped = Routing {
        capacity_factor: Some(0.75),
        ..Routing::top_k(2)
    };
    gradcheck("top-2 with capacity", capped, true);
}

#[test]
fn uniform_router_gives_the_balanced_aux_values() {
    for k in 1..=3 {
        let mut g = Graph::new().unwrap();
        let logits = g.input(&Tensor::zeros(&[12, E]).unwrap(), true);
        let aux = load_balancing_loss(&mut g, &[logits], E, k).unwrap();
        let v = g.value(aux).unwrap()[0];
        // HF's top-k form is k at uniform probabilities; with k = 1 it is the Switch loss, 1.
        assert!((v - k as f32).abs() < 1e-6, "k = {k}: {v}");
        let z = router_z_loss(&mut g, &[logits]).unwrap();
        let want = (E as f32).ln().powi(2);
        assert!((g.value(z).unwrap()[0] - want).abs() < 1e-5);
    }
}

#[test]
fn dropped_tokens_pass_through_and_infinite_capacity_is_dropless() {
    let x = tokens(16, 8);
    let run = |routing: Routing| {
        let (mut g, moe, _) = layer(routing, 5);
        let xv = g.input(&x, false);
        let o = moe.forward(&mut g, xv, None).unwrap();
        (g.value(o.y).unwrap().to_vec(), o.stats)
    };
    let (free, free_stats) = run(Routing::top_k(2));
    assert_eq!(free_stats.dropped, 0);
    assert_eq!(free_stats.load.iter().sum::<usize>(), 16 * 2);
    let huge = Routing {
        capacity_factor: Some(1e6),
        ..Routing::top_k(2)
    };
    let (inf, _) = run(huge);
    assert_eq!(
        inf.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        free.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "capacity = infinity must equal dropless bit for bit"
    );
    // Capacity of one slot per expert: at most E of the 32 slots survive.
    let tight = Routing {
        capacity_factor: Some(E as f32 / 32.0),
        ..Routing::top_k(2)
    };
    let (y, stats) = run(tight);
    assert!(stats.load.iter().all(|&l| l <= 1), "{stats:?}");
    assert_eq!(stats.dropped + stats.load.iter().sum::<usize>(), 32);
    // Tokens none of whose slots survived add exactly zero (the residual passes them on).
    let (mut g, moe, _) = layer(Routing::top_k(2), 5);
    let xv = g.input(&x, false);
    let o = moe.forward(&mut g, xv, None).unwrap();
    let idx = anvil::autograd::ops::gather::topk_indices(g.value(o.router_logits).unwrap(), E, 2);
    let (kept, _) = anvil::nn::moe_assign(&idx, 16, E, 2, tight.capacity_factor);
    let mut zero_rows = 0;
    for t in 0..16u32 {
        let survives = kept.iter().flatten().any(|&s| s / 2 == t);
        let row = &y[t as usize * D..][..D];
        if !survives {
            zero_rows += 1;
            assert!(row.iter().all(|&v| v == 0.0), "dropped token {t}: {row:?}");
        } else {
            assert!(row.iter().any(|&v| v != 0.0));
        }
    }
    assert!(zero_rows >= 16 - E, "{zero_rows}");
}

#[test]
fn statistics_and_jitter() {
    let (mut g, mut moe, _) = layer(Routing::top_k(2), 6);
    let x = tokens(10, 9);
    let xv = g.input(&x, false);
    let a = moe.forward(&mut g, xv, None).unwrap();
    let ln_e = (E as f32).ln();
    assert!(
        a.stats.entropy > 0.0 && a.stats.entropy < ln_e,
        "{:?}",
        a.stats
    );
    let base = g.value(a.router_logits).unwrap().to_vec();
    moe.routing.jitter = 0.1;
    let j1 = moe.forward(&mut g, xv, Some(&mut Rng::new(1))).unwrap();
    let j1 = g.value(j1.router_logits).unwrap().to_vec();
    let j2 = moe.forward(&mut g, xv, Some(&mut Rng::new(1))).unwrap();
    assert_eq!(
        j1,
        g.value(j2.router_logits).unwrap(),
        "seeded jitter repeats"
    );
    assert_ne!(j1, base, "jitter changed nothing");
    let eval = moe.forward(&mut g, xv, None).unwrap();
    assert_eq!(
        g.value(eval.router_logits).unwrap(),
        base,
        "no jitter in eval"
    );
}
