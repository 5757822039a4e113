//! The `anvil` binary end to end: a short `anvil train` on the built-in corpus whose loss falls,
//! whose checkpoint reloads in `anvil eval` / `anvil info` and resumes; and one-line errors
//! with exit code 2 for bad input.
//!
//! The default run's accuracy floor is an ignored test (minutes in release):
//! `cargo test --release --test cli_train -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn anvil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anvil"))
        .args(args)
        .output()
        .expect("the anvil binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The `lm_loss` of every training step in a metrics file.
fn losses(dir: &Path) -> Vec<f64> {
    let m = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    m.lines()
        .filter_map(|l| anvil::json::parse_str(l).ok())
        .filter_map(|v| v.get("lm_loss").and_then(anvil::json::Value::as_f64))
        .collect()
}

/// A tiny model and few steps: seconds in the test profile.
const TINY: &[&str] = &[
    "--d-model",
    "32",
    "--layers",
    "2",
    "--heads",
    "2",
    "--d-ff",
    "48",
    "--experts",
    "4",
    "--top-k",
    "2",
    "--batch",
    "8",
    "--seq",
    "32",
    "--lr",
    "1e-2",
    "--warmup",
    "5",
    "--eval-every",
    "10",
    "--eval-n",
    "8",
];

#[test]
fn short_train_loss_falls_and_the_checkpoint_reloads() {
    let dir = scratch("train");
    let out = dir.to_str().unwrap();
    let mut args = vec!["train", "--steps", "40", "--out", out];
    args.extend_from_slice(TINY);
    let r = anvil(&args);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let stdout = text(&r.stdout);
    for d in ["arithmetic", "reverse", "json", "facts"] {
        assert!(stdout.contains(d), "no accuracy line for {d}: {stdout}");
    }
    let l = losses(&dir);
    assert_eq!(l.len(), 40);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    // From ln(128) = 4.85 for uniform guessing; 40 steps learn at least the character set.
    let (first, last) = (mean(&l[..5]), mean(&l[35..]));
    assert!(last < first - 1.0, "loss {first:.3} -> {last:.3}");
    for f in [
        "model.safetensors",
        "loss.svg",
        "routing.svg",
        "accuracy.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let svg = std::fs::read_to_string(dir.join("routing.svg")).unwrap();
    assert!(svg.contains("arithmetic (mean)") && svg.contains("E3"));

    let ckpt = dir.join("model.safetensors");
    let ck = ckpt.to_str().unwrap();
    let e = anvil(&["eval", ck, "--n", "4", "--batches", "2"]);
    assert!(e.status.success(), "{}", text(&e.stderr));
    let es = text(&e.stdout);
    let eval_loss: f64 = es
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no loss in {es}"));
    // The reloaded model is the trained one: far below uniform guessing.
    assert!(eval_loss < 4.85 - 1.0, "{es}");
    assert!(es.contains("facts"), "{es}");

    let i = anvil(&["info", ck]);
    assert!(i.status.success(), "{}", text(&i.stderr));
    let is = text(&i.stdout);
    assert!(is.contains("parameters:") && is.contains("int8"), "{is}");
    assert!(is.contains("training checkpoint: step 40"), "{is}");
    assert!(is.contains("non-finite values: none"), "{is}");

    // A NaN and an inf written into one tensor of a copy are found and named.
    let name = "blocks.0.attn.q.weight";
    let bytes = std::fs::read(&ckpt).unwrap();
    let off = {
        let f = anvil::io::safetensors::SafeTensors::open(&ckpt).unwrap();
        let names = f.names().join(", ");
        let t = f
            .bytes(name)
            .unwrap_or_else(|_| panic!("no {name} in {names}"));
        t.as_ptr() as usize - f.mapped_bytes().as_ptr() as usize
    };
    let mut bad = bytes.clone();
    bad[off..off + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    bad[off + 8..off + 12].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let bad_path = dir.join("bad.safetensors");
    std::fs::write(&bad_path, bad).unwrap();
    let i = anvil(&["info", bad_path.to_str().unwrap()]);
    let is = text(&i.stdout);
    assert!(
        is.contains(&format!("{name} ")) && is.contains("1 NaN, 1 inf"),
        "{is}"
    );
    assert!(is.contains("non-finite values: in 1 of"), "{is}");

    // Resume to step 50: ten more steps appended to the metrics.
    let mut args = vec!["train", "--steps", "50", "--out", out, "--resume", ck];
    args.extend_from_slice(TINY);
    let r = anvil(&args);
    let err = text(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(
        err.contains("schedule over 40 steps is kept; steps 41..50 run at its final rate"),
        "the resume does not say which schedule it keeps: {err}"
    );
    assert_eq!(losses(&dir).len(), 50);
    // Asking for a step the checkpoint has already passed is refused, naming both.
    let mut args = vec!["train", "--steps", "30", "--out", out, "--resume", ck];
    args.extend_from_slice(TINY);
    let r = anvil(&args);
    let err = text(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is already at step 50; --steps 30 leaves nothing to do"),
        "{err}"
    );
    let i = anvil(&["info", ck]);
    assert!(text(&i.stdout).contains("training checkpoint: step 50"));
}

#[test]
fn bad_input_is_one_line_and_exit_code_two() {
    let dir = scratch("errors");
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let conf = dir.join("bad.conf");
    std::fs::write(&conf, "steps = 10\nwarp = 9\n").unwrap();
    let conf_value = dir.join("value.conf");
    std::fs::write(&conf_value, "# tiny\nd-model = 32\nsteps = many\n").unwrap();
    let cv = conf_value.to_str().unwrap();
    let cv_expect = format!("{cv}:3: steps: cannot read `many` as a whole number");
    let j = junk.to_str().unwrap();
    let c = conf.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["train", "--bogus"], "unknown flag `--bogus`"),
        (
            vec!["train", "--steps", "many"],
            "--steps: cannot read `many`",
        ),
        (vec!["train", "--steps", "0"], "--steps: must be at least 1"),
        (
            vec!["train", "--d-model", "30", "--heads", "4"],
            "not a multiple",
        ),
        (
            vec!["train", "--data", "/no/such/file.txt"],
            "/no/such/file.txt",
        ),
        (vec!["train", "--config", c], "unknown key `warp`"),
        (vec!["train", "--config", cv], &cv_expect),
        (vec!["eval"], "one checkpoint path"),
        (vec!["eval", "/no/such.safetensors"], "no such file"),
        (vec!["info", j], "junk.safetensors"),
        (vec!["info", "/no/such/dir"], "no such file"),
        (vec!["frobnicate"], "unknown command"),
    ];
    for (args, expect) in cases {
        let r = anvil(&args);
        let err = text(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    for cmd in ["train", "eval", "info"] {
        let r = anvil(&[cmd, "--help"]);
        assert!(r.status.success());
        assert!(text(&r.stdout).contains(&format!("anvil {cmd}")));
    }
}

/// The default run (release build, a few minutes on 2 cores) reaches the accuracy floors stated
/// in README.md.
#[test]
#[ignore = "minutes: cargo test --release --test cli_train -- --ignored"]
fn default_run_reaches_the_stated_accuracy() {
    let dir = scratch("default");
    let r = anvil(&["train", "--out", dir.to_str().unwrap()]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let acc = std::fs::read_to_string(dir.join("accuracy.json")).unwrap();
    let v = anvil::json::parse_str(&acc).unwrap();
    for (domain, floor) in FLOORS {
        let a = v.get(domain).and_then(anvil::json::Value::as_f64).unwrap();
        assert!(a >= *floor, "{domain}: {a} < {floor}\n{}", text(&r.stdout));
    }
}

/// Per-domain accuracy floors of the default run, below what it measured (README.md: json and
/// facts 100%, reverse 53%) to leave room for another ISA tier's rounding. Arithmetic has none:
/// the default budget does not learn the carry (1%).
const FLOORS: &[(&str, f64)] = &[("reverse", 0.4), ("json", 0.9), ("facts", 0.9)];
