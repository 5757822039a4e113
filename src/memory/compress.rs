//! Compression without a generative model: extractive summaries (keep the sentences that carry the most
//! information) and the importance score that ranks long-term facts. A model plugs in through
//! [`Summarizer`].

use super::text::{self, TokenCounter};
use std::collections::HashMap;

/// How common each keyword is in the conversation so far: `df[w]` of the `docs` messages contain `w`.
/// The extractive scorer reads a word's information content from it, so words the whole conversation
/// keeps using (boilerplate) count little and words said once (names, numbers, specifics) count much.
#[derive(Debug, Clone, Copy)]
pub struct Background<'a> {
    pub docs: u64,
    pub df: &'a HashMap<String, u32>,
}

impl Background<'_> {
    /// `ln(1 + (docs + 1) / (df(w) + 1))`: an IDF that is positive for every word, known or not.
    pub fn idf(&self, w: &str) -> f32 {
        let df = self.df.get(w).copied().unwrap_or(0);
        (1.0 + (self.docs as f32 + 1.0) / (df as f32 + 1.0)).ln()
    }
}

/// Shortens text to a token budget. The memory recounts and truncates whatever comes back over the
/// limit, so a model-backed summariser cannot break a budget.
pub trait Summarizer {
    /// A version of `text` with at most `max_tokens` tokens as counted by `counter`; `background` holds
    /// the conversation's keyword statistics for scorers that want them.
    fn summarize(
        &self,
        text: &str,
        max_tokens: usize,
        counter: &dyn TokenCounter,
        background: &Background,
    ) -> String;
}

/// Extractive summary: score every sentence, keep the best that fit, in their original order.
///
/// Sentence score (sentences are split per line, one line per message):
/// `info(s) + sentence_importance(s) + 0.25 * [s opens its line]`, where
/// `info(s) = sum over distinct keywords w of s of idf(w), divided by sqrt(distinct keywords of s)`, with
/// [`Background::idf`] over the whole conversation: the information content of the sentence's words,
/// not favoured just for length; [`sentence_importance`] adds up to 3.5 for numbers, names, cue words and
/// first-person statements, the marks of facts worth keeping. Sentences are taken best first while they
/// fit; one that adds no keyword beyond those already taken is skipped as redundant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extractive;

/// One sentence with where it came from and what it is worth.
struct Scored<'a> {
    text: &'a str,
    keywords: Vec<String>,
    score: f32,
    tokens: usize,
}

impl Summarizer for Extractive {
    fn summarize(
        &self,
        text: &str,
        max_tokens: usize,
        counter: &dyn TokenCounter,
        background: &Background,
    ) -> String {
        if counter.count(text) <= max_tokens {
            return text.trim().to_string();
        }
        let sents = score_sentences(text, counter, background);
        if sents.is_empty() || max_tokens == 0 {
            return String::new();
        }
        let mut order: Vec<usize> = (0..sents.len()).collect();
        // Best first; ties keep the earlier sentence.
        order.sort_by(|&a, &b| sents[b].score.total_cmp(&sents[a].score).then(a.cmp(&b)));
        let mut keep = vec![false; sents.len()];
        let mut used = 0;
        let mut covered: Vec<&str> = Vec::new();
        for &i in &order {
            // Redundancy: a sentence adding no keyword beyond those already kept is skipped.
            let new = sents[i]
                .keywords
                .iter()
                .any(|k| !covered.contains(&k.as_str()));
            if new && used + sents[i].tokens <= max_tokens {
                keep[i] = true;
                used += sents[i].tokens;
                covered.extend(sents[i].keywords.iter().map(String::as_str));
            }
        }
        // Counts of joined text need not be additive for a real tokenizer: drop the weakest until it fits.
        let join = |keep: &[bool]| {
            let parts: Vec<&str> = (0..sents.len())
                .filter(|&i| keep[i])
                .map(|i| sents[i].text)
                .collect();
            parts.join("\n")
        };
        let mut out = join(&keep);
        for &i in order.iter().rev() {
            if counter.count(&out) <= max_tokens {
                break;
            }
            if keep[i] {
                keep[i] = false;
                out = join(&keep);
            }
        }
        if out.is_empty() {
            // Not even the best sentence fits alone: keep its opening words.
            return text::truncate_to(sents[order[0]].text, max_tokens, counter);
        }
        out
    }
}

fn score_sentences<'a>(
    text: &'a str,
    counter: &dyn TokenCounter,
    background: &Background,
) -> Vec<Scored<'a>> {
    let mut out = Vec::new();
    for line in text.lines() {
        for (k, s) in text::sentences(line).into_iter().enumerate() {
            let mut distinct = text::keywords(s);
            distinct.sort_unstable();
            distinct.dedup();
            let info = distinct.iter().map(|w| background.idf(w)).sum::<f32>()
                / (distinct.len().max(1) as f32).sqrt();
            let opens = if k == 0 { 0.25 } else { 0.0 };
            out.push(Scored {
                text: s,
                score: info + sentence_importance(s) + opens,
                tokens: counter.count(s),
                keywords: distinct,
            });
        }
    }
    out
}

/// Surface features of a sentence that mark facts.
struct Features {
    numbers: usize,
    entities: usize,
    cues: usize,
    first_person: bool,
}

/// Word prefixes that announce a fact worth keeping long-term (lowercase).
pub const CUES: &[&str] = &[
    "address",
    "allerg",
    "always",
    "appointment",
    "birthday",
    "born",
    "deadline",
    "favorite",
    "favourite",
    "important",
    "live",
    "married",
    "must",
    "name",
    "never",
    "password",
    "phone",
    "prefer",
    "remember",
    "work",
];

fn features(sentence: &str) -> Features {
    let mut f = Features {
        numbers: 0,
        entities: 0,
        cues: 0,
        first_person: false,
    };
    let words = sentence
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty());
    for (i, w) in words.enumerate() {
        if w.chars().any(|c| c.is_ascii_digit()) {
            f.numbers += 1;
        } else if i > 0 && w.chars().next().is_some_and(char::is_uppercase) && w != "I" {
            f.entities += 1;
        }
        let lw = w.to_lowercase();
        if CUES.iter().any(|c| lw.starts_with(c)) {
            f.cues += 1;
        }
        if matches!(lw.as_str(), "i" | "my" | "we" | "our" | "mine") {
            f.first_person = true;
        }
    }
    f
}

/// Importance of one sentence as a long-term fact:
/// `[has a number] + [has an entity] + [has a cue word] + 0.5 * [first person]`, in 0..=3.5. Numbers are
/// words with a digit; entities are capitalised words that do not open the sentence (not "I"); cue
/// words start with one of [`CUES`]; first person is "I", "my", "we", "our" or "mine".
pub fn sentence_importance(sentence: &str) -> f32 {
    let f = features(sentence);
    f32::from(u8::from(f.numbers > 0))
        + f32::from(u8::from(f.entities > 0))
        + f32::from(u8::from(f.cues > 0))
        + if f.first_person { 0.5 } else { 0.0 }
}

/// Importance of a chunk: its best sentence's importance plus 0.05 times the sum over all its sentences,
/// so one strong fact dominates and many facts break ties. 0 for empty text.
pub fn importance(text: &str) -> f32 {
    let mut best = 0.0f32;
    let mut sum = 0.0f32;
    for line in text.lines() {
        for s in text::sentences(line) {
            let v = sentence_importance(s);
            best = best.max(v);
            sum += v;
        }
    }
    best + 0.05 * sum
}
