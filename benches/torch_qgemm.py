"""PyTorch's dynamically quantized Linear (int8 weights per channel, activations quantized per
call) on the shapes of `anvil bench qgemm`, once per quantized engine PyTorch offers here.

Run by `anvil bench qgemm --torch PYTHON`; prints one JSON object per line (`gops` = 2*m*k*n / s).
Not part of the test command.
"""

import argparse
import json

import torch
from torch_timing import median_seconds

SHAPES = [(256, 768, 3072), (1, 768, 3072)]  # (m, k, n): y (m, n) = x (m, k) W^T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    engines = [e for e in ("onednn", "x86", "fbgemm") if e in torch.backends.quantized.supported_engines]
    for engine in engines:
        torch.backends.quantized.engine = engine
        for m, k, n in SHAPES:
            lin = torch.nn.Linear(k, n, bias=False)
            q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
            x = torch.rand(m, k) * 2 - 1
            with torch.no_grad():
                t = median_seconds(lambda: q(x), args.seconds)
            print(json.dumps({"name": f"torch/qlinear_{engine}", "shape": f"{m}x{k}x{n}",
                              "threads": args.threads, "gops": 2.0 * m * k * n / t / 1e9,
                              "seconds": t}), flush=True)


if __name__ == "__main__":
    main()
