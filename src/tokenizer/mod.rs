//! Tokenizers: byte-level BPE (GPT-2 style, with training) and BERT WordPiece, loaded from and saved to the
//! Hugging Face `tokenizer.json` format. One [`Error`] enum for the module; one [`Tokenizer`] trait over both.

pub mod bpe;
mod normalize;
mod pretokenize;
mod train;
#[rustfmt::skip]
mod unicode_tables;
pub mod wordpiece;

pub use bpe::Bpe;
pub use normalize::BertOptions;
pub use pretokenize::pre_tokenize;
pub use wordpiece::WordPiece;

use crate::json::{self, JsonError, Value};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};

/// A map whose keys come from the model (token ids, vocabulary strings), not from inserting user text, so
/// hash flooding cannot lengthen its probe chains: a fast multiplicative hash (FxHash's mixing step) replaces
/// SipHash. Maps filled from user text (the BPE word cache, training counts) keep the std hasher.
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What went wrong, naming the file (or `<memory>`) and the problem.
#[derive(Debug)]
pub enum Error {
    /// Reading or writing `path` failed.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `file` is not valid JSON.
    Json { file: String, source: JsonError },
    /// `file` parsed but its content is not a tokenizer we support; `msg` says which field and why.
    Format { file: String, msg: String },
    /// `decode` was given an id outside the vocabulary.
    UnknownId { id: u32, vocab_size: usize },
    /// A required token (e.g. `[UNK]`, `[CLS]`) is missing from the vocabulary.
    MissingToken { token: String },
    /// Training parameters that cannot produce a tokenizer.
    Train { msg: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Json { file, source } => write!(f, "{file}: {source}"),
            Error::Format { file, msg } => write!(f, "{file}: {msg}"),
            Error::UnknownId { id, vocab_size } => {
                write!(f, "unknown token id {id} (vocabulary size {vocab_size})")
            }
            Error::MissingToken { token } => write!(f, "token {token:?} is not in the vocabulary"),
            Error::Train { msg } => write!(f, "training: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Json { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The operations every tokenizer offers.
pub trait Tokenizer {
    /// Token ids for `text` (no `[CLS]`/`[SEP]`-style framing).
    fn encode(&self, text: &str) -> Vec<u32>;
    /// Text for `ids`.
    ///
    /// # Errors
    /// [`Error::UnknownId`] naming the first id outside the vocabulary.
    fn decode(&self, ids: &[u32]) -> Result<String, Error>;
    /// The bytes `ids` stand for, before any UTF-8 check (byte-level BPE pieces may end inside a
    /// character: streaming decoders join them). Defaults to the text's bytes.
    ///
    /// # Errors
    /// [`Error::UnknownId`] naming the first id outside the vocabulary.
    fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, Error> {
        self.decode(ids).map(String::into_bytes)
    }
    fn vocab_size(&self) -> usize;
    fn id_to_token(&self, id: u32) -> Option<&str>;
    fn token_to_id(&self, token: &str) -> Option<u32>;
}

/// Loads a HF `tokenizer.json`, choosing the implementation from `model.type` ("BPE" or "WordPiece").
///
/// # Errors
/// [`Error::Io`], [`Error::Json`], or [`Error::Format`] for an unsupported or inconsistent file.
pub fn from_file(path: impl AsRef<Path>) -> Result<Box<dyn Tokenizer + Send + Sync>, Error> {
    let path = path.as_ref();
    from_json_bytes(&read(path)?, &path.display().to_string())
}

/// [`from_file`] for the bytes of a `tokenizer.json` already in memory; `file` names it in errors.
///
/// # Errors
/// [`Error::Json`], or [`Error::Format`] for an unsupported or inconsistent file.
pub fn from_json_bytes(
    bytes: &[u8],
    file: &str,
) -> Result<Box<dyn Tokenizer + Send + Sync>, Error> {
    let root = parse_json(bytes, file)?;
    match root
        .get("model")
        .and_then(|m| m.get("type"))
        .and_then(Value::as_str)
    {
        Some("BPE") => Ok(Box::new(Bpe::from_json(&root, file)?)),
        Some("WordPiece") => Ok(Box::new(WordPiece::from_json(&root, file)?)),
        other => Err(Error::Format {
            file: file.to_string(),
            msg: format!("unsupported model.type {other:?}"),
        }),
    }
}

/// The bytes of `path`.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses JSON `bytes` from `file` (named in the error).
pub(crate) fn parse_json(bytes: &[u8], file: &str) -> Result<Value, Error> {
    json::parse(bytes).map_err(|source| Error::Json {
        file: file.to_string(),
        source,
    })
}

/// Writes `text` through [`crate::io::write_atomic`] (temporary file, fsync, rename, directory fsync), so a
/// crash never leaves a half-written tokenizer behind.
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<(), Error> {
    crate::io::write_atomic(path, |w| w.write_all(text.as_bytes())).map_err(|e| match e {
        crate::io::Error::Io { path, op, source } => Error::Io {
            path,
            source: std::io::Error::new(source.kind(), format!("{op}: {source}")),
        },
        other => Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}

/// One piece of input after special tokens are cut out.
#[derive(Debug, PartialEq)]
pub(crate) enum Segment<'a> {
    Text(&'a str),
    Special(u32),
}

/// Splits `text` at every occurrence of a special token (leftmost first; the longest on a tie), as HF matches
/// added tokens before any normalisation or pre-tokenization. `specials` holds `(content, id)`.
///
/// One pass: each special's next occurrence is cached and searched again only once the cut has moved past
/// it, so the text is scanned about once per special (searching the whole rest at every cut was quadratic).
pub(crate) fn split_specials<'a>(text: &'a str, specials: &[(String, u32)]) -> Vec<Segment<'a>> {
    let specials: Vec<&(String, u32)> = specials.iter().filter(|(c, _)| !c.is_empty()).collect();
    // next[i]: where specials[i] next occurs at or after `pos` (no occurrence lies between), or None.
    let mut next: Vec<Option<usize>> = specials
        .iter()
        .map(|(c, _)| text.find(c.as_str()))
        .collect();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let mut best: Option<(usize, usize, u32)> = None; // (start, len, id)
        for (slot, (content, id)) in next.iter_mut().zip(&specials) {
            if slot.is_some_and(|p| p < pos) {
                // `pos` ends a special token or is 0, so it is a char boundary.
                *slot = text[pos..].find(content.as_str()).map(|q| pos + q);
            }
            let Some(p) = *slot else { continue };
            let better = match best {
                None => true,
                Some((b, l, _)) => p < b || (p == b && content.len() > l),
            };
            if better {
                best = Some((p, content.len(), *id));
            }
        }
        match best {
            Some((p, len, id)) => {
                if p > pos {
                    out.push(Segment::Text(&text[pos..p]));
                }
                out.push(Segment::Special(id));
                pos = p + len;
            }
            None => {
                out.push(Segment::Text(&text[pos..]));
                break;
            }
        }
    }
    out
}

/// Reads `model.vocab` (an object of token -> id) into an id-indexed table; ids must be dense from 0.
pub(crate) fn vocab_from_json(model: &Value, file: &str) -> Result<Vec<String>, Error> {
    let bad = |msg: String| Error::Format {
        file: file.to_string(),
        msg,
    };
    let pairs = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("model.vocab is not an object".into()))?;
    let mut slots: Vec<Option<String>> = vec![None; pairs.len()];
    for (token, id) in pairs {
        let id = id
            .as_u64()
            .ok_or_else(|| bad(format!("model.vocab[{token:?}] is not an integer id")))?;
        let slot = usize::try_from(id)
            .ok()
            .and_then(|i| slots.get_mut(i))
            .ok_or_else(|| {
                bad(format!(
                    "model.vocab id {id} for {token:?} is out of range (ids must be dense)"
                ))
            })?;
        if slot.is_some() {
            return Err(bad(format!("model.vocab id {id} is used twice")));
        }
        *slot = Some(token.clone());
    }
    // Every slot is filled: pairs.len() distinct ids in 0..pairs.len().
    Ok(slots.into_iter().flatten().collect())
}

/// Reads `added_tokens` as `(content, id)` pairs.
pub(crate) fn added_tokens_from_json(
    root: &Value,
    file: &str,
) -> Result<Vec<(String, u32)>, Error> {
    let bad = |msg: &str| Error::Format {
        file: file.to_string(),
        msg: msg.to_string(),
    };
    let Some(list) = root.get("added_tokens") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| bad("added_tokens is not an array"))?;
    let mut out = Vec::with_capacity(list.len());
    for t in list {
        let content = t
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("added token without content"))?;
        let id = t
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok());
        let id = id.ok_or_else(|| bad("added token without a valid id"))?;
        out.push((content.to_string(), id));
    }
    Ok(out)
}
