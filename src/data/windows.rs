//! Batches of random windows over token ids, a pure function of the seed and the batch index,
//! so a position (batches drawn) restores the stream exactly.

use super::{Error, Result, TokenFile};
use crate::train::{Batch, Batches};
use std::ops::Range;
use std::sync::Arc;

/// Token ids held in memory or mapped from a token file.
#[derive(Debug)]
pub enum Tokens {
    Memory(Vec<u32>),
    Mapped(TokenFile),
}

impl Tokens {
    pub fn len(&self) -> usize {
        match self {
            Tokens::Memory(v) => v.len(),
            Tokens::Mapped(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ids `start..start + len`.
    ///
    /// # Errors
    /// [`Error::Config`] for a range past the end.
    pub fn read(&self, start: usize, len: usize) -> Result<Vec<u32>> {
        match self {
            Tokens::Memory(v) => v
                .get(start..start.saturating_add(len))
                .map(<[u32]>::to_vec)
                .ok_or_else(|| Error::Config {
                    detail: format!(
                        "ids {start}..{} past the end ({} ids)",
                        start + len,
                        v.len()
                    ),
                }),
            Tokens::Mapped(f) => f.read(start, len),
        }
    }
}

/// A train / validation split: the validation part is the last `fraction` of the ids, so
/// windows drawn from one part never touch the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub train: Range<usize>,
    pub validation: Range<usize>,
}

impl Split {
    /// Splits `len` ids, keeping `fraction` (in `[0, 1)`) for validation.
    ///
    /// # Errors
    /// [`Error::Config`] for a fraction outside `[0, 1)`.
    pub fn new(len: usize, fraction: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(Error::Config {
                detail: format!("validation fraction {fraction} is not in [0, 1)"),
            });
        }
        let cut = len - (len as f64 * fraction).round() as usize;
        Ok(Split {
            train: 0..cut,
            validation: cut..len,
        })
    }
}

/// `rows` windows of `seq` ids per batch, each starting uniformly at random inside `range`.
#[derive(Debug, Clone)]
pub struct Windows {
    tokens: Arc<Tokens>,
    range: Range<usize>,
    rows: usize,
    seq: usize,
    seed: u64,
    pos: u64,
}

/// SplitMix64: one well-mixed 64-bit value per call.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Windows {
    /// Windows of `seq` ids over `range` of `tokens`, `rows` per batch, from `seed`.
    ///
    /// # Errors
    /// [`Error::Config`] when `rows` or `seq` is 0, the range lies outside the ids, or is
    /// shorter than one window.
    pub fn new(
        tokens: Arc<Tokens>,
        range: Range<usize>,
        rows: usize,
        seq: usize,
        seed: u64,
    ) -> Result<Self> {
        if rows == 0 || seq == 0 {
            return Err(Error::Config {
                detail: format!("batch of {rows} rows x {seq} tokens is empty"),
            });
        }
        if range.end > tokens.len() || range.start > range.end {
            return Err(Error::Config {
                detail: format!("range {range:?} outside {} ids", tokens.len()),
            });
        }
        if range.len() < seq {
            return Err(Error::Config {
                detail: format!(
                    "{} ids cannot hold one window of {seq} tokens; add data or shorten --seq",
                    range.len()
                ),
            });
        }
        Ok(Windows {
            tokens,
            range,
            rows,
            seq,
            seed,
            pos: 0,
        })
    }

    /// The start of every window of batch `index` (a pure function of the seed and `index`).
    pub fn starts(&self, index: u64) -> Vec<usize> {
        let mut s = self.seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let choices = (self.range.len() - self.seq + 1) as u64;
        (0..self.rows)
            .map(|_| self.range.start + (splitmix(&mut s) % choices) as usize)
            .collect()
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn seq(&self) -> usize {
        self.seq
    }
}

impl Batches for Windows {
    fn next_batch(&mut self) -> crate::models::Result<Batch> {
        let mut ids = Vec::with_capacity(self.rows * self.seq);
        for s in self.starts(self.pos) {
            ids.extend(self.tokens.read(s, self.seq)?);
        }
        self.pos += 1;
        Ok(Batch {
            ids,
            rows: self.rows,
            mask: None,
        })
    }

    fn position(&self) -> u64 {
        self.pos
    }

    fn seek(&mut self, position: u64) -> crate::models::Result<()> {
        self.pos = position;
        Ok(())
    }
}
