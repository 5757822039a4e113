"""PyTorch's dynamically quantized Linear (int8 weights per channel, activations quantized per
call) on the shapes of `anvil bench qgemm`, once per quantized engine PyTorch offers here.

Run on its own it prints one JSON object per line (`gops` = 2*m*k*n / s). `anvil bench qgemm
--torch PYTHON` runs it with --serve, in turn with ours: each line read, `ENGINE MxKxN SECONDS`,
asks for a block of back-to-back calls of that engine's Linear on that shape (untimed warm-up
first, as `median_seconds` does) and is answered with the median seconds of one call. Blocks, not
single calls: one call is ~1 ms, and a call that follows our turn finds oneDNN's threads asleep
and its caches cold. Not part of the test command.
"""

import argparse
import json
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_timing import median_seconds, serve  # noqa: E402

import torch  # noqa: E402

# torch.ao's dynamic quantization warns that it is deprecated, on every Linear it builds; the
# table is easier to read without that.
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=UserWarning, module="torch.ao")

SHAPES = [(256, 768, 3072), (1, 768, 3072)]  # (m, k, n): y (m, n) = x (m, k) W^T


def engines():
    return [e for e in ("onednn", "x86", "fbgemm") if e in torch.backends.quantized.supported_engines]


def linear(engine, m, k, n):
    """`engine`'s dynamically quantized Linear (k -> n) and an input of m rows."""
    torch.backends.quantized.engine = engine
    lin = torch.nn.Linear(k, n, bias=False)
    q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
    return q, torch.rand(m, k) * 2 - 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--serve", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.serve:
        built = {}

        def block(job):
            engine, shape, seconds = job.split()
            if engine not in engines():
                raise SystemExit(f"engine {engine!r} is not one of {engines()}")
            m, k, n = (int(v) for v in shape.split("x"))
            if (engine, shape) not in built:
                built[(engine, shape)] = linear(engine, m, k, n)
            q, x = built[(engine, shape)]
            torch.backends.quantized.engine = engine
            with torch.no_grad():
                return [median_seconds(lambda: q(x), float(seconds))]

        print(" ".join(engines()), flush=True)
        serve(block)
        return
    for engine in engines():
        for m, k, n in SHAPES:
            q, x = linear(engine, m, k, n)
            with torch.no_grad():
                t = median_seconds(lambda: q(x), args.seconds)
            print(json.dumps({"name": f"torch/qlinear_{engine}", "shape": f"{m}x{k}x{n}",
                              "threads": args.threads, "gops": 2.0 * m * k * n / t / 1e9,
                              "seconds": t}), flush=True)


if __name__ == "__main__":
    main()
