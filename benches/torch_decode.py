"""PyTorch eager generation with HF transformers' KV cache, the counterpart of `anvil bench decode`:
batch 1, a 64-token prompt (prefill), then 64 tokens decoded one at a time (greedy), random weights,
f32. Models: GPT-2 124M, the tiny GPT (vocab 4096, 6 layers, d 384, 6 heads) and its 8-expert top-2
Mixtral-style mixture (SwiGLU experts of width 1536, untied head).

Run by `anvil bench decode --torch PYTHON`; prints one JSON object per line (`tokens_per_s`).
With --serve (as `anvil bench decode --torch` runs it, in turn with ours), each line read names a
model and is answered with the seconds of one prefill and of the whole decode.
Not part of the test command.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_timing import serve  # noqa: E402

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, MixtralConfig, MixtralForCausalLM  # noqa: E402

PROMPT, NEW = 64, 64


def models():
    gpt2 = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                      attn_implementation="eager")
    tiny = GPT2Config(vocab_size=4096, n_positions=256, n_embd=384, n_layer=6, n_head=6, bos_token_id=0, eos_token_id=0,
                      attn_implementation="eager")
    moe = MixtralConfig(vocab_size=4096, hidden_size=384, intermediate_size=1536, num_hidden_layers=6,
                        num_attention_heads=6, num_key_value_heads=6, num_local_experts=8,
                        num_experts_per_tok=2, max_position_embeddings=256, tie_word_embeddings=False,
                        sliding_window=None, attn_implementation="eager")
    return [("gpt2-124m", GPT2LMHeadModel, gpt2), ("tiny", GPT2LMHeadModel, tiny),
            ("tiny-moe8x2", MixtralForCausalLM, moe)]


def once(model, prompt):
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(prompt, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        prefill = time.perf_counter() - t0
        t1 = time.perf_counter()
        for _ in range(NEW):
            out = model(nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        return prefill, time.perf_counter() - t1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--min-rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="only the models whose name contains this")
    ap.add_argument("--serve", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.serve:
        makers = {name: (cls, cfg) for name, cls, cfg in models()}
        loaded = {}

        def run(name):
            if name not in loaded:
                cls, cfg = makers[name]
                model = cls(cfg).eval()
                prompt = torch.tensor([[(i * 7919 + 13) % cfg.vocab_size for i in range(PROMPT)]])
                once(model, prompt)  # warm-up
                loaded[name] = (model, prompt)
            return list(once(*loaded[name]))

        serve(run)
        return
    for name, cls, cfg in models():
        if args.only not in name:
            continue
        model = cls(cfg).eval()
        prompt = torch.tensor([[(i * 7919 + 13) % cfg.vocab_size for i in range(PROMPT)]])
        once(model, prompt)  # warm-up
        ps, ds = [], []
        start = time.perf_counter()
        while len(ps) < args.min_rounds or time.perf_counter() - start < args.seconds:
            p, d = once(model, prompt)
            ps.append(p)
            ds.append(d)
        p, d = sorted(ps)[len(ps) // 2], sorted(ds)[len(ds) // 2]
        for phase, n, t in (("prefill", PROMPT, p), ("decode", NEW, d)):
            print(json.dumps({"name": f"torch/{name}-f32/{phase}", "shape": f"{PROMPT}+{NEW}",
                              "threads": args.threads, "tokens_per_s": n / t, "seconds": t}),
                  flush=True)


if __name__ == "__main__":
    main()
