"""PyTorch's f32 GEMM on the shapes of `anvil bench gemm`, for side-by-side comparison.

Run by `anvil bench gemm --torch PYTHON`; prints one JSON object per line in the same format.
Not part of the test command. Uses torch.mm with a preallocated output (out=) so neither side pays
for allocation; B is (k, n), or (n, k) transposed for the `_nt` rows (a Linear weight); A is (k, m) transposed
for the `_tn` rows (dW = dY^T X).
"""

import argparse
import json

import torch
from torch_timing import median_seconds

SHAPES = [  # (m, k, n, a transposed, b transposed)
    (1024, 1024, 1024, False, False),
    (256, 768, 3072, False, False),
    (256, 3072, 768, False, False),
    (4096, 384, 1536, False, False),
    (256, 768, 3072, False, True),
    (1, 768, 3072, False, False),
    (1, 768, 3072, False, True),
    # A GPT-2 block's training step at 1024 tokens: forward X W^T, dX = dY W, dW = dY^T X.
    (1024, 768, 2304, False, True),
    (1024, 2304, 768, False, False),
    (2304, 1024, 768, True, False),
    (1024, 768, 3072, False, True),
    (1024, 3072, 768, False, False),
    (3072, 1024, 768, True, False),
    (1024, 3072, 768, False, True),
    (1024, 768, 3072, False, False),
    (768, 1024, 3072, True, False),
    # Inference on constant weights: GPT-2's QKV at a 64-token prefill, MiniLM's QKV at a batch.
    (64, 768, 2304, False, True),
    (512, 384, 1152, False, False),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for m, k, n, at, bt in SHAPES:
        a = (torch.rand(k, m) * 2 - 1).t() if at else torch.rand(m, k) * 2 - 1
        b = (torch.rand(n, k) * 2 - 1).t() if bt else torch.rand(k, n) * 2 - 1
        c = torch.empty(m, n)
        t = median_seconds(lambda: torch.mm(a, b, out=c), args.seconds)
        name = "torch/sgemm_" + ("t" if at else "n") + ("t" if bt else "n")
        print(json.dumps({"name": name, "shape": f"{m}x{k}x{n}", "threads": args.threads,
                          "gflops": 2.0 * m * k * n / t / 1e9, "seconds": t}), flush=True)


if __name__ == "__main__":
    main()
