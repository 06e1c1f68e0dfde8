"""Report tables as plain data: pure functions from per-sample records to rows.

Every function takes the runs as an ordered mapping ``label -> list of sample dicts`` (the first run is
the baseline that deltas and speedups refer to) and returns dicts of numbers; rendering is elsewhere.
Per-cell numbers come from ``run.rundir.summarize`` so that a report and a run's summary.json agree.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from ..run.rundir import mean_or_none, summarize
from .stats import wilson_interval

Samples = list[dict[str, Any]]
Runs = Mapping[str, Samples]

# Label of the pooled row/column in suite tables; a task can never be called this (lm-eval names are
# prefixed s2o_ and CLI names contain no spaces).
ALL_TASKS = "all tasks"


def cell_results(samples: Samples) -> dict[tuple[str, int], dict[str, Any]]:
    """``summarize`` rows keyed by (task, ctx), group rows left out."""
    return {(r["task"], r["ctx"]): r for r in summarize(samples) if "group" not in r}


def group_results(samples: Samples) -> dict[tuple[str, str, int], dict[str, Any]]:
    """``summarize`` rows of sample groups (e.g. LongBench-v2's easy / hard), keyed by (task, group, ctx)."""
    return {(r["task"], r["group"], r["ctx"]): r for r in summarize(samples) if "group" in r}


def _pooled_by_ctx(samples: Samples) -> dict[int, dict[str, Any]]:
    """``summarize`` over all tasks at once: one row per context length."""
    pooled = [{**s, "task": ALL_TASKS, "group": None} for s in samples]
    return {r["ctx"]: r for r in summarize(pooled)}


def context_lengths(runs: Runs) -> list[int]:
    return sorted({int(s["ctx"]) for samples in runs.values() for s in samples})


def tasks(runs: Runs) -> list[str]:
    return sorted({s["task"] for samples in runs.values() for s in samples})


def score_cells(runs: Runs, z: float = 1.96) -> list[dict[str, Any]]:
    """One row per task x context length: each run's score and sample count, and for every run after the
    first its delta against the first and whether that delta leaves the baseline's binomial (Wilson)
    interval, i.e. exceeds what sampling noise alone allows at that sample count."""
    labels = list(runs)
    per_run = {label: cell_results(samples) for label, samples in runs.items()}
    keys = sorted({key for cells in per_run.values() for key in cells})
    rows = []
    for task, ctx in keys:
        base = per_run[labels[0]].get((task, ctx))
        row: dict[str, Any] = {"task": task, "ctx": ctx, "score": {}, "n": {}, "delta": {},
                               "beyond_noise": {}, "interval": None}
        if base is not None:
            row["interval"] = wilson_interval(base["score"], base["n"], z)
        for label in labels:
            cell = per_run[label].get((task, ctx))
            row["score"][label] = cell["score"] if cell else None
            row["n"][label] = cell["n"] if cell else 0
            if label == labels[0] or cell is None or base is None:
                continue
            row["delta"][label] = cell["score"] - base["score"]
            lo, hi = row["interval"]
            row["beyond_noise"][label] = not (lo <= cell["score"] <= hi)
        rows.append(row)
    return rows


def suite_table(samples: Samples) -> dict[str, Any]:
    """RULER's usual table for one run: ``scores[task][ctx]``, each task's average over lengths
    (``task_avg``), the average over tasks at each length (``ctx_avg``) and the overall average
    (the mean of ``ctx_avg``)."""
    cells = cell_results(samples)
    task_names = sorted({t for t, _ in cells})
    lengths = sorted({c for _, c in cells})
    scores = {t: {c: cells[(t, c)]["score"] for c in lengths if (t, c) in cells} for t in task_names}
    ctx_avg = {c: mean_or_none(scores[t].get(c) for t in task_names) for c in lengths}
    return {
        "tasks": task_names,
        "ctx": lengths,
        "scores": scores,
        "task_avg": {t: mean_or_none(scores[t].values()) for t in task_names},
        "ctx_avg": ctx_avg,
        "overall": mean_or_none(ctx_avg.values()),
    }


def suite_averages(runs: Runs) -> list[dict[str, Any]]:
    """Per run: the suite average at each length and overall, with deltas against the first run."""
    tables = {label: suite_table(samples) for label, samples in runs.items()}
    base = tables[next(iter(runs))]
    rows = []
    for label, table in tables.items():
        delta = {c: (v - base["ctx_avg"][c]) if v is not None and base["ctx_avg"].get(c) is not None else None
                 for c, v in table["ctx_avg"].items()}
        overall_delta = (table["overall"] - base["overall"]
                         if table["overall"] is not None and base["overall"] is not None else None)
        rows.append({"label": label, "ctx_avg": table["ctx_avg"], "overall": table["overall"],
                     "delta": delta, "overall_delta": overall_delta})
    return rows


def prefill_by_ctx(runs: Runs) -> list[dict[str, Any]]:
    """Prefill time per context length and run, pooled over tasks: mean, p50, p90 (ms) over the samples
    that recorded one, and the speedup against the first run (baseline mean / this run's mean)."""
    pooled = {label: _pooled_by_ctx(samples) for label, samples in runs.items()}
    base = pooled[next(iter(runs))]
    rows = []
    for ctx in context_lengths(runs):
        for label, cells in pooled.items():
            cell = cells.get(ctx)
            if cell is None or cell["prefill_ms_mean"] is None:
                continue
            timed = sum(1 for s in runs[label] if int(s["ctx"]) == ctx and s.get("prefill_ms") is not None)
            base_mean = base.get(ctx, {}).get("prefill_ms_mean")
            speedup = base_mean / cell["prefill_ms_mean"] if base_mean and cell["prefill_ms_mean"] > 0 else None
            rows.append({"ctx": ctx, "label": label, "n": timed, "mean": cell["prefill_ms_mean"],
                         "p50": cell["prefill_ms_p50"], "p90": cell["prefill_ms_p90"], "speedup": speedup})
    return rows


def density_by_ctx(runs: Runs) -> list[dict[str, Any]]:
    """For each run that recorded a density (sparse methods), per context length: the mean density over
    samples, its lowest and highest per-task mean, and the operator's relative L2 error where samples
    record one (``rel_l2``)."""
    rows = []
    for label, samples in runs.items():
        if not any(s.get("density") is not None for s in samples):
            continue
        pooled = _pooled_by_ctx(samples)
        cells = cell_results(samples)
        for ctx in sorted(pooled):
            per_task = [cell["density_mean"] for (_, length), cell in cells.items()
                        if length == ctx and cell["density_mean"] is not None]
            if not per_task:
                continue
            rel_l2 = mean_or_none(s.get("rel_l2") for s in samples if int(s["ctx"]) == ctx)
            rows.append({"label": label, "ctx": ctx, "density": pooled[ctx]["density_mean"],
                         "task_min": min(per_task), "task_max": max(per_task), "rel_l2": rel_l2})
    return rows


def _item(values: list | None, index: int) -> Any:
    """``values[index]``, None where the list is missing or shorter (a hand-edited sample)."""
    return values[index] if values and index < len(values) else None


def chunk_rows(runs: Runs, chunk_sizes: Mapping[str, int | None]) -> list[dict[str, Any]]:
    """Prefill time and density per chunk, when some run prefilled in chunks (``--prefill-chunk``): for
    each length and run, one row per chunk index (``chunk`` 1, 2, ...; its queries sit at ``offset`` =
    (chunk - 1) x the chunk size, after that many cached keys) with its mean time and density over the
    samples that have that chunk and its mean query count; a whole-prompt run gives one row, ``chunk``
    None. Empty when no run is chunked."""
    if not any(s.get("prefill_chunk_ms") for samples in runs.values() for s in samples):
        return []
    rows = []
    for ctx in context_lengths(runs):
        for label, samples in runs.items():
            here = [s for s in samples if int(s["ctx"]) == ctx]
            size = chunk_sizes.get(label)
            if not size:  # the whole prompt is its one chunk
                timed = [s["prefill_ms"] for s in here if s.get("prefill_ms") is not None]
                if timed:
                    rows.append({"ctx": ctx, "label": label, "chunk": None, "offset": 0, "n": len(timed),
                                 "queries": mean_or_none(s.get("prompt_tokens") for s in here),
                                 "ms": mean_or_none(timed), "density": mean_or_none(s.get("density") for s in here)})
                continue
            chunked = [s for s in here if s.get("prefill_chunk_ms")]
            for index in range(max((len(s["prefill_chunk_ms"]) for s in chunked), default=0)):
                having = [s for s in chunked if len(s["prefill_chunk_ms"]) > index]
                offset = index * size
                rows.append({"ctx": ctx, "label": label, "chunk": index + 1, "offset": offset, "n": len(having),
                             "queries": mean_or_none(min(size, (s.get("prompt_tokens") or 0) - offset) for s in having),
                             "ms": mean_or_none(s["prefill_chunk_ms"][index] for s in having),
                             "density": mean_or_none(_item(s.get("chunk_density"), index) for s in having)})
    return rows


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        if len(value) > 8:  # e.g. sample ids: the count says enough
            return f"{len(value)} items"
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True) if value else "-"
    return str(value)


def environment_rows(configs: Mapping[str, dict], envs: Mapping[str, dict]) -> list[dict[str, Any]]:
    """Everything recorded about each run (config.json then env.json, nested keys flattened as
    ``versions.torch``) as ``{"source", "field", "values": {label: text}, "differs"}`` rows, config first;
    fields empty in every run are left out."""
    rows = []
    for source, prefix in ((configs, "config"), (envs, "env")):
        flat = {}
        for label, data in source.items():
            flat[label] = {}
            _flatten("", data or {}, flat[label])
        fields: list[str] = []
        for values in flat.values():
            fields.extend(f for f in values if f not in fields)
        for field in fields:
            values = {label: _show(flat[label].get(field)) for label in source}
            if all(v == "-" for v in values.values()):
                continue  # recorded as empty everywhere: nothing to show
            rows.append({"source": prefix, "field": field, "values": values,
                         "differs": len(set(values.values())) > 1})
    return rows
