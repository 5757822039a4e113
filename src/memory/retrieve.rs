//! Relevance (BM25 over keyword indexes, cosine over embeddings, and their hybrid) and context building
//! for a query under a token budget.

use super::{Error, Level, Memory, text};

/// BM25 parameters: `k1` saturates term frequency, `b` sets how much document length normalises.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bm25 {
    pub k1: f32,
    pub b: f32,
}

impl Default for Bm25 {
    /// The usual Robertson/Zaragoza values: k1 = 1.2, b = 0.75.
    fn default() -> Self {
        Bm25 { k1: 1.2, b: 0.75 }
    }
}

impl Bm25 {
    /// BM25 score of each document for `query` (keywords as from [`text::keywords`]; a repeated query
    /// term counts once). Documents are sorted keyword-count lists.
    ///
    /// `score(D) = sum over q of idf(q) * tf(q,D) * (k1 + 1) / (tf(q,D) + k1 * (1 - b + b * |D| / avgdl))`
    /// with `idf(q) = ln(1 + (N - n(q) + 0.5) / (n(q) + 0.5))` (never negative), `|D|` the sum of D's
    /// keyword counts, `avgdl` its mean over the `N` documents and `n(q)` the documents containing q.
    pub fn scores(&self, query: &[String], docs: &[&[(String, u32)]]) -> Vec<f32> {
        let mut q: Vec<&str> = query.iter().map(String::as_str).collect();
        q.sort_unstable();
        q.dedup();
        let lens: Vec<f32> = docs
            .iter()
            .map(|d| d.iter().map(|(_, c)| *c as f32).sum())
            .collect();
        let n_docs = docs.len() as f32;
        let avgdl = (lens.iter().sum::<f32>() / n_docs.max(1.0)).max(1.0);
        let mut out = vec![0.0f32; docs.len()];
        let mut tfs = vec![0u32; docs.len()];
        for term in q {
            let mut n = 0u32;
            for (tf, d) in tfs.iter_mut().zip(docs) {
                *tf = d
                    .binary_search_by(|(k, _)| k.as_str().cmp(term))
                    .map_or(0, |i| d[i].1);
                n += u32::from(*tf > 0);
            }
            if n == 0 {
                continue;
            }
            let n = n as f32;
            let idf = (1.0 + (n_docs - n + 0.5) / (n + 0.5)).ln();
            for ((s, &tf), &len) in out.iter_mut().zip(&tfs).zip(&lens) {
                if tf > 0 {
                    let tf = tf as f32;
                    *s += idf * tf * (self.k1 + 1.0)
                        / (tf + self.k1 * (1.0 - self.b + self.b * len / avgdl));
                }
            }
        }
        out
    }
}

/// A sentence encoder. The project's MiniLM encoder implements this; [`HashEmbedder`] is the
/// deterministic stand-in for tests.
pub trait Embedder {
    /// One vector per text, all of the same length.
    ///
    /// # Errors
    /// Whatever the encoder reports, as [`Error::Embed`].
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error>;
    /// Names the model, so cached chunk embeddings are dropped when another embedder is used.
    fn id(&self) -> String;
}

/// Hashed bag of character trigrams: each lowercased word, framed as `^word$`, adds a signed 1 at the
/// FNV-1a hash of each of its trigrams and of the whole word, in `dim` buckets; the vector is then
/// L2-normalised. Deterministic, and unlike keywords it matches word variants ("lives"/"lived") by their
/// shared trigrams. Stopwords are skipped.
#[derive(Debug, Clone, Copy)]
pub struct HashEmbedder {
    pub dim: usize,
}

impl Default for HashEmbedder {
    fn default() -> Self {
        HashEmbedder { dim: 256 }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl HashEmbedder {
    fn one(&self, text: &str) -> Vec<f32> {
        let dim = self.dim.max(1);
        let mut v = vec![0.0f32; dim];
        let mut add = |bytes: &[u8]| {
            let h = fnv1a(bytes);
            let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
            v[(h % dim as u64) as usize] += sign;
        };
        for raw in text.split(|c: char| !c.is_alphanumeric()) {
            let w = raw.to_lowercase();
            if w.chars().count() < 2 || text::keywords(&w).is_empty() {
                continue;
            }
            let framed = format!("^{w}$");
            let b = framed.as_bytes();
            add(b);
            for t in b.windows(3) {
                add(t);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

impl Embedder for HashEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        Ok(texts.iter().map(|t| self.one(t)).collect())
    }

    fn id(&self) -> String {
        format!("hash-trigram-{}", self.dim)
    }
}

/// Cosine similarity; 0 when either vector is zero or their lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// How relevance is scored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scoring {
    /// BM25 over the chunks' keyword indexes.
    Keywords,
    /// Cosine of the query's and the chunk text's embeddings, negatives clamped to 0. Needs an embedder.
    Embeddings,
    /// `alpha * bm25 / max_bm25 + (1 - alpha) * max(cos, 0)`, the BM25 maximum taken over the candidates.
    /// Without an embedder it is plain BM25.
    Hybrid { alpha: f32 },
}

/// One ranked chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub level: Level,
    pub first: u64,
    pub last: u64,
    pub score: f32,
}

/// Settings for [`Memory::build_context`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContextOptions {
    /// Token budget of the whole context.
    pub budget: usize,
    /// The newest this many messages go in in full, first.
    pub recent: usize,
    /// Long-term facts may take this fraction of what the recent messages leave, before obsolete chunks.
    pub longterm_share: f32,
    pub scoring: Scoring,
    pub bm25: Bm25,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            budget: 4096,
            recent: 10,
            longterm_share: 0.25,
            scoring: Scoring::Hybrid { alpha: 0.5 },
            bm25: Bm25::default(),
        }
    }
}

/// One piece of a built context.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextItem {
    pub level: Level,
    pub first: u64,
    pub last: u64,
    pub text: String,
    pub tokens: usize,
    /// Relevance (or for long-term facts, the importance/relevance blend) it was chosen by; recent
    /// messages have none.
    pub score: Option<f32>,
}

/// A context: chosen chunks in conversation order, their tokens within `budget`.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    pub items: Vec<ContextItem>,
    pub tokens: usize,
    pub budget: usize,
}

impl Context {
    /// The items as text, each under a `[level first-last]` header line (headers are not counted in
    /// `tokens`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for it in &self.items {
            out.push_str(&format!(
                "[{} {}-{}]\n{}\n",
                it.level.name(),
                it.first,
                it.last,
                it.text
            ));
        }
        out
    }
}

type Slot = (Level, usize);

impl Memory {
    /// Every chunk but the newest `skip_recent` current messages, ranked for `query` (best first, ties by
    /// age); chunks scoring 0 are left out.
    ///
    /// # Errors
    /// [`Error::Embed`] when the embedder fails, or `Scoring::Embeddings` is asked without one.
    pub fn search(
        &mut self,
        query: &str,
        scoring: Scoring,
        bm25: Bm25,
        skip_recent: usize,
        embedder: Option<&dyn Embedder>,
    ) -> Result<Vec<Hit>, Error> {
        let slots = self.candidates(skip_recent);
        let rel = self.relevance(query, &slots, scoring, bm25, embedder)?;
        let mut hits: Vec<Hit> = slots
            .iter()
            .zip(&rel)
            .filter(|(_, s)| **s > 0.0)
            .map(|(&(l, i), &score)| {
                let c = &self.levels[l as usize][i];
                Hit {
                    level: l,
                    first: c.first,
                    last: c.last,
                    score,
                }
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.first.cmp(&b.first)));
        Ok(hits)
    }

    /// The context for `query`: the newest `recent` messages in full (newest first until the budget
    /// stops them), then long-term facts ranked by `0.5 * importance / max_importance + 0.5 * relevance /
    /// max_relevance` within `longterm_share` of what is left, then the most relevant other chunks
    /// (older current messages and obsolete chunks) while they fit, then more long-term facts if room
    /// remains. A chunk that does not fit is skipped, not cut. Items come out in conversation order.
    ///
    /// # Errors
    /// As [`Memory::search`].
    pub fn build_context(
        &mut self,
        query: &str,
        opts: &ContextOptions,
        embedder: Option<&dyn Embedder>,
    ) -> Result<Context, Error> {
        let mut items = Vec::new();
        let mut used = 0usize;
        let cur = &self.levels[0];
        let recent = opts.recent.min(cur.len());
        for c in cur.iter().rev().take(recent) {
            if used + c.tokens > opts.budget {
                break;
            }
            used += c.tokens;
            items.push(self.item(Level::Current, c, None));
        }
        let slots = self.candidates(recent);
        let rel = self.relevance(query, &slots, opts.scoring, opts.bm25, embedder)?;
        let (lt, other): (Vec<usize>, Vec<usize>) =
            (0..slots.len()).partition(|&k| slots[k].0 == Level::LongTerm);
        let lt_ranked = self.rank_longterm(&slots, &rel, &lt);
        let mut other_ranked: Vec<(usize, f32)> = other
            .iter()
            .map(|&k| (k, rel[k]))
            .filter(|&(_, s)| s > 0.0)
            .collect();
        other_ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));

        let mut taken = vec![false; slots.len()];
        let left = opts.budget - used;
        let lt_cap = used + (left as f32 * opts.longterm_share.clamp(0.0, 1.0)) as usize;
        for (ranked, cap) in [
            (&lt_ranked, lt_cap),
            (&other_ranked, opts.budget),
            (&lt_ranked, opts.budget),
        ] {
            for &(k, score) in ranked {
                let (l, i) = slots[k];
                let c = &self.levels[l as usize][i];
                if taken[k] || c.tokens == 0 || used + c.tokens > cap {
                    continue;
                }
                taken[k] = true;
                used += c.tokens;
                items.push(self.item(l, c, Some(score)));
            }
        }
        items.sort_by_key(|it| it.first);
        Ok(Context {
            items,
            tokens: used,
            budget: opts.budget,
        })
    }

    fn item(&self, level: Level, c: &super::Chunk, score: Option<f32>) -> ContextItem {
        ContextItem {
            level,
            first: c.first,
            last: c.last,
            text: c.text.clone(),
            tokens: c.tokens,
            score,
        }
    }

    /// Long-term slot positions (indexes into `slots`) with their blended score, best first.
    fn rank_longterm(&self, slots: &[Slot], rel: &[f32], lt: &[usize]) -> Vec<(usize, f32)> {
        let imp = |k: usize| {
            let (l, i) = slots[k];
            self.levels[l as usize][i].importance
        };
        let max_imp = lt.iter().map(|&k| imp(k)).fold(0.0f32, f32::max);
        let max_rel = lt.iter().map(|&k| rel[k]).fold(0.0f32, f32::max);
        let norm = |x: f32, m: f32| if m > 0.0 { x / m } else { 0.0 };
        let mut out: Vec<(usize, f32)> = lt
            .iter()
            .map(|&k| (k, 0.5 * norm(imp(k), max_imp) + 0.5 * norm(rel[k], max_rel)))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    /// All chunks except the newest `skip_recent` current messages, oldest first.
    fn candidates(&self, skip_recent: usize) -> Vec<Slot> {
        let mut out = Vec::new();
        for l in [Level::LongTerm, Level::Obsolete, Level::Current] {
            let n = self.levels[l as usize].len();
            let n = if l == Level::Current {
                n.saturating_sub(skip_recent)
            } else {
                n
            };
            out.extend((0..n).map(|i| (l, i)));
        }
        out
    }

    fn relevance(
        &mut self,
        query: &str,
        slots: &[Slot],
        scoring: Scoring,
        bm25: Bm25,
        embedder: Option<&dyn Embedder>,
    ) -> Result<Vec<f32>, Error> {
        let alpha = match (scoring, embedder) {
            (Scoring::Keywords, _) | (Scoring::Hybrid { .. }, None) => 1.0,
            (Scoring::Embeddings, None) => {
                return Err(Error::Embed(
                    "embedding scoring asked for without an embedder".into(),
                ));
            }
            (Scoring::Embeddings, Some(_)) => 0.0,
            (Scoring::Hybrid { alpha }, Some(_)) => alpha.clamp(0.0, 1.0),
        };
        let mut out = vec![0.0f32; slots.len()];
        if alpha > 0.0 {
            let q = text::keywords(query);
            let docs: Vec<&[(String, u32)]> = slots
                .iter()
                .map(|&(l, i)| self.levels[l as usize][i].keywords.as_slice())
                .collect();
            let s = bm25.scores(&q, &docs);
            // Pure keyword scoring keeps raw BM25; the hybrid puts it on the cosine's 0..1 scale.
            let max = s.iter().copied().fold(0.0f32, f32::max);
            let scale = if alpha < 1.0 && max > 0.0 {
                alpha / max
            } else {
                1.0
            };
            out.iter_mut().zip(&s).for_each(|(o, x)| *o = x * scale);
        }
        if let (Some(e), true) = (embedder, alpha < 1.0) {
            self.ensure_embeddings(e)?;
            let qv = e
                .embed(&[query])?
                .pop()
                .ok_or_else(|| Error::Embed("no vector for the query".into()))?;
            for (o, &(l, i)) in out.iter_mut().zip(slots) {
                let cv = self.levels[l as usize][i]
                    .embedding
                    .as_deref()
                    .unwrap_or(&[]);
                *o += (1.0 - alpha) * cosine(&qv, cv).max(0.0);
            }
        }
        Ok(out)
    }

    /// Embeds every chunk without a cached vector (in one call), first dropping the cache if it came from
    /// another embedder.
    fn ensure_embeddings(&mut self, e: &dyn Embedder) -> Result<(), Error> {
        let id = e.id();
        if self.embedder_id.as_deref() != Some(&id) {
            self.levels
                .iter_mut()
                .flatten()
                .for_each(|c| c.embedding = None);
            self.embedder_id = Some(id);
        }
        let missing: Vec<&str> = self
            .levels
            .iter()
            .flatten()
            .filter(|c| c.embedding.is_none())
            .map(|c| c.text.as_str())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let vs = e.embed(&missing)?;
        if vs.len() != missing.len() {
            return Err(Error::Embed(format!(
                "{} vectors for {} texts",
                vs.len(),
                missing.len()
            )));
        }
        let dim = vs[0].len();
        if vs.iter().any(|v| v.len() != dim) {
            return Err(Error::Embed("vectors of different lengths".into()));
        }
        let mut it = vs.into_iter();
        for c in self
            .levels
            .iter_mut()
            .flatten()
            .filter(|c| c.embedding.is_none())
        {
            c.embedding = it.next();
        }
        Ok(())
    }
}
