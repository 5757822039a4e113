#!/usr/bin/env python3
"""PyTorch eager baseline for `anvil bench train` (not run by the tests).

The same three configurations as src/bench/train.rs, built with HF transformers (its default
attention, SDPA) and trained with torch.optim.AdamW (lr 1e-4, betas (0.9, 0.95), eps 1e-8,
weight decay 0.1) on fixed random tokens: one step = forward with labels (HF's causal-LM loss,
plus 0.01 x the balancing loss for the MoE), backward, optimizer step, zero_grad.

Prints one JSON object per line:
  {"name": "torch/tiny-gpt", "config": "B8xT128 d384 L6 V4096", "threads": 2, "tokens_per_s": ...}
With --serve (as `anvil bench train --torch` runs it, stepping in turn with ours), reads a
configuration name per line and answers the seconds of one step of it.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_timing import median_seconds, serve  # noqa: E402

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, MixtralConfig, MixtralForCausalLM  # noqa: E402


def configs():
    tiny = dict(vocab_size=4096, n_positions=128, n_embd=384, n_layer=6, n_head=6,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_new",
                tie_word_embeddings=True)
    yield "tiny-gpt", "B8xT128 d384 L6 V4096", 8, 128, lambda: GPT2LMHeadModel(GPT2Config(**tiny))
    moe = MixtralConfig(vocab_size=4096, hidden_size=384, intermediate_size=1536, num_hidden_layers=6,
                        num_attention_heads=6, num_key_value_heads=6, max_position_embeddings=128,
                        num_local_experts=8, num_experts_per_tok=2, router_aux_loss_coef=0.01,
                        output_router_logits=True, sliding_window=None, tie_word_embeddings=True,
                        rms_norm_eps=1e-6)
    yield "tiny-moe", "B8xT128 d384 L6 V4096 E8k2", 8, 128, lambda: MixtralForCausalLM(moe)
    gpt2 = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_new")
    yield "gpt2-124m", "B4xT64 d768 L12 V50257", 4, 64, lambda: GPT2LMHeadModel(GPT2Config(**gpt2))


class Runner:
    """One configuration's model, optimizer and batch; `step` is one timed training step."""

    def __init__(self, b, t, make):
        self.model = make().float().train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.9, 0.95),
                                     eps=1e-8, weight_decay=0.1)
        self.ids = torch.randint(0, self.model.config.vocab_size, (b, t))

    def step(self):
        out = self.model(input_ids=self.ids, labels=self.ids)
        out.loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--only", default="")
    ap.add_argument("--serve", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.serve:
        makers = {name: (b, t, make) for name, _, b, t, make in configs()}
        runners = {}

        def run(name):
            if name not in runners:
                runners[name] = Runner(*makers[name])
                for _ in range(2):
                    runners[name].step()
            t0 = time.perf_counter()
            runners[name].step()
            return [time.perf_counter() - t0]

        serve(run)
        return
    for name, label, b, t, make in configs():
        if a.only and a.only not in name:
            continue
        r = Runner(b, t, make)
        secs = median_seconds(r.step, a.seconds, min_runs=3, warmup=2)
        print(json.dumps({"name": f"torch/{name}", "config": label, "threads": a.threads,
                          "tokens_per_s": b * t / secs, "seconds": secs}), flush=True)

if __name__ == "__main__":
    main()
