"""The accuracy gate: a run against a stored baseline of per-sample scores.

Baseline file (JSON, ``schema`` = ``BASELINE_SCHEMA``)::

    {"schema": "s2o-eval-baseline/1", "created": "<UTC ISO time>",
     "model": <config.json's model>, "model_revision": <its revision or file hash>,
     "method": "s2o", "method_resolved": "s2o", "method_args": {...},
     "tasks": ["<task as in samples.jsonl>", ...], "ctx": [4096, 16384],
     "results": [{"task", "ctx", "n", "score"}, ...],               # per-cell means, for human readers
     "created_from": {"run": "<run directory>", "config": {...}, "env": {...}},
     "samples": [{"task", "ctx", "index", "score"}, ...]}          # sorted by (task, ctx, index), one a line

A run is comparable to a baseline when model (its RoPE scaling included), tasks, context lengths and
sample keys all agree.
It passes when no suite average (per length, and over all lengths) drops by more than the tolerance,
and no task x length cell drops with a paired test significant at ``alpha``.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NotComparable, UserError
from ..reading import AnyOf, InputFile
from ..run.rundir import sample_key
from .runs import LoadedRun
from .stats import paired_p_value
from .tables import cell_results, suite_table

BASELINE_SCHEMA = "s2o-eval-baseline/1"
DEFAULT_TOLERANCE = 2.0  # points on the 0-100 scale
DEFAULT_ALPHA = 0.05


def baseline_from_run(run: LoadedRun) -> dict[str, Any]:
    """A baseline holding ``run``'s per-sample scores and what produced them."""
    samples = sorted(({"task": s["task"], "ctx": int(s["ctx"]), "index": int(s["index"]),
                       "score": float(s["score"])} for s in run.samples), key=sample_key)
    config = run.config
    return {
        "schema": BASELINE_SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "model": config.get("model"),
        "model_revision": config.get("model_revision"),
        "method": config.get("method"),
        "method_resolved": config.get("method_resolved"),
        "method_args": config.get("method_args") or {},
        "tasks": sorted({s["task"] for s in samples}),
        "ctx": sorted({s["ctx"] for s in samples}),
        "results": [{"task": r["task"], "ctx": r["ctx"], "n": r["n"], "score": r["score"]}
                    for r in cell_results(samples).values()],
        "created_from": {"run": str(run.path), "config": config, "env": run.env},
        "samples": samples,
    }


def save_baseline(baseline: dict[str, Any], path: Path) -> None:
    """Write a baseline with one sample per line, so that a refreshed baseline reads well as a diff."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = {k: v for k, v in baseline.items() if k != "samples"}
    text = json.dumps(head, indent=1, default=str)
    lines = [json.dumps(s, default=str) for s in baseline.get("samples", [])]
    body = ',\n  '.join(lines)
    text = text[:-1].rstrip() + (',\n "samples": [\n  ' + body + '\n ]\n}\n' if lines else ',\n "samples": []\n}\n')
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # an interrupted write never leaves half a baseline


# What the gate reads of a baseline (``reading.shape_problem``); anything else in the file is for people
_ROPE_SCALING = AnyOf((None, {"factor": float}))
BASELINE_SHAPE = {
    "schema": str, "method_resolved?": AnyOf((None, str)), "tasks": [str], "ctx": [int],
    "created_from?": AnyOf((None, {"config?": AnyOf((None, {"rope_scaling?": _ROPE_SCALING}))})),
    "samples": [{"task": str, "ctx": int, "index": int, "score": float}],
}


def load_baseline(path: Path) -> dict[str, Any]:
    """Read and check a baseline file; a missing or malformed one is the user's to fix (exit 4)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"no baseline at {path}: create one from a good run with "
                        f"`s2o-eval regress RUN --against {path} --update`")
    baseline = InputFile(path, "restore it or rebuild it with --update").read_json(
        BASELINE_SHAPE, "an s2o-eval baseline")
    if baseline["schema"] != BASELINE_SCHEMA:
        raise UserError(f"{path} is not an s2o-eval baseline ({BASELINE_SCHEMA}): rebuild it with --update")
    return baseline


def _preview(keys: set) -> str:
    task, ctx, index = sorted(keys)[0]
    return f"{task} at {ctx} #{index}"


def _rope_text(record: dict[str, Any] | None) -> str:
    return f"{record.get('type', 'linear')}:{float(record['factor']):g}" if record else "none"


def check_comparable(baseline: dict[str, Any], run: LoadedRun) -> None:
    """Raise NotComparable with a one-line reason unless model, tasks, lengths and sample keys agree."""
    if baseline.get("model") != run.model:
        raise NotComparable(f"the run's model {run.model!r} is not the baseline's {baseline.get('model')!r}: "
                            "gate runs of the baseline's model")
    # a scaled RoPE makes another model of the same weights; baselines record it in their run's config
    base_rope = ((baseline.get("created_from") or {}).get("config") or {}).get("rope_scaling") or None
    if _rope_text(base_rope) != _rope_text(run.rope_scaling):
        raise NotComparable(f"the run's RoPE scaling ({_rope_text(run.rope_scaling)}) is not the baseline's "
                            f"({_rope_text(base_rope)}): gate runs made with the baseline's --rope-scaling")
    revisions = (baseline.get("model_revision"), run.config.get("model_revision"))
    if None not in revisions and revisions[0] != revisions[1]:
        raise NotComparable(f"the run's model revision {revisions[1]} is not the baseline's {revisions[0]}: "
                            "rebuild the baseline with --update if the new weights are intended")
    run_tasks = {s["task"] for s in run.samples}
    base_tasks = set(baseline.get("tasks") or [])
    if run_tasks != base_tasks:
        missing, extra = sorted(base_tasks - run_tasks), sorted(run_tasks - base_tasks)
        raise NotComparable(f"the run's tasks differ from the baseline's (missing: {', '.join(missing) or '-'}; "
                            f"extra: {', '.join(extra) or '-'}): run the baseline's suite")
    run_ctx = sorted({int(s["ctx"]) for s in run.samples})
    if run_ctx != sorted(baseline.get("ctx") or []):
        raise NotComparable(f"the run's context lengths {run_ctx} are not the baseline's {baseline.get('ctx')}: "
                            "run the baseline's lengths")
    run_keys = {sample_key(s) for s in run.samples}
    base_keys = {sample_key(s) for s in baseline["samples"]}
    if run_keys != base_keys:
        missing, extra = base_keys - run_keys, run_keys - base_keys
        parts = []
        if missing:
            parts.append(f"lacks {len(missing)} of the baseline's samples (e.g. {_preview(missing)})")
        if extra:
            parts.append(f"has {len(extra)} samples the baseline lacks (e.g. {_preview(extra)})")
        raise NotComparable(f"the run {' and '.join(parts)}: use the baseline's limit and seed, or rebuild "
                            "the baseline with --update")


@dataclass
class CellCheck:
    """One task x length: mean scores, the paired test's p, and whether it counts as a regression."""

    task: str
    ctx: int
    n: int
    baseline: float
    now: float
    p: float
    regressed: bool

    @property
    def delta(self) -> float:
        return self.now - self.baseline


@dataclass
class AverageCheck:
    """A suite average at one length (``ctx``), or over all lengths (``ctx`` None)."""

    ctx: int | None
    baseline: float
    now: float
    regressed: bool

    @property
    def delta(self) -> float:
        return self.now - self.baseline


@dataclass
class Verdict:
    cells: list[CellCheck]
    averages: list[AverageCheck]
    tolerance: float
    alpha: float

    @property
    def regressions(self) -> list[CellCheck | AverageCheck]:
        return [a for a in self.averages if a.regressed] + [c for c in self.cells if c.regressed]

    @property
    def passed(self) -> bool:
        return not self.regressions


def evaluate(baseline: dict[str, Any], run: LoadedRun, tolerance: float = DEFAULT_TOLERANCE,
             alpha: float = DEFAULT_ALPHA) -> Verdict:
    """Compare a comparable run with the baseline (call ``check_comparable`` first).

    A cell regresses when its score drops and the paired two-sided test (exact McNemar for pass/fail
    scores, a permutation test otherwise) gives p < alpha; an average regresses when it drops by more
    than ``tolerance`` points. Rises never fail the gate."""
    if not tolerance >= 0:  # nan too: it would pass every average
        raise UserError("--tolerance must be zero or more points")
    base_scores = {sample_key(s): float(s["score"]) for s in baseline["samples"]}
    run_scores = {sample_key(s): float(s["score"]) for s in run.samples}
    cells = []
    by_cell: dict[tuple[str, int], list[tuple]] = {}
    for key in sorted(base_scores):
        by_cell.setdefault((key[0], key[1]), []).append(key)
    for (task, ctx), keys in by_cell.items():
        before = [base_scores[k] for k in keys]
        after = [run_scores[k] for k in keys]
        mean_before, mean_after = sum(before) / len(before), sum(after) / len(after)
        p = paired_p_value(before, after)
        cells.append(CellCheck(task, ctx, len(keys), mean_before, mean_after, p,
                               regressed=mean_after < mean_before and p < alpha))
    base_table, run_table = suite_table(baseline["samples"]), suite_table(run.samples)
    averages = []
    pairs = [(c, base_table["ctx_avg"][c], run_table["ctx_avg"][c]) for c in base_table["ctx"]]
    pairs.append((None, base_table["overall"], run_table["overall"]))
    for ctx, before, after in pairs:
        # a hair of slack so that a drop of exactly the tolerance passes despite float rounding
        averages.append(AverageCheck(ctx, before, after, regressed=after < before - tolerance - 1e-9))
    return Verdict(cells, averages, tolerance, alpha)
