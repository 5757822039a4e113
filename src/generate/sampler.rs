//! Choosing the next token from a row of logits: penalties, then temperature, then the top-k,
//! top-p and min-p filters, then a seeded draw (or the argmax when the temperature is 0).
//!
//! Every stage is optional and they compose in that fixed order (the order HF's logits
//! processors use). Probabilities are computed in f64 after subtracting the row maximum.

use crate::autograd::Rng;
use crate::models::{Error, Result};

/// How to pick tokens. The default is greedy with no penalty.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// Divides the logits; `0` means greedy (the argmax, lowest id on ties).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (`None` or 0: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p` (in (0, 1]).
    pub top_p: Option<f32>,
    /// Drop tokens less likely than `min_p` times the most likely one (in [0, 1]).
    pub min_p: Option<f32>,
    /// CTRL / HF repetition penalty (> 0; 1 = none): a token already in the context has its
    /// logit divided by it when positive, multiplied when negative.
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token already generated (OpenAI presence).
    pub presence_penalty: f32,
    /// Subtracted per occurrence from the logit of every token already generated.
    pub frequency_penalty: f32,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

impl Sampling {
    /// Greedy decoding (the default).
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Plain sampling at `temperature`.
    pub fn with_temperature(temperature: f32) -> Self {
        Sampling {
            temperature,
            ..Self::default()
        }
    }

    /// Whether the choice is the argmax (no randomness drawn).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks every setting is in range.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first setting out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Config { detail: what });
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!(
                "temperature {} (must be finite and >= 0)",
                self.temperature
            ));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad(format!("top_p {p} (must be in (0, 1])"));
        }
        if let Some(p) = self.min_p
            && !(0.0..=1.0).contains(&p)
        {
            return bad(format!("min_p {p} (must be in [0, 1])"));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition_penalty {} (must be finite and > 0)",
                self.repetition_penalty
            ));
        }
        if !self.presence_penalty.is_finite() || !self.frequency_penalty.is_finite() {
            return bad("presence and frequency penalties must be finite".into());
        }
        Ok(())
    }
}

/// A [`Sampling`] with its own seeded generator.
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: Sampling,
    rng: Rng,
    /// Scratch: (id, logit) of the candidates still in play.
    cand: Vec<(u32, f32)>,
    probs: Vec<f64>,
}

impl Sampler {
    /// A sampler drawing from `seed`.
    ///
    /// # Errors
    /// [`Error::Config`] for a setting out of range.
    pub fn new(cfg: Sampling, seed: u64) -> Result<Self> {
        cfg.validate()?;
        Ok(Sampler {
            cfg,
            rng: Rng::new(seed),
            cand: Vec::new(),
            probs: Vec::new(),
        })
    }

    pub fn config(&self) -> &Sampling {
        &self.cfg
    }

    /// The next token. `context` is what the repetition penalty looks at (prompt and generated
    /// tokens, as HF), `generated` what the presence and frequency penalties look at. The logits
    /// are modified in place by the penalties.
    /// `// logits: (V) -> id in 0..V`
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32], generated: &[u32]) -> u32 {
        apply_penalties(&self.cfg, logits, context, generated);
        if self.cfg.is_greedy() {
            return argmax(logits);
        }
        self.filter(logits);
        // Inverse-CDF draw over the candidates, in f64.
        let u = f64::from(self.rng.next_f32());
        let total: f64 = self.probs.iter().sum();
        let mut acc = 0.0;
        for (&(id, _), &p) in self.cand.iter().zip(&self.probs) {
            acc += p / total;
            if u < acc {
                return id;
            }
        }
        self.cand.last().map_or(0, |c| c.0)
    }

    /// The candidates and their probabilities after temperature and the filters (what
    /// [`Sampler::sample`] draws from), most likely first; for tests and inspection.
    /// `// logits: (V) -> [(id, probability)]`
    pub fn distribution(&mut self, logits: &[f32]) -> Vec<(u32, f64)> {
        if self.cfg.is_greedy() {
            return vec![(argmax(logits), 1.0)];
        }
        self.filter(logits);
        let total: f64 = self.probs.iter().sum();
        self.cand
            .iter()
            .zip(&self.probs)
            .map(|(c, &p)| (c.0, p / total))
            .collect()
    }

    /// Fills `cand` (sorted by logit, descending, ties by id) and `probs` (unnormalised) with
    /// what survives temperature, top-k, top-p and min-p.
    fn filter(&mut self, logits: &[f32]) {
        let t = self.cfg.temperature;
        self.cand.clear();
        self.cand.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_nan())
                .map(|(i, &l)| (i as u32, l / t)),
        );
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if let Some(k) = self.cfg.top_k.filter(|&k| k > 0 && k < self.cand.len()) {
            self.cand.select_nth_unstable_by(k - 1, by_logit);
            self.cand.truncate(k);
        }
        self.cand.sort_unstable_by(by_logit);
        let max = self.cand.first().map_or(0.0, |c| c.1);
        self.probs.clear();
        self.probs
            .extend(self.cand.iter().map(|c| f64::from(c.1 - max).exp()));
        if let Some(p) = self.cfg.top_p {
            let total: f64 = self.probs.iter().sum();
            let mut acc = 0.0;
            let mut keep = self.probs.len();
            for (i, &q) in self.probs.iter().enumerate() {
                acc += q / total;
                if acc >= f64::from(p) {
                    keep = i + 1;
                    break;
                }
            }
            self.cand.truncate(keep);
            self.probs.truncate(keep);
        }
        if let Some(mp) = self.cfg.min_p {
            // The first candidate has probability ratio 1, so at least one survives.
            let keep = self
                .probs
                .iter()
                .take_while(|&&q| q >= f64::from(mp))
                .count();
            self.cand.truncate(keep.max(1));
            self.probs.truncate(keep.max(1));
        }
    }
}

/// The repetition penalty over `context`, then presence and frequency penalties over
/// `generated`, in place.
pub fn apply_penalties(cfg: &Sampling, logits: &mut [f32], context: &[u32], generated: &[u32]) {
    let v = logits.len();
    if cfg.repetition_penalty != 1.0 {
        let mut seen = vec![false; v];
        for &id in context {
            let i = id as usize;
            if i < v && !seen[i] {
                seen[i] = true;
                let l = logits[i];
                logits[i] = if l > 0.0 {
                    l / cfg.repetition_penalty
                } else {
                    l * cfg.repetition_penalty
                };
            }
        }
    }
    if cfg.presence_penalty != 0.0 || cfg.frequency_penalty != 0.0 {
        let mut count = vec![0u32; v];
        for &id in generated {
            if let Some(c) = count.get_mut(id as usize) {
                *c += 1;
            }
        }
        for (l, &c) in logits.iter_mut().zip(&count) {
            if c > 0 {
                *l -= cfg.presence_penalty + cfg.frequency_penalty * c as f32;
            }
        }
    }
}

/// The index of the largest logit (the lowest on ties; NaN never wins; 0 for an empty row).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut bv = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > bv {
            bv = l;
            best = i;
        }
    }
    best as u32
}

/// `log_softmax` of a row, in f64 for the sum (max subtracted first).
/// `// logits: (V) -> (V)`
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let lse = max + sum.ln() as f32;
    logits.iter().map(|&l| l - lse).collect()
}
