#!/usr/bin/env python3
"""PyTorch eager baseline for `anvil bench block`: one forward + backward of a pre-LN GPT-2 block
(d 768, 12 heads, MLP 3072, GELU-tanh, causal attention) on B=4 and T=64 / 256 (not run by the
tests).

The block matches src/bench/block.rs: x1 = x + c_proj(attn(c_attn(ln_1(x)))), y = x1 +
mlp(ln_2(x1)), attention by F.scaled_dot_product_attention(is_causal=True), loss y.mean(); every
parameter gets a gradient (set to None before each step, as optimizer.zero_grad() does), x none.

Two modes:
  (default)  prints one JSON object per config:
             {"name": "torch/gpt2_block", "config": "B4xT64", "threads": 2, "tokens_per_s": ...,
              "seconds": ...}
  --serve    for interleaved timing by `anvil bench block --torch`: reads lines "B T" from stdin
             and answers each with the seconds of one step on that config (after a warm-up the
             first time a config is seen), so the two engines alternate step by step.
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_timing import median_seconds

C, HEADS, FF = 768, 12, 3072
CONFIGS = [(4, 64), (4, 256)]


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.c_fc = nn.Linear(C, FF)
        self.mlp_proj = nn.Linear(FF, C)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        heads = lambda z: z.view(b, t, HEADS, C // HEADS).transpose(1, 2)
        a = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
        x = x + self.c_proj(a.transpose(1, 2).reshape(b, t, C))
        h = F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")
        return x + self.mlp_proj(h)


class Runner:
    def __init__(self, b, t):
        torch.manual_seed(0)
        self.block = Block()
        self.x = torch.randn(b, t, C)

    def step(self):
        for p in self.block.parameters():
            p.grad = None
        self.block(self.x).mean().backward()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--serve", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runners = {}
    if args.serve:
        for line in sys.stdin:
            b, t = (int(v) for v in line.split())
            if (b, t) not in runners:
                runners[(b, t)] = Runner(b, t)
                for _ in range(3):
                    runners[(b, t)].step()
            t0 = time.perf_counter()
            runners[(b, t)].step()
            print(f"{time.perf_counter() - t0:.9f}", flush=True)
        return
    for b, t in CONFIGS:
        r = Runner(b, t)
        s = median_seconds(r.step, args.seconds)
        print(json.dumps({"name": "torch/gpt2_block", "config": f"B{b}xT{t}",
                          "threads": args.threads, "tokens_per_s": round(b * t / s, 3),
                          "seconds": round(s, 9)}), flush=True)


if __name__ == "__main__":
    main()
