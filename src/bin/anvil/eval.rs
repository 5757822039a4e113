//! `anvil eval CKPT`: held-out loss and perplexity, and per-domain exact-match accuracy on the
//! built-in corpus (or the loss on `--data` text files with the run's tokenizer).

use crate::Flags;
use anvil::corpus::{self, ASCII_VOCAB, Ascii};
use anvil::data::{Tokens, Windows, encode_files};
use anvil::models::Model;
use anvil::tokenizer::Tokenizer;
use anvil::train::evaluate;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const HELP: &str = "\
anvil eval: loss, perplexity and per-domain accuracy of a checkpoint

Usage: anvil eval CKPT [OPTIONS]

CKPT is a checkpoint from `anvil train` (or a HF directory). Without --data: the loss on fresh
built-in corpus text and exact-match accuracy per domain (needs the corpus vocabulary).

Options:
  --data FILES       comma-separated text files: the loss on them, tokenized with the
                     tokenizer.json beside CKPT (or --tokenizer)
  --tokenizer FILE   a HF tokenizer.json for --data
  --n N              prompts per domain                      [100]
  --batches N        loss batches (of 8 x 64 tokens)         [16]
  --seed N           evaluation seed                         [7]
  -h, --help         this help";

/// Rows and tokens per loss batch.
const ROWS: usize = 8;
const SEQ: usize = 64;

pub fn main(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{HELP}");
        return Ok(());
    }
    let f = Flags::parse(args, &["data", "tokenizer", "n", "batches", "seed"], &[])?;
    let [ckpt] = f.positional.as_slice() else {
        return Err("anvil eval takes one checkpoint path; run `anvil eval --help`".into());
    };
    let ckpt = PathBuf::from(ckpt);
    if !ckpt.exists() {
        return Err(format!("{}: no such file or directory", ckpt.display()));
    }
    let n: usize = f.parsed("n", 100)?;
    let batches: usize = f.parsed("batches", 16)?;
    let seed: u64 = f.parsed("seed", 7)?;
    let mut model = Model::load(&ckpt).map_err(|e| e.to_string())?;
    let vocab = model.config().vocab_size;
    let seq = SEQ.min(model.config().max_seq_len);
    let tokens = match f.value("data") {
        Some(files) => data_tokens(&ckpt, &f, files)?,
        None => {
            if vocab != ASCII_VOCAB {
                return Err(format!(
                    "{}: vocabulary of {vocab}, not the built-in corpus's {ASCII_VOCAB}; give --data FILES",
                    ckpt.display()
                ));
            }
            let text = corpus::text(&corpus::generate(
                seed ^ 0xE7A1,
                ROWS * seq * batches / 6 + 64,
            ));
            Tokens::Memory(Ascii.encode(&text))
        }
    };
    let len = tokens.len();
    let mut w =
        Windows::new(Arc::new(tokens), 0..len, ROWS, seq, seed).map_err(|e| e.to_string())?;
    let ev = evaluate(&mut model, &mut w, batches).map_err(|e| e.to_string())?;
    println!(
        "loss {:.4}  perplexity {:.3}  ({} predicted tokens)",
        ev.loss, ev.perplexity, ev.tokens
    );
    if f.value("data").is_none() {
        let scores = corpus::accuracy(&mut model, n, seed).map_err(|e| e.to_string())?;
        for s in &scores {
            println!(
                "{:<11} {:>5.1}%  ({}/{})",
                s.domain.name(),
                100.0 * s.accuracy(),
                s.correct,
                s.total
            );
        }
    }
    Ok(())
}

fn data_tokens(ckpt: &Path, f: &Flags, files: &str) -> Result<Tokens, String> {
    let tok_path = match f.value("tokenizer") {
        Some(p) => PathBuf::from(p),
        None => ckpt
            .parent()
            .unwrap_or(Path::new("."))
            .join("tokenizer.json"),
    };
    if !tok_path.is_file() {
        return Err(format!(
            "{}: no tokenizer for --data (give --tokenizer FILE)",
            tok_path.display()
        ));
    }
    let tok = anvil::tokenizer::from_file(&tok_path).map_err(|e| e.to_string())?;
    let files: Vec<PathBuf> = files.split(',').map(PathBuf::from).collect();
    let tmp = std::env::temp_dir().join(format!("anvil-eval-{}.bin", std::process::id()));
    let sep = tok.token_to_id("<|endoftext|>");
    let r = encode_files(&files, tok.as_ref(), sep, &tmp)
        .and_then(|_| anvil::data::TokenFile::open(&tmp));
    // The mapping stays valid after the name is removed.
    let _ = std::fs::remove_file(&tmp);
    Ok(Tokens::Mapped(r.map_err(|e| e.to_string())?))
}
