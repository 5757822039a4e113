//! Saving and loading a memory: one file, written to a temporary name, fsynced and renamed into place.
//!
//! Layout: a header line `anvil-memory 1 <FNV-1a 64 of the body, 16 hex digits> <body length>\n`, then
//! the body, a JSON object (`src/json.rs`). The checksum catches corruption that would still parse
//! (a flipped letter in a message); the length catches truncation. Token counts and importances are not
//! stored: they are recomputed on load with the given counter, and every invariant (budgets, message
//! ranges tiling `0..messages`, sorted keyword indexes) is checked again, so a file that passes is a
//! memory the code could have built. Embeddings are not saved.

use super::{Chunk, Config, Error, Level, Memory, TokenCounter, compress};
use crate::json::{self, Value};
use std::io::Write;
use std::path::Path;

const MAGIC: &str = "anvil-memory";
const VERSION: u32 = 1;

/// FNV-1a, 64 bits: the body checksum.
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn chunk_json(c: &Chunk) -> Value {
    let kws = c
        .keywords
        .iter()
        .map(|(k, n)| Value::Array(vec![k.as_str().into(), (*n).into()]))
        .collect();
    Value::Object(vec![
        ("first".into(), c.first.into()),
        ("last".into(), c.last.into()),
        ("text".into(), c.text.as_str().into()),
        ("source_tokens".into(), (c.source_tokens as u64).into()),
        ("keywords".into(), Value::Array(kws)),
    ])
}

impl Memory {
    /// The file's bytes: header line and JSON body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let c = &self.config;
        let config = Value::Object(vec![
            (
                "budgets".into(),
                Value::Array(c.budgets.iter().map(|&b| (b as u64).into()).collect()),
            ),
            ("obsolete_ratio".into(), f64::from(c.obsolete_ratio).into()),
            ("longterm_ratio".into(), f64::from(c.longterm_ratio).into()),
            (
                "min_chunk_tokens".into(),
                (c.min_chunk_tokens as u64).into(),
            ),
        ]);
        let mut df: Vec<(&String, &u32)> = self.df.iter().collect();
        df.sort_unstable();
        let df = df
            .into_iter()
            .map(|(k, n)| Value::Array(vec![k.as_str().into(), (*n).into()]))
            .collect();
        let levels = self
            .levels
            .iter()
            .map(|q| Value::Array(q.iter().map(chunk_json).collect()))
            .collect();
        let body = Value::Object(vec![
            ("counter".into(), self.counter.id().into()),
            ("messages".into(), self.next_id.into()),
            ("config".into(), config),
            ("df".into(), Value::Array(df)),
            ("levels".into(), Value::Array(levels)),
        ])
        .to_json();
        let mut out = format!(
            "{MAGIC} {VERSION} {:016x} {}\n",
            checksum(body.as_bytes()),
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body.as_bytes());
        out
    }

    /// Writes [`Memory::to_bytes`] to a temporary file beside `path`, fsyncs it, renames it to `path` and
    /// fsyncs the directory, so an interrupted save leaves the previous file whole.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(format!(".tmp{}", std::process::id()));
        let tmp = path.with_file_name(name);
        let bytes = self.to_bytes();
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            // Directory fsync makes the rename durable; not every platform allows opening a directory.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }

    /// Loads a memory saved with a counter whose [`TokenCounter::id`] equals `counter`'s.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, [`Error::Format`] naming what is wrong otherwise.
    pub fn load(
        path: impl AsRef<Path>,
        counter: Box<dyn TokenCounter + Send + Sync>,
    ) -> Result<Memory, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, counter, &path.display().to_string())
    }

    /// [`Memory::load`] from bytes; `file` names the source in errors.
    ///
    /// # Errors
    /// [`Error::Format`] naming what is wrong.
    pub fn from_bytes(
        bytes: &[u8],
        counter: Box<dyn TokenCounter + Send + Sync>,
        file: &str,
    ) -> Result<Memory, Error> {
        let bad = |msg: String| Error::Format {
            file: file.to_string(),
            msg,
        };
        let body = read_header(bytes).map_err(bad)?;
        let root = json::parse(body).map_err(|e| bad(format!("body: {e}")))?;
        decode(&root, counter).map_err(bad)
    }
}

/// Checks the header line and returns the body it vouches for.
fn read_header(bytes: &[u8]) -> Result<&[u8], String> {
    let nl = bytes
        .iter()
        .take(128)
        .position(|&b| b == b'\n')
        .ok_or("no header line (not an anvil memory file, or truncated)")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not text")?;
    let parts: Vec<&str> = header.split(' ').collect();
    let [magic, version, sum, len] = parts[..] else {
        return Err(format!("header `{header}` does not have 4 fields"));
    };
    if magic != MAGIC {
        return Err(format!(
            "not an anvil memory file (header starts `{magic}`)"
        ));
    }
    if version != VERSION.to_string() {
        return Err(format!(
            "unsupported version `{version}` (this build reads {VERSION})"
        ));
    }
    let sum = u64::from_str_radix(sum, 16).map_err(|_| format!("bad checksum field `{sum}`"))?;
    let len: usize = len
        .parse()
        .map_err(|_| format!("bad length field `{len}`"))?;
    let body = &bytes[nl + 1..];
    if body.len() != len {
        return Err(format!(
            "body is {} bytes, header says {len} (truncated or extended)",
            body.len()
        ));
    }
    if checksum(body) != sum {
        return Err(format!(
            "checksum mismatch: body hashes to {:016x}, header says {sum:016x}",
            checksum(body)
        ));
    }
    Ok(body)
}

fn field<'a>(v: &'a Value, key: &str, ctx: &str) -> Result<&'a Value, String> {
    v.get(key).ok_or_else(|| format!("{ctx}: missing `{key}`"))
}

fn uint(v: &Value, key: &str, ctx: &str) -> Result<u64, String> {
    field(v, key, ctx)?
        .as_u64()
        .ok_or_else(|| format!("{ctx}: `{key}` is not a non-negative integer"))
}

fn usize_of(x: u64, what: &str) -> Result<usize, String> {
    usize::try_from(x).map_err(|_| format!("{what} {x} is too large"))
}

fn decode(root: &Value, counter: Box<dyn TokenCounter + Send + Sync>) -> Result<Memory, String> {
    let id = field(root, "counter", "file")?
        .as_str()
        .ok_or("`counter` is not a string")?;
    if id != counter.id() {
        return Err(format!(
            "saved with token counter `{id}`, loading with `{}`",
            counter.id()
        ));
    }
    let messages = uint(root, "messages", "file")?;
    let cfg = field(root, "config", "file")?;
    let budgets = field(cfg, "budgets", "config")?
        .as_array()
        .ok_or("config: `budgets` is not an array")?;
    let [b0, b1, b2] = budgets else {
        return Err(format!(
            "config: `budgets` has {} entries, not 3",
            budgets.len()
        ));
    };
    let budget = |b: &Value| {
        b.as_u64()
            .ok_or("config: a budget is not an integer".to_string())
    };
    let ratio = |k: &str| {
        field(cfg, k, "config")?
            .as_f64()
            .ok_or(format!("config: `{k}` is not a number"))
            .map(|x| x as f32)
    };
    let config = Config {
        budgets: [
            usize_of(budget(b0)?, "budget")?,
            usize_of(budget(b1)?, "budget")?,
            usize_of(budget(b2)?, "budget")?,
        ],
        obsolete_ratio: ratio("obsolete_ratio")?,
        longterm_ratio: ratio("longterm_ratio")?,
        min_chunk_tokens: usize_of(uint(cfg, "min_chunk_tokens", "config")?, "min_chunk_tokens")?,
    };
    let mut m = Memory::with_counter(config, counter).map_err(|e| e.to_string())?;
    let df = field(root, "df", "file")?
        .as_array()
        .ok_or("`df` is not an array")?;
    for (w, n) in sorted_counts(df, "df")? {
        if u64::from(n) > messages {
            return Err(format!(
                "df: `{w}` in {n} messages, more than the {messages} there are"
            ));
        }
        m.df.insert(w, n);
    }
    let levels = field(root, "levels", "file")?
        .as_array()
        .ok_or("`levels` is not an array")?;
    if levels.len() != 3 {
        return Err(format!("`levels` has {} entries, not 3", levels.len()));
    }
    // Messages are tiled in travel order: long-term holds the oldest, current the newest.
    let mut next = 0u64;
    for l in [Level::LongTerm, Level::Obsolete, Level::Current] {
        let arr = levels[l as usize]
            .as_array()
            .ok_or(format!("level {} is not an array", l.name()))?;
        for (n, cv) in arr.iter().enumerate() {
            let ctx = format!("{} chunk {n}", l.name());
            let c = decode_chunk(&m, cv, &ctx)?;
            if c.first != next || c.last < c.first {
                return Err(format!(
                    "{ctx}: covers messages {}..={}, expected to start at {next}",
                    c.first, c.last
                ));
            }
            if l == Level::Current && c.first != c.last {
                return Err(format!("{ctx}: a current chunk must be one message"));
            }
            next = c
                .last
                .checked_add(1)
                .ok_or(format!("{ctx}: message id overflow"))?;
            m.push(l, c);
        }
        if m.totals[l as usize] > m.config.budgets[l as usize] {
            return Err(format!(
                "{} level holds {} tokens, over its budget of {}",
                l.name(),
                m.totals[l as usize],
                m.config.budgets[l as usize]
            ));
        }
    }
    if next != messages {
        return Err(format!(
            "chunks cover {next} messages, the file says {messages}"
        ));
    }
    m.next_id = messages;
    Ok(m)
}

/// `[[word, count], ...]` with words strictly increasing and counts positive.
fn sorted_counts(items: &[Value], ctx: &str) -> Result<Vec<(String, u32)>, String> {
    let mut out: Vec<(String, u32)> = Vec::with_capacity(items.len());
    for k in items {
        let pair = match k.as_array() {
            Some([w, n]) => w
                .as_str()
                .zip(n.as_u64().and_then(|n| u32::try_from(n).ok())),
            _ => None,
        };
        let (w, n) = pair.ok_or(format!("{ctx}: an entry is not a [string, count] pair"))?;
        if n == 0 || out.last().is_some_and(|(p, _)| p.as_str() >= w) {
            return Err(format!(
                "{ctx}: entries not sorted and unique with positive counts at `{w}`"
            ));
        }
        out.push((w.to_string(), n));
    }
    Ok(out)
}

fn decode_chunk(m: &Memory, v: &Value, ctx: &str) -> Result<Chunk, String> {
    let text = field(v, "text", ctx)?
        .as_str()
        .ok_or(format!("{ctx}: `text` is not a string"))?;
    let kws = field(v, "keywords", ctx)?
        .as_array()
        .ok_or(format!("{ctx}: `keywords` is not an array"))?;
    let keywords = sorted_counts(kws, ctx)?;
    let source_tokens = usize_of(uint(v, "source_tokens", ctx)?, "source_tokens")?;
    let text = text.to_string();
    Ok(Chunk {
        first: uint(v, "first", ctx)?,
        last: uint(v, "last", ctx)?,
        tokens: m.counter.count(&text),
        importance: compress::importance(&text),
        text,
        source_tokens,
        keywords,
        embedding: None,
    })
}
