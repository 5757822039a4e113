//! A hand-written progress bar on stderr: redrawn in place on a terminal, a line every tenth of
//! the run otherwise (logs stay readable).

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct Progress {
    total: u64,
    first: u64,
    start: Instant,
    tty: bool,
    last_line: u64,
}

/// `95s` -> `1m35s`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl Progress {
    /// A bar for steps `first + 1 ..= total`.
    pub fn new(first: u64, total: u64) -> Self {
        Progress {
            total,
            first,
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            last_line: first,
        }
    }

    /// Shows step `step` with `status` (loss, throughput, expert load...).
    pub fn update(&mut self, step: u64, status: &str) {
        let done = step.saturating_sub(self.first) as f64;
        let left = self.total.saturating_sub(step) as f64;
        let elapsed = self.start.elapsed().as_secs_f64();
        let eta = if done > 0.0 {
            elapsed / done * left
        } else {
            0.0
        };
        let width = 24;
        let filled = (width as f64 * step as f64 / self.total.max(1) as f64).round() as usize;
        let bar: String = "#".repeat(filled.min(width)) + &"-".repeat(width - filled.min(width));
        let line = format!(
            "[{bar}] {step}/{} {status} | {} elapsed, ETA {}",
            self.total,
            duration(elapsed),
            duration(eta)
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
        } else if step == self.total || (step - self.last_line) * 10 >= self.total.max(1) {
            self.last_line = step;
            let _ = writeln!(err, "{line}");
        }
    }

    /// Ends the bar's line.
    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
