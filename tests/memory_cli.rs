//! `anvil memory` from the command line: what it prints and how it fails.

/// The command line: add from stdin, query, stats; bad input is a clear error with exit code 2.
#[cfg(feature = "cli")]
#[test]
fn cli_adds_queries_and_reports_errors() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = std::env::temp_dir().join(format!("anvil-memory-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("m.mem");
    let store_s = store.to_str().unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_anvil"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (out.status.code(), text(out.stdout), text(out.stderr))
    };
    let msgs = "My sister Alice lives in Lisbon.\n\nWe talked about the weather.\n";
    let (code, out, _) = run(
        &["memory", "add", "--store", store_s, "--budgets", "50,50,50"],
        msgs,
    );
    assert_eq!(code, Some(0));
    assert!(out.contains("added 2 messages"), "{out}");
    let (code, out, _) = run(
        &[
            "memory",
            "query",
            "where does my sister live",
            "--store",
            store_s,
        ],
        "",
    );
    assert_eq!(code, Some(0));
    assert!(
        out.contains("[current 0-0]\nMy sister Alice lives in Lisbon."),
        "{out}"
    );
    let (code, out, _) = run(&["memory", "stats", "--store", store_s], "");
    assert_eq!(code, Some(0));
    assert!(
        out.contains("2 messages") && out.contains("current"),
        "{out}"
    );
    let bytes = std::fs::read(&store).unwrap();
    std::fs::write(&store, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, err) = run(&["memory", "stats", "--store", store_s], "");
    assert_eq!(code, Some(2));
    assert!(err.contains("truncated or extended"), "{err}");
    let (code, _, err) = run(&["memory", "query", "--store", store_s], "");
    assert_eq!(code, Some(2));
    assert!(err.contains("query needs the query text"), "{err}");
    let (code, _, err) = run(
        &[
            "memory",
            "add",
            "--budgets",
            "1,x,3",
            "--store",
            dir.join("n.mem").to_str().unwrap(),
        ],
        "hi\n",
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("--budgets"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
