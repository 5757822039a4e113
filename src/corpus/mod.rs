//! The built-in corpus: a deterministic generator of four domains with learnable, checkable
//! structure, so the main job needs no download. Every example is one line, `prompt` then
//! `answer` then `\n`; each domain's checker recomputes the right answer from the prompt alone.
//!
//! - arithmetic: `37+5=42` (a two-digit number, written with two digits, plus a digit: every
//!   digit sits at a fixed distance from the `=`; the carry is the structure to learn)
//! - reverse: `rev(kqzt)=tzqk` (3 to 5 letters)
//! - json: `json({"k":[3,{"b":7)=}]}` (close the open brackets, innermost first)
//! - facts: `the capital of france is paris.` (a fixed table of templated English facts)
//!
//! The vocabulary is ASCII characters ([`Ascii`], 128 ids): every domain is about individual
//! characters (digits, letters, brackets), which a byte-pair vocabulary would merge into
//! unrelated pieces, and it cannot fail on any input.

mod eval;

pub use eval::{DomainScore, Sample, accuracy, complete, routing_by_domain};

use crate::tokenizer::{Error as TokError, Tokenizer};

/// The corpus domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    Arithmetic,
    Reverse,
    Json,
    Facts,
}

impl Domain {
    pub const ALL: [Domain; 4] = [
        Domain::Arithmetic,
        Domain::Reverse,
        Domain::Json,
        Domain::Facts,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Domain::Arithmetic => "arithmetic",
            Domain::Reverse => "reverse",
            Domain::Json => "json",
            Domain::Facts => "facts",
        }
    }

    /// The right answer for `prompt`, computed from the prompt alone; `None` for a prompt this
    /// domain never generates.
    pub fn answer(self, prompt: &str) -> Option<String> {
        match self {
            Domain::Arithmetic => {
                let (a, b) = prompt.strip_suffix('=')?.split_once('+')?;
                let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
                if !digits(a) || !digits(b) {
                    return None;
                }
                Some((a.parse::<u64>().ok()? + b.parse::<u64>().ok()?).to_string())
            }
            Domain::Reverse => {
                let s = prompt.strip_prefix("rev(")?.strip_suffix(")=")?;
                s.bytes()
                    .all(|c| c.is_ascii_lowercase())
                    .then(|| s.chars().rev().collect())
            }
            Domain::Json => {
                let s = prompt.strip_prefix("json(")?.strip_suffix(")=")?;
                let mut open = Vec::new();
                for c in s.chars() {
                    match c {
                        '{' | '[' => open.push(c),
                        '}' | ']' | '(' | ')' => return None,
                        _ => {}
                    }
                }
                Some(
                    open.iter()
                        .rev()
                        .map(|&c| if c == '{' { '}' } else { ']' })
                        .collect(),
                )
            }
            Domain::Facts => FACTS
                .iter()
                .find(|(p, _)| *p == prompt)
                .map(|(_, a)| (*a).to_string()),
        }
    }

    /// Whether `completion` is exactly the right answer to `prompt`.
    pub fn check(self, prompt: &str, completion: &str) -> bool {
        self.answer(prompt).is_some_and(|a| a == completion)
    }
}

/// Templated English facts: `(prompt, answer)`. Learning them is memorisation, so their
/// evaluation prompts are drawn from the same table as training.
pub const FACTS: &[(&str, &str)] = &[
    ("the capital of france is ", "paris."),
    ("the capital of spain is ", "madrid."),
    ("the capital of italy is ", "rome."),
    ("the capital of germany is ", "berlin."),
    ("the capital of japan is ", "tokyo."),
    ("the capital of egypt is ", "cairo."),
    ("the capital of peru is ", "lima."),
    ("the capital of kenya is ", "nairobi."),
    ("the capital of norway is ", "oslo."),
    ("the capital of greece is ", "athens."),
    ("the capital of chile is ", "santiago."),
    ("the capital of canada is ", "ottawa."),
    ("a cow says ", "moo."),
    ("a dog says ", "woof."),
    ("a cat says ", "meow."),
    ("a duck says ", "quack."),
    ("a sheep says ", "baa."),
    ("an owl says ", "hoot."),
    ("the color of grass is ", "green."),
    ("the color of the sky is ", "blue."),
    ("the color of snow is ", "white."),
    ("the color of coal is ", "black."),
    ("the color of a lemon is ", "yellow."),
    ("the color of blood is ", "red."),
    ("water freezes at ", "zero degrees."),
    ("a week has ", "seven days."),
    ("a spider has ", "eight legs."),
    ("a year has ", "twelve months."),
];

/// One example: its domain, the prompt, and the right answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub domain: Domain,
    pub prompt: String,
    pub answer: String,
}

impl Example {
    /// The training line: prompt, answer, newline.
    pub fn line(&self) -> String {
        format!("{}{}\n", self.prompt, self.answer)
    }
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn letter(&mut self) -> char {
        (b'a' + self.below(26) as u8) as char
    }
}

fn prompt_of(domain: Domain, rng: &mut Rng) -> String {
    match domain {
        Domain::Arithmetic => format!("{:02}+{}=", rng.below(100), rng.below(10)),
        Domain::Reverse => {
            let n = 3 + rng.below(3);
            let s: String = (0..n).map(|_| rng.letter()).collect();
            format!("rev({s})=")
        }
        Domain::Json => {
            let depth = 1 + rng.below(5);
            let mut s = String::new();
            for _ in 0..depth {
                if rng.below(2) == 0 {
                    s.push_str(&format!("{{\"{}\":", rng.letter()));
                } else {
                    s.push_str(&format!("[{},", rng.below(10)));
                }
            }
            s.push_str(&rng.below(10).to_string());
            format!("json({s})=")
        }
        Domain::Facts => FACTS[rng.below(FACTS.len())].0.to_string(),
    }
}

/// `n` examples from `seed`, domains drawn uniformly.
pub fn generate(seed: u64, n: usize) -> Vec<Example> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let domain = Domain::ALL[rng.below(Domain::ALL.len())];
            generate_one(domain, &mut rng)
        })
        .collect()
}

/// `n` examples of one domain from `seed`.
pub fn generate_domain(domain: Domain, seed: u64, n: usize) -> Vec<Example> {
    let mut rng = Rng(seed ^ (domain as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    (0..n).map(|_| generate_one(domain, &mut rng)).collect()
}

fn generate_one(domain: Domain, rng: &mut Rng) -> Example {
    let prompt = prompt_of(domain, rng);
    let answer = domain
        .answer(&prompt)
        .expect("the generator only writes prompts its checker reads");
    Example {
        domain,
        prompt,
        answer,
    }
}

/// The lines of `examples`, concatenated.
pub fn text(examples: &[Example]) -> String {
    examples.iter().map(Example::line).collect()
}

/// The ASCII character vocabulary: id = byte, 128 ids; other characters encode as `?`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ascii;

/// Every ASCII character in id order: token `i` is `ASCII_CHARS[i..i + 1]`.
const ASCII_CHARS: &str = "\u{0}\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{e}\u{f}\u{10}\u{11}\u{12}\u{13}\u{14}\u{15}\u{16}\u{17}\u{18}\u{19}\u{1a}\u{1b}\u{1c}\u{1d}\u{1e}\u{1f} !\u{22}#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\u{5c}]^_`abcdefghijklmnopqrstuvwxyz{|}~\u{7f}";

/// Size of the [`Ascii`] vocabulary.
pub const ASCII_VOCAB: usize = 128;

impl Tokenizer for Ascii {
    fn encode(&self, text: &str) -> Vec<u32> {
        text.chars()
            .map(|c| {
                if c.is_ascii() {
                    c as u32
                } else {
                    u32::from(b'?')
                }
            })
            .collect()
    }

    fn decode(&self, ids: &[u32]) -> Result<String, TokError> {
        ids.iter()
            .map(|&id| {
                u8::try_from(id)
                    .ok()
                    .filter(u8::is_ascii)
                    .map(char::from)
                    .ok_or(TokError::UnknownId {
                        id,
                        vocab_size: ASCII_VOCAB,
                    })
            })
            .collect()
    }

    fn vocab_size(&self) -> usize {
        ASCII_VOCAB
    }

    fn id_to_token(&self, id: u32) -> Option<&str> {
        let i = usize::try_from(id).ok()?;
        ASCII_CHARS.get(i..i + 1)
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        let mut it = token.chars();
        match (it.next(), it.next()) {
            (Some(c), None) if c.is_ascii() => Some(c as u32),
            _ => None,
        }
    }
}
