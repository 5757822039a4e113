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
