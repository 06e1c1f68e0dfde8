"""Pareto fronts of swept sparse methods and matched comparisons read off them (pure functions).

A sweep point is (rel_l2, cost) with cost = density or total ms; lower is better on both axes. A
method's front is its points that no other point of the same method beats on both. Values at a
matched error or density are interpolated linearly between the two front points around the target
and never extrapolated: outside the front's span the answer is None ("not reached").
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from .records import measured, registry_name

DENSITY_TARGETS = (0.05, 0.1, 0.2, 0.3)
S2O = "s2o"


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def pareto_front(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (error, cost) points not dominated by another (one at most as bad on both and better on one),
    sorted by error ascending (so cost descending); duplicates kept once, non-finite points dropped."""
    ordered = sorted({(e, c) for e, c in points if _finite(e) and _finite(c)})
    front: list[tuple[float, float]] = []
    for error, cost in ordered:  # by error, then cost: a point joins only if it is cheaper than all before
        if not front or cost < front[-1][1]:
            front.append((error, cost))
    return front


def _interpolate(pairs: list[tuple[float, float]], at: float) -> float | None:
    """Linear y at x == ``at`` over (x, y) pairs sorted by x; None outside [first x, last x]."""
    if not pairs or not pairs[0][0] <= at <= pairs[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(pairs, pairs[1:]):
        if x0 <= at <= x1:
            return y0 if x1 == x0 else y0 + (at - x0) / (x1 - x0) * (y1 - y0)
    return pairs[0][1]  # a one-point front, hit exactly


def cost_at_error(front: list[tuple[float, float]], error: float) -> float | None:
    """The front's cost (density or ms) at ``error``; None when the front does not span it."""
    return _interpolate(sorted(front), error)


def error_at_cost(front: list[tuple[float, float]], cost: float) -> float | None:
    """The front's error at ``cost`` (e.g. a density); None when the front does not span it."""
    return _interpolate(sorted((c, e) for e, c in front), cost)


def is_oracle(method: str) -> bool:
    """Oracles (token_oracle, block_oracle) read the true attention: yardsticks, never peers."""
    return "oracle" in method


def sweep_groups(records: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """(workload, ctx, method) -> the measured records of each sparse method, in record order; a point
    whose output held NaN or Inf (no finite error) has no place on a front."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        if (measured(record) and not record.get("dense") and record.get("density") is not None
                and record.get("rel_l2") is not None and math.isfinite(record["rel_l2"])):
            groups.setdefault((record["workload"], record["ctx"], record["method"]), []).append(record)
    return groups


def fronts(records: list[dict[str, Any]], cost: str) -> dict[tuple, list[tuple[float, float]]]:
    """(workload, ctx, method) -> the (rel_l2, ``cost``) Pareto front of that sparse method."""
    return {key: pareto_front((r["rel_l2"], r[cost]) for r in members)
            for key, members in sweep_groups(records).items()}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def error_at_density_rows(records: list[dict[str, Any]], targets=DENSITY_TARGETS) -> list[dict[str, Any]]:
    """For each workload x ctx x target density, every sparse method's rel_l2 on its density front and
    ``vs_s2o``: that error / S2O's error there (None where either is not reached)."""
    density_fronts = fronts(records, "density")
    rows = []
    for (workload, ctx, method), front in density_fronts.items():
        s2o_front = density_fronts.get((workload, ctx, S2O))
        for target in targets:
            error = error_at_cost(front, target)
            s2o_error = error_at_cost(s2o_front, target) if s2o_front else None
            rows.append({"workload": workload, "ctx": ctx, "method": method, "density": target, "rel_l2": error,
                         "density_range": (min(c for _, c in front), max(c for _, c in front)),
                         "vs_s2o": _ratio(error, s2o_error)})
    rows.sort(key=lambda row: (row["workload"], row["ctx"], row["density"]))
    return rows


def _best_peer(values: dict[str, float | None]) -> tuple[str | None, float | None]:
    """The non-oracle peer with the lowest value where it reached the level; S2O and its variants
    (``s2o/head``) are never S2O's peers."""
    reached = {m: v for m, v in values.items()
               if registry_name(m) != S2O and not is_oracle(m) and v is not None}
    if not reached:
        return None, None
    method = min(reached, key=reached.get)
    return method, reached[method]


def s2o_vs_peers(records: list[dict[str, Any]], error_targets, density_targets=DENSITY_TARGETS) -> list[dict[str, Any]]:
    """S2O against the best non-oracle peer, per workload x ctx:

    - at each matched error: both densities on their fronts, ``lower`` = peer density / S2O density
      ("x lower density");
    - at each matched density: both errors, ``lower`` = peer error / S2O error ("x lower error").
    ``lower`` is None where S2O or every peer does not reach the level. Only groups where S2O was swept.
    """
    density_fronts = fronts(records, "density")
    rows = []
    for (workload, ctx) in dict.fromkeys((w, c) for w, c, m in density_fronts if m == S2O):
        group = {m: f for (w, c, m), f in density_fronts.items() if (w, c) == (workload, ctx)}
        for kind, targets, read in (("error", error_targets, cost_at_error), ("density", density_targets, error_at_cost)):
            for target in targets:
                values = {m: read(front, target) for m, front in group.items()}
                peer, peer_value = _best_peer(values)
                rows.append({"workload": workload, "ctx": ctx, "matched": kind, "target": target,
                             "s2o": values[S2O], "peer": peer, "peer_value": peer_value,
                             "lower": _ratio(peer_value, values[S2O])})
    return rows
