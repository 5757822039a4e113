//! Beam search: keep the `width` most likely continuations, extend each by its `2 * width` most
//! likely tokens, keep the best `width` again; a continuation ending in a stop token becomes a
//! finished hypothesis scored `log_prob / len^length_penalty` (len = generated tokens).
//!
//! It runs on any [`Lm`] (a state per beam, cloned when a beam forks); [`CachedLm`] is a
//! [`Model`] with a one-row key/value cache per beam.

use super::sampler::log_softmax;
use crate::models::{Error, Model, Result};
use crate::nn::KvCache;

/// A language model stepped one token at a time from a cloneable state.
pub trait Lm {
    type State: Clone;
    /// The state after `prompt` and the next-token logits `(V)`; room for `max_len` tokens.
    ///
    /// # Errors
    /// The model's errors.
    fn start(&mut self, prompt: &[u32], max_len: usize) -> Result<(Self::State, Vec<f32>)>;
    /// Feeds `token`; returns the next logits `(V)`.
    ///
    /// # Errors
    /// The model's errors.
    fn next(&mut self, state: &mut Self::State, token: u32) -> Result<Vec<f32>>;
}

/// A [`Model`] as an [`Lm`]: each beam a one-row cache.
#[derive(Debug)]
pub struct CachedLm<'m>(pub &'m mut Model);

impl CachedLm<'_> {
    fn logits(&mut self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let l = self.0.forward_cached_last(ids, &[0], cache);
        let n = self.0.config().vocab_size;
        let out = l.and_then(|l| {
            let v = self.0.graph_ref().value(l)?;
            Ok(v[v.len() - n..].to_vec())
        });
        self.0.graph().clear();
        out
    }
}

impl Lm for CachedLm<'_> {
    type State = KvCache;

    fn start(&mut self, prompt: &[u32], max_len: usize) -> Result<(KvCache, Vec<f32>)> {
        let mut cache = self.0.new_cache(1, Some(max_len));
        let l = self.logits(prompt, &mut cache)?;
        Ok((cache, l))
    }

    fn next(&mut self, cache: &mut KvCache, token: u32) -> Result<Vec<f32>> {
        self.logits(&[token], cache)
    }
}

/// Beam search settings.
#[derive(Clone, Debug, PartialEq)]
pub struct BeamConfig {
    /// Beams kept (1 = greedy).
    pub width: usize,
    pub max_new_tokens: usize,
    /// Exponent of the length in the score `log_prob / len^length_penalty` (0: raw log-prob;
    /// above 0 favours longer hypotheses).
    pub length_penalty: f32,
    /// `true`: stop as soon as `width` hypotheses are finished. `false`: stop once no live beam
    /// can still beat the worst kept hypothesis (judged at the current length, as HF).
    pub early_stopping: bool,
    pub stop_tokens: Vec<u32>,
}

/// A finished continuation.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Generated tokens, stop token included.
    pub tokens: Vec<u32>,
    /// Sum of the tokens' log-probabilities.
    pub log_prob: f64,
    /// `log_prob / len^length_penalty`: what hypotheses are ranked by.
    pub score: f64,
}

struct Beam<S> {
    tokens: Vec<u32>,
    log_prob: f64,
    state: S,
    logits: Vec<f32>,
}

/// The best `width` hypotheses after `prompt`, best first. Beams still live at
/// `max_new_tokens` count as finished.
///
/// # Errors
/// [`Error::Config`] for width 0 or an empty prompt; the model's errors.
pub fn beam_search<L: Lm>(lm: &mut L, prompt: &[u32], cfg: &BeamConfig) -> Result<Vec<Hypothesis>> {
    let w = cfg.width;
    if w == 0 || prompt.is_empty() {
        return Err(Error::Config {
            detail: format!(
                "beam search needs a width >= 1 (got {w}) and a prompt (got {} tokens)",
                prompt.len()
            ),
        });
    }
    let score = |lp: f64, len: usize| lp / (len.max(1) as f64).powf(f64::from(cfg.length_penalty));
    let (state, logits) = lm.start(prompt, prompt.len() + cfg.max_new_tokens.max(1))?;
    let mut beams = vec![Beam {
        tokens: Vec::new(),
        log_prob: 0.0,
        state,
        logits,
    }];
    let mut done: Vec<Hypothesis> = Vec::new();
    for step in 0..cfg.max_new_tokens {
        // (total log-prob, beam, token), best first; ties by beam then token.
        let mut cands: Vec<(f64, usize, u32)> = Vec::new();
        for (bi, b) in beams.iter().enumerate() {
            let lp = log_softmax(&b.logits);
            let mut ids: Vec<u32> = (0..lp.len() as u32).collect();
            let k = (2 * w).min(ids.len());
            let by = |a: &u32, c: &u32| lp[*c as usize].total_cmp(&lp[*a as usize]).then(a.cmp(c));
            if k < ids.len() {
                ids.select_nth_unstable_by(k - 1, by);
                ids.truncate(k);
            }
            cands.extend(
                ids.into_iter()
                    .map(|t| (b.log_prob + f64::from(lp[t as usize]), bi, t)),
            );
        }
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut next = Vec::new();
        for (rank, &(lp, bi, t)) in cands.iter().enumerate() {
            if cfg.stop_tokens.contains(&t) {
                // As HF: a finished hypothesis counts only when it ranks among the best `width`.
                if rank < w {
                    let mut tokens = beams[bi].tokens.clone();
                    tokens.push(t);
                    add(
                        &mut done,
                        w,
                        Hypothesis {
                            tokens,
                            log_prob: lp,
                            score: score(lp, step + 1),
                        },
                    );
                }
                continue;
            }
            next.push((lp, bi, t));
            if next.len() == w {
                break;
            }
        }
        let full = done.len() >= w;
        let hopeless = full
            && (cfg.early_stopping
                || next.iter().all(|&(lp, _, _)| {
                    score(lp, step + 1) <= done.last().map_or(f64::INFINITY, |h| h.score)
                }));
        if next.is_empty() || hopeless {
            beams.clear();
            break;
        }
        let last = step + 1 == cfg.max_new_tokens;
        let mut nb = Vec::with_capacity(next.len());
        for (lp, bi, t) in next {
            let mut tokens = beams[bi].tokens.clone();
            tokens.push(t);
            let mut state = beams[bi].state.clone();
            let logits = if last {
                Vec::new()
            } else {
                lm.next(&mut state, t)?
            };
            nb.push(Beam {
                tokens,
                log_prob: lp,
                state,
                logits,
            });
        }
        beams = nb;
    }
    for b in beams {
        let s = score(b.log_prob, b.tokens.len());
        add(
            &mut done,
            w,
            Hypothesis {
                tokens: b.tokens,
                log_prob: b.log_prob,
                score: s,
            },
        );
    }
    Ok(done)
}

/// Inserts `h` into `done` (kept sorted by score, best first, at most `w` long).
fn add(done: &mut Vec<Hypothesis>, w: usize, h: Hypothesis) {
    let at = done.partition_point(|d| d.score >= h.score);
    done.insert(at, h);
    done.truncate(w);
}
