//! Byte-level BPE on arbitrary text: a tokenizer trained on part of the input (with special tokens taken
//! from it too) and the checked-in `tests/fixtures/tokenizer/bpe.json` both give `decode(encode(s)) == s`
//! for every string, keep ids inside the vocabulary, refuse unknown ids, and survive a save/load.
//!
//! Input: `specials 0xFF training-text 0xFF text`; specials are split at 0xFE (neither byte occurs in UTF-8).
#![no_main]

use anvil::tokenizer::{Bpe, Tokenizer};
use anvil_fuzz::parts;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static FIXTURE: LazyLock<Bpe> = LazyLock::new(|| {
    let json = include_bytes!("../../tests/fixtures/tokenizer/bpe.json");
    Bpe::from_json_bytes(json, "bpe.json").expect("the checked-in fixture loads")
});

/// Merges learned beyond the 256 byte tokens: enough to build multi-byte tokens, small enough to train fast.
const MERGES: usize = 64;

fn round_trip(bpe: &Bpe, text: &str, raw: &[u8]) {
    let ids = bpe.encode(text);
    let n = bpe.vocab_size();
    assert!(ids.iter().all(|&id| (id as usize) < n));
    assert_eq!(bpe.decode(&ids).expect("own ids decode"), text);
    assert_eq!(
        bpe.decode_bytes(&ids).expect("own ids decode"),
        text.as_bytes()
    );
    // Arbitrary ids: decoded (lossily) or refused by the first unknown one, never a panic.
    let raw_ids: Vec<u32> = raw
        .chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.last().unwrap_or(&0)))
        .collect();
    match bpe.decode(&raw_ids) {
        Ok(_) => assert!(raw_ids.iter().all(|&id| (id as usize) < n)),
        Err(e) => assert!(e.to_string().contains("unknown token id")),
    }
}

fuzz_target!(|data: &[u8]| {
    // A fresh copy per input: the word cache of a shared one would grow across inputs, which libFuzzer's
    // leak detection takes for a leak.
    let fixture = FIXTURE.clone();
    let p = parts(data, 3);
    let [specials, training, raw] = p.as_slice() else {
        // Too few parts: the whole input is the text.
        let text = String::from_utf8_lossy(data);
        round_trip(&fixture, &text, data);
        return;
    };
    let text = String::from_utf8_lossy(raw);
    round_trip(&fixture, &text, raw);

    let specials: Vec<String> = specials
        .split(|&b| b == 0xFE)
        .filter(|s| !s.is_empty())
        .take(4)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let specials: Vec<&str> = specials.iter().map(String::as_str).collect();
    let training = String::from_utf8_lossy(training);
    let Ok(bpe) = Bpe::train(
        &[training.as_ref()],
        256 + specials.len() + MERGES,
        1,
        &specials,
    ) else {
        // Refused only for repeated or byte-token specials; the error says so.
        return;
    };
    round_trip(&bpe, &text, raw);
    round_trip(&bpe, &training, raw);
    let saved = bpe.to_json().to_json();
    let back = Bpe::from_json_bytes(saved.as_bytes(), "saved").expect("our own save loads");
    assert_eq!(back.encode(&text), bpe.encode(&text));
});
