//! `anvil train`'s options (`anvil::train::RunConfig`): the example config files resolve to what
//! they say, flags win over the file, every bad line or value is refused with a message naming the
//! file (and line), the key and what is wrong, and an accepted run reads back from its own text.

use anvil::models::Arch;
use anvil::train::{ConfigFile, Origin, RunConfig, RunConfigError};
use std::path::{Path, PathBuf};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/train");

fn example(name: &str) -> PathBuf {
    Path::new(EXAMPLES).join(name)
}

fn flags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The message of resolving `text` as the file `bad.conf` (no flags).
fn refusal(text: &str) -> String {
    let file = match ConfigFile::parse(text, "bad.conf") {
        Ok(f) => f,
        Err(e) => return e.to_string(),
    };
    match RunConfig::resolve(&[], Some(&file)) {
        Ok(rc) => panic!("{text:?} was accepted: {rc:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_match_the_help_and_the_default_example() {
    let d = RunConfig::resolve(&[], None).unwrap();
    assert_eq!(d.out, PathBuf::from("anvil-run"));
    assert_eq!(
        (d.steps, d.batch, d.seq, d.warmup, d.seed),
        (800, 16, 64, 30, 1)
    );
    assert_eq!(
        (d.lr, d.eval_every, d.eval_n, d.vocab),
        (4e-3, 50, 100, 2048)
    );
    assert!(d.data.is_empty() && d.resume.is_none());
    let m = &d.model;
    assert_eq!(m.arch, Arch::Expert);
    assert_eq!(
        (m.d_model, m.n_layers, m.n_heads, m.head_dim),
        (128, 4, 4, 32)
    );
    assert_eq!((m.d_ff, m.n_experts, m.experts_per_token), (256, 4, 2));
    assert_eq!((m.max_seq_len, m.router_aux_loss_coef), (128, 0.01));
    assert_eq!(RunConfig::from_file(example("default.conf")).unwrap(), d);
}

#[test]
fn examples_resolve_and_flags_win() {
    let tiny = ConfigFile::read(example("tiny.conf")).unwrap();
    let t = RunConfig::resolve(&[], Some(&tiny)).unwrap();
    assert_eq!(
        (t.model.d_model, t.model.n_layers, t.model.n_heads),
        (32, 2, 2)
    );
    assert_eq!((t.batch, t.seq, t.lr, t.steps), (8, 32, 1e-2, 800));
    let over = flags(&[("steps", "40"), ("d-model", "64"), ("d-model", "48")]);
    let f = RunConfig::resolve(&over, Some(&tiny)).unwrap();
    assert_eq!((f.steps, f.model.d_model, f.model.head_dim), (40, 48, 24));
    assert_eq!(f.model.d_ff, 48, "keys no flag gives come from the file");

    let dense = RunConfig::from_file(example("dense.conf")).unwrap();
    assert_eq!(
        (dense.model.n_experts, dense.model.experts_per_token),
        (0, 0)
    );
    assert_eq!(
        (dense.seq, dense.model.max_seq_len, dense.steps),
        (256, 256, 2000)
    );
}

#[test]
fn syntax_comments_repeats_and_flag_style_keys() {
    let text = "--steps=3\r\n  # only a comment\r\nlr = 1e-2 # trailing\r\nsteps = 5\r\n\r\nout = runs/a b\r\n";
    let rc = RunConfig::resolve(&[], Some(&ConfigFile::parse(text, "x.conf").unwrap())).unwrap();
    assert_eq!((rc.steps, rc.lr), (5, 1e-2), "the last `steps` wins");
    assert_eq!(rc.out, PathBuf::from("runs/a b"));
    let data = format!("data = {0}/tiny.conf, {0}/dense.conf,\n", EXAMPLES);
    let rc = RunConfig::resolve(&[], Some(&ConfigFile::parse(&data, "x.conf").unwrap())).unwrap();
    assert_eq!(rc.data, vec![example("tiny.conf"), example("dense.conf")]);
}

#[test]
fn bad_lines_name_the_file_the_line_and_the_key() {
    let cases = [
        ("steps = 10\nwarp = 9\n", "bad.conf:2: unknown key `warp`"),
        ("steps 10\n", "bad.conf:1: expected `key = value`"),
        ("# c\n\n = 3\n", "bad.conf:3: unknown key ``"),
        ("config = other.conf\n", "bad.conf:1: unknown key `config`"),
    ];
    for (text, expect) in cases {
        let msg = refusal(text);
        assert_eq!(msg, expect, "{text:?}");
    }
    let e = ConfigFile::parse("a = 1", "bad.conf").unwrap_err();
    assert!(matches!(
        e,
        RunConfigError::UnknownKey { origin: Origin::File { line: 1, .. }, ref key } if key == "a"
    ));
}

#[test]
fn bad_values_name_the_file_the_key_and_what_is_wrong() {
    let huge = "18446744073709551615";
    let cases: &[(&str, &[&str])] = &[
        (
            "steps = many",
            &["bad.conf:1: steps: cannot read `many` as a whole number"],
        ),
        ("steps = 0", &["bad.conf:1: steps: must be at least 1"]),
        (
            "\nbatch = -3",
            &["bad.conf:2: batch: cannot read `-3` as a whole number"],
        ),
        (
            "seq = 99999999999999999999",
            &["bad.conf:1: seq: cannot read"],
        ),
        (
            "lr = nan",
            &["bad.conf:1: lr: must be a positive number, not NaN"],
        ),
        (
            "lr = -1e-3",
            &["bad.conf:1: lr: must be a positive number, not -0.001"],
        ),
        (
            "lr = fast",
            &["bad.conf:1: lr: cannot read `fast` as a number"],
        ),
        (
            "aux = inf",
            &["bad.conf:1: aux: must be a finite number >= 0, not inf"],
        ),
        (
            "aux = -0.5",
            &["bad.conf:1: aux: must be a finite number >= 0"],
        ),
        (
            "aux = 1e300",
            &["bad.conf:1: aux: must be a finite number >= 0, not inf"],
        ),
        (
            "d-model = 30\nheads = 4",
            &["bad.conf:1: d-model: d-model 30 is not a multiple of heads 4 (bad.conf:2)"],
        ),
        (
            "heads = 3",
            &["bad.conf:1: heads: d-model 128 (default) is not a multiple of heads 3"],
        ),
        (
            "experts = 2\ntop-k = 3",
            &["bad.conf:2: top-k: top-k 3 must be in 1..=2 (experts (bad.conf:1))"],
        ),
        (
            "experts = 1",
            &["bad.conf:1: experts: top-k 2 (default) must be in 1..=1 (experts)"],
        ),
        (
            "top-k = 0",
            &["bad.conf:1: top-k: top-k 0 must be in 1..=4"],
        ),
        (
            "data = /no/such/file.txt",
            &["bad.conf:1: data: /no/such/file.txt is not a readable file"],
        ),
        (
            "resume = /no/such.safetensors",
            &["bad.conf:1: resume: /no/such.safetensors does not exist"],
        ),
        ("out =", &["bad.conf:1: out: needs a path"]),
        ("vocab = 0", &["bad.conf:1: vocab: must be at least 1"]),
        (
            "eval-every = 0",
            &["bad.conf:1: eval-every: must be at least 1"],
        ),
    ];
    for (text, expects) in cases {
        let msg = refusal(text);
        for e in *expects {
            assert!(msg.contains(e), "{text:?}: {msg}");
        }
    }
    // Sizes whose byte counts overflow are refused, blaming the largest given size.
    for (text, key) in [
        (format!("d-ff = {huge}"), "d-ff"),
        (format!("d-model = {huge}\nheads = 1"), "d-model"),
        (format!("layers = {huge}"), "layers"),
        (format!("experts = {huge}\ntop-k = 1"), "experts"),
        (format!("batch = {huge}"), "batch"),
        (format!("seq = {huge}"), "seq"),
        // Equal values: the later key of the list (d-model, d-ff, layers, experts, seq, batch, vocab).
        ("seq = 4294967296\nbatch = 4294967296".to_string(), "batch"),
    ] {
        let msg = refusal(&text);
        assert!(msg.starts_with("bad.conf:"), "{text:?}: {msg}");
        assert!(
            msg.contains(&format!(": {key}: too large")),
            "{text:?}: {msg}"
        );
    }
}

#[test]
fn flag_values_name_the_flag() {
    let cases = [
        (
            vec![("steps", "many")],
            "--steps: cannot read `many` as a whole number",
        ),
        (vec![("steps", "0")], "--steps: must be at least 1"),
        (
            vec![("d-model", "30"), ("heads", "4")],
            "--d-model: d-model 30 is not a multiple of heads 4 (--heads)",
        ),
        (vec![("warp", "9")], "unknown option `--warp`"),
    ];
    for (pairs, expect) in cases {
        let e = RunConfig::resolve(&flags(&pairs), None)
            .unwrap_err()
            .to_string();
        assert_eq!(e, expect);
    }
    let file = ConfigFile::parse("heads = 4\n", "x.conf").unwrap();
    let e = RunConfig::resolve(&flags(&[("d-model", "30")]), Some(&file)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--d-model: d-model 30 is not a multiple of heads 4 (x.conf:1)"
    );
}

#[test]
fn unreadable_files_are_named() {
    let e = ConfigFile::read("/no/such/run.conf")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/no/such/run.conf: "), "{e}");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("run-config");
    std::fs::create_dir_all(&dir).unwrap();
    let latin1 = dir.join("latin1.conf");
    std::fs::write(&latin1, b"out = caf\xe9\n").unwrap();
    let e = RunConfig::from_file(&latin1).unwrap_err().to_string();
    assert!(e.contains("latin1.conf") && e.contains("UTF-8"), "{e}");
}

#[test]
fn accepted_runs_read_back_from_their_text() {
    let mut runs = vec![RunConfig::resolve(&[], None).unwrap()];
    for name in ["tiny.conf", "dense.conf", "default.conf"] {
        runs.push(RunConfig::from_file(example(name)).unwrap());
    }
    let odd = flags(&[
        ("lr", "1e-320"),
        ("aux", "0.1"),
        ("out", "a b/c"),
        ("resume", &format!("{EXAMPLES}/tiny.conf")),
        (
            "data",
            &format!("{EXAMPLES}/dense.conf,{EXAMPLES}/tiny.conf"),
        ),
        ("experts", "0"),
        ("top-k", "9"),
        ("seed", "18446744073709551615"),
    ]);
    runs.push(RunConfig::resolve(&odd, None).unwrap());
    for rc in runs {
        let text = rc.to_text();
        let back = RunConfig::resolve(&[], Some(&ConfigFile::parse(&text, "t.conf").unwrap()));
        assert_eq!(back.unwrap(), rc, "{text}");
    }
}
