"""Timing shared by the PyTorch comparison scripts: warm-up, then the median of repeated runs."""

import time


def median_seconds(fn, budget, min_runs=5, warmup=3):
    """Calls `fn` `warmup` times untimed, then until `budget` seconds pass (at least `min_runs`
    times); returns the median seconds of one call."""
    for _ in range(warmup):
        fn()
    samples = []
    start = time.perf_counter()
    while len(samples) < min_runs or (time.perf_counter() - start < budget and len(samples) < 10000):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    samples.sort()
    return samples[len(samples) // 2]


def serve(run):
    """The `--serve` loop for `anvil bench ... --torch`, which interleaves our runs with these:
    each line read from stdin names a job, `run(job)` runs it once and returns the seconds of
    each of its figures, printed on one line; the first request of a job also pays its set-up
    and warm-up, untimed. Ends when stdin closes."""
    import sys

    for line in sys.stdin:
        job = line.strip()
        if job:
            print(" ".join(f"{s:.9f}" for s in run(job)), flush=True)
