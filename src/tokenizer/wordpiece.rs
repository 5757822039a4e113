//! BERT WordPiece: the BasicTokenizer of `normalize.rs`, then greedy longest-match-first sub-words with a
//! `##` continuation prefix. Loads `vocab.txt` or a HF `tokenizer.json` with `model.type` "WordPiece".

use super::normalize::{self, BertOptions};
use super::{Error, FastMap, Segment, Tokenizer, split_specials};
use crate::json::Value;
use std::path::Path;

/// Special tokens of BERT vocabularies, matched verbatim in the input before normalisation.
const BERT_SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// A WordPiece tokenizer (BERT uncased by default).
#[derive(Debug, Clone)]
pub struct WordPiece {
    vocab: Vec<String>,
    ids: FastMap<String, u32>,
    unk_id: u32,
    prefix: String,
    /// Words with more characters than this become `[UNK]` whole.
    max_chars: usize,
    /// Bytes in the longest vocabulary token.
    longest: usize,
    options: BertOptions,
    specials: Vec<(String, u32)>,
}

impl WordPiece {
    /// Builds a tokenizer from an id-ordered vocabulary; `[UNK]` must be present.
    ///
    /// # Errors
    /// [`Error::MissingToken`] if `unk_token` is not in `vocab`.
    pub fn new(vocab: Vec<String>, unk_token: &str, options: BertOptions) -> Result<Self, Error> {
        let mut ids = FastMap::default();
        for (i, t) in vocab.iter().enumerate() {
            // Later duplicates win, as a Python dict built line by line would have it.
            ids.insert(t.clone(), i as u32);
        }
        let unk_id = *ids.get(unk_token).ok_or_else(|| Error::MissingToken {
            token: unk_token.to_string(),
        })?;
        let specials = BERT_SPECIALS
            .iter()
            .filter_map(|s| ids.get(*s).map(|&id| (s.to_string(), id)))
            .collect();
        let longest = vocab.iter().map(String::len).max().unwrap_or(0);
        Ok(WordPiece {
            vocab,
            ids,
            unk_id,
            prefix: "##".into(),
            max_chars: 100,
            longest,
            options,
            specials,
        })
    }

    /// Loads a BERT `vocab.txt` (one token per line, id = line number) with the uncased options.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Format`] for non-UTF-8 text or a vocabulary without `[UNK]`.
    pub fn from_vocab_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        Self::from_vocab_bytes(&super::read(path)?, &path.display().to_string())
    }

    /// [`WordPiece::from_vocab_file`] for the bytes of a `vocab.txt` in memory; `file` names it in errors.
    ///
    /// # Errors
    /// [`Error::Format`] for non-UTF-8 text or a vocabulary without `[UNK]`.
    pub fn from_vocab_bytes(bytes: &[u8], file: &str) -> Result<Self, Error> {
        let text = std::str::from_utf8(bytes).map_err(|e| Error::Format {
            file: file.to_string(),
            msg: format!("not UTF-8 at byte {}", e.valid_up_to()),
        })?;
        let vocab = text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect();
        Self::new(vocab, "[UNK]", BertOptions::default()).map_err(|e| in_file(e, file))
    }

    /// Loads a HF `tokenizer.json` whose model is WordPiece, honouring its `BertNormalizer` options.
    ///
    /// # Errors
    /// As [`crate::tokenizer::from_file`].
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        Self::from_json_bytes(&super::read(path)?, &path.display().to_string())
    }

    /// [`WordPiece::from_tokenizer_json`] for bytes in memory; `file` names it in errors.
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
        if model.get("type").and_then(Value::as_str) != Some("WordPiece") {
            return Err(bad("model.type is not \"WordPiece\"".into()));
        }
        let vocab = super::vocab_from_json(model, file)?;
        let unk = model
            .get("unk_token")
            .and_then(Value::as_str)
            .unwrap_or("[UNK]");
        let options = bert_options(root.get("normalizer"), file)?;
        let mut wp = Self::new(vocab, unk, options).map_err(|e| in_file(e, file))?;
        if let Some(p) = model.get("continuing_subword_prefix") {
            wp.prefix = p
                .as_str()
                .ok_or_else(|| bad("continuing_subword_prefix is not a string".into()))?
                .into();
        }
        if let Some(m) = model.get("max_input_chars_per_word") {
            let m = m
                .as_u64()
                .ok_or_else(|| bad("max_input_chars_per_word is not an integer".into()))?;
            wp.max_chars = usize::try_from(m).unwrap_or(usize::MAX);
        }
        let added = super::added_tokens_from_json(root, file)?;
        if let Some((t, id)) = added.iter().find(|(_, id)| *id as usize >= wp.vocab.len()) {
            return Err(bad(format!(
                "added token {t:?} has id {id} outside the vocabulary"
            )));
        }
        if !added.is_empty() {
            wp.specials = added;
        }
        Ok(wp)
    }

    /// `[CLS] encode(text) [SEP]`, the single-sequence BERT template.
    ///
    /// # Errors
    /// [`Error::MissingToken`] if the vocabulary lacks `[CLS]` or `[SEP]`.
    pub fn encode_with_special(&self, text: &str) -> Result<Vec<u32>, Error> {
        let id = |t: &str| {
            self.ids.get(t).copied().ok_or_else(|| Error::MissingToken {
                token: t.to_string(),
            })
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let mut out = vec![cls];
        out.extend(self.encode(text));
        out.push(sep);
        Ok(out)
    }

    /// Greedy longest-match-first pieces of one word, or `[UNK]` if some position matches nothing.
    fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        if word.chars().count() > self.max_chars {
            out.push(self.unk_id);
            return;
        }
        let first = out.len();
        let mut start = 0;
        let mut key = String::with_capacity(word.len() + self.prefix.len());
        while start < word.len() {
            // Candidate ends at char boundaries, longest first; no piece longer than the longest token can
            // match, which bounds the work per position whatever `max_chars` a file sets.
            let mut limit = (start + self.longest).min(word.len());
            while !word.is_char_boundary(limit) {
                limit -= 1;
            }
            let mut found = None;
            let ends = word[start..limit]
                .char_indices()
                .rev()
                .map(|(i, c)| start + i + c.len_utf8());
            for end in ends {
                key.clear();
                if start > 0 {
                    key.push_str(&self.prefix);
                }
                key.push_str(&word[start..end]);
                if let Some(&id) = self.ids.get(key.as_str()) {
                    found = Some((id, end));
                    break;
                }
            }
            match found {
                Some((id, end)) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(first);
                    out.push(self.unk_id);
                    return;
                }
            }
        }
    }
}

/// A vocabulary's missing `[UNK]` as a [`Error::Format`] naming the file it came from.
fn in_file(e: Error, file: &str) -> Error {
    match e {
        Error::MissingToken { token } => Error::Format {
            file: file.to_string(),
            msg: format!("the vocabulary has no unknown token {token:?}"),
        },
        other => other,
    }
}

/// Reads a `BertNormalizer` block; `strip_accents: null` follows `lowercase`, as in HF.
fn bert_options(normalizer: Option<&Value>, file: &str) -> Result<BertOptions, Error> {
    let mut o = BertOptions::default();
    let Some(n) = normalizer.filter(|n| !n.is_null()) else {
        return Ok(o);
    };
    if n.get("type").and_then(Value::as_str) != Some("BertNormalizer") {
        let msg =
            "normalizer is not a BertNormalizer (other normalizers are unsupported)".to_string();
        return Err(Error::Format {
            file: file.to_string(),
            msg,
        });
    }
    let flag = |k: &str, d: bool| n.get(k).and_then(Value::as_bool).unwrap_or(d);
    o.clean_text = flag("clean_text", true);
    o.handle_chinese_chars = flag("handle_chinese_chars", true);
    o.lowercase = flag("lowercase", true);
    o.strip_accents = flag("strip_accents", o.lowercase);
    Ok(o)
}

impl Tokenizer for WordPiece {
    fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for seg in split_specials(text, &self.specials) {
            match seg {
                Segment::Special(id) => out.push(id),
                Segment::Text(t) => {
                    let norm = normalize::normalize(t, self.options);
                    for word in normalize::split_words(&norm) {
                        self.encode_word(word, &mut out);
                    }
                }
            }
        }
        out
    }

    /// Joins tokens with spaces, gluing `##` pieces to their predecessor, then applies HF's cleanup
    /// (no space before `. ? ! ,` and in English contractions). Special tokens are kept.
    fn decode(&self, ids: &[u32]) -> Result<String, Error> {
        let mut out = String::new();
        for &id in ids {
            let tok = self.id_to_token(id).ok_or(Error::UnknownId {
                id,
                vocab_size: self.vocab.len(),
            })?;
            match tok.strip_prefix(self.prefix.as_str()) {
                Some(rest) if !self.prefix.is_empty() => out.push_str(rest),
                _ => {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(tok);
                }
            }
        }
        Ok(cleanup(&out))
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

/// HF's `cleanup` for WordPiece decoding.
fn cleanup(s: &str) -> String {
    let pairs = [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" do not", " don't"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ];
    let mut out = s.to_string();
    for (from, to) in pairs {
        out = out.replace(from, to);
    }
    out
}
