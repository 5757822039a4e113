//! Text generation on a [`Model`] with its key/value cache: seeded samplers ([`Sampling`]),
//! stop tokens and stop strings, streaming of tokens and UTF-8-safe text through a callback or
//! an iterator ([`Generator`]), batched generation of prompts of different lengths, and beam
//! search ([`beam_search`]).
//!
//! Batched generation prefills each prompt into its own cache row, then decodes every live row
//! together: one [`Model::forward_cached`] per step for all of them. Row `i` samples from its own
//! generator seeded with `seed + i`, so a prompt generates the same tokens alone as in a batch
//! (at the same index).

mod beam;
mod sampler;
mod stream;

pub use beam::{BeamConfig, CachedLm, Hypothesis, Lm, beam_search};
pub use sampler::{Sampler, Sampling, apply_penalties, argmax, log_softmax};
pub use stream::{StopText, Utf8Stream};

use crate::models::{Error, Model, Result};
use crate::nn::KvCache;
use std::time::Instant;

/// What to generate and when to stop.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateConfig {
    pub sampling: Sampling,
    /// Tokens generated per prompt at most.
    pub max_new_tokens: usize,
    /// Generation of a row ends after any of these (it is kept in the tokens, not in the text).
    pub stop_tokens: Vec<u32>,
    /// Generation of a row ends when its text contains one of these (cut from the text).
    pub stop_strings: Vec<String>,
    pub seed: u64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            sampling: Sampling::default(),
            max_new_tokens: 64,
            stop_tokens: Vec::new(),
            stop_strings: Vec::new(),
            seed: 0,
        }
    }
}

/// The bytes one token stands for (e.g. `|id| tok.decode_bytes(&[id])`), for text and stop
/// strings.
pub type TokenBytes<'a> = &'a dyn Fn(u32) -> Vec<u8>;

/// Why a row stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// `max_new_tokens` reached.
    Length,
    /// A stop token was generated.
    StopToken,
    /// The text contains a stop string.
    StopString,
    /// The cache (the model's context) is full.
    Context,
}

/// One generated token as it comes.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The prompt it belongs to.
    pub row: usize,
    pub token: u32,
    /// Text released with this token: complete characters only, never the start of a possible
    /// stop string (often empty; the rest comes with later tokens).
    pub text: String,
    /// `Some` when this is the row's last token.
    pub finish: Option<Finish>,
}

/// One prompt's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// Generated tokens (not the prompt), stop token included.
    pub tokens: Vec<u32>,
    /// Their text (empty without a [`TokenBytes`]), stop string and stop token excluded.
    pub text: String,
    pub finish: Finish,
}

/// Wall-clock time of the two phases.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    /// Prompt tokens fed, and the seconds it took (forwards and first sampling excluded).
    pub prefill_tokens: usize,
    pub prefill_seconds: f64,
    /// Tokens fed one step at a time, and the seconds the steps took (forward and sampling).
    pub decode_tokens: usize,
    pub decode_seconds: f64,
}

/// Per-prompt state.
#[derive(Debug)]
struct Row {
    context: Vec<u32>,
    generated: Vec<u32>,
    sampler: Sampler,
    utf8: Utf8Stream,
    stop: StopText,
    text: String,
    finish: Option<Finish>,
    /// The logits the next token is drawn from `(V)`.
    logits: Vec<f32>,
}

/// Batched, streaming generation: [`Generator::step`] samples one token for every live row
/// and feeds them all in one cached forward; the generator is also an iterator of [`Event`]s.
pub struct Generator<'a> {
    model: &'a mut Model,
    cache: KvCache,
    /// Tokens a cache row may hold.
    max_len: usize,
    rows: Vec<Row>,
    cfg: GenerateConfig,
    bytes: Option<TokenBytes<'a>>,
    timing: Timing,
    /// Events produced but not yet taken by the iterator.
    queue: std::collections::VecDeque<Event>,
}

impl std::fmt::Debug for Generator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("rows", &self.rows.len())
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl<'a> Generator<'a> {
    /// Prefills every prompt into its own cache row (the cache holds the longest prompt plus
    /// `max_new_tokens`, within the model's context).
    ///
    /// # Errors
    /// [`Error::Config`] for no prompt, an empty prompt, a prompt that fills the context, or a
    /// bad sampling setting; [`Error::Tensor`] for an id outside the vocabulary.
    pub fn new(
        model: &'a mut Model,
        prompts: &[Vec<u32>],
        cfg: &GenerateConfig,
        bytes: Option<TokenBytes<'a>>,
    ) -> Result<Self> {
        cfg.sampling.validate()?;
        let ctx = model.config().max_seq_len;
        if prompts.is_empty() {
            return Err(Error::Config {
                detail: "no prompt to generate from".into(),
            });
        }
        for (i, p) in prompts.iter().enumerate() {
            if p.is_empty() || p.len() >= ctx {
                return Err(Error::Config {
                    detail: format!(
                        "prompt {i} has {} tokens; it needs 1 to {} (the context is {ctx})",
                        p.len(),
                        ctx - 1
                    ),
                });
            }
        }
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let max_len = (longest + cfg.max_new_tokens.max(1)).min(ctx);
        let cache = model.new_cache(prompts.len(), Some(max_len));
        let mut g = Generator {
            model,
            cache,
            max_len,
            rows: Vec::with_capacity(prompts.len()),
            cfg: cfg.clone(),
            bytes,
            timing: Timing::default(),
            queue: Default::default(),
        };
        let t0 = Instant::now();
        for (i, p) in prompts.iter().enumerate() {
            let logits = g.forward(p, &[i], true)?;
            g.rows.push(Row {
                context: p.clone(),
                generated: Vec::new(),
                sampler: Sampler::new(cfg.sampling.clone(), cfg.seed.wrapping_add(i as u64))?,
                utf8: Utf8Stream::new(),
                stop: StopText::new(&cfg.stop_strings),
                text: String::new(),
                finish: (cfg.max_new_tokens == 0).then_some(Finish::Length),
                logits,
            });
        }
        g.timing.prefill_tokens = prompts.iter().map(Vec::len).sum();
        g.timing.prefill_seconds = t0.elapsed().as_secs_f64();
        Ok(g)
    }

    /// Logits `(rows.len() * T, V)` of `ids` fed to cache `rows`, or with `last` only each
    /// row's last `(rows.len(), V)`; the tape is cleared after.
    fn forward(&mut self, ids: &[u32], rows: &[usize], last: bool) -> Result<Vec<f32>> {
        let l = if last {
            self.model.forward_cached_last(ids, rows, &mut self.cache)
        } else {
            self.model.forward_cached(ids, rows, &mut self.cache)
        };
        let out = l.and_then(|l| Ok(self.model.graph().value(l)?.to_vec()));
        self.model.graph().clear();
        out
    }

    /// Whether every row has finished.
    pub fn is_done(&self) -> bool {
        self.rows.iter().all(|r| r.finish.is_some())
    }

    /// Time spent so far.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// One token for every live row (in row order), then one forward feeding them all.
    /// Returns no event once every row has finished.
    ///
    /// # Errors
    /// The model's errors.
    pub fn step(&mut self) -> Result<Vec<Event>> {
        let t0 = Instant::now();
        let mut events = Vec::new();
        let (mut feed, mut rows) = (Vec::new(), Vec::new());
        for (i, r) in self.rows.iter_mut().enumerate() {
            if r.finish.is_some() {
                continue;
            }
            let tok = r.sampler.sample(&mut r.logits, &r.context, &r.generated);
            r.context.push(tok);
            r.generated.push(tok);
            let mut text = String::new();
            let mut finish = None;
            if self.cfg.stop_tokens.contains(&tok) {
                finish = Some(Finish::StopToken);
            } else if let Some(b) = self.bytes {
                let piece = r.utf8.push(&b(tok));
                let (out, hit) = r.stop.push(&piece);
                text = out;
                if hit {
                    finish = Some(Finish::StopString);
                }
            }
            if finish.is_none() && r.generated.len() >= self.cfg.max_new_tokens {
                finish = Some(Finish::Length);
            }
            // Feeding the token needs room in the context.
            if finish.is_none() && self.cache.seen(i) + 1 > self.max_len {
                finish = Some(Finish::Context);
            }
            if finish.is_some() && finish != Some(Finish::StopString) {
                let tail = r.utf8.finish();
                let (mut out, _) = r.stop.push(&tail);
                out.push_str(&r.stop.finish());
                text.push_str(&out);
            }
            r.text.push_str(&text);
            r.finish = finish;
            if finish.is_none() {
                feed.push(tok);
                rows.push(i);
            }
            events.push(Event {
                row: i,
                token: tok,
                text,
                finish,
            });
        }
        if !feed.is_empty() {
            let logits = self.forward(&feed, &rows, false)?;
            let v = logits.len() / feed.len();
            for (k, &i) in rows.iter().enumerate() {
                self.rows[i]
                    .logits
                    .copy_from_slice(&logits[k * v..(k + 1) * v]);
            }
            self.timing.decode_tokens += feed.len();
        }
        self.timing.decode_seconds += t0.elapsed().as_secs_f64();
        Ok(events)
    }

    /// Runs to the end, handing every event to `on_event` as it comes.
    ///
    /// # Errors
    /// The model's errors.
    pub fn run(mut self, mut on_event: impl FnMut(&Event)) -> Result<(Vec<Generation>, Timing)> {
        while !self.is_done() {
            for e in self.step()? {
                on_event(&e);
            }
        }
        Ok(self.finish())
    }

    /// The results so far (rows still live report [`Finish::Length`]) and the timing.
    pub fn finish(self) -> (Vec<Generation>, Timing) {
        let gens = self
            .rows
            .into_iter()
            .map(|r| Generation {
                tokens: r.generated,
                text: r.text,
                finish: r.finish.unwrap_or(Finish::Length),
            })
            .collect();
        (gens, self.timing)
    }
}

impl Iterator for Generator<'_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.queue.is_empty() {
            if self.is_done() {
                return None;
            }
            match self.step() {
                Ok(ev) => self.queue.extend(ev),
                Err(e) => {
                    // Stop after an error: every row is marked finished.
                    self.rows
                        .iter_mut()
                        .for_each(|r| r.finish = r.finish.or(Some(Finish::Length)));
                    return Some(Err(e));
                }
            }
        }
        self.queue.pop_front().map(Ok)
    }
}

/// Generates from every prompt (batched) to the end, handing each event to `on_event`.
///
/// # Errors
/// As [`Generator::new`] and [`Generator::step`].
pub fn generate(
    model: &mut Model,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
    bytes: Option<TokenBytes<'_>>,
    on_event: impl FnMut(&Event),
) -> Result<(Vec<Generation>, Timing)> {
    Generator::new(model, prompts, cfg, bytes)?.run(on_event)
}
