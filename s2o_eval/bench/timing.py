"""Median wall time of a device call: CUDA events on a GPU, perf_counter on a CPU (tests only).

Warm-up calls run first, so that compilation, autotuning and handle creation stay out of the numbers.
At bench sizes (>= 32K tokens, hundreds of MB per tensor) the inputs do not fit in the L2 cache, so
repeated calls on one buffer do not measure the cache and inputs are not rotated.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def median_ms(fn: Callable[[], object], *, device: torch.device | str, reps: int = 10, warmup: int = 2) -> float:
    """Median milliseconds of ``fn()`` over ``reps`` timed calls after ``warmup`` untimed ones."""
    if reps < 1 or warmup < 0:
        raise ValueError(f"reps must be >= 1 and warmup >= 0; got {reps}, {warmup}")
    if torch.device(device).type == "cuda":
        return _cuda_median_ms(fn, reps, warmup)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _cuda_median_ms(fn: Callable[[], object], reps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in zip(starts, ends))
