//! Byte-level BPE as in GPT-2 and HF `tokenizers`: special tokens are cut out first, the rest is split by the
//! GPT-2 pre-tokenizer, each piece's bytes become printable stand-in chars (`bytes_to_unicode`), and merges
//! apply in rank order. Loads and saves HF `tokenizer.json`; training lives in `train.rs`.

use super::pretokenize::pre_tokenize;
use super::{Error, FastMap, Segment, Tokenizer, split_specials};
use crate::json::Value;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::RwLock;

/// Words cached by [`Bpe::encode`] before the cache is emptied, bounding its memory.
const CACHE_CAPACITY: usize = 65_536;

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves; the other 68 bytes (controls,
/// space, DEL, NBSP, soft hyphen...) map in byte order to U+0100 onwards, so every token is printable text.
pub fn byte_to_char(b: u8) -> char {
    if matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF) {
        return char::from(b);
    }
    // Rank of `b` among the 68 non-printable bytes.
    let n = match b {
        0..=0x20 => u32::from(b),
        0x7F..=0xA0 => 33 + u32::from(b - 0x7F),
        _ => 33 + 34, // 0xAD, the soft hyphen
    };
    char::from_u32(256 + n).unwrap_or('\u{FFFD}')
}

/// The inverse of [`byte_to_char`].
pub fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    match cp {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(cp as u8),
        0x100..=0x120 => Some((cp - 0x100) as u8),
        0x121..=0x142 => Some((cp - 0x121 + 0x7F) as u8),
        0x143 => Some(0xAD),
        _ => None,
    }
}

/// A byte-level BPE tokenizer.
pub struct Bpe {
    vocab: Vec<String>,
    ids: HashMap<String, u32>,
    /// Rank-ordered merges, as saved.
    merge_list: Vec<(u32, u32)>,
    /// `(left, right) -> (rank, merged id)`.
    merges: FastMap<(u32, u32), (u32, u32)>,
    byte_ids: [u32; 256],
    /// `(content, id)`; matched verbatim before pre-tokenization and decoded verbatim.
    specials: Vec<(String, u32)>,
    is_special: Vec<bool>,
    cache: RwLock<HashMap<String, Vec<u32>>>,
}

impl fmt::Debug for Bpe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bpe")
            .field("vocab_size", &self.vocab.len())
            .field("merges", &self.merge_list.len())
            .field("specials", &self.specials)
            .finish()
    }
}

impl Clone for Bpe {
    fn clone(&self) -> Self {
        Bpe {
            vocab: self.vocab.clone(),
            ids: self.ids.clone(),
            merge_list: self.merge_list.clone(),
            merges: self.merges.clone(),
            byte_ids: self.byte_ids,
            specials: self.specials.clone(),
            is_special: self.is_special.clone(),
            cache: RwLock::new(HashMap::new()),
        }
    }
}

impl Bpe {
    /// Builds a tokenizer from an id-ordered vocabulary, rank-ordered merges and special tokens.
    ///
    /// # Errors
    /// [`Error::Format`] (with `file` as the source name) when a byte's stand-in char is missing from the
    /// vocabulary, a merge names an unknown token or produces one not in the vocabulary, a token repeats,
    /// or a special token's id is taken by a different token.
    pub fn from_parts(
        mut vocab: Vec<String>,
        merges: &[(String, String)],
        specials: &[(String, u32)],
        file: &str,
    ) -> Result<Self, Error> {
        let bad = |msg: String| Error::Format {
            file: file.to_string(),
            msg,
        };
        place_added_tokens(&mut vocab, specials, file)?;
        let mut ids = HashMap::with_capacity(vocab.len());
        for (i, t) in vocab.iter().enumerate() {
            if ids.insert(t.clone(), i as u32).is_some() {
                return Err(bad(format!("token {t:?} appears twice in the vocabulary")));
            }
        }
        let mut byte_ids = [0u32; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            let c = byte_to_char(b as u8).to_string();
            *slot = *ids
                .get(&c)
                .ok_or_else(|| bad(format!("vocabulary lacks byte 0x{b:02x} ({c:?})")))?;
        }
        let mut merge_map = FastMap::default();
        let mut merge_list = Vec::with_capacity(merges.len());
        for (rank, (a, b)) in merges.iter().enumerate() {
            let id_of = |t: &str| {
                ids.get(t)
                    .copied()
                    .ok_or_else(|| bad(format!("merge {rank} names unknown {t:?}")))
            };
            let (l, r) = (id_of(a)?, id_of(b)?);
            let merged = id_of(&format!("{a}{b}"))?;
            // A repeated merge takes its last rank, as GPT-2's dict and HF's map do.
            merge_map.insert((l, r), (rank as u32, merged));
            merge_list.push((l, r));
        }
        let mut is_special = vec![false; vocab.len()];
        for (_, id) in specials {
            is_special[*id as usize] = true;
        }
        Ok(Bpe {
            vocab,
            ids,
            merge_list,
            merges: merge_map,
            byte_ids,
            specials: specials.to_vec(),
            is_special,
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// Loads a HF `tokenizer.json` with `model.type` "BPE" and a ByteLevel pre-tokenizer.
    ///
    /// # Errors
    /// As [`crate::tokenizer::from_file`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        Self::from_json_bytes(&super::read(path)?, &path.display().to_string())
    }

    /// [`Bpe::from_file`] for the bytes of a `tokenizer.json` in memory; `file` names it in errors.
    ///
    /// # Errors
    /// As [`crate::tokenizer::from_json_bytes`].
    pub fn from_json_bytes(bytes: &[u8], file: &str) -> Result<Self, Error> {
        Self::from_json(&super::parse_json(bytes, file)?, file)
    }

    pub(crate) fn from_json(root: &Value, file: &str) -> Result<Self, Error> {
        let bad = |msg: String| Error::Format {
            file: file.to_string(),
            msg,
        };
        let model = root
            .get("model")
            .ok_or_else(|| bad("no \"model\" field".into()))?;
        if model.get("type").and_then(Value::as_str) != Some("BPE") {
            return Err(bad("model.type is not \"BPE\"".into()));
        }
        check_byte_level(root.get("pre_tokenizer"), file)?;
        let vocab = super::vocab_from_json(model, file)?;
        let list = model
            .get("merges")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("model.merges is not an array".into()))?;
        let mut merges = Vec::with_capacity(list.len());
        for (i, m) in list.iter().enumerate() {
            // Older files write "a b"; newer ones ["a", "b"] (which allows spaces inside tokens).
            let pair = match m {
                Value::String(s) => s.split_once(' ').filter(|(_, b)| !b.contains(' ')),
                Value::Array(p) if p.len() == 2 => p[0].as_str().zip(p[1].as_str()),
                _ => None,
            };
            let (a, b) = pair.ok_or_else(|| {
                bad(format!(
                    "model.merges[{i}] is not \"a b\" or [\"a\", \"b\"]"
                ))
            })?;
            merges.push((a.to_string(), b.to_string()));
        }
        let specials = super::added_tokens_from_json(root, file)?;
        Self::from_parts(vocab, &merges, &specials, file)
    }

    /// The tokenizer as HF `tokenizer.json` (merges in the `["a", "b"]` form).
    pub fn to_json(&self) -> Value {
        let obj = |pairs: Vec<(&str, Value)>| {
            Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        };
        // The pre-tokenizer, post-processor and decoder are all the same ByteLevel block.
        let byte_level = || {
            obj(vec![
                ("type", "ByteLevel".into()),
                ("add_prefix_space", false.into()),
                ("trim_offsets", true.into()),
                ("use_regex", true.into()),
            ])
        };
        let added = self.specials.iter().map(|(content, id)| {
            obj(vec![
                ("id", (*id).into()),
                ("content", content.as_str().into()),
                ("single_word", false.into()),
                ("lstrip", false.into()),
                ("rstrip", false.into()),
                ("normalized", false.into()),
                ("special", true.into()),
            ])
        });
        let vocab = self
            .vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), Value::from(i as u64)));
        let merges = self.merge_list.iter().map(|&(a, b)| {
            Value::Array(vec![
                self.vocab[a as usize].as_str().into(),
                self.vocab[b as usize].as_str().into(),
            ])
        });
        obj(vec![
            ("version", "1.0".into()),
            ("truncation", Value::Null),
            ("padding", Value::Null),
            ("added_tokens", Value::Array(added.collect())),
            ("normalizer", Value::Null),
            ("pre_tokenizer", byte_level()),
            ("post_processor", byte_level()),
            ("decoder", byte_level()),
            (
                "model",
                obj(vec![
                    ("type", "BPE".into()),
                    ("dropout", Value::Null),
                    ("unk_token", Value::Null),
                    ("continuing_subword_prefix", Value::Null),
                    ("end_of_word_suffix", Value::Null),
                    ("fuse_unk", false.into()),
                    ("byte_fallback", false.into()),
                    ("vocab", Value::Object(vocab.collect())),
                    ("merges", Value::Array(merges.collect())),
                ]),
            ),
        ])
    }

    /// Writes [`Bpe::to_json`] to `path` through a temporary file renamed into place.
    ///
    /// # Errors
    /// [`Error::Io`] naming `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        super::write_atomic(path.as_ref(), &self.to_json().to_json_pretty())
    }

    /// Merges in rank order, as `(left, right)` token ids.
    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merge_list
    }

    /// The bytes `ids` stand for: special tokens verbatim, others through [`char_to_byte`] (a char with no
    /// byte, possible only in a hand-made vocabulary, is copied as UTF-8).
    ///
    /// # Errors
    /// [`Error::UnknownId`] naming the first id outside the vocabulary.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let tok = self.vocab.get(id as usize).ok_or(Error::UnknownId {
                id,
                vocab_size: self.vocab.len(),
            })?;
            if self.is_special[id as usize] {
                out.extend_from_slice(tok.as_bytes());
                continue;
            }
            for c in tok.chars() {
                match char_to_byte(c) {
                    Some(b) => out.push(b),
                    None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
        }
        Ok(out)
    }

    /// Ids of one pre-token: its bytes' ids, merged lowest rank first (leftmost on a tie), which equals
    /// GPT-2's "merge every occurrence of the best pair, repeat". A heap keeps each merge O(log n); stale
    /// heap entries are recognised because a pair's rank no longer matches.
    fn merge_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        const DEAD: u32 = u32::MAX;
        if let [b] = piece {
            out.push(self.byte_ids[*b as usize]);
            return;
        }
        let mut sym: Vec<u32> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let n = sym.len();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut heap = BinaryHeap::new();
        let rank_at = |sym: &[u32], next: &[usize], i: usize| {
            let j = next[i];
            if j >= n {
                None
            } else {
                self.merges.get(&(sym[i], sym[j])).copied()
            }
        };
        for i in 0..n.saturating_sub(1) {
            if let Some((rank, _)) = rank_at(&sym, &next, i) {
                heap.push(Reverse((rank, i)));
            }
        }
        while let Some(Reverse((rank, i))) = heap.pop() {
            if sym[i] == DEAD {
                continue;
            }
            let Some((r, merged)) = rank_at(&sym, &next, i) else {
                continue;
            };
            if r != rank {
                continue;
            }
            let j = next[i];
            sym[i] = merged;
            sym[j] = DEAD;
            next[i] = next[j];
            if next[j] < n {
                prev[next[j]] = i;
            }
            if prev[i] < n
                && let Some((r, _)) = rank_at(&sym, &next, prev[i])
            {
                heap.push(Reverse((r, prev[i])));
            }
            if let Some((r, _)) = rank_at(&sym, &next, i) {
                heap.push(Reverse((r, i)));
            }
        }
        out.extend(sym.into_iter().filter(|&s| s != DEAD));
    }

    fn encode_piece(&self, piece: &str, out: &mut Vec<u32>) {
        if let Ok(cache) = self.cache.read()
            && let Some(ids) = cache.get(piece)
        {
            out.extend_from_slice(ids);
            return;
        }
        let start = out.len();
        self.merge_piece(piece.as_bytes(), out);
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(piece.to_string(), out[start..].to_vec());
        }
    }
}

/// Added tokens may sit beyond the model vocabulary (HF allows it); they extend it without gaps. One inside
/// it must match the token already there.
fn place_added_tokens(
    vocab: &mut Vec<String>,
    specials: &[(String, u32)],
    file: &str,
) -> Result<(), Error> {
    let bad = |msg: String| Error::Format {
        file: file.to_string(),
        msg,
    };
    let mut sorted: Vec<&(String, u32)> = specials.iter().collect();
    sorted.sort_by_key(|(_, id)| *id);
    for (content, id) in sorted {
        let id = *id as usize;
        match vocab.get(id) {
            Some(t) if t == content => {}
            Some(t) => {
                return Err(bad(format!(
                    "added token {content:?} has id {id}, which is {t:?}"
                )));
            }
            None if id == vocab.len() => vocab.push(content.clone()),
            None => {
                return Err(bad(format!(
                    "added token {content:?} id {id} leaves a gap in the ids"
                )));
            }
        }
    }
    Ok(())
}

/// Accepts a ByteLevel pre-tokenizer (alone or inside a Sequence) without a prefix space; rejects others.
fn check_byte_level(pre: Option<&Value>, file: &str) -> Result<(), Error> {
    let bad = |msg: &str| Error::Format {
        file: file.to_string(),
        msg: msg.to_string(),
    };
    let pre = pre.ok_or_else(|| bad("no pre_tokenizer (ByteLevel expected)"))?;
    let steps: Vec<&Value> = match pre.get("type").and_then(Value::as_str) {
        Some("Sequence") => pre
            .get("pretokenizers")
            .and_then(Value::as_array)
            .unwrap_or_default()
            .iter()
            .collect(),
        _ => vec![pre],
    };
    let [step] = steps.as_slice() else {
        return Err(bad("pre_tokenizer must be a single ByteLevel step"));
    };
    if step.get("type").and_then(Value::as_str) != Some("ByteLevel") {
        return Err(bad("pre_tokenizer is not ByteLevel"));
    }
    if step.get("add_prefix_space").and_then(Value::as_bool) == Some(true) {
        return Err(bad("ByteLevel add_prefix_space=true is not supported"));
    }
    if step.get("use_regex").and_then(Value::as_bool) == Some(false) {
        return Err(bad("ByteLevel use_regex=false is not supported"));
    }
    Ok(())
}

impl Tokenizer for Bpe {
    fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        for seg in split_specials(text, &self.specials) {
            match seg {
                Segment::Special(id) => out.push(id),
                Segment::Text(t) => {
                    for piece in pre_tokenize(t) {
                        self.encode_piece(piece, &mut out);
                    }
                }
            }
        }
        out
    }

    /// Decodes to bytes, then to text; byte sequences that are not UTF-8 (a prefix cut inside a character)
    /// become U+FFFD. `decode(encode(s)) == s` for every string.
    fn decode(&self, ids: &[u32]) -> Result<String, Error> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, Error> {
        Bpe::decode_bytes(self, ids)
    }

    fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    fn id_to_token(&self, id: u32) -> Option<&str> {
        self.vocab.get(id as usize).map(String::as_str)
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }
}
