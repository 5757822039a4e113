//! The built-in multi-task demo: sentences generated from templates, deterministic from a seed,
//! with four attributes (topic, sentiment, question or statement, past or future), one task per
//! attribute. Every sentence is distinct and belongs to one split of one task.

use crate::autograd::Rng;
use crate::models::{Error, Result};
use std::collections::HashSet;

/// The tasks trained together at first; the fourth (`tense`) is the branch added later.
pub const INITIAL_TASKS: usize = 3;

const SUBJECTS: &[&str] = &[
    "my sister",
    "our team",
    "the old man",
    "a friend of mine",
    "the students",
    "my neighbour",
    "the new manager",
    "her parents",
];
/// Topic objects, one list per class of `TOPICS`.
const OBJECTS: &[&[&str]] = &[
    &[
        "the football match",
        "the tennis final",
        "the marathon",
        "the basketball game",
        "the swimming race",
        "the cycling tour",
    ],
    &[
        "the pasta dinner",
        "the chocolate cake",
        "the new sushi place",
        "the breakfast buffet",
        "the spicy curry",
        "the farmers market",
    ],
    &[
        "the new laptop",
        "the phone update",
        "the software release",
        "the smart watch",
        "the coding workshop",
        "the robot vacuum",
    ],
    &[
        "the thunderstorm",
        "the heatwave",
        "the morning fog",
        "the heavy snowfall",
        "the spring rain",
        "the strong wind",
    ],
];
const TOPICS: &[&str] = &["sports", "food", "technology", "weather"];
/// Adjectives, negative then positive.
const ADJECTIVES: &[&[&str]] = &[
    &[
        "terrible",
        "awful",
        "disappointing",
        "horrible",
        "dreadful",
        "miserable",
        "boring",
    ],
    &[
        "wonderful",
        "great",
        "fantastic",
        "delightful",
        "excellent",
        "lovely",
        "exciting",
    ],
];
/// Verbs as (base, past).
const VERBS: &[(&str, &str)] = &[
    ("see", "saw"),
    ("watch", "watched"),
    ("talk about", "talked about"),
    ("remember", "remembered"),
    ("describe", "described"),
    ("enjoy", "enjoyed"),
];

/// One labelled example: a sentence (index into [`Demo::sentences`]) and its class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Example {
    pub sentence: usize,
    pub label: u32,
}

/// One task of the demo with its splits.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoTask {
    pub name: String,
    pub labels: Vec<String>,
    pub train: Vec<Example>,
    pub test: Vec<Example>,
}

/// The demo's sentences and tasks: `topic` (4 classes), `sentiment` (2), `form` (question or
/// statement, 2) trained together, and `tense` (past or future, 2) added later.
#[derive(Clone, Debug, PartialEq)]
pub struct Demo {
    pub sentences: Vec<String>,
    pub tasks: Vec<DemoTask>,
}

/// A sentence's attributes: topic, sentiment (0 negative), form (0 statement), tense (0 past).
fn sentence(rng: &mut Rng, attrs: [usize; 4]) -> String {
    let pick = |rng: &mut Rng, n: usize| (rng.next_u64() % n as u64) as usize;
    let [topic, sent, form, tense] = attrs;
    let subj = SUBJECTS[pick(rng, SUBJECTS.len())];
    let obj = OBJECTS[topic][pick(rng, OBJECTS[topic].len())];
    let adj = ADJECTIVES[sent][pick(rng, ADJECTIVES[sent].len())];
    let (base, past) = VERBS[pick(rng, VERBS.len())];
    match (form, tense) {
        (0, 0) => format!("{} {past} {obj}, and it was {adj}.", capital(subj)),
        (0, _) => format!("{} will {base} {obj}, and it will be {adj}.", capital(subj)),
        (_, 0) => format!("Did {subj} {base} {obj}, and was it {adj}?"),
        _ => format!("Will {subj} {base} {obj}, and will it be {adj}?"),
    }
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

impl Demo {
    /// `train` and `test` examples per task, balanced over each task's classes, from `seed`.
    ///
    /// # Errors
    /// [`Error::Config`] when the templates cannot give that many distinct sentences.
    pub fn generate(seed: u64, train: usize, test: usize) -> Result<Self> {
        let specs: [(&str, Vec<String>); 4] = [
            ("topic", TOPICS.iter().map(|s| s.to_string()).collect()),
            ("sentiment", vec!["negative".into(), "positive".into()]),
            ("form", vec!["statement".into(), "question".into()]),
            ("tense", vec!["past".into(), "future".into()]),
        ];
        let classes = [TOPICS.len(), 2, 2, 2];
        let mut rng = Rng::new(seed);
        let mut seen = HashSet::new();
        let mut sentences = Vec::new();
        let mut tasks = Vec::new();
        for (ti, (name, labels)) in specs.into_iter().enumerate() {
            let mut split = |n: usize| -> Result<Vec<Example>> {
                (0..n)
                    .map(|i| {
                        let label = i % classes[ti];
                        for _ in 0..1000 {
                            let mut attrs = classes.map(|c| (rng.next_u64() % c as u64) as usize);
                            attrs[ti] = label;
                            let s = sentence(&mut rng, attrs);
                            if seen.insert(s.clone()) {
                                sentences.push(s);
                                return Ok(Example {
                                    sentence: sentences.len() - 1,
                                    label: label as u32,
                                });
                            }
                        }
                        Err(Error::Config {
                            detail: format!("demo: cannot draw {n} distinct sentences"),
                        })
                    })
                    .collect()
            };
            let tr = split(train)?;
            let te = split(test)?;
            tasks.push(DemoTask {
                name: name.to_string(),
                labels,
                train: tr,
                test: te,
            });
        }
        Ok(Demo { sentences, tasks })
    }
}
