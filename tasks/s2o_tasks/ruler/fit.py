"""Sizing a haystack to a token budget with a few exact tokenizations.

RULER binary-searches the haystack size once per task and length (a dozen or more tokenizations of
the whole prompt), then shrinks each sample until it fits. Here each sample is sized on its own, by
secant steps on the number of haystack units: the token count is close to linear in it, so starting
from a calibrated guess one to three exact tokenizations land within the tolerance. A bracket of the
largest size known to fit and the smallest known to overflow only shrinks, so the search always ends,
and what it returns always fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

S = TypeVar("S")


class BudgetTooSmall(ValueError):
    """Even the smallest haystack does not fit the token budget."""


@dataclass
class Fit(Generic[S]):
    units: int              # haystack units used
    sample: S               # what ``build(units)`` returned
    tokens: int             # exact prompt tokens of that sample
    tokens_per_unit: float  # the slope seen last, a good start for the next search


def fit_units(build: Callable[[int], S], measure: Callable[[S], int], target: int, *, guess: int,
              tokens_per_unit: float, min_units: int = 1, max_units: int | None = None,
              tolerance: float = 0.005, max_steps: int = 40) -> Fit[S]:
    """The sample whose prompt is at most ``target`` tokens and within ``tolerance`` of it.

    ``build(n)`` makes the sample with ``n`` haystack units (deterministically), ``measure`` counts
    its prompt tokens exactly. When units are too coarse to land in the tolerance, the largest size
    that fits is returned. Raises :class:`BudgetTooSmall` when ``min_units`` already overflows.
    """
    floor = target - int(tolerance * target)
    aim = target - int(tolerance * target) // 2
    best: tuple[int, S, int] | None = None   # largest n known to fit
    over: int | None = None                  # smallest n known to overflow
    slope = max(tokens_per_unit, 1e-3)
    last: tuple[int, int] | None = None
    n = _clamp(guess, min_units, max_units)
    for _ in range(max_steps):
        sample = build(n)
        tokens = measure(sample)
        if tokens <= target:
            if best is None or n > best[0]:
                best = (n, sample, tokens)
            if tokens >= floor:
                break
        elif over is None or n < over:
            over = n
        if last is not None and last[0] != n and (tokens - last[1]) / (n - last[0]) > 0:
            slope = (tokens - last[1]) / (n - last[0])
        last = (n, tokens)
        low = best[0] + 1 if best else min_units
        high = over - 1 if over is not None else max_units
        if high is not None and low > high:
            break
        step = round((aim - tokens) / slope)
        if step == 0:
            step = 1 if tokens <= target else -1
        n = _clamp(n + step, low, high)
    if best is None:
        raise BudgetTooSmall(f"{target} tokens cannot hold even {min_units} haystack unit(s)")
    return Fit(best[0], best[1], best[2], slope)


def _clamp(n: int, low: int, high: int | None) -> int:
    n = max(n, low)
    return n if high is None else min(n, high)
