//! Generation: each sampler's distribution checked by drawing on a fixed logit vector, penalties,
//! UTF-8-safe streaming and stop strings, greedy determinism across runs and thread counts,
//! batched generation equal to each prompt alone, and beam search (width 1 = greedy, and a case
//! small enough to check by hand).

use anvil::generate::{
    BeamConfig, CachedLm, Event, Finish, GenerateConfig, Generator, Lm, Sampler, Sampling,
    StopText, Utf8Stream, apply_penalties, beam_search, generate,
};
use anvil::models::{Arch, Config, Model, Result};

/// Draws per distribution check.
const DRAWS: usize = 20_000;
/// A frequency may differ from its probability by this many standard errors
/// (`sqrt(p (1 - p) / DRAWS)`); 5 sigma makes a false alarm about one in 3.5 million per token.
const SIGMAS: f64 = 5.0;

/// A fixed logit vector with distinct values (some negative, one repeated to test ties).
const LOGITS: [f32; 10] = [1.0, 3.0, -0.5, 2.5, 0.0, 2.0, -2.0, 1.5, 0.5, -1.0];

fn softmax(l: &[f32], t: f32) -> Vec<f64> {
    let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = l.iter().map(|&x| f64::from((x - m) / t).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

/// Frequencies of `DRAWS` samples.
fn frequencies(cfg: Sampling, seed: u64) -> Vec<f64> {
    let mut s = Sampler::new(cfg, seed).unwrap();
    let mut n = vec![0usize; LOGITS.len()];
    for _ in 0..DRAWS {
        let mut l = LOGITS.to_vec();
        n[s.sample(&mut l, &[], &[]) as usize] += 1;
    }
    n.iter().map(|&c| c as f64 / DRAWS as f64).collect()
}

fn assert_matches(freq: &[f64], want: &[f64], what: &str) {
    for (i, (&f, &p)) in freq.iter().zip(want).enumerate() {
        if p == 0.0 {
            assert_eq!(f, 0.0, "{what}: token {i} drawn but excluded");
            continue;
        }
        let se = (p * (1.0 - p) / DRAWS as f64).sqrt();
        assert!(
            (f - p).abs() <= SIGMAS * se,
            "{what}: token {i}: frequency {f} vs probability {p}"
        );
    }
}

/// The expected distribution: `softmax(l / t)` restricted to `keep`, renormalised.
fn restricted(t: f32, keep: &[usize]) -> Vec<f64> {
    let p = softmax(&LOGITS, t);
    let s: f64 = keep.iter().map(|&i| p[i]).sum();
    (0..p.len())
        .map(|i| if keep.contains(&i) { p[i] / s } else { 0.0 })
        .collect()
}

#[test]
fn temperature_sampling_matches_softmax() {
    for t in [1.0, 0.5, 2.0] {
        let f = frequencies(Sampling::with_temperature(t), 7);
        assert_matches(&f, &softmax(&LOGITS, t), &format!("temperature {t}"));
    }
}

#[test]
fn temperature_zero_is_greedy_whatever_the_filters() {
    let cfg = Sampling {
        top_k: Some(3),
        top_p: Some(0.5),
        min_p: Some(0.1),
        ..Sampling::greedy()
    };
    let f = frequencies(cfg, 3);
    assert_eq!(f[1], 1.0, "argmax is token 1");
    // Ties go to the lowest id.
    let mut s = Sampler::new(Sampling::greedy(), 0).unwrap();
    assert_eq!(s.sample(&mut [0.0, 2.0, 2.0, 1.0], &[], &[]), 1);
}

#[test]
fn top_k_never_leaves_the_k() {
    // The three largest logits: ids 1 (3.0), 3 (2.5), 5 (2.0).
    let cfg = Sampling {
        top_k: Some(3),
        ..Sampling::with_temperature(1.0)
    };
    let f = frequencies(cfg, 11);
    assert_matches(&f, &restricted(1.0, &[1, 3, 5]), "top-k 3");
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_p() {
    let p = softmax(&LOGITS, 1.0);
    // Sorted: 1 (0.36), 3 (0.22), 5 (0.13), 7 (0.08), ... ; the smallest set reaching 0.7 is
    // {1, 3, 5} when p1 + p3 < 0.7 <= p1 + p3 + p5: derived here rather than assumed.
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let top_p = 0.7;
    let mut acc = 0.0;
    let mut keep = Vec::new();
    for &i in &order {
        keep.push(i);
        acc += p[i];
        if acc >= top_p {
            break;
        }
    }
    assert!(keep.len() >= 2 && keep.len() < p.len(), "a non-trivial cut");
    let cfg = Sampling {
        top_p: Some(top_p as f32),
        ..Sampling::with_temperature(1.0)
    };
    let mut s = Sampler::new(cfg.clone(), 0).unwrap();
    let dist = s.distribution(&LOGITS);
    let kept: Vec<usize> = dist.iter().map(|d| d.0 as usize).collect();
    assert_eq!(kept, keep, "the nucleus");
    let f = frequencies(cfg, 5);
    assert_matches(&f, &restricted(1.0, &keep), "top-p 0.7");
}

#[test]
fn min_p_drops_tokens_below_the_fraction_of_the_best() {
    let p = softmax(&LOGITS, 1.0);
    let pmax = p.iter().copied().fold(0.0, f64::max);
    let min_p = 0.2;
    let keep: Vec<usize> = (0..p.len()).filter(|&i| p[i] >= min_p * pmax).collect();
    assert!(keep.len() >= 2 && keep.len() < p.len(), "a non-trivial cut");
    let cfg = Sampling {
        min_p: Some(min_p as f32),
        ..Sampling::with_temperature(1.0)
    };
    let f = frequencies(cfg, 9);
    assert_matches(&f, &restricted(1.0, &keep), "min-p 0.2");
}

#[test]
fn filters_compose_top_k_then_top_p() {
    // top-k 4 leaves {1, 3, 5, 7}; top-p 0.8 of those (renormalised) then cuts further.
    let k4 = restricted(1.0, &[1, 3, 5, 7]);
    let (mut acc, mut keep) = (0.0, Vec::new());
    for i in [1, 3, 5, 7] {
        keep.push(i);
        acc += k4[i];
        if acc >= 0.8 {
            break;
        }
    }
    let cfg = Sampling {
        top_k: Some(4),
        top_p: Some(0.8),
        ..Sampling::with_temperature(1.0)
    };
    let f = frequencies(cfg, 13);
    assert_matches(&f, &restricted(1.0, &keep), "top-k 4 then top-p 0.8");
}

#[test]
fn same_seed_same_draws_and_different_seeds_differ() {
    let draw = |seed| {
        let mut s = Sampler::new(Sampling::with_temperature(1.0), seed).unwrap();
        (0..64)
            .map(|_| s.sample(&mut LOGITS.to_vec(), &[], &[]))
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(42), draw(42));
    assert_ne!(draw(42), draw(43));
}

#[test]
fn penalties_change_what_they_should() {
    let rep = Sampling {
        repetition_penalty: 2.0,
        ..Sampling::greedy()
    };
    let mut l = LOGITS.to_vec();
    // Token 1 (3.0) seen twice: divided once; token 6 (-2.0): multiplied; others untouched.
    apply_penalties(&rep, &mut l, &[1, 6, 1], &[]);
    assert_eq!(l[1], 1.5);
    assert_eq!(l[6], -4.0);
    for i in [0, 2, 3, 4, 5, 7, 8, 9] {
        assert_eq!(l[i], LOGITS[i], "token {i}");
    }
    // Greedy now picks token 3 (2.5) instead of the penalised 1.
    let mut s = Sampler::new(rep, 0).unwrap();
    assert_eq!(s.sample(&mut LOGITS.to_vec(), &[1], &[]), 3);

    let pres = Sampling {
        presence_penalty: 0.75,
        frequency_penalty: 0.25,
        ..Sampling::greedy()
    };
    let mut l = LOGITS.to_vec();
    // Presence once plus frequency per occurrence, over the generated tokens only.
    apply_penalties(&pres, &mut l, &[5, 5, 5], &[1, 1, 4]);
    assert_eq!(l[1], 3.0 - 0.75 - 0.5);
    assert_eq!(l[4], 0.0 - 0.75 - 0.25);
    assert_eq!(
        l[5], LOGITS[5],
        "context-only tokens are not presence-penalised"
    );
}

#[test]
fn bad_sampling_settings_are_refused() {
    for cfg in [
        Sampling::with_temperature(-1.0),
        Sampling {
            top_p: Some(0.0),
            ..Sampling::default()
        },
        Sampling {
            min_p: Some(1.5),
            ..Sampling::default()
        },
        Sampling {
            repetition_penalty: 0.0,
            ..Sampling::default()
        },
    ] {
        let e = Sampler::new(cfg.clone(), 0).unwrap_err().to_string();
        assert!(!e.is_empty(), "{cfg:?}");
    }
}

#[test]
fn utf8_stream_never_emits_half_a_character() {
    let s = "héllo, 世界 🎉!";
    let mut st = Utf8Stream::new();
    let mut out = String::new();
    for (i, b) in s.bytes().enumerate() {
        let piece = st.push(&[b]);
        // Output so far is always a prefix of s ending on a character boundary.
        out.push_str(&piece);
        assert!(s.starts_with(&out), "after byte {i}: {out:?}");
        let complete = s.is_char_boundary(i + 1);
        assert_eq!(out.len(), if complete { i + 1 } else { out.len() });
        if !complete {
            assert!(out.len() <= i, "byte {i} is inside a character");
        }
    }
    out.push_str(&st.finish());
    assert_eq!(out, s);
    // A byte that cannot start or continue a character is replaced, and an unfinished
    // character at the end too.
    let mut st = Utf8Stream::new();
    let mut o = st.push(&[b'a', 0xFF, b'b', 0xE4, 0xB8]);
    o.push_str(&st.finish());
    assert_eq!(o, "a\u{FFFD}b\u{FFFD}");
}

#[test]
fn stop_text_holds_possible_starts_and_cuts_the_match() {
    let mut st = StopText::new(&["END".to_string(), "\n\n".to_string()]);
    let mut out = String::new();
    let mut stopped = false;
    for c in "Hello ENough EN".chars() {
        let (o, hit) = st.push(&c.to_string());
        out.push_str(&o);
        stopped |= hit;
    }
    assert!(!stopped);
    assert_eq!(out, "Hello ENough ", "`EN` at the end is held");
    let (o, hit) = st.push("D tail");
    assert!(hit);
    assert_eq!(o, "", "the match and what follows are cut");
    let mut st = StopText::new(&["END".to_string()]);
    assert_eq!(st.push("abc"), ("abc".to_string(), false));
    assert_eq!(st.push("E"), (String::new(), false));
    assert_eq!(st.finish(), "E");
}

fn tiny(arch: Arch) -> Config {
    let llama = arch != Arch::Gpt2;
    Config {
        arch,
        vocab_size: 97,
        d_model: 32,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: if llama { 2 } else { 4 },
        head_dim: 8,
        d_ff: 64,
        max_seq_len: 48,
        tie_embeddings: !llama,
        dropout: 0.0,
        ..Config::expert(97)
    }
}

fn prompts() -> Vec<Vec<u32>> {
    vec![vec![5, 17, 3, 88, 41, 2, 9], vec![60], vec![11, 12, 13, 14]]
}

fn run(m: &mut Model, prompts: &[Vec<u32>], cfg: &GenerateConfig) -> Vec<Vec<u32>> {
    let (gens, _) = generate(m, prompts, cfg, None, |_| {}).unwrap();
    gens.into_iter().map(|g| g.tokens).collect()
}

fn greedy(n: usize) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens: n,
        ..GenerateConfig::default()
    }
}

#[test]
fn greedy_is_identical_across_runs_and_thread_counts() {
    for arch in [Arch::Gpt2, Arch::Llama] {
        let mut m = Model::new(tiny(arch), 1).unwrap();
        let cfg = greedy(20);
        let a = run(&mut m, &prompts(), &cfg);
        let b = run(&mut m, &prompts(), &cfg);
        assert_eq!(a, b, "{arch:?}: two runs");
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let c = pool.install(|| run(&mut m, &prompts(), &cfg));
            assert_eq!(a, c, "{arch:?}: {threads} thread(s)");
        }
        assert!(a.iter().all(|t| t.len() == 20));
    }
}

#[test]
fn batched_generation_equals_each_prompt_alone() {
    for arch in [Arch::Gpt2, Arch::Mistral] {
        let mut c = tiny(arch);
        if arch == Arch::Mistral {
            c.sliding_window = Some(6);
        }
        let mut m = Model::new(c, 2).unwrap();
        let ps = prompts();
        for cfg in [
            greedy(16),
            GenerateConfig {
                sampling: Sampling {
                    top_k: Some(20),
                    ..Sampling::with_temperature(0.8)
                },
                max_new_tokens: 16,
                seed: 99,
                ..GenerateConfig::default()
            },
        ] {
            let together = run(&mut m, &ps, &cfg);
            for (i, p) in ps.iter().enumerate() {
                // Row i samples with seed + i: give the lone run the same seed.
                let alone_cfg = GenerateConfig {
                    seed: cfg.seed + i as u64,
                    ..cfg.clone()
                };
                let alone = run(&mut m, std::slice::from_ref(p), &alone_cfg);
                assert_eq!(alone[0], together[i], "{arch:?}: prompt {i}");
            }
        }
    }
}

/// Token bytes that split characters: even ids are the first byte of `é` (0xC3), odd ids its
/// second (0xA9), and every id divisible by 3 is ASCII `x`.
fn split_bytes(id: u32) -> Vec<u8> {
    if id.is_multiple_of(3) {
        vec![b'x']
    } else if id.is_multiple_of(2) {
        vec![0xC3]
    } else {
        vec![0xA9]
    }
}

#[test]
fn streamed_text_is_utf8_safe_and_matches_the_tokens() {
    let mut m = Model::new(tiny(Arch::Gpt2), 3).unwrap();
    let cfg = GenerateConfig {
        sampling: Sampling::with_temperature(1.0),
        max_new_tokens: 30,
        seed: 5,
        ..GenerateConfig::default()
    };
    let mut streamed = vec![String::new(); 3];
    let mut events: Vec<Event> = Vec::new();
    let (gens, timing) = generate(&mut m, &prompts(), &cfg, Some(&split_bytes), |e| {
        streamed[e.row].push_str(&e.text);
        events.push(e.clone());
    })
    .unwrap();
    for (i, g) in gens.iter().enumerate() {
        let bytes: Vec<u8> = g.tokens.iter().flat_map(|&t| split_bytes(t)).collect();
        assert_eq!(g.text, String::from_utf8_lossy(&bytes), "row {i}");
        assert_eq!(
            streamed[i], g.text,
            "row {i}: the stream adds up to the text"
        );
        assert_eq!(g.finish, Finish::Length);
    }
    assert_eq!(timing.prefill_tokens, 12);
    // The iterator yields the same events.
    let it = Generator::new(&mut m, &prompts(), &cfg, Some(&split_bytes)).unwrap();
    let again: Vec<Event> = it.map(|e| e.unwrap()).collect();
    assert_eq!(again, events);
}

#[test]
fn stop_tokens_and_stop_strings_end_a_row() {
    let mut m = Model::new(tiny(Arch::Llama), 4).unwrap();
    let letters = |id: u32| vec![b'a' + (id % 26) as u8];
    let p = vec![vec![3, 1, 4, 1, 5]];
    let (free, _) = generate(&mut m, &p, &greedy(24), Some(&letters), |_| {}).unwrap();
    let free = &free[0];
    assert_eq!(free.tokens.len(), 24);
    // Stop token: the 5th generated token; the row ends at its first occurrence.
    let stop = free.tokens[4];
    let first = free.tokens.iter().position(|&t| t == stop).unwrap();
    let cfg = GenerateConfig {
        stop_tokens: vec![stop],
        ..greedy(24)
    };
    let (g, _) = generate(&mut m, &p, &cfg, Some(&letters), |_| {}).unwrap();
    assert_eq!(g[0].tokens, free.tokens[..=first]);
    assert_eq!(g[0].finish, Finish::StopToken);
    assert_eq!(g[0].text, free.text[..first], "the stop token has no text");
    // Stop string: two letters of the free text from position 6.
    let s = free.text[6..8].to_string();
    let at = free.text.find(&s).unwrap();
    let cfg = GenerateConfig {
        stop_strings: vec![s.clone()],
        ..greedy(24)
    };
    let mut streamed = String::new();
    let (g, _) = generate(&mut m, &p, &cfg, Some(&letters), |e| {
        streamed.push_str(&e.text)
    })
    .unwrap();
    assert_eq!(g[0].finish, Finish::StopString);
    assert_eq!(g[0].text, free.text[..at], "text cut before {s:?}");
    assert_eq!(
        streamed, g[0].text,
        "nothing of the stop string was streamed"
    );
    assert_eq!(
        g[0].tokens,
        free.tokens[..at + 2],
        "ends on the token completing it"
    );
}

#[test]
fn generation_errors_are_clear() {
    let mut m = Model::new(tiny(Arch::Gpt2), 5).unwrap();
    let e = generate(&mut m, &[vec![]], &greedy(4), None, |_| {}).unwrap_err();
    assert!(e.to_string().contains("prompt 0 has 0 tokens"), "{e}");
    let e = generate(&mut m, &[vec![1, 500]], &greedy(4), None, |_| {}).unwrap_err();
    assert!(e.to_string().contains("500"), "{e}");
    // A generation that runs into the context ends with Finish::Context.
    let (g, _) = generate(&mut m, &[vec![1; 40]], &greedy(100), None, |_| {}).unwrap();
    assert_eq!(g[0].finish, Finish::Context);
    assert_eq!(
        40 + g[0].tokens.len(),
        48 + 1,
        "fills the context, then one last token"
    );
}

#[test]
fn beam_width_one_is_greedy() {
    for arch in [Arch::Gpt2, Arch::Llama] {
        let mut m = Model::new(tiny(arch), 6).unwrap();
        let p = prompts()[0].clone();
        let want = run(&mut m, std::slice::from_ref(&p), &greedy(12));
        let cfg = BeamConfig {
            width: 1,
            max_new_tokens: 12,
            length_penalty: 1.0,
            early_stopping: true,
            stop_tokens: vec![],
        };
        let h = beam_search(&mut CachedLm(&mut m), &p, &cfg).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].tokens, want[0], "{arch:?}");
    }
}

/// A language model given by a table: the next-token probabilities depend on the last token
/// only. Tokens: 0 = a, 1 = b, 2 = end; 9 = the prompt.
struct Table;

impl Lm for Table {
    type State = u32;
    fn start(&mut self, prompt: &[u32], _max_len: usize) -> Result<(u32, Vec<f32>)> {
        let last = *prompt.last().unwrap();
        Ok((last, Self::logits(last)))
    }
    fn next(&mut self, state: &mut u32, token: u32) -> Result<Vec<f32>> {
        *state = token;
        Ok(Self::logits(token))
    }
}

impl Table {
    fn logits(last: u32) -> Vec<f32> {
        let p: [f32; 3] = match last {
            9 => [0.5, 0.4, 0.1],
            0 => [0.3, 0.3, 0.4],
            _ => [0.05, 0.05, 0.9],
        };
        p.iter().map(|x| x.ln()).collect()
    }
}

#[test]
fn beam_search_by_hand() {
    // Greedy takes a (0.5) then end (0.4): probability 0.2. A beam of 2 keeps b (0.4), whose
    // end has 0.9: probability 0.36, the better sequence. After step 2 both finished
    // hypotheses rank in the top 2 ([b end] 0.36, [a end] 0.2 ahead of [a a] 0.15).
    let cfg = BeamConfig {
        width: 2,
        max_new_tokens: 5,
        length_penalty: 0.0,
        early_stopping: true,
        stop_tokens: vec![2],
    };
    let h = beam_search(&mut Table, &[9], &cfg).unwrap();
    let got: Vec<(Vec<u32>, f64)> = h.iter().map(|h| (h.tokens.clone(), h.log_prob)).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, vec![1, 2]);
    assert!((got[0].1 - 0.36f64.ln()).abs() < 1e-6);
    assert_eq!(got[1].0, vec![0, 2]);
    assert!((got[1].1 - 0.2f64.ln()).abs() < 1e-6);
    let w1 = beam_search(
        &mut Table,
        &[9],
        &BeamConfig {
            width: 1,
            ..cfg.clone()
        },
    )
    .unwrap();
    assert_eq!(w1[0].tokens, vec![0, 2], "greedy finds the worse sequence");
    // Length penalty: with max 1 new token nothing ends, so [a] and [b] are scored by log-prob
    // over len^alpha = 1: the ranking is by probability.
    let short = BeamConfig {
        max_new_tokens: 1,
        length_penalty: 2.0,
        ..cfg.clone()
    };
    let h = beam_search(&mut Table, &[9], &short).unwrap();
    assert_eq!(h[0].tokens, vec![0]);
    assert!((h[0].score - 0.5f64.ln()).abs() < 1e-6);
    // Over two tokens with 3 beams, [a a] (0.15) is kept and scores ln(0.15) / 2^alpha, alpha 1.
    let two = BeamConfig {
        width: 3,
        max_new_tokens: 2,
        length_penalty: 1.0,
        stop_tokens: vec![],
        ..cfg
    };
    let h = beam_search(&mut Table, &[9], &two).unwrap();
    let aa = h.iter().find(|h| h.tokens == [0, 0]).unwrap();
    assert!((aa.score - 0.15f64.ln() / 2.0).abs() < 1e-6);
    assert_eq!(
        h[0].tokens,
        vec![1, 2],
        "no stop tokens: [b end] is just likely"
    );
}
