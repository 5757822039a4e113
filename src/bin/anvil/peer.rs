//! The processes `anvil bench` measures beside ours: PyTorch scripts, run once or served
//! (answering one run per request, so their runs interleave with ours), and the state of the
//! machine before measuring.

use anvil::bench::Record;
use std::time::Duration;

/// What else the machine was doing just before we measured (Linux `/proc/stat`, sampled over a
/// quarter second while we idle): cores' worth of busy time, and the share the hypervisor stole.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Busy {
    pub(crate) cores: f64,
    pub(crate) steal: f64,
}

pub(crate) fn busy_before() -> Option<Busy> {
    fn sample() -> Option<Vec<u64>> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        line.split_whitespace().map(|v| v.parse().ok()).collect()
    }
    let a = sample()?;
    std::thread::sleep(Duration::from_millis(250));
    let b = sample()?;
    let d: Vec<f64> = b
        .iter()
        .zip(&a)
        .map(|(b, a)| b.saturating_sub(*a) as f64)
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: f64 = d.iter().take(8).sum();
    if d.len() < 8 || total <= 0.0 {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Some(Busy {
        cores: cores * (total - d[3] - d[4]) / total,
        steal: d[7] / total,
    })
}

/// Reads the flat JSON objects the torch scripts print (string and number fields only).
pub(crate) fn parse_torch_line(line: &str) -> Option<Record> {
    let body = line.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut r = Record {
        name: String::new(),
        shape: String::new(),
        threads: 0,
        unit: "",
        value: 0.0,
        seconds: 0.0,
        spread: None,
    };
    for field in body.split(',') {
        let (k, v) = field.split_once(':')?;
        let (k, v) = (k.trim().trim_matches('"'), v.trim());
        match k {
            "name" => r.name = v.trim_matches('"').to_string(),
            "shape" | "config" => r.shape = v.trim_matches('"').to_string(),
            "threads" => r.threads = v.parse().ok()?,
            "seconds" => r.seconds = v.parse().ok()?,
            "gflops" | "gbps" | "gops" | "tokens_per_s" | "sentences_per_s" => {
                r.unit = ["gflops", "gbps", "gops", "tokens_per_s", "sentences_per_s"]
                    .into_iter()
                    .find(|u| *u == k)?;
                r.value = v.parse().ok()?;
            }
            _ => {}
        }
    }
    (!r.name.is_empty() && !r.unit.is_empty()).then_some(r)
}

/// A `benches/torch_FAMILY.py --serve` child: each request line names a job, and the child
/// answers with the seconds of each of its figures, timed by itself, so its runs interleave with
/// ours.
pub(crate) struct TorchServer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl TorchServer {
    pub(crate) fn start(
        python: &str,
        family: &str,
        threads: usize,
        extra: &[String],
    ) -> Result<Self, String> {
        use std::process::{Command, Stdio};
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("benches/torch_{family}.py"));
        if !script.exists() {
            return Err(format!(
                "no PyTorch script for `{family}` at {}",
                script.display()
            ));
        }
        let mut child = Command::new(python)
            .arg(&script)
            .args(["--serve", "--threads", &threads.to_string()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {python} {}: {e}", script.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin for the torch child")?;
        let stdout = child.stdout.take().ok_or("no stdout for the torch child")?;
        Ok(Self {
            child,
            stdin,
            stdout: std::io::BufReader::new(stdout),
        })
    }

    /// The first line the child prints before serving (e.g. what it can run), trimmed.
    pub(crate) fn greeting(&mut self) -> Result<String, String> {
        use std::io::BufRead;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("torch child: {e}"))?;
        if line.is_empty() {
            return Err("the torch child stopped before serving (its stderr is above)".into());
        }
        Ok(line.trim().to_string())
    }

    /// Runs `job` once in the child: the seconds of each of its figures.
    pub(crate) fn request(&mut self, job: &str) -> Result<Vec<f64>, String> {
        use std::io::{BufRead, Write};
        let gone =
            |e: std::io::Error| format!("the torch child stopped (its stderr is above): {e}");
        writeln!(self.stdin, "{job}").map_err(gone)?;
        self.stdin.flush().map_err(gone)?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("torch child: {e}"))?;
        let secs: Option<Vec<f64>> = line
            .split_whitespace()
            .map(|v| v.parse().ok().filter(|s: &f64| s.is_finite() && *s > 0.0))
            .collect();
        secs.filter(|v| !v.is_empty()).ok_or_else(|| {
            format!("torch child answered {line:?} to {job:?} (did it fail? see stderr)")
        })
    }

    /// Seconds of one PyTorch step of the GPT-2 block on `(b, t)`.
    pub(crate) fn step(&mut self, (b, t): (usize, usize)) -> Result<f64, String> {
        Ok(self.request(&format!("{b} {t}"))?[0])
    }
}

impl Drop for TorchServer {
    fn drop(&mut self) {
        // Closing stdin ends the child's loop; wait so no zombie is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
