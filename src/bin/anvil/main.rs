//! The `anvil` command line.

mod bench;
mod branches;
mod embed;
mod eval;
mod generate;
mod info;
mod memory;
mod output;
mod peer;
mod progress;
mod train;

use std::process::ExitCode;

const USAGE: &str = "\
anvil: a CPU tensor engine

Usage: anvil <COMMAND> [OPTIONS]

Commands:
  bench FAMILY   measure a kernel family against this machine's roofline and its peers
                 (families: gemm, rows, qgemm, block, train, embed, decode)
  branches ACTION  the multi-task system: frozen MiniLM encoder, MoE blocks, LoRA branches
                 (train, add, eval, compare)
  memory ACTION  a three-level conversation memory: add, query, stats, eval, bench
  embed          sentence embeddings (all-MiniLM-L6-v2 or another sentence-transformers model)
  generate MODEL [PROMPT]   generate text (sampling, stop strings, beams, --int8), printed live
  quantize IN OUT           write an int8 checkpoint of a model
  train          train a small mixture-of-experts model on the built-in corpus (or --data)
  eval CKPT      loss, perplexity and per-domain accuracy of a checkpoint
  info PATH      parameters, memory, config and NaN/inf scan of a checkpoint or HF directory
  help           print this help

Run `anvil <COMMAND> --help` for a command's options.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some("--version" | "-V") => {
            println!("anvil {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some("bench") => bench::main(&args[1..]),
        Some("embed") => embed::main(&args[1..]),
        Some("branches") => branches::main(&args[1..]),
        Some("memory") => memory::main(&args[1..]),
        Some("generate") => generate::main(&args[1..]),
        Some("quantize") => generate::quantize(&args[1..]),
        Some("train") => train::main(&args[1..]),
        Some("eval") => eval::main(&args[1..]),
        Some("info") => info::main(&args[1..]),
        Some(other) => Err(format!("unknown command `{other}`; run `anvil --help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// A rayon pool of `--threads` threads (default: all cores).
pub fn pool(f: &Flags) -> Result<rayon::ThreadPool, String> {
    let threads: usize = f.parsed(
        "threads",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    )?;
    if threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| format!("cannot start {threads} threads: {e}"))
}

/// Flags shared by the subcommands: `--name value` pairs and bare switches, checked against what
/// the command accepts.
pub struct Flags {
    pub positional: Vec<String>,
    pub values: Vec<(String, String)>,
    pub switches: Vec<String>,
}

impl Flags {
    /// Parses `args`: `takes_value` names the flags followed by a value, `switches` the bare ones.
    pub fn parse(args: &[String], takes_value: &[&str], switches: &[&str]) -> Result<Self, String> {
        let mut f = Flags {
            positional: vec![],
            values: vec![],
            switches: vec![],
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let (name, inline) = match name.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (name, None),
                };
                if takes_value.contains(&name) {
                    let v = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .cloned()
                            .ok_or(format!("--{name} needs a value"))?,
                    };
                    f.values.push((name.to_string(), v));
                } else if switches.contains(&name) && inline.is_none() {
                    f.switches.push(name.to_string());
                } else {
                    return Err(format!("unknown flag `{a}`"));
                }
            } else if a.starts_with('-') && a.len() > 1 {
                return Err(format!("unknown flag `{a}`"));
            } else {
                f.positional.push(a.clone());
            }
        }
        Ok(f)
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    /// A flag's value parsed as `T`, or `default` when absent.
    pub fn parsed<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.value(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: cannot read `{v}`")),
        }
    }
}

/// Redraws one progress line on stderr: a bar, the count, the rate and the time left.
pub fn progress_line(what: &str, done: usize, total: usize, start: std::time::Instant, unit: &str) {
    let frac = done as f64 / total.max(1) as f64;
    let width = 30;
    let filled = (frac * width as f64).round() as usize;
    let secs = start.elapsed().as_secs_f64();
    let rate = done as f64 / secs.max(1e-9);
    let eta = if done > 0 {
        (total - done) as f64 / rate
    } else {
        0.0
    };
    eprint!(
        "\r{what} [{}{}] {done}/{total} {rate:.1} {unit}/s ETA {eta:.0}s   ",
        "=".repeat(filled),
        " ".repeat(width - filled.min(width))
    );
}
