//! Exact-match evaluation on the built-in corpus (greedy completion through the KV cache) and
//! the share of each domain's tokens routed to each expert.

use super::{Ascii, Domain, generate_domain, text};
use crate::models::{Model, Result};
use crate::tokenizer::Tokenizer;

/// Longest answer the greedy decoder writes before giving up (the longest right answer is
/// shorter: `twelve months.` is 14 characters).
const MAX_ANSWER: usize = 24;

/// Prompts completed together (rows of one KV cache).
const EVAL_ROWS: usize = 32;

/// One prompt, the model's completion, and whether it is right.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub prompt: String,
    pub completion: String,
    pub correct: bool,
}

/// A domain's exact-match score.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainScore {
    pub domain: Domain,
    pub correct: usize,
    pub total: usize,
    pub samples: Vec<Sample>,
}

impl DomainScore {
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy completions of `prompts` (each preceded by a newline, as every training line is),
/// up to the first newline or [`MAX_ANSWER`] characters, in eval mode.
///
/// # Errors
/// The model's errors (a prompt longer than its context).
pub fn complete(model: &mut Model, prompts: &[String]) -> Result<Vec<String>> {
    let saved = model.training_state();
    model.set_training(None);
    let mut out = Vec::with_capacity(prompts.len());
    let r = (|| {
        for chunk in prompts.chunks(EVAL_ROWS) {
            out.extend(complete_chunk(model, chunk)?);
        }
        Ok(())
    })();
    model.set_training_state(saved);
    r.map(|()| out)
}

fn complete_chunk(model: &mut Model, prompts: &[String]) -> Result<Vec<String>> {
    let v = model.config().vocab_size;
    let longest = prompts.iter().map(String::len).max().unwrap_or(0) + 1;
    let ctx = (longest + MAX_ANSWER).min(model.config().max_seq_len);
    let mut cache = model.new_cache(prompts.len(), Some(ctx));
    let mut next = Vec::with_capacity(prompts.len());
    // Prefill each row alone (prompts differ in length), keeping its last position's logits.
    for (r, p) in prompts.iter().enumerate() {
        let ids = Ascii.encode(&format!("\n{p}"));
        let logits = model.forward_cached(&ids, &[r], &mut cache)?;
        let vals = model.graph().value(logits)?;
        next.push(argmax(&vals[vals.len() - v..]));
        model.graph().clear();
    }
    let mut written: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    let limit = MAX_ANSWER.min(ctx.saturating_sub(longest));
    for _ in 0..limit {
        let mut still = Vec::new();
        for &r in &active {
            if next[r] != u32::from(b'\n') {
                written[r].push(next[r]);
                still.push(r);
            }
        }
        active = still;
        if active.is_empty() || written.iter().all(|w| w.len() >= limit) {
            break;
        }
        let ids: Vec<u32> = active.iter().map(|&r| next[r]).collect();
        let logits = model.forward_cached(&ids, &active, &mut cache)?;
        let vals = model.graph().value(logits)?;
        for (i, &r) in active.iter().enumerate() {
            next[r] = argmax(&vals[i * v..(i + 1) * v]);
        }
        model.graph().clear();
    }
    Ok(written
        .iter()
        .map(|w| Ascii.decode(w).unwrap_or_default())
        .collect())
}

/// Exact-match accuracy on `n` fresh prompts of each domain, drawn from `seed`.
///
/// # Errors
/// The model's errors.
pub fn accuracy(model: &mut Model, n: usize, seed: u64) -> Result<Vec<DomainScore>> {
    let mut scores = Vec::new();
    for d in Domain::ALL {
        let prompts: Vec<String> = generate_domain(d, seed, n)
            .into_iter()
            .map(|e| e.prompt)
            .collect();
        let completions = complete(model, &prompts)?;
        let samples: Vec<Sample> = prompts
            .into_iter()
            .zip(completions)
            .map(|(prompt, completion)| Sample {
                correct: d.check(&prompt, &completion),
                prompt,
                completion,
            })
            .collect();
        scores.push(DomainScore {
            domain: d,
            correct: samples.iter().filter(|s| s.correct).count(),
            total: samples.len(),
            samples,
        });
    }
    Ok(scores)
}

/// For each domain, per mixture layer, the share of `(token, choice)` routing slots each
/// expert received over `rows` windows of `seq` tokens of that domain's text alone:
/// `[domain][layer][expert]`, each `[layer]` row summing to 1. Empty for a dense model.
///
/// # Errors
/// The model's errors.
pub fn routing_by_domain(
    model: &mut Model,
    rows: usize,
    seq: usize,
    seed: u64,
) -> Result<Vec<Vec<Vec<f64>>>> {
    let saved = model.training_state();
    model.set_training(None);
    let was = model.graph().grad_enabled();
    model.graph().set_grad_enabled(false);
    let r = (|| {
        let mut out = Vec::new();
        for d in Domain::ALL {
            // Enough lines for rows * seq characters (the shortest line has 6).
            let ids = Ascii.encode(&text(&generate_domain(d, seed, rows * seq / 6 + 1)));
            let ids = &ids[..rows * seq];
            let o = model.forward(ids, rows, None)?;
            let layers = o
                .moe_stats
                .iter()
                .map(|s| {
                    let total: usize = s.load.iter().sum();
                    s.load
                        .iter()
                        .map(|&l| l as f64 / total.max(1) as f64)
                        .collect()
                })
                .collect();
            model.graph().clear();
            out.push(layers);
        }
        Ok(out)
    })();
    model.graph().set_grad_enabled(was);
    model.set_training_state(saved);
    r
}
