//! The data pipeline: token files (round trip, atomic write, named errors for malformed
//! files), streaming tokenization, and batches that are a pure function of seed and position.

use anvil::corpus::Ascii;
use anvil::data::{
    Error, HEADER_LEN, Split, TokenFile, TokenWriter, Tokens, Windows, encode_files,
};
use anvil::tokenizer::Tokenizer;
use anvil::train::{Batch, Batches};
use std::path::PathBuf;
use std::sync::Arc;

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("data-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Ids equal to their positions, so a window's ids reveal where it was cut.
fn positions(n: usize) -> Arc<Tokens> {
    Arc::new(Tokens::Memory((0..n as u32).collect()))
}

fn draw(w: &mut Windows, n: usize) -> Vec<Batch> {
    (0..n).map(|_| w.next_batch().unwrap()).collect()
}

#[test]
fn same_seed_same_batches_other_seed_other_batches() {
    let t = positions(10_000);
    let mut a = Windows::new(Arc::clone(&t), 0..10_000, 4, 16, 42).unwrap();
    let mut b = Windows::new(Arc::clone(&t), 0..10_000, 4, 16, 42).unwrap();
    let mut c = Windows::new(t, 0..10_000, 4, 16, 43).unwrap();
    let (xa, xb, xc) = (draw(&mut a, 6), draw(&mut b, 6), draw(&mut c, 6));
    assert_eq!(xa, xb);
    assert_ne!(xa, xc);
    // Every row is a contiguous window of the source.
    for batch in &xa {
        assert_eq!(batch.rows, 4);
        for row in batch.ids.chunks(16) {
            assert!(row.windows(2).all(|p| p[1] == p[0] + 1), "{row:?}");
        }
    }
}

#[test]
fn seek_reproduces_the_stream() {
    let t = positions(5_000);
    let mut w = Windows::new(t, 0..5_000, 3, 8, 7).unwrap();
    draw(&mut w, 5);
    assert_eq!(w.position(), 5);
    let ahead = draw(&mut w, 4);
    w.seek(5).unwrap();
    assert_eq!(draw(&mut w, 4), ahead);
    // Seeking backwards to the start reproduces the first batches too.
    let mut fresh = w.clone();
    fresh.seek(0).unwrap();
    w.seek(0).unwrap();
    assert_eq!(draw(&mut w, 3), draw(&mut fresh, 3));
}

#[test]
fn split_parts_are_disjoint_and_windows_stay_inside() {
    let n = 2_000;
    let s = Split::new(n, 0.1).unwrap();
    assert_eq!(s.train, 0..1_800);
    assert_eq!(s.validation, 1_800..2_000);
    let t = positions(n);
    let mut train = Windows::new(Arc::clone(&t), s.train.clone(), 8, 32, 1).unwrap();
    let mut val = Windows::new(t, s.validation.clone(), 8, 32, 1).unwrap();
    for b in draw(&mut train, 50) {
        assert!(b.ids.iter().all(|&i| (i as usize) < s.train.end));
    }
    for b in draw(&mut val, 50) {
        assert!(b.ids.iter().all(|&i| (i as usize) >= s.validation.start));
    }
    assert!(Split::new(n, 1.0).is_err());
    assert!(Split::new(n, -0.1).is_err());
}

#[test]
fn a_range_shorter_than_a_window_is_an_error() {
    let e = Windows::new(positions(100), 90..100, 2, 16, 0).unwrap_err();
    assert!(e.to_string().contains("cannot hold one window"), "{e}");
    assert!(Windows::new(positions(100), 0..200, 2, 16, 0).is_err());
    assert!(Windows::new(positions(100), 0..100, 0, 16, 0).is_err());
}

#[test]
fn token_file_round_trips_at_both_widths() {
    let dir = scratch("roundtrip");
    for (vocab, width) in [(1_000usize, 2usize), (70_000, 4)] {
        let path = dir.join(format!("t{vocab}.bin"));
        let ids: Vec<u32> = (0..10_007u32).map(|i| (i * 7919) % vocab as u32).collect();
        let mut w = TokenWriter::create(&path, vocab).unwrap();
        w.write(&ids[..5_000]).unwrap();
        w.write(&ids[5_000..]).unwrap();
        // Nothing at the target name until the writer finishes.
        assert!(!path.exists());
        w.finish().unwrap();
        let f = TokenFile::open(&path).unwrap();
        assert_eq!(
            (f.len(), f.width(), f.vocab_size()),
            (ids.len(), width, vocab)
        );
        assert_eq!(f.read(0, ids.len()).unwrap(), ids);
        assert_eq!(f.read(9_000, 7).unwrap(), ids[9_000..9_007]);
        assert!(f.read(10_000, 8).is_err());
        let std_len = std::fs::metadata(&path).unwrap().len() as usize;
        assert_eq!(std_len, HEADER_LEN + width * ids.len());
    }
}

#[test]
fn writer_refuses_ids_outside_the_vocabulary() {
    let dir = scratch("vocab");
    let mut w = TokenWriter::create(dir.join("x.bin"), 10).unwrap();
    let e = w.write(&[3, 10]).unwrap_err();
    assert!(e.to_string().contains("token id 10"), "{e}");
}

#[test]
fn malformed_token_files_are_named_errors() {
    let dir = scratch("malformed");
    let good = dir.join("good.bin");
    let mut w = TokenWriter::create(&good, 100).unwrap();
    w.write(&[1, 2, 3, 4]).unwrap();
    w.finish().unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "short",
            bytes[..20].to_vec(),
            "shorter than the 32-byte header",
        ),
        ("magic", [b"NOTANVIL", &bytes[8..]].concat(), "magic"),
        (
            "version",
            [&bytes[..8], &9u32.to_le_bytes(), &bytes[12..]].concat(),
            "version 9",
        ),
        (
            "width",
            [&bytes[..12], &3u32.to_le_bytes(), &bytes[16..]].concat(),
            "id width 3",
        ),
        (
            "truncated",
            bytes[..bytes.len() - 1].to_vec(),
            "header says 4 ids",
        ),
        (
            "vocab",
            [&bytes[..24], &100_000u64.to_le_bytes(), &bytes[32..]].concat(),
            "vocabulary size 100000",
        ),
    ];
    for (name, content, expect) in cases {
        let p = dir.join(format!("{name}.bin"));
        std::fs::write(&p, content).unwrap();
        let e = TokenFile::open(&p).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "{name}: {e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(expect) && msg.contains(&format!("{name}.bin")),
            "{name}: {msg}"
        );
    }
    let missing = TokenFile::open(dir.join("absent.bin")).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }));
}

#[test]
fn streaming_tokenization_equals_encoding_at_once() {
    // Over a megabyte per file, so the reader cuts several chunks at line ends.
    let dir = scratch("stream");
    let mut files = Vec::new();
    let mut expected = Vec::new();
    for f in 0..2 {
        let text: String = (0..60_000)
            .map(|i| format!("line {i} of file {f}: \u{e9}t\u{e9}\n"))
            .collect();
        assert!(text.len() > 1 << 20);
        let p = dir.join(format!("in{f}.txt"));
        std::fs::write(&p, &text).unwrap();
        expected.extend(Ascii.encode(&text));
        expected.push(0);
        files.push(p);
    }
    let out = dir.join("tokens.bin");
    let n = encode_files(&files, &Ascii, Some(0), &out).unwrap();
    let f = TokenFile::open(&out).unwrap();
    assert_eq!(n as usize, expected.len());
    assert_eq!(f.read(0, f.len()).unwrap(), expected);
    let e = encode_files(&[dir.join("absent.txt")], &Ascii, None, dir.join("x.bin")).unwrap_err();
    assert!(e.to_string().contains("absent.txt"), "{e}");
}

#[test]
fn mapped_and_memory_tokens_give_the_same_batches() {
    let dir = scratch("mapped");
    let ids: Vec<u32> = (0..3_000u32).map(|i| i % 97).collect();
    let path = dir.join("t.bin");
    let mut w = TokenWriter::create(&path, 97).unwrap();
    w.write(&ids).unwrap();
    w.finish().unwrap();
    let mapped = Arc::new(Tokens::Mapped(TokenFile::open(&path).unwrap()));
    let memory = Arc::new(Tokens::Memory(ids));
    let mut a = Windows::new(mapped, 0..3_000, 4, 20, 9).unwrap();
    let mut b = Windows::new(memory, 0..3_000, 4, 20, 9).unwrap();
    assert_eq!(draw(&mut a, 5), draw(&mut b, 5));
}
