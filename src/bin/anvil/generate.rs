//! `anvil generate` (text from a model, printed as it comes) and `anvil quantize` (an int8
//! checkpoint from an f32 one).

use crate::Flags;
use anvil::generate::{BeamConfig, CachedLm, GenerateConfig, Generator, Sampling, beam_search};
use anvil::models::Model;
use anvil::tokenizer::{self, Tokenizer};
use std::io::Write;
use std::path::{Path, PathBuf};

const HELP: &str = "\
Usage: anvil generate MODEL [PROMPT] [OPTIONS]

MODEL is a HF checkpoint directory (config.json + model.safetensors) or an Anvil checkpoint
file. PROMPT is text, encoded with the tokenizer.json beside the model (or --tokenizer); or give
token ids with --ids. Tokens are printed as they come; timings go to stderr at the end.

Options:
  --ids 1,2,3               the prompt as token ids
  --tokenizer PATH          a tokenizer.json (default: MODEL's directory)
  --max-new-tokens N        tokens to generate (default 64)
  --temperature T           0 = greedy (default 0)
  --top-k K  --top-p P  --min-p P
  --repetition-penalty R    (default 1 = none)
  --presence-penalty P  --frequency-penalty F
  --stop TEXT               stop when the text contains TEXT (repeatable)
  --stop-token ID           stop after token ID (repeatable)
  --seed S                  sampling seed (default 0)
  --beams W                 beam search with W beams (prints the best result at the end)
  --length-penalty A        beam score = log-prob / len^A (default 1)
  --int8                    run on int8 weights (quantizes an f32 model on load)
  --threads N               threads to use (default: all cores)";

const QUANTIZE_HELP: &str = "\
Usage: anvil quantize IN OUT

Reads a model (HF checkpoint directory or Anvil checkpoint), quantizes every Linear weight (the
LM head included) to int8 per output channel, and writes an Anvil int8 checkpoint to OUT.";

pub fn main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(
        args,
        &[
            "ids",
            "tokenizer",
            "max-new-tokens",
            "temperature",
            "top-k",
            "top-p",
            "min-p",
            "repetition-penalty",
            "presence-penalty",
            "frequency-penalty",
            "stop",
            "stop-token",
            "seed",
            "beams",
            "length-penalty",
            "threads",
        ],
        &["int8", "help"],
    )?;
    if f.has("help") || f.positional.is_empty() {
        println!("{HELP}");
        return Ok(());
    }
    if f.positional.len() > 2 {
        return Err(format!(
            "expected MODEL and at most one PROMPT, got {} arguments (quote the prompt)",
            f.positional.len()
        ));
    }
    let pool = crate::pool(&f)?;
    pool.install(|| run(&f))
}

fn run(f: &Flags) -> Result<(), String> {
    let model_path = PathBuf::from(&f.positional[0]);
    let mut model = Model::load(&model_path).map_err(|e| e.to_string())?;
    if f.has("int8") && !model.is_quantized() {
        model.quantize().map_err(|e| e.to_string())?;
    }
    model.prepare_decode().map_err(|e| e.to_string())?;
    let tok = tokenizer_for(f, &model_path)?;
    let prompt = prompt(f, tok.as_deref())?;
    let v = model.config().vocab_size;
    if let Some(bad) = prompt.iter().find(|&&i| i as usize >= v) {
        return Err(format!(
            "prompt token {bad} is outside the vocabulary ({v})"
        ));
    }
    let cfg = GenerateConfig {
        sampling: Sampling {
            temperature: f.parsed("temperature", 0.0)?,
            top_k: f.value("top-k").map(|_| f.parsed("top-k", 0)).transpose()?,
            top_p: f
                .value("top-p")
                .map(|_| f.parsed("top-p", 1.0))
                .transpose()?,
            min_p: f
                .value("min-p")
                .map(|_| f.parsed("min-p", 0.0))
                .transpose()?,
            repetition_penalty: f.parsed("repetition-penalty", 1.0)?,
            presence_penalty: f.parsed("presence-penalty", 0.0)?,
            frequency_penalty: f.parsed("frequency-penalty", 0.0)?,
        },
        max_new_tokens: f.parsed("max-new-tokens", 64)?,
        stop_tokens: all(f, "stop-token")?,
        stop_strings: f
            .values
            .iter()
            .filter(|(n, _)| n == "stop")
            .map(|(_, v)| v.clone())
            .collect(),
        seed: f.parsed("seed", 0)?,
    };
    let beams: usize = f.parsed("beams", 1)?;
    if beams > 1 {
        return run_beams(f, &mut model, &prompt, &cfg, beams, tok.as_deref());
    }
    let bytes = |id: u32| {
        tok.as_ref()
            .and_then(|t| t.decode_bytes(&[id]).ok())
            .unwrap_or_default()
    };
    let has_tok = tok.is_some();
    let gen_ = Generator::new(
        &mut model,
        std::slice::from_ref(&prompt),
        &cfg,
        has_tok.then_some(&bytes as &dyn Fn(u32) -> Vec<u8>),
    )
    .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let (gens, t) = gen_
        .run(|e| {
            let _ = if has_tok {
                write!(out, "{}", e.text)
            } else {
                write!(out, "{} ", e.token)
            };
            let _ = out.flush();
        })
        .map_err(|e| e.to_string())?;
    let _ = writeln!(out);
    let g = &gens[0];
    eprintln!(
        "{} new tokens ({:?}); prefill {} tokens in {:.1} ms ({:.1} tokens/s); decode {} tokens in {:.1} ms ({:.1} tokens/s)",
        g.tokens.len(),
        g.finish,
        t.prefill_tokens,
        1e3 * t.prefill_seconds,
        t.prefill_tokens as f64 / t.prefill_seconds.max(1e-12),
        t.decode_tokens,
        1e3 * t.decode_seconds,
        t.decode_tokens as f64 / t.decode_seconds.max(1e-12),
    );
    Ok(())
}

fn run_beams(
    f: &Flags,
    model: &mut Model,
    prompt: &[u32],
    cfg: &GenerateConfig,
    width: usize,
    tok: Option<&(dyn Tokenizer + Send + Sync)>,
) -> Result<(), String> {
    let bc = BeamConfig {
        width,
        max_new_tokens: cfg.max_new_tokens,
        length_penalty: f.parsed("length-penalty", 1.0)?,
        early_stopping: true,
        stop_tokens: cfg.stop_tokens.clone(),
    };
    let t0 = std::time::Instant::now();
    let hyps = beam_search(&mut CachedLm(model), prompt, &bc).map_err(|e| e.to_string())?;
    let secs = t0.elapsed().as_secs_f64();
    let best = hyps.first().ok_or("beam search found no hypothesis")?;
    match tok {
        Some(t) => println!("{}", t.decode(&best.tokens).map_err(|e| e.to_string())?),
        None => println!(
            "{}",
            best.tokens
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
    eprintln!(
        "beam search, {width} beams: {} tokens, log-prob {:.3}, score {:.3}, {:.1} ms",
        best.tokens.len(),
        best.log_prob,
        best.score,
        1e3 * secs
    );
    Ok(())
}

/// Every value of a repeatable numeric flag.
fn all(f: &Flags, name: &str) -> Result<Vec<u32>, String> {
    f.values
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| {
            v.parse()
                .map_err(|_| format!("--{name}: cannot read `{v}` as a token id"))
        })
        .collect()
}

/// The tokenizer: `--tokenizer`, else `tokenizer.json` beside the model (none is fine with
/// `--ids`).
fn tokenizer_for(
    f: &Flags,
    model: &Path,
) -> Result<Option<Box<dyn Tokenizer + Send + Sync>>, String> {
    if let Some(p) = f.value("tokenizer") {
        return tokenizer::from_file(p)
            .map(Some)
            .map_err(|e| format!("tokenizer {p}: {e}"));
    }
    let dir = if model.is_dir() {
        model.to_path_buf()
    } else {
        model.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let p = dir.join("tokenizer.json");
    if !p.exists() {
        return Ok(None);
    }
    tokenizer::from_file(&p)
        .map(Some)
        .map_err(|e| format!("tokenizer {}: {e}", p.display()))
}

fn prompt(f: &Flags, tok: Option<&(dyn Tokenizer + Send + Sync)>) -> Result<Vec<u32>, String> {
    match (f.value("ids"), f.positional.get(1)) {
        (Some(_), Some(_)) => Err("give the prompt as text or as --ids, not both".into()),
        (Some(ids), None) => ids
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .map_err(|_| format!("--ids: cannot read `{s}` as a token id"))
            })
            .collect(),
        (None, Some(text)) => match tok {
            Some(t) => Ok(t.encode(text)),
            None => Err(
                "a text prompt needs a tokenizer: no tokenizer.json beside the model; pass --tokenizer PATH or --ids"
                    .into(),
            ),
        },
        (None, None) => Err("no prompt: give PROMPT text or --ids".into()),
    }
}

/// `anvil quantize IN OUT`.
pub fn quantize(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(args, &[], &["help"])?;
    if f.has("help") || f.positional.is_empty() {
        println!("{QUANTIZE_HELP}");
        return Ok(());
    }
    let [inp, out] = f.positional.as_slice() else {
        return Err(format!(
            "expected IN and OUT, got {} arguments",
            f.positional.len()
        ));
    };
    let mut m = Model::load(inp).map_err(|e| e.to_string())?;
    let before = m.footprint().f32;
    m.quantize().map_err(|e| e.to_string())?;
    m.save(out).map_err(|e| e.to_string())?;
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!(
        "{out}: int8 checkpoint, {:.1} MB (f32 parameters: {:.1} MB)",
        size as f64 / 1e6,
        before as f64 / 1e6
    );
    Ok(())
}
