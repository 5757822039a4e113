//! `anvil memory ...`: the three-level conversation memory from the command line.

use crate::Flags;
use anvil::memory::eval;
use anvil::memory::{
    Config, ContextOptions, Embedder, HashEmbedder, Level, Memory, TokenCounter, TokenizerCounter,
    WordCounter,
};
use std::io::Read;
use std::path::Path;
use std::time::Instant;

const HELP: &str = "\
Usage: anvil memory <ACTION> [OPTIONS]

Actions:
  add [--file F]      add messages, one per non-empty line, from F (default: stdin)
  query TEXT          print the context built for TEXT
  stats               print each level's chunks, tokens and share of its budget
  eval                recall@k on the built-in conversations: keywords vs embeddings vs hybrid
  bench               time context building on a generated conversation, print the memory used

Options:
  --store PATH        the memory file (default: anvil.memory); `add` creates it if missing
  --budgets C,O,L     token budgets of the current, obsolete and long-term levels when creating
                      a store (default 2000,8000,4000)
  --tokenizer FILE    count tokens with this tokenizer.json (a store remembers its counter)
  --budget N          query: context token budget (default 4096)
  --recent N          query: newest messages included in full (default 10)
  --embedder E        query/bench/eval: also score by embeddings (hybrid, alpha 0.5): `hash` (the
                      hashed-trigram test embedder) or a sentence-transformers model directory
                      (e.g. all-MiniLM-L6-v2), whose embeddings Anvil's encoder computes
  --messages N        bench: conversation length (default 10000); eval: per conversation (default 400)
  --runs N            bench: context builds timed (default 51)
  --conversations N   eval: how many (default 4)
  --seed N            eval/bench: generator seed (default 2024)";

const DEFAULT_STORE: &str = "anvil.memory";

pub fn main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(
        args,
        &[
            "store",
            "file",
            "budgets",
            "tokenizer",
            "budget",
            "recent",
            "embedder",
            "messages",
            "runs",
            "conversations",
            "seed",
        ],
        &["help"],
    )?;
    let Some(action) = f.positional.first().map(String::as_str) else {
        println!("{HELP}");
        return Ok(());
    };
    if f.has("help") {
        println!("{HELP}");
        return Ok(());
    }
    let extra = |n: usize| {
        if f.positional.len() > n {
            Err(format!("unexpected argument `{}`", f.positional[n]))
        } else {
            Ok(())
        }
    };
    match action {
        "add" => extra(1).and_then(|()| add(&f)),
        "query" => {
            let text = f
                .positional
                .get(1)
                .ok_or("query needs the query text: anvil memory query \"...\"")?;
            extra(2).and_then(|()| query(&f, text))
        }
        "stats" => extra(1).and_then(|()| stats(&f)),
        "eval" => extra(1).and_then(|()| run_eval(&f)),
        "bench" => extra(1).and_then(|()| bench(&f)),
        other => Err(format!(
            "unknown memory action `{other}` (known: add, query, stats, eval, bench)"
        )),
    }
}

fn counter(f: &Flags) -> Result<Box<dyn TokenCounter + Send + Sync>, String> {
    match f.value("tokenizer") {
        None => Ok(Box::new(WordCounter)),
        Some(path) => {
            let t = anvil::tokenizer::from_file(path).map_err(|e| e.to_string())?;
            let name = Path::new(path)
                .file_name()
                .map_or(path.into(), |n| n.to_string_lossy());
            Ok(Box::new(TokenizerCounter::new(t, &name)))
        }
    }
}

fn embedder(f: &Flags) -> Result<Option<Box<dyn Embedder>>, String> {
    match f.value("embedder") {
        None => Ok(None),
        Some("hash") => Ok(Some(Box::new(HashEmbedder::default()))),
        Some(dir) if Path::new(dir).is_dir() => Ok(Some(Box::new(
            anvil::memory::EncoderEmbedder::load(dir).map_err(|e| e.to_string())?,
        ))),
        Some(other) => Err(format!(
            "unknown embedder `{other}` (known: hash, or a sentence-transformers model directory)"
        )),
    }
}

fn store(f: &Flags) -> &str {
    f.value("store").unwrap_or(DEFAULT_STORE)
}

fn open(f: &Flags) -> Result<Memory, String> {
    let path = store(f);
    if !Path::new(path).exists() {
        return Err(format!(
            "no memory at `{path}`; add messages first with `anvil memory add`"
        ));
    }
    if f.value("budgets").is_some() {
        return Err(format!(
            "--budgets only applies when creating a store, and `{path}` exists"
        ));
    }
    Memory::load(path, counter(f)?).map_err(|e| e.to_string())
}

fn parse_budgets(s: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = s.split(',').collect();
    let bad =
        || format!("--budgets: expected three positive integers like 2000,8000,4000, got `{s}`");
    let [c, o, l] = parts[..] else {
        return Err(bad());
    };
    let p = |x: &str| x.trim().parse::<usize>().map_err(|_| bad());
    Ok([p(c)?, p(o)?, p(l)?])
}

fn add(f: &Flags) -> Result<(), String> {
    let text = match f.value("file") {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("stdin: {e}"))?;
            s
        }
    };
    let path = store(f);
    let mut m = if Path::new(path).exists() {
        open(f)?
    } else {
        let mut config = Config::default();
        if let Some(b) = f.value("budgets") {
            config.budgets = parse_budgets(b)?;
        }
        Memory::with_counter(config, counter(f)?).map_err(|e| e.to_string())?
    };
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        m.add(line);
        n += 1;
    }
    m.save(path).map_err(|e| e.to_string())?;
    println!("added {n} messages to {path} ({} in all)", m.messages());
    print_stats(&m);
    Ok(())
}

fn query(f: &Flags, text: &str) -> Result<(), String> {
    let mut m = open(f)?;
    let e = embedder(f)?;
    let opts = ContextOptions {
        budget: f.parsed("budget", 4096)?,
        recent: f.parsed("recent", 10)?,
        ..ContextOptions::default()
    };
    let t = Instant::now();
    let ctx = m
        .build_context(text, &opts, e.as_deref())
        .map_err(|e| e.to_string())?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    print!("{}", ctx.render());
    println!(
        "-- {} items, {} of {} tokens, built in {ms:.2} ms ({})",
        ctx.items.len(),
        ctx.tokens,
        ctx.budget,
        if e.is_some() {
            "hybrid scoring"
        } else {
            "keyword scoring"
        }
    );
    Ok(())
}

fn stats(f: &Flags) -> Result<(), String> {
    let m = open(f)?;
    println!(
        "{}: {} messages, counter `{}`",
        store(f),
        m.messages(),
        m.counter().id()
    );
    print_stats(&m);
    Ok(())
}

fn print_stats(m: &Memory) {
    println!(
        "{:<10} {:>7} {:>9} {:>8} {:>7} {:>9} {:>7}",
        "level", "chunks", "messages", "tokens", "budget", "of budget", "ratio"
    );
    for s in m.stats() {
        println!(
            "{:<10} {:>7} {:>9} {:>8} {:>7} {:>8.1}% {:>6.1}x",
            s.level.name(),
            s.chunks,
            s.messages,
            s.tokens,
            s.budget,
            s.percent(),
            s.ratio()
        );
    }
    println!("memory held: {} bytes", m.heap_bytes());
}

fn run_eval(f: &Flags) -> Result<(), String> {
    let n: usize = f.parsed("conversations", 4)?;
    let len: usize = f.parsed("messages", 400)?;
    let seed: u64 = f.parsed("seed", 2024)?;
    if n == 0 || len < 10 {
        return Err("eval needs at least 1 conversation of at least 10 messages".into());
    }
    let convs = eval::conversations(n, len, seed);
    let ks = [1, 3, 5, 10];
    let config = eval::eval_config();
    let chosen = embedder(f)?;
    let hash = HashEmbedder::default();
    let (e, what): (&dyn Embedder, String) = match &chosen {
        Some(e) => (e.as_ref(), e.id()),
        None => (&hash, "hashed trigrams (test stand-in)".into()),
    };
    let r = eval::evaluate(&convs, &config, &ks, e).map_err(|e| e.to_string())?;
    println!(
        "{} conversations x {len} messages, {} questions about facts planted in the first fifth; \
         budgets {:?}; embedder: {what}",
        r.conversations, r.questions, config.budgets
    );
    print!("{:<22}", "scoring");
    for k in &r.ks {
        print!(" {:>9}", format!("recall@{k}"));
    }
    println!();
    for (name, rec) in &r.rows {
        print!("{name:<22}");
        for x in rec {
            print!(" {x:>9.3}");
        }
        println!();
    }
    println!(
        "facts whose text survived compression: {:.1}%",
        100.0 * r.facts_intact
    );
    Ok(())
}

fn bench(f: &Flags) -> Result<(), String> {
    let len: usize = f.parsed("messages", 10_000)?;
    let runs: usize = f.parsed("runs", 51)?;
    let seed: u64 = f.parsed("seed", 2024)?;
    if len == 0 || runs == 0 {
        return Err("--messages and --runs must be at least 1".into());
    }
    let e = embedder(f)?;
    let conv = &eval::conversations(1, len, seed)[0];
    let mut m = Memory::new(Config::default()).map_err(|e| e.to_string())?;
    let t = Instant::now();
    for msg in &conv.messages {
        m.add(msg);
    }
    let add_s = t.elapsed().as_secs_f64();
    println!(
        "{len} messages added in {:.3} s ({:.1} us/message)",
        add_s,
        add_s * 1e6 / len as f64
    );
    print_stats(&m);
    let opts = ContextOptions::default();
    let e = e.as_deref();
    if let Some(e) = e {
        // The first build embeds every chunk; later ones reuse the cache.
        let t = Instant::now();
        m.build_context("warm up", &opts, Some(e))
            .map_err(|e| e.to_string())?;
        println!(
            "first build with the embedder (embeds every chunk): {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let mut times = Vec::with_capacity(runs);
    let mut tokens = 0;
    for i in 0..runs {
        let q = &conv.questions[i % conv.questions.len()].0;
        let t = Instant::now();
        let ctx = m.build_context(q, &opts, e).map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        tokens = ctx.tokens;
    }
    times.sort_by(f64::total_cmp);
    println!(
        "context build ({} scoring, budget {}, last {} messages): median {:.3} ms, min {:.3}, max {:.3} over {runs} runs; last context {tokens} tokens",
        if e.is_some() { "hybrid" } else { "keyword" },
        opts.budget,
        opts.recent,
        times[runs / 2],
        times[0],
        times[runs - 1]
    );
    let levels: usize = Level::ALL.iter().map(|&l| m.chunks(l).len()).sum();
    println!(
        "chunks held: {levels}; memory held: {} bytes",
        m.heap_bytes()
    );
    Ok(())
}
