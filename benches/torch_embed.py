#!/usr/bin/env python3
"""sentence-transformers baseline for `anvil bench embed` (not run by the tests).

Embeds the sentences `anvil bench embed` wrote to --sentences with the model in --model
(SentenceTransformer: tokenise, batch 32 sorted by length, mean pooling, normalise), f32, on
--threads threads. Prints one JSON object per line:
  {"name": "torch/sentence_transformers_f32", "shape": "...", "threads": 2, "sentences_per_s": ...}
With --serve (as `anvil bench embed --torch` runs it, in turn with ours), each line read asks for
one embedding of all the sentences and is answered with its seconds.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_timing import median_seconds, serve  # noqa: E402

import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", required=True)
    ap.add_argument("--sentences", required=True)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--serve", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    texts = open(a.sentences).read().split("\n")
    model = SentenceTransformer(a.model, device="cpu")

    def run():
        model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

    if a.serve:
        run()  # warm-up

        def timed(_job):
            t0 = time.perf_counter()
            run()
            return [time.perf_counter() - t0]

        serve(timed)
        return
    secs = median_seconds(run, a.seconds, min_runs=3, warmup=1)
    print(json.dumps({"name": "torch/sentence_transformers_f32",
                      "shape": f"{len(texts)} sentences x batch 32", "threads": a.threads,
                      "sentences_per_s": len(texts) / secs, "seconds": secs}), flush=True)


if __name__ == "__main__":
    main()
