//! The WordPiece `vocab.txt` loader on arbitrary bytes: refused with an error naming the file, or a
//! tokenizer whose encodings stay inside the vocabulary and decode.
#![no_main]

use anvil::tokenizer::{Tokenizer, WordPiece};
use anvil_fuzz::refused_or;
use libfuzzer_sys::fuzz_target;

const NAME: &str = "fuzz-vocab.txt";

fuzz_target!(|data: &[u8]| {
    refused_or(WordPiece::from_vocab_bytes(data, NAME), NAME, |wp| {
        let n = wp.vocab_size();
        for text in ["unaffable hello, WORLD!", "naïve 東京 [CLS] x [SEP]", ""] {
            let ids = wp.encode(text);
            assert!(ids.iter().all(|&id| (id as usize) < n));
            wp.decode(&ids).expect("ids from encode decode");
        }
        let _ = wp.encode_with_special("a b");
        assert!(wp.decode(&[n as u32]).is_err());
    });
});
