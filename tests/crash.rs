//! Crash safety: a real child process (this test binary, re-executed) saves a 16 MB checkpoint and a
//! tokenizer over and over; the parent SIGKILLs it after random delays. After every kill both files must load
//! and hold exactly one complete version each (every value compared), never older than before the child
//! started, and nothing but the writer's own temporary files may lie beside them.

use anvil::io::is_temp_name;
use anvil::io::safetensors::{SafeTensors, save};
use anvil::tensor::{DType, Tensor};
use anvil::tokenizer::{Bpe, Tokenizer};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// Set in the child: the directory it writes into.
const CHILD_DIR: &str = "ANVIL_CRASH_CHILD_DIR";
/// Set in the child: the first version it writes.
const CHILD_START: &str = "ANVIL_CRASH_CHILD_START";
/// f32 values in the checkpoint's large tensor (16 MB): a save then takes long enough to be killed inside.
const BIG: usize = 4 << 20;
/// Kills that must land while a temporary file exists (i.e. inside a save) for the test to count.
const MID_WRITE_KILLS: usize = 4;
const MAX_ATTEMPTS: usize = 30;
/// Kill delays are drawn from 0..this after the child announces its first save.
const MAX_DELAY_MS: u64 = 400;

/// What the child prints when it starts writing.
const READY: &str = "anvil-crash-child-writing";

const CKPT: &str = "model.safetensors";
const TOK: &str = "tokenizer.json";

/// The checkpoint of version `k`: every value depends on `k`, so a mix of two versions is detected.
fn checkpoint(k: u64) -> Vec<(&'static str, Tensor)> {
    let big: Vec<f32> = (0..BIG as u64)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ k) % 10_007) as f32 - 5000.0)
        .collect();
    let small: Vec<f32> = (0..64 * 64).map(|i| (i as f32 + k as f32).sin()).collect();
    vec![
        ("big", Tensor::from_vec(big, &[BIG / 1024, 1024]).unwrap()),
        (
            "emb",
            Tensor::from_vec(small, &[64, 64])
                .unwrap()
                .to_dtype(DType::BF16),
        ),
        ("step", Tensor::scalar(k as f32)),
    ]
}

static BASE: LazyLock<Bpe> = LazyLock::new(|| {
    let text: Vec<String> = (0..400)
        .map(|i| format!("the {i} quick brown fox {} jumps over lazy dogs; ", i * 7))
        .collect();
    Bpe::train(&text, 256 + 1 + 300, 2, &["<|endoftext|>"]).unwrap()
});

/// The tokenizer of version `k`: the base one plus an added token `<|v{k}|>`.
fn tokenizer(k: u64) -> Bpe {
    let base = &*BASE;
    let vocab: Vec<String> = (0..base.vocab_size() as u32)
        .map(|i| base.id_to_token(i).unwrap().to_string())
        .collect();
    let tok = |i: u32| vocab[i as usize].clone();
    let merges: Vec<(String, String)> = base
        .merges()
        .iter()
        .map(|&(a, b)| (tok(a), tok(b)))
        .collect();
    let specials = [
        ("<|endoftext|>".to_string(), 0),
        (format!("<|v{k}|>"), vocab.len() as u32),
    ];
    Bpe::from_parts(vocab, &merges, &specials, "version").unwrap()
}

fn write_version(dir: &Path, k: u64) {
    let tensors = checkpoint(k);
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    save(dir.join(CKPT), &refs, &[("version", &k.to_string())]).unwrap();
    tokenizer(k).save(dir.join(TOK)).unwrap();
}

/// The child: announce, then write versions start, start+1, ... until killed.
fn child(dir: &Path) -> ! {
    let start: u64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    let _ = &*BASE;
    println!("{READY}");
    for k in start.. {
        write_version(dir, k);
    }
    unreachable!()
}

/// The version held by the checkpoint, after checking every value against that version.
fn checkpoint_version(dir: &Path) -> u64 {
    let st = SafeTensors::open(dir.join(CKPT)).expect("the checkpoint loads after a kill");
    let meta = st.metadata();
    let k: u64 = meta
        .iter()
        .find(|(key, _)| key == "version")
        .unwrap()
        .1
        .parse()
        .unwrap();
    for (name, want) in checkpoint(k) {
        let got = st.tensor(name).unwrap();
        assert_eq!(got.raw_bytes(), want.raw_bytes(), "{name} of version {k}");
    }
    k
}

/// The version held by the tokenizer, after checking the whole file against that version.
fn tokenizer_version(dir: &Path) -> u64 {
    let tok = Bpe::from_file(dir.join(TOK)).expect("the tokenizer loads after a kill");
    let last = tok.id_to_token(tok.vocab_size() as u32 - 1).unwrap();
    let k: u64 = last
        .trim_start_matches("<|v")
        .trim_end_matches("|>")
        .parse()
        .unwrap();
    assert_eq!(
        tok.to_json(),
        tokenizer(k).to_json(),
        "tokenizer of version {k}"
    );
    k
}

/// Removes the killed writer's temporary files, returning how many there were; anything else beside the two
/// files fails the test.
fn sweep_temporaries(dir: &Path) -> usize {
    let mut temps = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name == CKPT || name == TOK {
            continue;
        }
        assert!(is_temp_name(&name), "unexpected file {name}");
        std::fs::remove_file(dir.join(&name)).unwrap();
        temps += 1;
    }
    temps
}

#[test]
fn sigkill_mid_write_leaves_the_previous_files_intact() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        child(Path::new(&dir));
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("crash-kill");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_version(&dir, 0);

    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let (mut mid_write, mut attempts) = (0, 0);
    let (mut ckpt_at, mut tok_at) = (0, 0);
    while mid_write < MID_WRITE_KILLS && attempts < MAX_ATTEMPTS {
        attempts += 1;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigkill_mid_write_leaves_the_previous_files_intact",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &dir)
            .env(CHILD_START, (ckpt_at.max(tok_at) + 1).to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // libtest prints "test NAME ... " before the child's own output, on the same line.
        while !line.contains(READY) {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "the child exited early"
            );
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(rng % MAX_DELAY_MS);
        let t = Instant::now();
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let elapsed = t.elapsed();

        let temps = sweep_temporaries(&dir);
        mid_write += usize::from(temps > 0);
        let (c, k) = (checkpoint_version(&dir), tokenizer_version(&dir));
        assert!(
            c >= ckpt_at && k >= tok_at,
            "versions went back: {c} < {ckpt_at} or {k} < {tok_at}"
        );
        eprintln!(
            "kill after {elapsed:?}: checkpoint v{c}, tokenizer v{k}, {temps} temporary files"
        );
        (ckpt_at, tok_at) = (c, k);
    }
    assert!(
        mid_write >= MID_WRITE_KILLS,
        "only {mid_write} of {attempts} kills landed inside a save"
    );
    assert!(ckpt_at > 0, "the child never completed a save");
}
