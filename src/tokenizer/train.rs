//! Byte-level BPE training: count pre-tokenized words once, then repeatedly merge the most frequent adjacent
//! pair, updating pair counts only in the words that contain the merged pair.
//!
//! Determinism: words are sorted before ids are assigned, and among pairs of equal count the one with the
//! smallest `(left id, right id)` wins, so the result depends only on the multiset of words.

use super::bpe::{Bpe, byte_to_char};
use super::pretokenize::pre_tokenize;
use super::{Error, FastMap, Segment, split_specials};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

type Pair = (u32, u32);

/// `(content, id)` of each special token.
type Specials = Vec<(String, u32)>;

/// The working state: distinct words as symbol ids with their frequencies, and the pair statistics.
struct State {
    words: Vec<Vec<u32>>,
    freq: Vec<i64>,
    pair_count: FastMap<Pair, i64>,
    /// Words that contained the pair when it was counted; may hold stale or repeated indices.
    pair_words: FastMap<Pair, Vec<u32>>,
    /// `(count, smallest pair first)`; entries whose count no longer matches `pair_count` are skipped.
    heap: BinaryHeap<(i64, Reverse<Pair>)>,
}

impl State {
    fn new(words: Vec<Vec<u32>>, freq: Vec<i64>) -> Self {
        let mut pair_count: FastMap<Pair, i64> = FastMap::default();
        let mut pair_words: FastMap<Pair, Vec<u32>> = FastMap::default();
        for (w, (syms, &f)) in words.iter().zip(&freq).enumerate() {
            for p in syms.windows(2) {
                *pair_count.entry((p[0], p[1])).or_default() += f;
                pair_words.entry((p[0], p[1])).or_default().push(w as u32);
            }
        }
        let heap = pair_count.iter().map(|(&p, &c)| (c, Reverse(p))).collect();
        State {
            words,
            freq,
            pair_count,
            pair_words,
            heap,
        }
    }

    /// The most frequent pair with its count, dropping stale heap entries.
    fn best(&mut self) -> Option<(Pair, i64)> {
        while let Some((c, Reverse(p))) = self.heap.pop() {
            if c > 0 && self.pair_count.get(&p) == Some(&c) {
                return Some((p, c));
            }
        }
        None
    }

    /// Drops `pair` from the candidates (it comes back if a later merge creates it anew).
    fn forbid(&mut self, pair: Pair) {
        self.pair_count.remove(&pair);
    }

    /// Replaces every non-overlapping occurrence (left to right) of `pair` by `merged`.
    fn merge(&mut self, pair: Pair, merged: u32) {
        let mut affected = self.pair_words.remove(&pair).unwrap_or_default();
        affected.sort_unstable();
        affected.dedup();
        let mut delta: FastMap<Pair, i64> = FastMap::default();
        for w in affected {
            let syms = &self.words[w as usize];
            if !syms.windows(2).any(|p| (p[0], p[1]) == pair) {
                continue;
            }
            let f = self.freq[w as usize];
            let mut out = Vec::with_capacity(syms.len());
            let mut i = 0;
            while i < syms.len() {
                if i + 1 < syms.len() && (syms[i], syms[i + 1]) == pair {
                    out.push(merged);
                    i += 2;
                } else {
                    out.push(syms[i]);
                    i += 1;
                }
            }
            // Remove the word's old pairs, add its new ones: exact for overlapping runs like "a a a".
            for p in syms.windows(2) {
                *delta.entry((p[0], p[1])).or_default() -= f;
            }
            for p in out.windows(2) {
                *delta.entry((p[0], p[1])).or_default() += f;
                if p[0] == merged || p[1] == merged {
                    self.pair_words.entry((p[0], p[1])).or_default().push(w);
                }
            }
            self.words[w as usize] = out;
        }
        let mut changed: Vec<(Pair, i64)> = delta.into_iter().filter(|&(_, d)| d != 0).collect();
        changed.sort_unstable();
        for (p, d) in changed {
            let c = self.pair_count.entry(p).or_default();
            *c += d;
            if *c > 0 {
                self.heap.push((*c, Reverse(p)));
            } else {
                self.pair_count.remove(&p);
            }
        }
    }
}

impl Bpe {
    /// Trains a byte-level BPE on `texts`. Ids: the special tokens in the given order, then the 256 byte
    /// tokens in GPT-2 order (by stand-in char), then one token per merge. Merging stops at `vocab_size`
    /// tokens or when the best pair occurs fewer than `min_frequency` times. Special tokens occurring in the
    /// texts are cut out and not learned from.
    ///
    /// # Errors
    /// [`Error::Train`] if `vocab_size` cannot hold the special tokens plus the 256 byte tokens, or a special
    /// token is empty or repeated.
    pub fn train<S: AsRef<str>>(
        texts: &[S],
        vocab_size: usize,
        min_frequency: u64,
        special_tokens: &[&str],
    ) -> Result<Bpe, Error> {
        let base = special_tokens.len() + 256;
        if vocab_size < base {
            let msg = format!(
                "vocab_size {vocab_size} < {} special tokens + 256 byte tokens",
                special_tokens.len()
            );
            return Err(Error::Train { msg });
        }
        let (mut vocab, specials, byte_id) = initial_vocab(special_tokens)?;
        let mut state = count_words(texts, &specials, &byte_id);

        let min_frequency = i64::try_from(min_frequency.max(1)).unwrap_or(i64::MAX);
        let mut merges = Vec::with_capacity(vocab_size - base);
        let mut ids: HashMap<String, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        while vocab.len() < vocab_size {
            let Some(((a, b), count)) = state.best() else {
                break;
            };
            if count < min_frequency {
                break;
            }
            let (ta, tb) = (vocab[a as usize].clone(), vocab[b as usize].clone());
            let joined = format!("{ta}{tb}");
            if specials.iter().any(|(s, _)| *s == joined) {
                // A special token such as "Ġx" also spells the bytes " x"; merging into its id would decode
                // " x" as the special's text. Such a pair is never merged.
                state.forbid((a, b));
                continue;
            }
            // Different merge orders can spell the same token ("a"+"bc", "ab"+"c"); it keeps one id.
            let merged = *ids.entry(joined.clone()).or_insert(vocab.len() as u32);
            if merged as usize == vocab.len() {
                vocab.push(joined);
            }
            merges.push((ta, tb));
            state.merge((a, b), merged);
        }
        Bpe::from_parts(vocab, &merges, &specials, "<trained>")
    }
}

/// Special tokens (ids in the given order), then the 256 byte tokens in GPT-2 order (by stand-in char);
/// also returns each byte's id.
fn initial_vocab(special_tokens: &[&str]) -> Result<(Vec<String>, Specials, [u32; 256]), Error> {
    let mut vocab: Vec<String> = special_tokens.iter().map(|s| s.to_string()).collect();
    let specials = vocab
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), i as u32))
        .collect();
    let mut bytes: Vec<u8> = (0..=255).collect();
    bytes.sort_by_key(|&b| byte_to_char(b));
    let mut byte_id = [0u32; 256];
    for b in bytes {
        byte_id[b as usize] = vocab.len() as u32;
        vocab.push(byte_to_char(b).to_string());
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = vocab
        .iter()
        .find(|t| t.is_empty() || !seen.insert(t.as_str()))
    {
        let msg = format!("special token {dup:?} is empty, repeated, or a byte token");
        return Err(Error::Train { msg });
    }
    Ok((vocab, specials, byte_id))
}

/// Pre-tokenizes every text (special tokens cut out) and counts distinct words, sorted so that word indices
/// do not depend on hash order.
fn count_words<S: AsRef<str>>(
    texts: &[S],
    specials: &[(String, u32)],
    byte_id: &[u32; 256],
) -> State {
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for text in texts {
        for seg in split_specials(text.as_ref(), specials) {
            if let Segment::Text(t) = seg {
                for piece in pre_tokenize(t) {
                    *counts.entry(piece).or_default() += 1;
                }
            }
        }
    }
    let mut counted: Vec<(&str, i64)> = counts.into_iter().collect();
    counted.sort_unstable();
    let words = counted
        .iter()
        .map(|(w, _)| w.bytes().map(|b| byte_id[b as usize]).collect())
        .collect();
    let freq = counted.iter().map(|&(_, f)| f).collect();
    State::new(words, freq)
}
