//! llm.c's CPU trainer (`train_gpt2`, GPT-2 124M, B 4, T 64) as a peer for `anvil bench train`:
//! its inputs prepared by `benches/llmc_files.py`, its binary run as a child process whose
//! per-step times are read from its output, stepped in turn with ours.
//!
//! The child is paused (SIGSTOP) while our steps run and resumed (SIGCONT) for its own, so the
//! two never share the cores. A pause can only land inside one of its steps (it times each step
//! itself and we cannot stop it between two), so the first step it reports after each resume
//! is dropped; the steps after it ran uninterrupted.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The checkpoint llm.c's `train_gpt2` loads from its working directory.
pub const MODEL_FILE: &str = "gpt2_124M.bin";
/// The token files it trains and validates on (it falls back to TinyStories without them).
pub const TOKEN_FILES: [&str; 2] = [
    "dev/data/tinyshakespeare/tiny_shakespeare_train.bin",
    "dev/data/tinyshakespeare/tiny_shakespeare_val.bin",
];
/// The script writing those files, relative to the repository.
pub const SCRIPT: &str = "benches/llmc_files.py";

/// Steps 0 and 1 are warm-up: step 0 allocates the gradients and AdamW moments lazily.
pub const WARMUP_STEPS: usize = 2;
/// The last step used: after step 19 llm.c samples 63 tokens from the model (63 forward passes),
/// which is not timed but would only cost wall time.
pub const LAST_STEP: usize = 19;
/// Steps kept per resume (after the dropped one).
const KEPT_PER_RESUME: usize = 2;

/// The 256 int32 header llm.c's checkpoint (version 3) starts with, for GPT-2 124M:
/// magic, version, max_seq_len, vocab, layers, heads, channels, padded vocab.
const MODEL_HEADER: [i32; 8] = [20240326, 3, 1024, 50257, 12, 12, 768, 50304];

/// Reads one of llm.c's step lines, `step 3: train loss 10.998 (took 5234.123 ms)`, into the
/// step index and its milliseconds. Any other line (validation loss, the model summary, samples)
/// gives `None`.
pub fn parse_step_line(line: &str) -> Option<(usize, f64)> {
    let rest = line.trim().strip_prefix("step ")?;
    let (step, rest) = rest.split_once(':')?;
    let step = step.trim().parse().ok()?;
    let took = rest.split_once("(took ")?.1;
    let ms = took
        .trim_end()
        .strip_suffix("ms)")?
        .trim()
        .parse::<f64>()
        .ok()?;
    (ms.is_finite() && ms >= 0.0).then_some((step, ms))
}

/// How to run the peer.
#[derive(Clone, Debug)]
pub struct Llmc {
    /// The compiled `train_gpt2`.
    pub bin: PathBuf,
    /// Its working directory, holding the files it reads: the binary's own directory.
    pub dir: PathBuf,
    /// The interpreter running `benches/llmc_files.py` when the files are missing.
    pub python: String,
    /// `OMP_NUM_THREADS` for the child.
    pub threads: usize,
}

impl Llmc {
    /// The peer at `bin`, working in the directory that holds it.
    ///
    /// # Errors
    /// When `bin` is not a file.
    pub fn new(bin: &str, python: &str, threads: usize) -> Result<Self, String> {
        let bin = std::fs::canonicalize(bin)
            .map_err(|e| format!("--llmc {bin}: {e} (build llm.c's train_gpt2 first)"))?;
        if !bin.is_file() {
            return Err(format!("--llmc {}: not a file", bin.display()));
        }
        let dir = bin
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Ok(Self {
            bin,
            dir,
            python: python.to_string(),
            threads,
        })
    }

    /// Writes the checkpoint and token files with `benches/llmc_files.py` when one is missing,
    /// and checks that the checkpoint there is GPT-2 124M.
    ///
    /// # Errors
    /// When the script fails or the checkpoint has another shape.
    pub fn prepare(&self) -> Result<(), String> {
        let missing = std::iter::once(MODEL_FILE)
            .chain(TOKEN_FILES)
            .any(|f| !self.dir.join(f).is_file());
        if missing {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(SCRIPT);
            let o = Command::new(&self.python)
                .arg(&script)
                .arg(&self.dir)
                .output()
                .map_err(|e| format!("cannot run {} {}: {e}", self.python, script.display()))?;
            if !o.status.success() {
                return Err(format!(
                    "{} failed: {}",
                    script.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
        }
        let path = self.dir.join(MODEL_FILE);
        let mut head = [0u8; 4 * MODEL_HEADER.len()];
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_exact(&mut head))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let ints: Vec<i32> = head
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if ints != MODEL_HEADER {
            return Err(format!(
                "{}: header {ints:?} is not llm.c's GPT-2 124M checkpoint {MODEL_HEADER:?} \
                 (remove it to have {SCRIPT} write one)",
                path.display()
            ));
        }
        Ok(())
    }
}

/// Medians of the interleaved run.
#[derive(Clone, Copy, Debug)]
pub struct Interleaved {
    /// Our seconds per step.
    pub ours: f64,
    /// llm.c's seconds per step, as it times them itself.
    pub llmc: f64,
    /// How many of llm.c's steps the median is over.
    pub llmc_steps: usize,
}

/// Runs `ours` (one training step, already warmed up) and llm.c's steps in turn: each round is
/// two of ours, then llm.c resumed for one dropped and two kept steps, until `budget` has passed
/// and `min_rounds` are done, or llm.c reaches [`LAST_STEP`].
///
/// # Errors
/// When the child cannot start, is not paused or resumed, or exits before its warm-up is over.
pub fn interleave(
    ours: &mut dyn FnMut(),
    peer: &Llmc,
    budget: Duration,
    min_rounds: usize,
) -> Result<Interleaved, String> {
    let mut child = Peer::start(peer)?;
    // Warm-up: loading, validation, steps 0 and 1; then it waits while we step.
    while child.next_step()?.0 + 1 < WARMUP_STEPS {}
    child.signal("STOP")?;
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let mut rounds = 0;
    let mut last = WARMUP_STEPS - 1;
    while last < LAST_STEP && (rounds < min_rounds || start.elapsed() < budget) {
        for _ in 0..KEPT_PER_RESUME {
            let t = Instant::now();
            ours();
            mine.push(t.elapsed().as_secs_f64());
        }
        child.signal("CONT")?;
        last = child.next_step()?.0; // straddles the pause: dropped
        for _ in 0..KEPT_PER_RESUME {
            if last >= LAST_STEP {
                break;
            }
            let (step, ms) = child.next_step()?;
            last = step;
            theirs.push(ms / 1e3);
        }
        child.signal("STOP")?;
        rounds += 1;
    }
    Ok(Interleaved {
        ours: super::median(mine),
        llmc_steps: theirs.len(),
        llmc: super::median(theirs),
    })
}

/// The running `train_gpt2`; killed (even while paused) when dropped.
struct Peer {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
    /// The last lines it printed, for the error when it stops early.
    tail: Vec<String>,
}

impl Peer {
    fn start(peer: &Llmc) -> Result<Self, String> {
        // stdbuf makes its stdout line-buffered: into a pipe, C's stdout is block-buffered and
        // the step lines would arrive in bursts of 4 KiB.
        let mut child = Command::new("stdbuf")
            .arg("-oL")
            .arg(&peer.bin)
            .current_dir(&peer.dir)
            .env("OMP_NUM_THREADS", peer.threads.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run stdbuf -oL {}: {e}", peer.bin.display()))?;
        let out = child.stdout.take().ok_or("no stdout for the llm.c child")?;
        Ok(Self {
            child,
            lines: BufReader::new(out).lines(),
            tail: Vec::new(),
        })
    }

    /// The next step line's index and milliseconds, skipping every other line.
    fn next_step(&mut self) -> Result<(usize, f64), String> {
        for line in self.lines.by_ref() {
            let line = line.map_err(|e| format!("reading llm.c's output: {e}"))?;
            if let Some(step) = parse_step_line(&line) {
                return Ok(step);
            }
            self.tail.push(line);
            if self.tail.len() > 8 {
                self.tail.remove(0);
            }
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let status = self.child.wait().map_err(|e| e.to_string())?;
        Err(format!(
            "llm.c stopped ({status}) before its step {LAST_STEP}; its last output:\n{}\n{}",
            self.tail.join("\n"),
            err.trim()
        ))
    }

    /// Sends SIGSTOP or SIGCONT with the system's `kill` (no `unsafe` outside `kernels/`).
    fn signal(&self, sig: &str) -> Result<(), String> {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .map_err(|e| format!("cannot run kill -{sig}: {e}"))?
            .success();
        ok.then_some(())
            .ok_or_else(|| format!("kill -{sig} {} failed", self.child.id()))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too; wait so no zombie is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::parse_step_line;

    #[test]
    fn reads_llmc_step_lines() {
        // Captured from train_gpt2 (llm.c db2454f) on this bench's files.
        let line = "step 0: train loss 10.999310 (took 54118.496038 ms)";
        assert_eq!(parse_step_line(line), Some((0, 54118.496038)));
        assert_eq!(
            parse_step_line("step 17: train loss 4.2 (took 812.5 ms)\n"),
            Some((17, 812.5))
        );
    }

    #[test]
    fn ignores_other_lines() {
        for line in [
            "val loss 10.945620",
            "num_activations: 73347840",
            "step 3: train loss 10.9",
            "step x: train loss 1.0 (took 5.0 ms)",
            "step 3: train loss 1.0 (took fast ms)",
            "step 3: train loss 1.0 (took -5.0 ms)",
            "step 3: train loss 1.0 (took 5.0 s)",
            "generating:",
            "",
        ] {
            assert_eq!(parse_step_line(line), None, "{line:?}");
        }
    }
}
