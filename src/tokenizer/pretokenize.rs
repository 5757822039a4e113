//! The GPT-2 pre-tokenizer, written out by hand instead of with a regex engine:
//!
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//!
//! Unicode classes are approximated by the standard library: `\p{L}` by [`char::is_alphabetic`] (the
//! Alphabetic property, which also admits some marks and letter numbers), `\p{N}` by [`char::is_numeric`]
//! (exactly Nd, Nl, No; a char that is both counts as a letter), and `\s` by [`char::is_whitespace`]. The
//! pieces always partition the input, so byte-level BPE round-trips whatever the classes say.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c.is_alphabetic() {
        Class::Letter
    } else if c.is_numeric() {
        Class::Number
    } else if c.is_whitespace() {
        Class::Space
    } else {
        Class::Other
    }
}

/// Byte length of the longest prefix of `s` whose chars are all of class `cls`.
fn run_len(s: &str, cls: Class) -> usize {
    s.char_indices()
        .find(|&(_, c)| class(c) != cls)
        .map_or(s.len(), |(i, _)| i)
}

/// Byte length of the piece at the start of non-empty `s`.
fn next_piece_len(s: &str) -> usize {
    let mut chars = s.chars();
    let Some(c) = chars.next() else { return 0 };
    if c == '\'' {
        // Contractions, lower-case only, as in GPT-2's pattern.
        for suffix in ["s", "t", "m", "d", "re", "ve", "ll"] {
            if s[1..].starts_with(suffix) {
                return 1 + suffix.len();
            }
        }
    }
    // ` ?X+`: one ASCII space may lead a run of letters, numbers or other symbols.
    let (skip, lead) = match chars.next() {
        Some(n) if c == ' ' && class(n) != Class::Space => (1, n),
        _ => (0, c),
    };
    match class(lead) {
        Class::Space => {
            let run = run_len(s, Class::Space);
            if run == s.len() {
                return run;
            }
            // `\s+(?!\S)` leaves the last whitespace char to lead the next piece; a single char falls to `\s+`.
            let last = s[..run].chars().next_back().map_or(0, char::len_utf8);
            if run > last { run - last } else { run }
        }
        cls => skip + run_len(&s[skip..], cls),
    }
}

/// Splits `text` into GPT-2 pre-tokens; concatenating them gives `text` back.
pub fn pre_tokenize(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let len = next_piece_len(&text[pos..]).max(1);
        // `len` ends on a char boundary by construction; fall back to the whole rest if it ever did not.
        let end = if text.is_char_boundary(pos + len) {
            pos + len
        } else {
            text.len()
        };
        out.push(&text[pos..end]);
        pos = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::pre_tokenize;

    #[test]
    fn gpt2_examples() {
        assert_eq!(pre_tokenize("Hello world"), ["Hello", " world"]);
        assert_eq!(
            pre_tokenize("I'm can't it's"),
            ["I", "'m", " can", "'t", " it", "'s"]
        );
        assert_eq!(pre_tokenize("a  b"), ["a", " ", " b"]);
        assert_eq!(pre_tokenize("x\n\ny  "), ["x", "\n", "\n", "y", "  "]);
        assert_eq!(
            pre_tokenize("12 34!!? 'sx"),
            ["12", " 34", "!!?", " '", "sx"]
        );
        assert_eq!(pre_tokenize(" \t£5"), [" ", "\t", "£", "5"]);
        assert_eq!(pre_tokenize("héllo 世界"), ["héllo", " 世界"]);
    }
}
