//! Sentence-embedding throughput: `SentenceEmbedder` over a fixed set of generated sentences.

/// `n` deterministic English-like sentences of 4 to about 40 words (varied, as real inputs are).
pub fn sentences(n: usize) -> Vec<String> {
    const SUBJECTS: [&str; 8] = [
        "the committee",
        "my neighbour",
        "a small startup",
        "the river",
        "our new compiler",
        "the orchestra",
        "this old bridge",
        "a curious student",
    ];
    const VERBS: [&str; 8] = [
        "announced",
        "rebuilt",
        "questioned",
        "crossed",
        "optimised",
        "celebrated",
        "ignored",
        "described",
    ];
    const OBJECTS: [&str; 8] = [
        "the annual budget",
        "a wooden boat",
        "every assumption",
        "the mountain pass",
        "its inner loops",
        "the anniversary",
        "the warning signs",
        "a strange dream",
    ];
    const TAILS: [&str; 6] = [
        "before the storm arrived",
        "with surprising patience and a great deal of care",
        "while everyone else was asleep",
        "in front of a crowd that had waited for hours in the cold rain",
        "because nobody else would, even though it was late and the results were uncertain",
        "",
    ];
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |m: usize| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % m as u64) as usize
    };
    (0..n)
        .map(|_| {
            let mut t = format!(
                "{} {} {}",
                SUBJECTS[next(8)],
                VERBS[next(8)],
                OBJECTS[next(8)]
            );
            for _ in 0..next(3) {
                let tail = TAILS[next(6)];
                if !tail.is_empty() {
                    t.push(' ');
                    t.push_str(tail);
                }
            }
            t.push('.');
            t
        })
        .collect()
}
