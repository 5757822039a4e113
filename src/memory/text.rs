//! Text pieces the memory works with: token counters, sentence splitting and keyword extraction.

use crate::tokenizer::Tokenizer;

/// Counts tokens, so budgets can be stated in the units a model sees.
pub trait TokenCounter {
    /// The number of tokens in `text`.
    fn count(&self, text: &str) -> usize;
    /// A name stored with a saved memory: a memory loads only with the counter that built it, since its
    /// budgets were checked in that counter's units.
    fn id(&self) -> String;
}

/// The default counter: one token per run of letters or digits (a word piece) and one per other
/// non-space character (punctuation). "Don't stop, 3.14!" is `Don ' t stop , 3 . 14 !` = 9 tokens. It
/// is additive over whitespace-separated words, which the extractive compressor relies on only as an
/// estimate (results are always recounted).
#[derive(Debug, Clone, Copy, Default)]
pub struct WordCounter;

impl TokenCounter for WordCounter {
    fn count(&self, text: &str) -> usize {
        let mut n = 0;
        let mut in_word = false;
        for c in text.chars() {
            if c.is_alphanumeric() {
                if !in_word {
                    n += 1;
                    in_word = true;
                }
            } else {
                in_word = false;
                if !c.is_whitespace() {
                    n += 1;
                }
            }
        }
        n
    }

    fn id(&self) -> String {
        "words".into()
    }
}

/// Real token counts from one of the project's tokenizers (BPE or WordPiece).
pub struct TokenizerCounter {
    tokenizer: Box<dyn Tokenizer + Send + Sync>,
    name: String,
}

impl TokenizerCounter {
    /// Wraps `tokenizer` (e.g. from [`crate::tokenizer::from_file`]); `name` identifies it in saved
    /// memories (e.g. the `tokenizer.json` file name).
    pub fn new(tokenizer: Box<dyn Tokenizer + Send + Sync>, name: &str) -> Self {
        TokenizerCounter {
            tokenizer,
            name: name.to_string(),
        }
    }
}

impl TokenCounter for TokenizerCounter {
    fn count(&self, text: &str) -> usize {
        self.tokenizer.encode(text).len()
    }

    fn id(&self) -> String {
        format!("tokenizer:{}", self.name)
    }
}

/// Splits `text` into sentences: a sentence ends at `.`, `!` or `?` followed by whitespace, or at a line
/// break. Pieces are trimmed; empty ones are dropped. A `.` inside "3.14" or "e.g." followed by a letter
/// does not split.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_end = false;
    for (i, c) in text.char_indices() {
        let split_here = c == '\n' || (prev_end && c.is_whitespace());
        if split_here {
            let s = text[start..i].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = i + c.len_utf8();
        }
        prev_end = matches!(c, '.' | '!' | '?');
    }
    let s = text[start..].trim();
    if !s.is_empty() {
        out.push(s);
    }
    out
}

/// Words too common to identify anything; never keywords.
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have",
    "he", "her", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "me",
    "more", "my", "no", "not", "of", "on", "one", "or", "our", "out", "she", "so", "some", "than",
    "that", "the", "their", "them", "then", "there", "these", "they", "this", "to", "too", "up",
    "us", "very", "was", "we", "were", "what", "when", "where", "which", "who", "why", "will",
    "with", "would", "you", "your",
];

fn is_stopword(w: &str) -> bool {
    STOPWORDS.binary_search(&w).is_ok()
}

/// A light suffix stemmer, so "lives", "living" and "lived" meet at "liv": `ies`->`y`, then one of
/// `ing`, `ed`, `es`, `s` (not `ss`, `us`, `is`) is removed when at least three characters remain.
pub fn stem(word: &str) -> &str {
    let n = word.len();
    if n > 4 && word.ends_with("ies") {
        // "cities" -> "cit", the same stem as "city" (final "y" stripped below).
        return &word[..n - 3];
    }
    for suf in ["ing", "ed", "es", "s"] {
        if word.ends_with(suf) && n >= suf.len() + 3 {
            if suf == "s" && (word.ends_with("ss") || word.ends_with("us") || word.ends_with("is"))
            {
                return word;
            }
            return &word[..n - suf.len()];
        }
    }
    if n > 3 && word.ends_with('y') {
        return &word[..n - 1];
    }
    if n > 3 && word.ends_with('e') {
        return &word[..n - 1];
    }
    word
}

/// The keywords of `text`, in order of appearance with repeats: maximal alphanumeric runs, lowercased,
/// stopwords and one-letter words removed, then [`stem`]med. Digits are kept ("2024", "42").
pub fn keywords(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text.split(|c: char| !c.is_alphanumeric()) {
        if raw.is_empty() {
            continue;
        }
        let w = raw.to_lowercase();
        if w.chars().count() < 2 || is_stopword(&w) {
            continue;
        }
        out.push(stem(&w).to_string());
    }
    out
}

/// Keyword counts, sorted by keyword: the form a chunk keeps as its index.
pub fn keyword_counts(text: &str) -> Vec<(String, u32)> {
    let mut ks = keywords(text);
    ks.sort_unstable();
    let mut out: Vec<(String, u32)> = Vec::new();
    for k in ks {
        match out.last_mut() {
            Some((last, n)) if *last == k => *n += 1,
            _ => out.push((k, 1)),
        }
    }
    out
}

/// Sums two sorted keyword-count lists into one sorted list.
pub fn merge_counts(a: &[(String, u32)], b: &[(String, u32)]) -> Vec<(String, u32)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i].clone());
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j].clone());
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push((a[i].0.clone(), a[i].1.saturating_add(b[j].1)));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The longest prefix of `text` (cut at a word boundary) with at most `max_tokens` tokens, found by
/// binary search over word counts, so it is exact for any counter that grows with the prefix.
pub fn truncate_to(text: &str, max_tokens: usize, counter: &dyn TokenCounter) -> String {
    if counter.count(text) <= max_tokens {
        return text.to_string();
    }
    let ends: Vec<usize> = text
        .split_whitespace()
        .map(|w| w.as_ptr() as usize - text.as_ptr() as usize + w.len())
        .collect();
    // Largest k such that the first k words fit; k = 0 is the empty string, which always fits.
    let (mut lo, mut hi) = (0usize, ends.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if counter.count(&text[..ends[mid - 1]]) <= max_tokens {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let cut = if lo == 0 { "" } else { &text[..ends[lo - 1]] };
    // A counter that is not monotone in the prefix could still overflow; then nothing is kept.
    if counter.count(cut) <= max_tokens {
        cut.trim().to_string()
    } else {
        String::new()
    }
}
