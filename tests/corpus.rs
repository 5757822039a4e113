//! The built-in corpus: a deterministic generator, checkers that accept the right answer and
//! reject wrong ones, the ASCII vocabulary, greedy completion and the SVG writer.

use anvil::corpus::{self, ASCII_VOCAB, Ascii, Domain, FACTS, generate, generate_domain};
use anvil::models::{Config, Model};
use anvil::tokenizer::Tokenizer;

#[test]
fn generator_is_deterministic_and_covers_every_domain() {
    let a = generate(5, 400);
    assert_eq!(a, generate(5, 400));
    assert_ne!(a, generate(6, 400));
    for d in Domain::ALL {
        let n = a.iter().filter(|e| e.domain == d).count();
        // Uniform over four domains: 100 expected, far from 0 or 400.
        assert!((50..150).contains(&n), "{}: {n}", d.name());
        assert_eq!(generate_domain(d, 3, 20), generate_domain(d, 3, 20));
    }
    let text = corpus::text(&a);
    assert!(text.is_ascii());
    assert_eq!(text.lines().count(), 400);
}

#[test]
fn checkers_accept_the_right_answer_and_reject_wrong_ones() {
    for d in Domain::ALL {
        for e in generate_domain(d, 11, 200) {
            assert!(d.check(&e.prompt, &e.answer), "{} {}", e.prompt, e.answer);
            let wrong = [
                format!("{}x", e.answer),
                e.answer[..e.answer.len() - 1].to_string(),
                String::new(),
                format!(" {}", e.answer),
            ];
            for w in wrong {
                assert!(!d.check(&e.prompt, &w), "{}: accepted {w:?}", e.prompt);
            }
        }
    }
}

#[test]
fn checkers_compute_the_answer_from_the_prompt() {
    assert!(Domain::Arithmetic.check("12+7=", "19"));
    assert!(Domain::Arithmetic.check("99+99=", "198"));
    assert!(!Domain::Arithmetic.check("12+7=", "20"));
    assert!(Domain::Reverse.check("rev(abc)=", "cba"));
    assert!(!Domain::Reverse.check("rev(abc)=", "abc"));
    assert!(Domain::Json.check("json({\"a\":[1,2)=", "]}"));
    assert!(Domain::Json.check("json(5)=", ""));
    assert!(!Domain::Json.check("json({\"a\":[1,2)=", "}]"));
    assert!(Domain::Facts.check("the capital of france is ", "paris."));
    assert!(!Domain::Facts.check("the capital of france is ", "rome."));
    // A prompt from another domain, or malformed, has no answer.
    assert_eq!(Domain::Arithmetic.answer("rev(abc)="), None);
    assert_eq!(Domain::Arithmetic.answer("1+x="), None);
    assert_eq!(Domain::Reverse.answer("rev(aBc)="), None);
    assert_eq!(Domain::Json.answer("json(})="), None);
    assert_eq!(Domain::Facts.answer("the capital of mars is "), None);
    assert!(FACTS.iter().all(|(p, a)| Domain::Facts.check(p, a)));
}

#[test]
fn ascii_vocabulary_round_trips_and_names_bad_ids() {
    let s = "json({\"k\":[3,7)=]}\n";
    assert_eq!(Ascii.decode(&Ascii.encode(s)).unwrap(), s);
    assert_eq!(Ascii.encode("\u{e9}"), vec![u32::from(b'?')]);
    assert_eq!(Ascii.vocab_size(), ASCII_VOCAB);
    assert!(Ascii.decode(&[128]).is_err());
    assert_eq!(Ascii.token_to_id("a"), Some(97));
    for id in 0..ASCII_VOCAB as u32 {
        let t = Ascii.id_to_token(id).unwrap();
        assert_eq!(Ascii.token_to_id(t), Some(id));
    }
    assert_eq!(Ascii.id_to_token(128), None);
}

fn tiny() -> Model {
    let c = Config {
        vocab_size: ASCII_VOCAB,
        d_model: 16,
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 2,
        head_dim: 8,
        d_ff: 16,
        max_seq_len: 64,
        n_experts: 3,
        experts_per_token: 2,
        dropout: 0.0,
        ..Config::expert(ASCII_VOCAB)
    };
    Model::new(c, 3).unwrap()
}

#[test]
fn greedy_completion_is_deterministic_and_bounded() {
    let mut m = tiny();
    let prompts: Vec<String> = generate(1, 40).into_iter().map(|e| e.prompt).collect();
    let a = corpus::complete(&mut m, &prompts).unwrap();
    assert_eq!(a, corpus::complete(&mut m, &prompts).unwrap());
    assert_eq!(a.len(), 40);
    assert!(a.iter().all(|c| c.len() <= 24 && !c.contains('\n')));
    // The batched decoder agrees with completing each prompt alone.
    for (p, c) in prompts.iter().zip(&a).take(5) {
        assert_eq!(
            &corpus::complete(&mut m, std::slice::from_ref(p)).unwrap()[0],
            c
        );
    }
    let scores = corpus::accuracy(&mut m, 5, 2).unwrap();
    assert_eq!(scores.len(), 4);
    assert!(scores.iter().all(|s| s.total == 5 && s.correct <= 5));
}

#[test]
fn routing_shares_sum_to_one_per_layer() {
    let mut m = tiny();
    let share = corpus::routing_by_domain(&mut m, 2, 32, 1).unwrap();
    assert_eq!(share.len(), 4);
    for d in &share {
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].len(), 3);
        let sum: f64 = d[0].iter().sum();
        assert!((sum - 1.0).abs() < 1e-9, "{sum}");
    }
}

#[test]
fn svg_charts_hold_their_data() {
    let pts = [(1.0, 4.0), (2.0, 3.0), (3.0, f64::NAN), (4.0, 2.0)];
    let svg = anvil::plot::line_chart(
        "loss <x>",
        "step",
        "nats",
        &[anvil::plot::Series {
            name: "train",
            color: "blue",
            points: &pts,
        }],
    );
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("loss &lt;x&gt;"));
    let poly = svg
        .split("points=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(poly.split(' ').count(), 3, "the NaN point is skipped");
    let h = anvil::plot::heatmap(
        "routing",
        &["a".into(), "b".into()],
        &["E0".into(), "E1".into()],
        &[vec![0.25, 0.75], vec![1.0, 0.0]],
    );
    assert_eq!(h.matches("<rect x=").count(), 4);
    assert!(h.contains(">75%<") && h.contains(">100%<"));
}
