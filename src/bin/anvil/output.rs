//! `anvil bench`'s output: the machine's roofline, then each record as a table row or a JSON line.

use crate::peer::Busy;
use anvil::bench::{Record, Roofline};

/// Width of the table's name column.
const NAME_WIDTH: usize = 40;

/// Where `anvil bench` writes: a table for people, or one JSON object per line.
pub(crate) struct Output {
    pub(crate) json: bool,
    pub(crate) roof: Roofline,
    pub(crate) busy: Option<Busy>,
    pub(crate) header: bool,
}

impl Output {
    /// The machine's roofline (and how busy it was) before the figures.
    pub(crate) fn roofline(&mut self, threads: usize) {
        let r = self.roof;
        if self.json {
            println!(
                "{{\"name\":\"machine/fma_peak\",\"shape\":\"-\",\"threads\":{threads},\"gflops\":{:.3}}}",
                r.peak_gflops
            );
            println!(
                "{{\"name\":\"machine/copy\",\"shape\":\"-\",\"threads\":{threads},\"gbps\":{:.3}}}",
                r.copy_gbps
            );
            println!(
                "{{\"name\":\"machine/read\",\"shape\":\"-\",\"threads\":{threads},\"gbps\":{:.3}}}",
                r.read_gbps
            );
            if let Some(b) = self.busy {
                println!(
                    "{{\"name\":\"machine/busy\",\"shape\":\"-\",\"threads\":{threads},\"cores\":{:.2},\"steal\":{:.3}}}",
                    b.cores, b.steal
                );
            }
        } else {
            println!(
                "machine on {threads} thread(s): FMA peak {:.1} GFLOP/s, copy bandwidth {:.1} GB/s, \
                 read bandwidth {:.1} GB/s",
                r.peak_gflops, r.copy_gbps, r.read_gbps
            );
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            if let Some(b) = self.busy {
                println!(
                    "before measuring: {:.2} of {cores} cores busy with other work, {:.0}% stolen by the host",
                    b.cores,
                    100.0 * b.steal
                );
                if b.cores + threads as f64 > cores as f64 + 0.25 || b.steal > 0.1 {
                    println!(
                        "note: other work shares the cores, so every figure is low, and PyTorch's \
                         (OpenMP threads waiting on each other at every barrier) far more than ours"
                    );
                }
            }
        }
    }

    /// One figure: a table row, or a JSON line.
    pub(crate) fn record(&mut self, r: &Record) {
        if self.json {
            println!("{}", r.to_json());
            return;
        }
        if !self.header {
            println!(
                "{:<NAME_WIDTH$} {:>16} {:>7} {:>12} {:>8}",
                "name", "shape", "threads", "figure", "of peak"
            );
            self.header = true;
        }
        let peak = match r.unit {
            "gflops" => self.roof.peak_gflops,
            "gbps" => self.roof.copy_gbps,
            _ => f64::NAN,
        };
        let unit = match r.unit {
            "gflops" => "GFLOP/s",
            "tokens_per_s" => "tok/s",
            "gbps" => "GB/s",
            "gops" => "GOP/s",
            "ratio" => "x",
            u => u,
        };
        let share = if peak.is_finite() {
            format!("{:>5.0}%", 100.0 * r.value / peak)
        } else {
            "     -".to_string()
        };
        // Speed-ups read to the hundredth (1.49x is not 1.5x); the rest to the tenth.
        let digits = if r.unit == "ratio" { 2 } else { 1 };
        // A speed-up's quartiles over its rounds: how much one reading of it moves.
        let spread = r.spread.map_or(String::new(), |s| {
            format!("  (q1-q3 {:.2}-{:.2} over {} rounds)", s.q1, s.q3, s.rounds)
        });
        println!(
            "{:<NAME_WIDTH$} {:>16} {:>7} {:>8.digits$} {:<7} {share}{spread}",
            r.name, r.shape, r.threads, r.value, unit
        );
    }
}
