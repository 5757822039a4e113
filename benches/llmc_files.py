#!/usr/bin/env python3
"""Inputs for llm.c's CPU trainer (`train_gpt2`), for `anvil bench train --llmc BIN` (not run by the tests).

llm.c's `train_gpt2` reads, relative to its working directory:
  gpt2_124M.bin                                         the model checkpoint
  dev/data/tinyshakespeare/tiny_shakespeare_train.bin   training tokens
  dev/data/tinyshakespeare/tiny_shakespeare_val.bin     validation tokens
(and optionally gpt2_tokenizer.bin, only for printing samples; without it llm.c prints token ids).

This script writes those files into DIR with GPT-2 124M's shape, random weights and random tokens.
Speed does not depend on the values, so weights come from a pool of Gaussian draws (GPT-2's init
scale: std 0.02, residual projections 0.02 / sqrt(2 L), biases 0, norms 1) reused at shifting offsets.

Formats (llm.c, checkpoint version 3 and data shard version 1), all little-endian:
  checkpoint: 256 int32 header [20240326, 3, max_seq_len, vocab, layers, heads, channels,
              padded_vocab, 0...], then every parameter as float32 in the order wte (Vp, C),
              wpe (maxT, C), ln1w (L, C), ln1b (L, C), qkvw (L, 3C, C), qkvb (L, 3C),
              attprojw (L, C, C), attprojb (L, C), ln2w (L, C), ln2b (L, C), fcw (L, 4C, C),
              fcb (L, 4C), fcprojw (L, C, 4C), fcprojb (L, C), lnfw (C), lnfb (C);
              the padded vocabulary rows of wte are zero.
  tokens:     256 int32 header [20240520, 1, n_tokens, 0...], then n_tokens uint16.

Usage: python3 benches/llmc_files.py DIR [--train-tokens N] [--val-tokens N] [--seed S]
Uses numpy when present, else only the standard library. Every file is written to a temporary
name and renamed into place, so an interrupted run never leaves a truncated file behind.
"""

import argparse
import array
import math
import os
import random
import struct
import sys

MODEL_MAGIC, MODEL_VERSION = 20240326, 3
DATA_MAGIC, DATA_VERSION = 20240520, 1
HEADER_INTS = 256

# GPT-2 124M.
MAX_T, VOCAB, LAYERS, HEADS, C = 1024, 50257, 12, 12, 768
PADDED_VOCAB = (VOCAB + 127) // 128 * 128  # llm.c pads to a multiple of 128: 50304
INIT_STD = 0.02
PROJ_STD = INIT_STD / math.sqrt(2 * LAYERS)

MODEL_FILE = "gpt2_124M.bin"
TRAIN_FILE = os.path.join("dev", "data", "tinyshakespeare", "tiny_shakespeare_train.bin")
VAL_FILE = os.path.join("dev", "data", "tinyshakespeare", "tiny_shakespeare_val.bin")

try:
    import numpy as np
except ImportError:  # the standard-library path below
    np = None

if sys.byteorder != "little":
    sys.exit("llmc_files.py: llm.c's files are little-endian; this host is not")


def header(*ints):
    vals = list(ints) + [0] * (HEADER_INTS - len(ints))
    return struct.pack("<%di" % HEADER_INTS, *vals)


def tensors():
    """(name, element count, kind) in llm.c's checkpoint order; kind is normal, proj, zero or one."""
    L = LAYERS
    return [
        ("wte", VOCAB * C, "normal"), ("wte_pad", (PADDED_VOCAB - VOCAB) * C, "zero"),
        ("wpe", MAX_T * C, "normal"),
        ("ln1w", L * C, "one"), ("ln1b", L * C, "zero"),
        ("qkvw", L * 3 * C * C, "normal"), ("qkvb", L * 3 * C, "zero"),
        ("attprojw", L * C * C, "proj"), ("attprojb", L * C, "zero"),
        ("ln2w", L * C, "one"), ("ln2b", L * C, "zero"),
        ("fcw", L * 4 * C * C, "normal"), ("fcb", L * 4 * C, "zero"),
        ("fcprojw", L * C * 4 * C, "proj"), ("fcprojb", L * C, "zero"),
        ("lnfw", C, "one"), ("lnfb", C, "zero"),
    ]


class Floats:
    """Writes n float32 values of one kind, in chunks."""

    CHUNK = 1 << 20

    def __init__(self, seed):
        self.rng = random.Random(seed)
        if np is not None:
            self.gen = np.random.default_rng(seed)
        else:
            # One pool of Gaussians per scale (drawn once), read at a random offset per chunk.
            unit = [self.rng.gauss(0.0, 1.0) for _ in range(2 * self.CHUNK)]
            self.pool = {
                kind: array.array("f", (x * std for x in unit)).tobytes()
                for kind, std in (("normal", INIT_STD), ("proj", PROJ_STD))
            }

    def chunk(self, n, kind):
        if kind in ("zero", "one"):
            value = 0.0 if kind == "zero" else 1.0
            if np is not None:
                return np.full(n, value, dtype="<f4").tobytes()
            return array.array("f", [value]).tobytes() * n
        if np is not None:
            std = INIT_STD if kind == "normal" else PROJ_STD
            return (self.gen.standard_normal(n, dtype=np.float32) * np.float32(std)).astype("<f4").tobytes()
        start = 4 * self.rng.randrange(self.CHUNK)
        return self.pool[kind][start:start + 4 * n]

    def write(self, f, n, kind):
        while n > 0:
            k = min(n, self.CHUNK)
            f.write(self.chunk(k, kind))
            n -= k


def write_atomic(path, fill):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = "%s.tmp-%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            fill(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_model(path, seed):
    floats = Floats(seed)

    def fill(f):
        f.write(header(MODEL_MAGIC, MODEL_VERSION, MAX_T, VOCAB, LAYERS, HEADS, C, PADDED_VOCAB))
        for _, n, kind in tensors():
            floats.write(f, n, kind)

    write_atomic(path, fill)


def write_tokens(path, n, seed):
    rng = random.Random(seed)

    def fill(f):
        f.write(header(DATA_MAGIC, DATA_VERSION, n))
        if np is not None:
            ids = np.random.default_rng(seed).integers(0, VOCAB, size=n, dtype=np.uint16)
            f.write(ids.astype("<u2").tobytes())
        else:
            f.write(array.array("H", (rng.randrange(VOCAB) for _ in range(n))).tobytes())

    write_atomic(path, fill)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="llm.c's working directory (created if missing)")
    ap.add_argument("--train-tokens", type=int, default=1 << 16)
    ap.add_argument("--val-tokens", type=int, default=1 << 13)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    # llm.c's loader needs at least one batch of B*T+1 tokens (B 4, T 64), and 5 for validation.
    need = 5 * 4 * 64 + 1
    for flag, n in (("--train-tokens", a.train_tokens), ("--val-tokens", a.val_tokens)):
        if not need <= n < 2**31:
            sys.exit("llmc_files.py: %s must be in [%d, 2^31), got %d" % (flag, need, n))
    os.makedirs(a.dir, exist_ok=True)
    write_model(os.path.join(a.dir, MODEL_FILE), a.seed)
    write_tokens(os.path.join(a.dir, TRAIN_FILE), a.train_tokens, a.seed + 1)
    write_tokens(os.path.join(a.dir, VAL_FILE), a.val_tokens, a.seed + 2)
    n_params = sum(n for _, n, _ in tensors())
    print("wrote %s (%d parameters, padded vocab %d), %s (%d tokens), %s (%d tokens)" % (
        MODEL_FILE, n_params, PADDED_VOCAB, TRAIN_FILE, a.train_tokens, VAL_FILE, a.val_tokens))


if __name__ == "__main__":
    main()
