//! The `tokenizer.json` loaders (the dispatching one, BPE and WordPiece) on arbitrary bytes: each refuses
//! with an error naming the file, or loads a tokenizer that encodes, decodes every id in its vocabulary,
//! refuses the first id past it, and (BPE) saves to JSON that loads back to the same tokenizer.
#![no_main]

use anvil::tokenizer::{self, Bpe, Tokenizer, WordPiece};
use anvil_fuzz::refused_or;
use libfuzzer_sys::fuzz_target;

const NAME: &str = "fuzz-tokenizer.json";
const PROBES: [&str; 3] = [
    "Hello world, it's 2024!",
    "héllo 世界 [UNK][CLS]<|endoftext|>",
    " \t\n ",
];

fn exercise(tok: &dyn Tokenizer) {
    let n = tok.vocab_size();
    for text in PROBES {
        let ids = tok.encode(text);
        assert!(
            ids.iter().all(|&id| (id as usize) < n),
            "{ids:?} outside {n}"
        );
        tok.decode(&ids).expect("ids from encode decode");
    }
    // Every id decodes (a bounded sample of large vocabularies); the first past the end is refused.
    let ids: Vec<u32> = (0..n.min(4096) as u32).collect();
    tok.decode(&ids)
        .expect("every id in the vocabulary decodes");
    assert!(tok.decode(&[n as u32]).is_err());
    for id in 0..n.min(64) as u32 {
        let t = tok.id_to_token(id).expect("id in range");
        let _ = tok.token_to_id(t);
    }
}

fuzz_target!(|data: &[u8]| {
    refused_or(tokenizer::from_json_bytes(data, NAME), NAME, |t| {
        exercise(&*t)
    });
    refused_or(WordPiece::from_json_bytes(data, NAME), NAME, |t| {
        exercise(&t)
    });
    refused_or(Bpe::from_json_bytes(data, NAME), NAME, |t| {
        exercise(&t);
        let saved = t.to_json().to_json();
        let back = Bpe::from_json_bytes(saved.as_bytes(), "saved").expect("our own save loads");
        assert_eq!(back.to_json(), t.to_json());
        for text in PROBES {
            assert_eq!(back.encode(text), t.encode(text));
        }
    });
});
