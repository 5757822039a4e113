//! A built-in retrieval benchmark: conversations generated deterministically from templates, with facts
//! planted early and asked about (in other words) at the end, and recall@k of each scoring.

use super::{Bm25, Config, Embedder, Error, Memory, Scoring};

/// xorshift64*: small, seeded, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

/// One generated conversation: its messages and questions, each with the id of the message that answers it.
pub struct Conversation {
    pub messages: Vec<String>,
    pub questions: Vec<(String, u64)>,
}

const NAMES: &[&str] = &[
    "Alice", "Marta", "Jonas", "Priya", "Tomasz", "Keiko", "Omar", "Lena",
];
const CITIES: &[&str] = &[
    "Lisbon", "Krakow", "Osaka", "Nairobi", "Quito", "Bergen", "Tbilisi",
];
const JOBS: &[&str] = &[
    "nurse",
    "welder",
    "pilot",
    "baker",
    "geologist",
    "librarian",
];
const FOODS: &[&str] = &["peanuts", "shellfish", "sesame", "kiwi", "mustard"];
const BANDS: &[&str] = &[
    "Radiohead",
    "Portishead",
    "Khruangbin",
    "Tinariwen",
    "Massive Attack",
];
const OBJECTS: &[&str] = &["flowerpot", "doormat", "garden gnome", "loose brick"];
const COMPANIES: &[&str] = &["Globex", "Initech", "Umbrella", "Hooli", "Vandelay"];
const DAYS: &[&str] = &["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"];

/// A fact template and the question that asks for it; `{n}` is a number, the rest pick from lists.
fn fact(kind: usize, r: &mut Rng) -> (String, String) {
    let num = 2 + r.below(97);
    match kind {
        0 => {
            let (n, c, j) = (r.pick(NAMES), r.pick(CITIES), r.pick(JOBS));
            (
                format!("My sister {n} lives in {c} and works as a {j}."),
                "Which city does my sister live in?".into(),
            )
        }
        1 => (
            format!("The project deadline is the {num}th, remember that."),
            "When is the project due?".into(),
        ),
        2 => (
            format!("Our wifi password is tangerine{num}."),
            "What was the wifi password again?".into(),
        ),
        3 => {
            let f = r.pick(FOODS);
            (
                format!("I am allergic to {f}, so no {f} in recipes please."),
                "What food allergies do I have?".into(),
            )
        }
        4 => (
            format!("The car is parked on level {num} of the station garage."),
            "Where did I park the car?".into(),
        ),
        5 => {
            let d = r.pick(DAYS);
            (
                format!(
                    "My dentist appointment is on {d} at {} o'clock.",
                    8 + num % 9
                ),
                "When do I see the dentist?".into(),
            )
        }
        6 => {
            let n = r.pick(NAMES);
            (
                format!("We named the kitten {n} after my grandmother."),
                "What is the kitten called?".into(),
            )
        }
        7 => {
            let c = r.pick(COMPANIES);
            (
                format!("The meeting with {c} moved to room {num}."),
                format!("Which room is the {c} meeting in?"),
            )
        }
        8 => {
            let b = r.pick(BANDS);
            (
                format!(
                    "My favourite band is {b}, I saw them live in {}.",
                    1990 + num % 30
                ),
                "Which band do I like most?".into(),
            )
        }
        _ => {
            let o = r.pick(OBJECTS);
            (
                format!("The spare key is hidden under the {o} by the back door."),
                "Where is the spare key?".into(),
            )
        }
    }
}

/// Filler chatter: topic words that overlap the facts' words (room, car, meeting, city, ...) so ranking
/// has distractors.
const TOPICS: &[&[&str]] = &[
    &[
        "meeting", "agenda", "slides", "room", "budget", "project", "manager", "review", "sprint",
    ],
    &[
        "recipe", "oven", "garlic", "pasta", "sauce", "dinner", "salt", "butter", "simmer",
    ],
    &[
        "train", "city", "hotel", "car", "ticket", "airport", "luggage", "museum", "map",
    ],
    &[
        "match", "goal", "coach", "season", "league", "striker", "referee", "stadium", "score",
    ],
    &[
        "laptop", "update", "server", "password", "backup", "network", "printer", "cable", "screen",
    ],
    &[
        "rain", "forecast", "wind", "umbrella", "sunny", "cold", "storm", "garden", "weekend",
    ],
];

const FILLER: &[&str] = &[
    "We talked about the {a} and the {b} for a while.",
    "Honestly the {a} was fine, but the {b} needs work.",
    "Can you check the {a} before the {b} tomorrow?",
    "I keep forgetting about the {a}. Anyway, the {b} looked good.",
    "Nothing new on the {a} front, though the {b} came up again.",
    "Let's revisit the {a} later; first the {b}.",
];

fn filler(r: &mut Rng) -> String {
    let topic = TOPICS[r.below(TOPICS.len())];
    let (a, b) = (r.pick(topic), r.pick(topic));
    r.pick(FILLER).replace("{a}", a).replace("{b}", b)
}

/// `count` conversations of `messages` messages each; 10 facts are planted in the first fifth of each
/// and asked about at the end. The same seed gives the same conversations.
pub fn conversations(count: usize, messages: usize, seed: u64) -> Vec<Conversation> {
    let mut r = Rng::new(seed);
    (0..count)
        .map(|_| {
            let mut msgs: Vec<String> = (0..messages).map(|_| filler(&mut r)).collect();
            let early = (messages / 5).max(10).min(messages);
            let mut questions = Vec::new();
            let mut used = Vec::new();
            for kind in 0..10.min(early) {
                let mut pos = r.below(early);
                while used.contains(&pos) {
                    pos = (pos + 1) % early;
                }
                used.push(pos);
                let (f, q) = fact(kind, &mut r);
                msgs[pos] = f;
                questions.push((q, pos as u64));
            }
            Conversation {
                messages: msgs,
                questions,
            }
        })
        .collect()
}

/// The memory settings the benchmark uses: small budgets, so by the end every fact has been compressed
/// into the obsolete or long-term level.
pub fn eval_config() -> Config {
    Config {
        budgets: [400, 600, 300],
        ..Config::default()
    }
}

/// recall@k per scoring.
#[derive(Debug, Clone)]
pub struct Report {
    pub conversations: usize,
    pub questions: usize,
    pub ks: Vec<usize>,
    /// (scoring name, recall at each of `ks`).
    pub rows: Vec<(String, Vec<f64>)>,
    /// Fraction of planted facts whose full text is still in memory (not compressed away).
    pub facts_intact: f64,
}

/// Fills one memory per conversation and asks each question with each scoring; a question counts as
/// recalled at k when a chunk covering its fact message is among the top k hits. The newest `recent`
/// messages are excluded from the ranking (they go into a context in full anyway).
///
/// # Errors
/// [`Error::Embed`] from the embedder.
pub fn evaluate(
    convs: &[Conversation],
    config: &Config,
    ks: &[usize],
    embedder: &dyn Embedder,
) -> Result<Report, Error> {
    let scorings = [
        ("keywords (BM25)", Scoring::Keywords),
        ("embeddings (cosine)", Scoring::Embeddings),
        ("hybrid (alpha 0.5)", Scoring::Hybrid { alpha: 0.5 }),
    ];
    let mut hits = vec![vec![0usize; ks.len()]; scorings.len()];
    let (mut questions, mut intact) = (0usize, 0usize);
    for conv in convs {
        let mut m = Memory::new(config.clone())?;
        for msg in &conv.messages {
            m.add(msg);
        }
        for (q, id) in &conv.questions {
            questions += 1;
            let fact = &conv.messages[*id as usize];
            intact += usize::from(
                m.find_message(*id)
                    .is_some_and(|(_, c)| c.text.contains(fact.as_str())),
            );
            for (s, (_, scoring)) in scorings.iter().enumerate() {
                let ranked = m.search(q, *scoring, Bm25::default(), 10, Some(embedder))?;
                let rank = ranked.iter().position(|h| h.first <= *id && *id <= h.last);
                for (j, &k) in ks.iter().enumerate() {
                    hits[s][j] += usize::from(rank.is_some_and(|r| r < k));
                }
            }
        }
    }
    let q = questions.max(1) as f64;
    Ok(Report {
        conversations: convs.len(),
        questions,
        ks: ks.to_vec(),
        rows: scorings
            .iter()
            .zip(&hits)
            .map(|((name, _), h)| (name.to_string(), h.iter().map(|&x| x as f64 / q).collect()))
            .collect(),
        facts_intact: intact as f64 / q,
    })
}
