"""Runs as reports see them: found by directory or by method name, loaded through ``RunDir``, labelled,
and restricted to the samples every compared run has (so no number mixes different prompts).

Reports never write a run directory. What they cannot read there is said in one warning line each
(``warn``): a run under ``--runs-dir`` with an unreadable config.json is passed over, an unreadable
summary.json is rebuilt from samples.jsonl (the source of truth)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from ..errors import NotComparable, UserError, print_warning
from ..formatting import ctx_label
from ..models.rope_scaling import label as rope_label
from ..run.rundir import RunDir, UnreadableRunFile, sample_key, summarize

Warn = Callable[[str], None]


def dense_methods() -> frozenset[str]:
    """Dense methods by name, from the methods registry. Asked only where a report needs to know, since the
    registry imports torch: reading runs needs none."""
    from ..methods import dense_method_names

    return dense_method_names()


@dataclass
class LoadedRun:
    """One run directory's files, read once. ``label`` names the run in tables, plots and file names."""

    label: str
    path: Path
    config: dict[str, Any]
    env: dict[str, Any]
    samples: list[dict[str, Any]]
    summary: dict[str, Any] | None = None  # summary.json as stored, when there is one

    @property
    def method(self) -> str:
        """The method that actually ran (the resolved one, e.g. ``fa3`` for a requested ``dense``)."""
        return str(self.config.get("method_resolved") or self.config.get("method") or "?")

    @property
    def model(self) -> Any:
        return self.config.get("model")

    @property
    def rope_scaling(self) -> dict[str, Any] | None:
        """What ``--rope-scaling`` changed in the run (config.json), None when the model's own RoPE ran."""
        return self.config.get("rope_scaling") or None

    @property
    def prefill_chunk(self) -> int | None:
        """Tokens per prefill chunk (``--prefill-chunk``), None when each prompt went whole."""
        return self.config.get("prefill_chunk") or None

    @property
    def sparse(self) -> bool:
        """Whether the run recorded a density: only sparse methods do."""
        return any(r.get("density") is not None for r in self.samples)


def _newest_samples_mtime(run: RunDir) -> float:
    return run.samples_path.stat().st_mtime


def _candidate_runs(runs_dir: Path, warn: Warn) -> list[tuple[RunDir, dict[str, Any]]]:
    """(run, its config) of every run directory under ``runs_dir``; one whose config.json does not
    parse is passed over with a warning, so that it cannot stop the comparison of the others."""
    if not runs_dir.is_dir():
        return []
    found = []
    for child in sorted(runs_dir.iterdir()):
        run = RunDir(child)
        if child.is_dir() and run.exists() and run.samples_path.exists():
            try:
                found.append((run, run.config()))
            except UnreadableRunFile:
                warn(f"skipped {child}: its config.json is unreadable")
    return found


def resolve_run(arg: str, runs_dir: Path, warn: Warn = print_warning) -> Path:
    """A run directory from a path, or from a method name: the newest run (latest samples.jsonl) under
    ``runs_dir`` whose requested or resolved method is that name. ``dense`` prefers runs that asked for
    ``dense``, then takes the newest run of any dense method."""
    as_path = Path(arg)
    if as_path.is_dir():
        if not RunDir(as_path).exists():
            raise UserError(f"{arg} has no config.json: pass a run directory made by `s2o-eval run`")
        return as_path
    runs = _candidate_runs(runs_dir, warn)
    matches = [run for run, config in runs if arg in (config.get("method"), config.get("method_resolved"))]
    if arg == "dense":
        requested_dense = [run for run, config in runs if config.get("method") == "dense"]
        dense = dense_methods()
        matches = requested_dense or [run for run, config in runs if config.get("method_resolved") in dense]
    if not matches:
        raise UserError(f"'{arg}' is neither a run directory nor a method with a finished run under "
                        f"{runs_dir}/: run `s2o-eval run --method {arg} ...` first, or pass a run directory")
    return max(matches, key=_newest_samples_mtime).path


def safe_label(text: str) -> str:
    """A label usable as a file name (``<label>.summary.json``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def base_label(run: LoadedRun) -> str:
    """The method's name, with the RoPE scaling when the run had one (``fa2-linear4``) and the prefill
    chunk when it prefilled in chunks (``s2o-chunk8k``): runs of one method at several factors or chunk
    sizes are told apart in every table and plot."""
    tags = [rope_label(run.rope_scaling), f"chunk{ctx_label(run.prefill_chunk).lower()}" if run.prefill_chunk else ""]
    return safe_label("-".join([run.method, *filter(None, tags)]))


def _distinguishing_args(run: LoadedRun, runs: list[LoadedRun]) -> str:
    """``tau0.01`` for an s2o run among s2o runs that differ only in tau (empty when args do not tell)."""
    peers = [r.config.get("method_args") or {} for r in runs if base_label(r) == base_label(run)]
    mine = run.config.get("method_args") or {}
    keys = sorted({k for p in peers for k in p if len({repr(q.get(k)) for q in peers}) > 1})
    if not keys or sum(1 for p in peers if all(p.get(k) == mine.get(k) for k in keys)) > 1:
        return ""
    return "-".join(f"{k}{mine.get(k)}" for k in keys)


def _read_run(path: Path, warn: Warn) -> LoadedRun:
    rundir = RunDir(path)
    samples = rundir.samples()
    if not samples:
        raise UserError(f"{path} has no finished samples yet: let `s2o-eval run` finish some first")
    summary = env = None
    try:
        env = rundir.env()
    except UnreadableRunFile:
        warn(f"{rundir.env_path} is unreadable: the run's environment is left out")
    if rundir.summary_path.exists():
        try:
            summary = rundir.summary()
        except UnreadableRunFile:
            warn(f"{rundir.summary_path} is unreadable: rebuilt from samples.jsonl (the source of truth)")
    return LoadedRun(label="", path=path, config=rundir.config(), env=env or {}, samples=samples, summary=summary)


def load_runs(args: list[str], runs_dir: Path, warn: Warn = print_warning) -> list[LoadedRun]:
    """Resolve and read each argument; labels are method names (with ``-linearF`` for a scaled RoPE),
    made unique by the parameters that differ (``s2o-tau0.01``) or else the directory name, when two
    runs share a label."""
    said: set[str] = set()

    def warn_once(line: str) -> None:  # each argument looks through --runs-dir: one line per problem
        if line not in said:
            said.add(line)
            warn(line)

    runs = [_read_run(resolve_run(a, runs_dir, warn_once), warn_once) for a in args]
    labels = [base_label(r) for r in runs]
    for i, run in enumerate(runs):
        label = labels[i]
        if labels.count(label) > 1:
            label = safe_label(f"{label}-{_distinguishing_args(run, runs) or run.path.name}")
        while label in (r.label for r in runs[:i]):
            label = f"{label}-{i + 1}"
        run.label = label
    return runs


def _tasks(run: LoadedRun) -> set[str]:
    return {r["task"] for r in run.samples}


def restrict_to_common(runs: list[LoadedRun]) -> tuple[list[LoadedRun], list[str]]:
    """Copies of ``runs`` holding only the (task, ctx, index) samples all of them share, and one warning
    line for each way their sample sets differ (tasks, samples). NotComparable when the runs used
    different models, share no sample, or gave a shared sample different prompts (another seed, chat
    template or tokenizer): their scores would not measure one method against another."""
    warnings: list[str] = []
    if len(runs) < 2:
        return runs, warnings
    if len({str(r.model) for r in runs}) > 1:
        raise NotComparable("the runs used different models (" + ", ".join(f"{r.label}: {r.model}" for r in runs)
                            + "): compare runs of one model")
    task_sets = [_tasks(r) for r in runs]
    if any(t != task_sets[0] for t in task_sets):
        warnings.append("the runs cover different tasks: " +
                        "; ".join(f"{r.label}: {', '.join(sorted(t))}" for r, t in zip(runs, task_sets)))
    by_key = [{sample_key(s): s for s in r.samples} for r in runs]
    common = set.intersection(*(set(samples) for samples in by_key))
    if not common:
        raise NotComparable("the runs share no (task, ctx, sample) key: compare runs of the same tasks, "
                            "lengths and samples")
    for key in sorted(common):
        if len({samples[key].get("prompt_sha") for samples in by_key} - {None}) > 1:
            task, ctx, index = key
            raise NotComparable(f"the runs gave {task} at {ctx} #{index} different prompts (another seed, chat "
                                "template or tokenizer): compare runs of the same samples")
    if any(samples.keys() != common for samples in by_key):
        warnings.append(f"the runs hold different samples: only the {len(common)} samples common to all "
                        "are compared (" +
                        ", ".join(f"{r.label} has {len(k)}" for r, k in zip(runs, by_key)) + ")")
    restricted = [replace(r, samples=[s for s in r.samples if sample_key(s) in common]) for r in runs]
    return restricted, warnings


def summary_to_copy(run: LoadedRun) -> dict[str, Any]:
    """The run's stored summary.json; when the run has none yet (or an unreadable one), the same shape
    computed from its samples (the run directory itself is never written by reports)."""
    if run.summary is not None:
        return run.summary
    return {"config": run.config, "env": run.env,
            "results": summarize(run.samples, method=run.config.get("method_resolved"))}
