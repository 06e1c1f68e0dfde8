"""The few statistics reports and the regression gate need, in plain Python (scipy is not a dependency).

Scores are per-sample numbers on 0-100. Two runs over the same samples are *paired*: each sample was
answered by both, so tests look at the per-sample differences rather than at two independent means.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# Exact enumeration of the permutation distribution costs (distinct partial sums) x (differences);
# past this much work a seeded Monte Carlo estimate is used instead (deterministic: same data, same p).
_MAX_EXACT_WORK = 300_000
_MONTE_CARLO_DRAWS = 20_000
# Differences are compared on an integer grid so that float noise never flips a tie.
_GRID = 10**6


def wilson_interval(score: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a success rate measured as ``score`` (0-100) over ``n``
    samples, returned on the same 0-100 scale. ``n == 0`` gives the uninformative ``(0, 100)``."""
    if n <= 0:
        return 0.0, 100.0
    p = min(max(score / 100.0, 0.0), 1.0)
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return 100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half)


def mcnemar_exact(worse: int, better: int) -> float:
    """Two-sided exact McNemar test on the discordant pairs of a paired pass/fail comparison.

    ``worse``: samples that passed in the baseline and fail now; ``better``: the reverse. Under the null
    each discordant pair goes either way with probability 1/2 (an exact sign test)."""
    if worse < 0 or better < 0:
        raise ValueError("discordant counts cannot be negative")
    m = worse + better
    if m == 0:
        return 1.0
    k = min(worse, better)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2**m
    return min(1.0, 2 * tail)


def _permutation_p_exact(steps: list[int], observed: int) -> float | None:
    """P(|sum of +-step| >= |observed|) over all sign assignments, by convolving the distribution of sums;
    None when that would cost more than ``_MAX_EXACT_WORK``."""
    counts: dict[int, int] = {0: 1}
    work = 0
    for step in steps:
        work += len(counts)
        if work > _MAX_EXACT_WORK:
            return None
        grown: dict[int, int] = {}
        for total, count in counts.items():
            grown[total + step] = grown.get(total + step, 0) + count
            grown[total - step] = grown.get(total - step, 0) + count
        counts = grown
    extreme = sum(count for total, count in counts.items() if abs(total) >= abs(observed))
    return extreme / 2 ** len(steps)


def _permutation_p_sampled(steps: list[int], observed: int, seed: int) -> float:
    """Monte Carlo estimate of the same p, with the usual +1 correction (never exactly 0)."""
    rng = np.random.default_rng(seed)
    magnitudes = np.asarray(steps, dtype=np.int64)
    extreme, chunk = 0, 2_000
    for start in range(0, _MONTE_CARLO_DRAWS, chunk):
        signs = rng.integers(0, 2, size=(min(chunk, _MONTE_CARLO_DRAWS - start), len(steps)), dtype=np.int64) * 2 - 1
        extreme += int((np.abs(signs @ magnitudes) >= abs(observed)).sum())
    return (extreme + 1) / (_MONTE_CARLO_DRAWS + 1)


def paired_permutation_p(baseline: Sequence[float], current: Sequence[float], seed: int = 0) -> float:
    """Two-sided paired permutation (sign-flip) test of the mean difference ``current - baseline``.

    Exact when the distribution of sums is cheap to enumerate, otherwise a seeded Monte Carlo estimate."""
    if len(baseline) != len(current):
        raise ValueError("paired samples must have the same length")
    differences = [round((c - b) * _GRID) for b, c in zip(baseline, current)]
    steps = [abs(d) for d in differences if d != 0]  # zero differences do not move under sign flips
    if not steps:
        return 1.0
    observed = sum(differences)
    exact = _permutation_p_exact(steps, observed)
    if exact is not None:
        return min(1.0, exact)
    return _permutation_p_sampled(steps, observed, seed)


def _is_pass_fail(values: Sequence[float]) -> bool:
    return all(v in (0, 100) for v in values)


def paired_p_value(baseline: Sequence[float], current: Sequence[float]) -> float:
    """The p-value of a paired two-sided test of ``current`` against ``baseline`` (0-100 per sample):
    exact McNemar when every score is pass/fail (0 or 100), else the paired permutation test."""
    if len(baseline) != len(current):
        raise ValueError("paired samples must have the same length")
    if _is_pass_fail(baseline) and _is_pass_fail(current):
        worse = sum(1 for b, c in zip(baseline, current) if b > c)
        better = sum(1 for b, c in zip(baseline, current) if c > b)
        return mcnemar_exact(worse, better)
    return paired_permutation_p(baseline, current)
