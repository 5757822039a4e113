#!/usr/bin/env python3
"""PyTorch baseline for Anvil's row kernels, on 2 threads (not run by the tests).

Prints one JSON object per line:
  {"name": "torch/softmax_fwd", "shape": "49152x256", "threads": 2, "gbps": ...}

"gbps" is 1e9 bytes per second; criterion prints GiB/s (2^30), so multiply criterion's figure
by 1.074 to compare.

Timing: WARMUP untimed calls, then the median of REPS timed calls (time.perf_counter).
Forward outputs are written into preallocated buffers through `out=` where the functional API
has one; backward calls `torch.autograd.grad` on a graph built once (retain_graph=True), so only
the backward kernels are timed, not the forward that made the graph.

Bytes (f32, 4 bytes each, read + written, counted as Anvil's criterion benches count them):
  softmax   (R, C): fwd reads x, writes y: 2RC; bwd reads y, dy, writes dx: 3RC
  gelu      (R, C): fwd 2RC; bwd reads x, dy, writes dx: 3RC
  layernorm (R, C): fwd reads x, writes y, plus w, b (2C) and mean, rstd (2R): 2RC + 2C + 2R
                    bwd reads x, dy, writes dx: 3RC, plus w (C), mean, rstd (2R), dw, db (2C)
                    (Anvil's bwd also reads dx, as it adds into it: Anvil counts 4RC there, so
                    the torch figure is flattered by RC/(4RC) at most; both are printed honestly.)
  rmsnorm   (R, C): fwd 2RC + C + R; bwd 3RC + 2C + R
  cross_entropy (B, V): fwd reads logits (BV) and targets (B int64 = 2B floats), writes loss
                    (one float): BV + 2B + 1; bwd reads logits, writes dlogits: 2BV + 2B
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

THREADS = 2
WARMUP = 3
REPS = 15
F32 = 4


def median_seconds(fn):
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def report(name, shape, nbytes, fn):
    s = median_seconds(fn)
    print(json.dumps({"name": f"torch/{name}", "shape": shape, "threads": THREADS,
                      "gbps": round(nbytes / s / 1e9, 3)}), flush=True)


def fwd_bwd(name, shape, x, forward, fwd_bytes, bwd_bytes, params=()):
    """Times `forward(x)` without grad, then the backward of a graph built once."""
    with torch.no_grad():
        report(f"{name}_fwd", shape, fwd_bytes, lambda: forward(x))
    xg = x.detach().requires_grad_(True)
    y = forward(xg)
    dy = torch.randn_like(y) if y.dim() > 0 else torch.ones_like(y)
    inputs = (xg, *params)
    report(f"{name}_bwd", shape, bwd_bytes,
           lambda: torch.autograd.grad(y, inputs, dy, retain_graph=True))


def main():
    global THREADS
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=THREADS)
    THREADS = ap.parse_args().threads
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)

    r, c = 49152, 256
    x = torch.randn(r, c)
    out = torch.empty_like(x)

    def softmax(t):
        # The forward timing writes into `out` (no allocation); the graph needs a fresh tensor.
        return torch.softmax(t, -1) if t.requires_grad else torch.softmax(t, -1, out=out)

    fwd_bwd("softmax", f"{r}x{c}", x, softmax, 2 * r * c * F32, 3 * r * c * F32)

    r, c = 4096, 768
    x = torch.randn(r, c)
    for approx in ("tanh", "none"):
        label = "gelu_tanh" if approx == "tanh" else "gelu_erf"
        fwd_bwd(label, f"{r}x{c}", x, lambda t, a=approx: F.gelu(t, approximate=a),
                2 * r * c * F32, 3 * r * c * F32)

    w = torch.randn(c).requires_grad_(True)
    b = torch.randn(c).requires_grad_(True)
    fwd_bwd("layernorm", f"{r}x{c}", x, lambda t: F.layer_norm(t, (c,), w, b, 1e-5),
            (2 * r * c + 2 * c + 2 * r) * F32, (3 * r * c + 3 * c + 2 * r) * F32, (w, b))

    wr = torch.randn(c).requires_grad_(True)
    if hasattr(F, "rms_norm"):
        rms = lambda t: F.rms_norm(t, (c,), wr, 1e-6)  # noqa: E731
    else:  # the LlamaRMSNorm formula
        rms = lambda t: t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * wr  # noqa: E731
    fwd_bwd("rmsnorm", f"{r}x{c}", x, rms,
            (2 * r * c + c + r) * F32, (3 * r * c + 2 * c + r) * F32, (wr,))

    bsz, v = 512, 50257
    logits = torch.randn(bsz, v)
    target = torch.randint(0, v, (bsz,))
    fwd_bwd("cross_entropy", f"{bsz}x{v}", logits, lambda t: F.cross_entropy(t, target),
            (bsz * v + 2 * bsz + 1) * F32, (2 * bsz * v + 2 * bsz) * F32)


if __name__ == "__main__":
    main()
