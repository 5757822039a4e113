//! A three-level conversation memory: *current* (recent messages in full), *obsolete* (older chunks,
//! compressed) and *long-term* (important facts, compressed further), each under a token budget, with
//! context building for a query by BM25 over keywords and, with an [`Embedder`], cosine similarity.
//! Design, formulas and measured figures: `docs/memory.md`.
//!
//! Invariants kept by every operation (and checked again on load):
//! - each level's tokens (its chunks' text, recounted by the memory's [`TokenCounter`]) stay within its
//!   budget;
//! - every message ever added is covered by exactly one chunk (`first..=last` ranges tile `0..messages`
//!   in order: long-term, then obsolete, then current), and that chunk's keyword index holds all of the
//!   message's keywords, however much of its text compression removed.

pub mod compress;
mod encoder;
pub mod eval;
pub mod persist;
pub mod retrieve;
pub mod text;

pub use compress::{Background, Extractive, Summarizer};
pub use encoder::EncoderEmbedder;
pub use retrieve::{
    Bm25, Context, ContextItem, ContextOptions, Embedder, HashEmbedder, Hit, Scoring,
};
pub use text::{TokenCounter, TokenizerCounter, WordCounter};

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;

/// What went wrong, naming the file or the setting.
#[derive(Debug)]
pub enum Error {
    /// A [`Config`] that cannot work; the message names the field.
    Config(String),
    /// Reading or writing `path` failed.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `file` is not a memory we can load; `msg` says which part and why (checksum, field, invariant).
    Format { file: String, msg: String },
    /// The embedder failed or returned vectors of the wrong count or size.
    Embed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(msg) => write!(f, "memory config: {msg}"),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Format { file, msg } => write!(f, "{file}: {msg}"),
            Error::Embed(msg) => write!(f, "embedder: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The three levels, newest last in the order messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    Current = 0,
    Obsolete = 1,
    LongTerm = 2,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Current, Level::Obsolete, Level::LongTerm];

    pub fn name(self) -> &'static str {
        match self {
            Level::Current => "current",
            Level::Obsolete => "obsolete",
            Level::LongTerm => "long-term",
        }
    }
}

/// Budgets and compression settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Token budget of each level, indexed by [`Level`].
    pub budgets: [usize; 3],
    /// A chunk moving from current to obsolete is compressed to this fraction of its tokens (0.2 = 5x).
    pub obsolete_ratio: f32,
    /// A chunk moving from obsolete to long-term is compressed again to this fraction (0.5: 10x overall).
    pub longterm_ratio: f32,
    /// Messages leaving the current level are grouped until the group has at least this many tokens,
    /// so obsolete chunks are not single short messages.
    pub min_chunk_tokens: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            budgets: [2000, 8000, 4000],
            obsolete_ratio: 0.2,
            longterm_ratio: 0.5,
            min_chunk_tokens: 200,
        }
    }
}

impl Config {
    /// # Errors
    /// [`Error::Config`] for a zero budget or a ratio outside (0, 1].
    pub fn validate(&self) -> Result<(), Error> {
        for (l, &b) in Level::ALL.iter().zip(&self.budgets) {
            if b == 0 {
                return Err(Error::Config(format!(
                    "the {} budget must be at least 1",
                    l.name()
                )));
            }
        }
        for (name, r) in [
            ("obsolete_ratio", self.obsolete_ratio),
            ("longterm_ratio", self.longterm_ratio),
        ] {
            if !(r > 0.0 && r <= 1.0) {
                return Err(Error::Config(format!("{name} must be in (0, 1], got {r}")));
            }
        }
        Ok(())
    }
}

/// A piece of the conversation: one message in the current level, a compressed group of consecutive
/// messages below it.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Ids of the first and last message it covers (inclusive).
    pub first: u64,
    pub last: u64,
    /// The text kept, possibly compressed (empty when a tiny budget left no room).
    pub text: String,
    /// Tokens of `text`.
    pub tokens: usize,
    /// Tokens of the messages as they were added; `source_tokens / tokens` is the compression ratio.
    pub source_tokens: usize,
    /// [`compress::importance`] of `text`.
    pub importance: f32,
    /// Keyword counts of the original messages, sorted by keyword; survives every compression.
    pub keywords: Vec<(String, u32)>,
    /// Cached embedding of `text` (not saved; recomputed after a load or a text change).
    pub(crate) embedding: Option<Vec<f32>>,
}

impl Chunk {
    /// Whether the chunk's keyword index holds `keyword` (already stemmed, see [`text::keywords`]).
    pub fn has_keyword(&self, keyword: &str) -> bool {
        self.keywords
            .binary_search_by(|(k, _)| k.as_str().cmp(keyword))
            .is_ok()
    }

    /// Bytes this chunk holds on the heap plus its own size.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Chunk>()
            + self.text.capacity()
            + self.keywords.capacity() * std::mem::size_of::<(String, u32)>()
            + self
                .keywords
                .iter()
                .map(|(k, _)| k.capacity())
                .sum::<usize>()
            + self.embedding.as_ref().map_or(0, |e| e.capacity() * 4)
    }
}

/// One level's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelStats {
    pub level: Level,
    pub chunks: usize,
    pub tokens: usize,
    pub budget: usize,
    /// Messages covered by the level's chunks.
    pub messages: u64,
    /// Tokens those messages had when added.
    pub source_tokens: usize,
}

impl LevelStats {
    /// `tokens` as a percentage of `budget`.
    pub fn percent(&self) -> f64 {
        100.0 * self.tokens as f64 / self.budget as f64
    }

    /// `source_tokens / tokens`: how many times the level's text was compressed (1 for none).
    pub fn ratio(&self) -> f64 {
        if self.tokens == 0 {
            if self.source_tokens == 0 {
                1.0
            } else {
                f64::INFINITY
            }
        } else {
            self.source_tokens as f64 / self.tokens as f64
        }
    }
}

/// The memory of one conversation.
pub struct Memory {
    config: Config,
    counter: Box<dyn TokenCounter + Send + Sync>,
    summarizer: Box<dyn Summarizer + Send + Sync>,
    levels: [VecDeque<Chunk>; 3],
    totals: [usize; 3],
    next_id: u64,
    /// The [`Embedder::id`] the cached chunk embeddings came from.
    embedder_id: Option<String>,
    /// Messages containing each keyword (see [`Background`]).
    df: HashMap<String, u32>,
}

impl Memory {
    /// An empty memory counting tokens with [`WordCounter`] and compressing with [`Extractive`].
    ///
    /// # Errors
    /// [`Error::Config`] when `config` fails [`Config::validate`].
    pub fn new(config: Config) -> Result<Self, Error> {
        Self::with_counter(config, Box::new(WordCounter))
    }

    /// An empty memory counting tokens with `counter`.
    ///
    /// # Errors
    /// As [`Memory::new`].
    pub fn with_counter(
        config: Config,
        counter: Box<dyn TokenCounter + Send + Sync>,
    ) -> Result<Self, Error> {
        config.validate()?;
        Ok(Memory {
            config,
            counter,
            summarizer: Box::new(Extractive),
            levels: Default::default(),
            totals: [0; 3],
            next_id: 0,
            embedder_id: None,
            df: HashMap::new(),
        })
    }

    /// Replaces the summariser used for all later compression.
    pub fn set_summarizer(&mut self, summarizer: Box<dyn Summarizer + Send + Sync>) {
        self.summarizer = summarizer;
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn counter(&self) -> &dyn TokenCounter {
        self.counter.as_ref()
    }

    /// Messages added so far (the next message's id).
    pub fn messages(&self) -> u64 {
        self.next_id
    }

    /// The chunks of `level`, oldest first.
    pub fn chunks(&self, level: Level) -> impl ExactSizeIterator<Item = &Chunk> {
        self.levels[level as usize].iter()
    }

    /// The chunk that covers message `id`, with its level.
    pub fn find_message(&self, id: u64) -> Option<(Level, &Chunk)> {
        for l in Level::ALL {
            let q = &self.levels[l as usize];
            let i = q.partition_point(|c| c.last < id);
            if let Some(c) = q.get(i).filter(|c| c.first <= id) {
                return Some((l, c));
            }
        }
        None
    }

    /// Adds one message and moves whatever overflows down the levels; returns the message's id. A message
    /// longer than the whole current budget is stored compressed to that budget (its keywords in full).
    pub fn add(&mut self, message: &str) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let text = message.trim();
        let source_tokens = self.counter.count(text);
        let budget = self.config.budgets[0];
        let kept = if source_tokens > budget {
            self.shrink(text, budget)
        } else {
            text.to_string()
        };
        let keywords = text::keyword_counts(text);
        for (k, _) in &keywords {
            *self.df.entry(k.clone()).or_default() += 1;
        }
        let chunk = self.make_chunk(id, id, kept, source_tokens, keywords);
        self.push(Level::Current, chunk);
        self.settle();
        id
    }

    /// Per-level figures.
    pub fn stats(&self) -> [LevelStats; 3] {
        Level::ALL.map(|l| {
            let q = &self.levels[l as usize];
            LevelStats {
                level: l,
                chunks: q.len(),
                tokens: self.totals[l as usize],
                budget: self.config.budgets[l as usize],
                messages: q.iter().map(|c| c.last - c.first + 1).sum(),
                source_tokens: q.iter().map(|c| c.source_tokens).sum(),
            }
        })
    }

    /// Bytes the structure holds: every chunk's text, keyword index and cached embedding, the level
    /// queues' capacity, the keyword document-frequency table (entries at the map's capacity, one
    /// control byte each), and the memory itself (not the counter, summariser or allocator overhead).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Memory>()
            + self.df.capacity() * (std::mem::size_of::<(String, u32)>() + 1)
            + self.df.keys().map(String::capacity).sum::<usize>()
            + self
                .levels
                .iter()
                .map(|q| {
                    (q.capacity() - q.len()) * std::mem::size_of::<Chunk>()
                        + q.iter().map(Chunk::bytes).sum::<usize>()
                })
                .sum::<usize>()
    }

    fn make_chunk(
        &self,
        first: u64,
        last: u64,
        text: String,
        source_tokens: usize,
        keywords: Vec<(String, u32)>,
    ) -> Chunk {
        Chunk {
            first,
            last,
            tokens: self.counter.count(&text),
            importance: compress::importance(&text),
            text,
            source_tokens,
            keywords,
            embedding: None,
        }
    }

    /// `text` summarised to at most `max_tokens`, truncated if the summariser overshoots.
    fn shrink(&self, text: &str, max_tokens: usize) -> String {
        let background = Background {
            docs: self.next_id,
            df: &self.df,
        };
        let s = self
            .summarizer
            .summarize(text, max_tokens, self.counter.as_ref(), &background);
        text::truncate_to(&s, max_tokens, self.counter.as_ref())
    }

    fn push(&mut self, level: Level, chunk: Chunk) {
        self.totals[level as usize] += chunk.tokens;
        self.levels[level as usize].push_back(chunk);
    }

    fn pop_front(&mut self, level: Level) -> Option<Chunk> {
        let c = self.levels[level as usize].pop_front()?;
        self.totals[level as usize] -= c.tokens;
        Some(c)
    }

    /// Moves overflow down: current -> obsolete -> long-term, then resolves long-term overflow.
    fn settle(&mut self) {
        let [b_cur, b_obs, b_lt] = self.config.budgets;
        while self.totals[0] > b_cur {
            let mut group = Vec::new();
            let mut src = 0;
            while let Some(front) = self.levels[0].front() {
                let over = self.totals[0] > b_cur;
                // Keep gathering toward min_chunk_tokens, but never take the newest message just for that.
                if !over && (src >= self.config.min_chunk_tokens || self.levels[0].len() == 1) {
                    break;
                }
                src += front.tokens;
                group.extend(self.pop_front(Level::Current));
            }
            let chunk = self.compress_group(&group, self.config.obsolete_ratio, b_obs);
            self.push(Level::Obsolete, chunk);
        }
        while self.totals[1] > b_obs {
            let Some(c) = self.pop_front(Level::Obsolete) else {
                break;
            };
            let chunk = self.compress_group(&[c], self.config.longterm_ratio, b_lt);
            self.push(Level::LongTerm, chunk);
        }
        while self.totals[2] > b_lt {
            self.relieve_longterm();
        }
    }

    /// One chunk for consecutive `group`, compressed to `ratio` of its tokens (at least 1) and at most
    /// `cap`; keyword indexes are summed, so nothing a message said is lost from the index.
    fn compress_group(&self, group: &[Chunk], ratio: f32, cap: usize) -> Chunk {
        let texts: Vec<&str> = group
            .iter()
            .map(|c| c.text.as_str())
            .filter(|t| !t.is_empty())
            .collect();
        let joined = texts.join("\n");
        let tokens = self.counter.count(&joined);
        let target = ((tokens as f32 * ratio).ceil() as usize).clamp(1, cap);
        let kept = self.shrink(&joined, target);
        let mut keywords: Vec<(String, u32)> = Vec::new();
        for c in group {
            keywords = text::merge_counts(&keywords, &c.keywords);
        }
        let (first, last) = (
            group.first().map_or(0, |c| c.first),
            group.last().map_or(0, |c| c.last),
        );
        let source = group.iter().map(|c| c.source_tokens).sum();
        self.make_chunk(first, last, kept, source, keywords)
    }

    /// Long-term overflow policy: the least important chunk is merged with its less important
    /// neighbour, their texts summarised together into the larger of their two token counts (so each
    /// merge frees at least the smaller one's tokens, or one chunk); a single chunk over budget is
    /// summarised to the budget. Ranges and keyword indexes are united, so merged messages stay findable.
    fn relieve_longterm(&mut self) {
        let b_lt = self.config.budgets[2];
        let q = &self.levels[2];
        if q.len() <= 1 {
            if let Some(c) = self.pop_front(Level::LongTerm) {
                let chunk = self.compress_group(&[c], 1.0, b_lt);
                self.push(Level::LongTerm, chunk);
            }
            return;
        }
        let i = (0..q.len())
            .min_by(|&a, &b| q[a].importance.total_cmp(&q[b].importance).then(a.cmp(&b)))
            .unwrap_or(0);
        let j = match (i.checked_sub(1), (i + 1 < q.len()).then_some(i + 1)) {
            (Some(p), Some(n)) => {
                if q[n].importance < q[p].importance {
                    n
                } else {
                    p
                }
            }
            (Some(p), None) => p,
            (None, Some(n)) => n,
            (None, None) => return,
        };
        let lo = i.min(j);
        let (Some(a), Some(b)) = (self.levels[2].remove(lo), self.levels[2].remove(lo)) else {
            return;
        };
        self.totals[2] -= a.tokens + b.tokens;
        let cap = a.tokens.max(b.tokens).clamp(1, b_lt);
        // At ratio 1 the target is all the joined tokens; the cap is what shrinks it.
        let merged = self.compress_group(&[a, b], 1.0, cap);
        self.totals[2] += merged.tokens;
        self.levels[2].insert(lo, merged);
    }
}
