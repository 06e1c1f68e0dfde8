"""Bench records: one dict per (workload, ctx, method, sweep point), the ratios between them, and
speed at matched error.

A record holds (the bench record contract, plus what the report needs)::

    name, workload, workload_kind ("capture" | "random"), workload_note, source, beyond_window,
    method (its label: ``s2o``, or a variant such as ``s2o/head``), dense (bool), args (as given: method args + sweep point), params (all, typed), sweep ({param: value} | None),
    ctx, shape {B, Hq, Hkv, N, D, dtype}, device, versions {torch, triton, transformers, fa3},
    prefill_chunk (C of ``--prefill-chunk``, else None), q_offset (P = N - min(C, N): the method ran the
    queries from P on against all N keys, and every number below is that chunk's; 0 for a whole prompt),
    reps, warmup, ms_plan, ms_execute, ms_total, plan_share, density, pv_density, density_per_head,
    rel_l2, mse, efficiency, efficiency_vs, speedup {fa2, cudnn, fa3}, skipped (None | reason), note

Times are medians in milliseconds; dense methods have ms_plan None and density 1. density counts QK
pairs; pv_density the P.V pairs, lower only for a method that drops scores it computed (skip-softmax).
``efficiency`` is
``ms(efficiency_vs) x density / ms_execute``: the share of the dense kernel's per-pair speed that
the method's executor reaches (efficiency_vs is fa3 when it ran, else the fastest dense method).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

from s2o_tasks.reading import AnyOf

BASELINES = ("fa2", "cudnn", "fa3")
ERROR_TARGETS = (0.01, 0.03, 0.08)


def registry_name(method: str) -> str:
    """``s2o/head`` -> ``s2o``. A record's method is the label given in --methods: a registry name, or a
    variant ``<name>/<label>``, the same method under its own --method-args and --sweep."""
    return method.partition("/")[0]


def measured(record: dict[str, Any]) -> bool:
    return not record.get("skipped") and record.get("ms_total") is not None


def is_dense(record: dict[str, Any]) -> bool:
    return bool(record.get("dense"))


def add_ratios(records: list[dict[str, Any]]) -> None:
    """Fill ``speedup``, ``efficiency`` and ``efficiency_vs`` of the records of ONE workload x ctx, in place."""
    dense_ms: dict[str, float] = {}
    for record in records:
        if measured(record) and is_dense(record):
            dense_ms.setdefault(record["method"], record["ms_total"])
    reference = "fa3" if "fa3" in dense_ms else (min(dense_ms, key=dense_ms.get) if dense_ms else None)
    for record in records:
        if not measured(record):
            continue
        record["speedup"] = {name: dense_ms[name] / record["ms_total"] for name in BASELINES if name in dense_ms}
        density, execute = record.get("density"), record.get("ms_execute")
        if reference is not None and density is not None and execute:
            record["efficiency"] = dense_ms[reference] * density / execute
            record["efficiency_vs"] = reference
        else:
            record["efficiency"], record["efficiency_vs"] = None, None


def interpolate_at_error(points: Iterable[tuple[float, float, float]], target: float) -> tuple[float, float] | None:
    """(ms_total, density) at ``rel_l2 == target``, linear between the two sweep points around it.

    ``points``: (rel_l2, ms_total, density) per sweep point, any order. None when ``target`` lies
    outside the errors the sweep reached (no extrapolation).
    """
    ordered = sorted(p for p in points if p[0] is not None and math.isfinite(p[0]))
    if not ordered or not ordered[0][0] <= target <= ordered[-1][0]:
        return None
    for (e0, t0, d0), (e1, t1, d1) in zip(ordered, ordered[1:]):
        if e0 <= target <= e1:
            w = 0.0 if e1 == e0 else (target - e0) / (e1 - e0)
            return t0 + w * (t1 - t0), d0 + w * (d1 - d0)
    return ordered[0][1], ordered[0][2]  # a single point, hit exactly


def matched_error_rows(records: list[dict[str, Any]], targets=ERROR_TARGETS) -> list[dict[str, Any]]:
    """Speed at matched error: for every swept sparse method of each workload x ctx, its interpolated
    total time and density at each target rel_l2, and its speedups over the dense baselines there."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        if measured(record) and record.get("sweep") and record.get("density") is not None:
            groups.setdefault((record["workload"], record["ctx"], record["method"]), []).append(record)
    rows = []
    for (workload, ctx, method), members in groups.items():
        dense_ms = {r["method"]: r["ms_total"] for r in records
                    if r["workload"] == workload and r["ctx"] == ctx and measured(r) and is_dense(r)}
        points = [(r["rel_l2"], r["ms_total"], r["density"]) for r in members]
        errors = sorted(p[0] for p in points if p[0] is not None and math.isfinite(p[0]))
        for target in targets:
            hit = interpolate_at_error(points, target)
            row = {"workload": workload, "ctx": ctx, "method": method, "rel_l2": target,
                   "sweep_range": (errors[0], errors[-1]) if errors else None,
                   "ms_total": None, "density": None, "speedup": {}}
            if hit is not None:
                row["ms_total"], row["density"] = hit
                row["speedup"] = {name: dense_ms[name] / hit[0] for name in BASELINES if name in dense_ms}
            rows.append(row)
    return rows


def _plain(value):
    """JSON-safe: non-finite floats become None (NaN is not JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_records(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write the records as one JSON list (atomically: a crash leaves the previous file intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(_plain(records), indent=1) + "\n")
    os.replace(partial, path)
    return path


_NUMBER = AnyOf((None, float))
#: what the report and the plots read of a stored record (``reading.shape_problem``)
RECORD_SHAPE = {
    "name": str, "workload": str, "workload_kind": str, "workload_note": str, "method": str, "ctx": int,
    "device": str, "reps": int, "warmup": int, "dense?": bool, "skipped": AnyOf((None, str)),
    "note?": AnyOf((None, str)), "shape": {"B": int, "Hq": int, "Hkv": int, "N": int, "D": int, "dtype": str},
    "ms_plan": _NUMBER, "ms_execute": _NUMBER, "ms_total": _NUMBER, "plan_share?": _NUMBER, "density": _NUMBER,
    "pv_density?": _NUMBER, "rel_l2": _NUMBER, "mse": _NUMBER, "efficiency?": _NUMBER,
    "efficiency_vs?": AnyOf((None, str)), "speedup": {str: float}, "sweep?": AnyOf((None, dict)),
    "args?": AnyOf((None, dict)), "versions?": AnyOf((None, {str: AnyOf((None, str))})),
    "prefill_chunk?": AnyOf((None, int)), "q_offset?": int,
}


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a stored bench JSON (``write_records``), checked to have what reports read."""
    from ..reading import InputFile

    source = InputFile(Path(path), "pass a bench JSON written by `s2o-eval bench`, e.g. reports/bench/<name>.json")
    records = source.read_json([RECORD_SHAPE], "a bench JSON", items="record")
    if not records:
        raise source.problem("holds no bench records")
    return records
