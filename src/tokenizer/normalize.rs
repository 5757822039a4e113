//! BERT's BasicTokenizer: text cleaning, CJK spacing, accent stripping, lower-casing, whitespace and
//! punctuation splitting, as HF `BertNormalizer` + `BertPreTokenizer` do it.
//!
//! Unicode coverage (tables in `unicode_tables.rs`, generated from Unicode 14 by `unicode_tables.py`):
//! - nonspacing marks (Mn), punctuation (P*) and format characters (Cf): complete for all planes;
//! - NFD for accent stripping: canonical decompositions in U+00C0–U+024F (Latin-1 Supplement, Latin
//!   Extended-A/B), U+0370–U+03FF (Greek), U+0400–U+04FF (Cyrillic), U+1E00–U+1FFF (Latin Extended
//!   Additional, Greek Extended), plus Hangul syllables algorithmically. Precomposed letters elsewhere
//!   (e.g. Devanagari nukta forms, Japanese voiced kana) keep their accents; this is the known gap.
//! - "Control" is Cc plus Cf plus private use (Co), as HF's `is_other`, except that unassigned code points
//!   (Cn) are kept: we carry no table of assigned characters.

use super::unicode_tables::{FORMAT, MARK_NONSPACING, NFD_BASE, PUNCTUATION};

/// BERT normaliser options (HF `BertNormalizer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BertOptions {
    pub clean_text: bool,
    pub handle_chinese_chars: bool,
    pub strip_accents: bool,
    pub lowercase: bool,
}

impl Default for BertOptions {
    /// The settings of the uncased BERT models.
    fn default() -> Self {
        BertOptions {
            clean_text: true,
            handle_chinese_chars: true,
            strip_accents: true,
            lowercase: true,
        }
    }
}

fn in_ranges(c: char, table: &[(u32, u32)]) -> bool {
    let c = c as u32;
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// BERT treats \t \n \r as whitespace, not control.
fn is_bert_whitespace(c: char) -> bool {
    c.is_whitespace()
}

fn is_bert_control(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r');
    }
    let private_use = matches!(c as u32, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD);
    c.is_control() || private_use || in_ranges(c, FORMAT)
}

/// ASCII punctuation 33–47, 58–64, 91–96, 123–126 (which includes `$ + < = > ^ ` | ~`, symbols in Unicode
/// terms) plus the Unicode punctuation categories.
pub(crate) fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    in_ranges(c, PUNCTUATION)
}

/// The CJK Unified Ideograph blocks BERT pads with spaces (not Hiragana, Katakana or Hangul).
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// Appends the NFD of `c` with nonspacing marks removed.
fn push_stripped(c: char, out: &mut String) {
    let cp = c as u32;
    if c.is_ascii() {
        out.push(c);
        return;
    }
    if in_ranges(c, MARK_NONSPACING) {
        return;
    }
    // Hangul syllables decompose algorithmically into leading, vowel and optional trailing jamo (none is Mn).
    if (0xAC00..0xAC00 + 11172).contains(&cp) {
        let s = cp - 0xAC00;
        let jamo = [0x1100 + s / 588, 0x1161 + (s % 588) / 28, 0x11A7 + s % 28];
        let n = if s.is_multiple_of(28) { 2 } else { 3 };
        out.extend(jamo[..n].iter().filter_map(|&j| char::from_u32(j)));
        return;
    }
    for &(start, bases) in NFD_BASE {
        if let Some(&base) = cp.checked_sub(start).and_then(|i| bases.get(i as usize)) {
            if base != 0 {
                out.push(char::from_u32(u32::from(base)).unwrap_or(c));
                return;
            }
            break;
        }
    }
    out.push(c);
}

/// The normalised text (clean, CJK-padded, accent-stripped, lower-cased, in HF's order).
pub(crate) fn normalize(text: &str, opt: BertOptions) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if opt.clean_text {
            if c == '\0' || c == '\u{FFFD}' || is_bert_control(c) {
                continue;
            }
            if is_bert_whitespace(c) {
                out.push(' ');
                continue;
            }
        }
        if opt.handle_chinese_chars && is_cjk(c) {
            out.push(' ');
            out.push(c);
            out.push(' ');
            continue;
        }
        out.push(c);
    }
    if opt.strip_accents && !out.is_ascii() {
        let mut stripped = String::with_capacity(out.len());
        for c in out.chars() {
            push_stripped(c, &mut stripped);
        }
        out = stripped;
    }
    if opt.lowercase {
        out = out.to_lowercase();
    }
    out
}

/// Splits normalised text on whitespace, then makes every punctuation character a word of its own.
pub(crate) fn split_words(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    for chunk in text.split(char::is_whitespace).filter(|w| !w.is_empty()) {
        let mut start = 0;
        for (i, c) in chunk.char_indices() {
            if is_punctuation(c) {
                if start < i {
                    words.push(&chunk[start..i]);
                }
                let end = i + c.len_utf8();
                words.push(&chunk[i..end]);
                start = end;
            }
        }
        if start < chunk.len() {
            words.push(&chunk[start..]);
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accents_and_case() {
        let n = normalize("Héllo ÇA Ärger Ωμέγα Ёлка ĳ Ø Ảnh", BertOptions::default());
        assert_eq!(n, "hello ca arger ωμεγα елка ĳ ø anh");
    }

    #[test]
    fn cjk_control_punct() {
        let n = normalize("a\u{200B}b\u{0}c\t中文\u{FFFD}!", BertOptions::default());
        assert_eq!(split_words(&n), ["abc", "中", "文", "!"]);
        assert_eq!(
            split_words("don't stop—now"),
            ["don", "'", "t", "stop", "—", "now"]
        );
    }

    #[test]
    fn hangul_decomposes() {
        let n = normalize("한", BertOptions::default());
        assert_eq!(n, "\u{1112}\u{1161}\u{11AB}");
    }
}
