//! Malformed `tokenizer.json` and `vocab.txt` files, each refused naming the file and what is wrong.

use super::scratch;
use anvil::tokenizer::{self, Bpe, Tokenizer, WordPiece};
use std::path::{Path, PathBuf};

/// Writes `text` as `dir/name` and loads it with every `tokenizer.json` loader that could accept it; each
/// refusal must name the file and contain `needle`.
fn tokenizer_refused(dir: &Path, name: &str, text: &[u8], needle: &str) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let errors = [
        tokenizer::from_file(&path).err().map(|e| e.to_string()),
        Bpe::from_file(&path).err().map(|e| e.to_string()),
        WordPiece::from_tokenizer_json(&path)
            .err()
            .map(|e| e.to_string()),
    ];
    for (loader, e) in ["from_file", "Bpe", "WordPiece"].iter().zip(errors) {
        let e = e.unwrap_or_else(|| panic!("{name} loaded by {loader}"));
        assert!(e.contains(name), "{name} ({loader}): {e}");
        if *loader == "from_file" {
            assert!(e.contains(needle), "{name}: expected `{needle}` in: {e}");
        }
    }
}

fn bpe_json(vocab: &str, merges: &str, added: &str) -> String {
    format!(
        r#"{{"added_tokens":[{added}],"pre_tokenizer":{{"type":"ByteLevel"}},"model":{{"type":"BPE","vocab":{{{vocab}}},"merges":[{merges}]}}}}"#
    )
}

/// The 256 byte tokens as `"c":id` pairs, then `extra` tokens after them.
fn byte_vocab(extra: &[&str]) -> String {
    let mut toks: Vec<String> = (0..=255u8)
        .map(|b| anvil::tokenizer::bpe::byte_to_char(b).to_string())
        .collect();
    toks.extend(extra.iter().map(|s| s.to_string()));
    let mut out = String::new();
    for (i, t) in toks.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        anvil::json::write_string(&mut out, t);
        out.push_str(&format!(":{i}"));
    }
    out
}

#[test]
fn malformed_tokenizer_json_is_refused_naming_the_file() {
    let dir = scratch("tokenizer-json");
    let bytes = byte_vocab(&["ab"]);
    let wp = |vocab: &str, extra: &str| {
        format!(
            r#"{{"normalizer":null,{extra}"model":{{"type":"WordPiece","unk_token":"[UNK]","vocab":{{{vocab}}}}}}}"#
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "cut.json",
            r#"{"model": {"type": "BPE", "vocab": {"#.into(),
            "JSON error at byte",
        ),
        (
            "control.json",
            "{\"model\":\"\u{1}\"}".into(),
            "unescaped control character",
        ),
        ("empty.json", String::new(), "unexpected end of input"),
        ("no-model.json", "{}".into(), "model.type None"),
        (
            "unigram.json",
            r#"{"model":{"type":"Unigram"}}"#.into(),
            "unsupported model.type",
        ),
        (
            "vocab-array.json",
            bpe_json("", "", "").replace(r#""vocab":{}"#, r#""vocab":[]"#),
            "model.vocab is not an object",
        ),
        (
            "vocab-float.json",
            bpe_json(r#""a":0.5"#, "", ""),
            "is not an integer id",
        ),
        (
            "vocab-gap.json",
            bpe_json(r#""a":0,"b":2"#, "", ""),
            "id 2 for \"b\" is out of range",
        ),
        (
            "vocab-twice.json",
            bpe_json(r#""a":0,"b":0"#, "", ""),
            "id 0 is used twice",
        ),
        (
            "vocab-huge-id.json",
            bpe_json(r#""a":18446744073709551615"#, "", ""),
            "out of range",
        ),
        (
            "no-bytes.json",
            bpe_json(r#""a":0"#, "", ""),
            "vocabulary lacks byte 0x00",
        ),
        (
            "merge-unknown.json",
            bpe_json(&bytes, r#""a zz""#, ""),
            "merge 0 names unknown \"zz\"",
        ),
        (
            "merge-result.json",
            bpe_json(&bytes, r#""b c""#, ""),
            "merge 0 names unknown \"bc\"",
        ),
        (
            "merge-shape.json",
            bpe_json(&bytes, r#"["a"]"#, ""),
            "model.merges[0] is not",
        ),
        (
            "merges-missing.json",
            bpe_json(&bytes, "", "").replace(r#","merges":[]"#, ""),
            "model.merges is not an array",
        ),
        (
            "added-gap.json",
            bpe_json(&bytes, "", r#"{"id":300,"content":"<s>"}"#),
            "leaves a gap",
        ),
        (
            "added-clash.json",
            bpe_json(&bytes, "", r#"{"id":256,"content":"<s>"}"#),
            "which is \"ab\"",
        ),
        (
            "added-no-id.json",
            bpe_json(&bytes, "", r#"{"content":"<s>"}"#),
            "added token without a valid id",
        ),
        (
            "added-id-u64.json",
            bpe_json(&bytes, "", r#"{"id":4294967296,"content":"<s>"}"#),
            "added token without a valid id",
        ),
        (
            "no-pretok.json",
            bpe_json(&bytes, "", "").replace(r#""pre_tokenizer":{"type":"ByteLevel"},"#, ""),
            "no pre_tokenizer",
        ),
        (
            "wp-no-unk.json",
            wp(r#""a":0"#, ""),
            "no unknown token \"[UNK]\"",
        ),
        (
            "wp-normalizer.json",
            wp(r#""[UNK]":0"#, r#""normalizer":{"type":"NFC"},"#).replacen(
                r#""normalizer":null,"#,
                "",
                1,
            ),
            "not a BertNormalizer",
        ),
        (
            "wp-max-chars.json",
            wp(r#""[UNK]":0"#, "").replace(
                r#""unk_token""#,
                r#""max_input_chars_per_word":-1,"unk_token""#,
            ),
            "max_input_chars_per_word is not an integer",
        ),
        (
            "wp-added.json",
            wp(
                r#""[UNK]":0"#,
                r#""added_tokens":[{"id":5,"content":"[X]"}],"#,
            ),
            "outside the vocabulary",
        ),
        (
            "deep.json",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            "nesting deeper than the limit",
        ),
    ];
    for (name, text, needle) in &cases {
        tokenizer_refused(&dir, name, text.as_bytes(), needle);
    }
    // A UTF-8 lead byte without its continuation inside a string ("B\xC3E").
    let mut raw = bpe_json(&bytes, "", "").into_bytes();
    let at = raw.windows(5).position(|w| w == b"\"BPE\"").unwrap() + 2;
    raw[at] = 0xC3;
    tokenizer_refused(&dir, "bad-utf8.json", &raw, "invalid UTF-8 in string");
}

/// Every prefix (at 64 places) of the real WordPiece `tokenizer.json` and of the checked-in BPE one is
/// refused, naming the file. Skipped (loudly) for MiniLM when its files are absent.
#[test]
fn truncated_real_tokenizers_are_refused() {
    let mut files =
        vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/bpe.json")];
    match minilm_file("tokenizer.json") {
        Some(p) => files.push(p),
        None => {
            eprintln!("\n*** SKIPPED (MiniLM half): set ANVIL_MINILM_DIR (see .ci/run) ***")
        }
    }
    for f in files {
        let full = std::fs::read(&f).unwrap();
        assert!(
            tokenizer::from_json_bytes(&full, "whole").is_ok(),
            "{}",
            f.display()
        );
        for k in 0..64 {
            let cut = full.len() * k / 64;
            let name = format!("cut-{k}.json");
            let e = tokenizer::from_json_bytes(&full[..cut], &name)
                .err()
                .expect("a prefix loaded");
            assert!(e.to_string().contains(&name), "{e}");
        }
    }
}

/// `name` in the real all-MiniLM-L6-v2 files, which `.ci/run` fetches and names in `ANVIL_MINILM_DIR`.
fn minilm_file(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("ANVIL_MINILM_DIR")?).join(name);
    p.exists().then_some(p)
}

#[test]
fn malformed_vocab_txt_is_refused_naming_the_file() {
    let dir = scratch("vocab");
    let cases: [(&str, &[u8], &str); 3] = [
        ("latin1.txt", b"[UNK]\ncaf\xe9\n", "not UTF-8 at byte 9"),
        (
            "no-unk.txt",
            b"[PAD]\na\n##b\n",
            "no unknown token \"[UNK]\"",
        ),
        ("empty.txt", b"", "no unknown token"),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let e = WordPiece::from_vocab_file(&path)
            .err()
            .unwrap_or_else(|| panic!("{name} loaded"))
            .to_string();
        assert!(e.contains(name) && e.contains(needle), "{name}: {e}");
    }
    let e = WordPiece::from_vocab_file(dir.join("absent.txt"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("absent.txt"), "{e}");
    // CRLF line ends, blank lines and repeated tokens load (ids are line numbers; the last repeat wins).
    let path = dir.join("crlf.txt");
    std::fs::write(&path, b"[PAD]\r\n[UNK]\r\n\r\nhello\r\nhello\r\n").unwrap();
    let wp = WordPiece::from_vocab_file(&path).unwrap();
    assert_eq!(wp.vocab_size(), 5);
    assert_eq!(wp.encode("hello xyz"), [4, 1]);
    assert!(wp.decode(&[5]).is_err());
}
