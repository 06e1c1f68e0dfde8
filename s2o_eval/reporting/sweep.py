"""Choosing a sparse method's knob from a sweep: the largest value that costs no measurable accuracy.

The rule (the compare issue's): over the cells (task x length) where the baseline scores at least
50, the run's paired score difference from the baseline must stay within 1 point on average and not
be significant (paired test, p >= 0.05). Of the values that pass, the largest is chosen (for ``tau``,
the sparsest). Cells where the baseline itself fails say nothing about what sparsity costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..run.rundir import sample_key
from .runs import LoadedRun, dense_methods
from .stats import paired_p_value

MIN_BASELINE_SCORE = 50.0
MAX_MEAN_DELTA = 1.0
ALPHA = 0.05


@dataclass
class SweepPoint:
    label: str
    value: Any
    cells: int          # cells where the baseline scores >= MIN_BASELINE_SCORE
    samples: int        # paired samples in those cells
    mean_delta: float | None
    p_value: float | None
    missing: int = 0    # baseline samples of those cells the run lacks (unfinished): it cannot pass yet

    @property
    def passed(self) -> bool:
        return (self.samples > 0 and self.missing == 0 and abs(self.mean_delta) <= MAX_MEAN_DELTA
                and self.p_value >= ALPHA)


@dataclass
class Sweep:
    parameter: str
    method: str
    points: list[SweepPoint]  # by value, largest first

    @property
    def chosen(self) -> SweepPoint | None:
        return next((p for p in self.points if p.passed), None)


def swept_parameter(runs: list[LoadedRun]) -> str | None:
    """The one method parameter that tells apart two or more runs of one sparse method, if there is one."""
    dense = dense_methods()
    sparse = [r for r in runs if r.method not in dense]
    if len(sparse) < 2 or len({r.method for r in sparse}) != 1:
        return None
    params = [r.config.get("method_args") or {} for r in sparse]
    differing = {k for p in params for k in p if len({repr(q.get(k)) for q in params}) > 1}
    return differing.pop() if len(differing) == 1 else None


def evaluate_sweep(baseline: LoadedRun, candidates: list[LoadedRun], parameter: str) -> Sweep:
    """Each candidate's paired difference from ``baseline`` over the cells the baseline passes."""
    base = {sample_key(r): float(r["score"]) for r in baseline.samples}
    cell_scores: dict[tuple[str, int], list[float]] = {}
    for (task, ctx, _), score in base.items():
        cell_scores.setdefault((task, ctx), []).append(score)
    solid = {cell for cell, scores in cell_scores.items() if sum(scores) / len(scores) >= MIN_BASELINE_SCORE}
    wanted = sum(len(cell_scores[cell]) for cell in solid)
    points = []
    for run in candidates:
        scores = {key: float(r["score"]) for r in run.samples if (key := sample_key(r)) in base and key[:2] in solid}
        before, after = [base[key] for key in scores], list(scores.values())
        pairs = list(zip(before, after))
        points.append(SweepPoint(
            label=run.label, value=(run.config.get("method_args") or {}).get(parameter),
            cells=len({key[:2] for key in scores}),
            samples=len(pairs), mean_delta=(sum(after) - sum(before)) / len(pairs) if pairs else None,
            p_value=paired_p_value(before, after) if pairs else None, missing=wanted - len(pairs)))
    points.sort(key=lambda p: p.value, reverse=True)
    return Sweep(parameter=parameter, method=candidates[0].method, points=points)


def find_sweep(runs: list[LoadedRun]) -> Sweep | None:
    """The sweep among ``runs`` (the first is the baseline), when the others vary one parameter."""
    parameter = swept_parameter(runs[1:])
    if parameter is None:
        return None
    dense = dense_methods()
    candidates = [r for r in runs[1:] if r.method not in dense]
    return evaluate_sweep(runs[0], candidates, parameter)
