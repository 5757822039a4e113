//! WordPiece encoding of arbitrary text with the head of the real all-MiniLM-L6-v2 vocabulary, under each
//! normaliser setting: ids stay inside the vocabulary and decode; never a panic.
//!
//! Input: first byte picks the options (bits: clean_text, chinese chars, strip accents, lowercase); the rest is
//! the text (lossily UTF-8).
#![no_main]

use anvil::tokenizer::{BertOptions, Tokenizer, WordPiece};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// One tokenizer per normaliser setting (bits: clean_text, chinese chars, strip accents, lowercase).
static TOKENIZERS: LazyLock<Vec<WordPiece>> = LazyLock::new(|| {
    let text = include_str!("../data/minilm-vocab-head.txt");
    let vocab: Vec<String> = text.lines().map(str::to_string).collect();
    (0..16u8)
        .map(|flags| {
            let options = BertOptions {
                clean_text: flags & 1 != 0,
                handle_chinese_chars: flags & 2 != 0,
                strip_accents: flags & 4 != 0,
                lowercase: flags & 8 != 0,
            };
            WordPiece::new(vocab.clone(), "[UNK]", options).expect("the vocabulary has [UNK]")
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let wp = &TOKENIZERS[usize::from(flags & 15)];
    let text = String::from_utf8_lossy(rest);
    let ids = wp.encode(&text);
    assert!(ids.iter().all(|&id| (id as usize) < wp.vocab_size()));
    wp.decode(&ids).expect("ids from encode decode");
    let framed = wp
        .encode_with_special(&text)
        .expect("[CLS] and [SEP] are in the vocabulary");
    assert_eq!(framed.len(), ids.len() + 2);
});
