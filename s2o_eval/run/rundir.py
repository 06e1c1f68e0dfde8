"""A run is a directory of data; this module is the only code that reads or writes one.

    <run>/config.json     what was asked (model, method, args, tasks, ctx, samples, seed, ...)
    <run>/env.json        where it ran (GPU, driver, CUDA, library versions, host)
    <run>/samples.jsonl   one line per finished sample, appended as it finishes: the source of truth
                          (a chunked prefill adds prefill_chunk_ms and chunk_density: one per chunk)
    <run>/samples.rank<r>.jsonl  what process r of a data-parallel run appended; merged into
                          samples.jsonl (and removed) when the run ends
    <run>/summary.json    {"config", "env", "results": [...]} recomputed from samples.jsonl
    <run>/sessions.jsonl  one line per command that worked on the run: when, how many processes,
                          samples evaluated, seconds spent loading and evaluating (reports/scale/)
    <run>/run.lock        present while a command works on the run (``lock``)

Reports and comparisons read these files only, so runs made elsewhere compare the same way.
A process killed at any moment leaves files that the next command reads: JSON files are replaced
atomically, a torn line of a JSONL file is skipped (``jsonl``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .. import outputs
from ..errors import UserError
from ..reading import AnyOf, InputFile, UnreadableFile
from . import lock
from .jsonl import append_line

SAMPLE_FIELDS = ("task", "ctx", "index", "prompt_tokens", "prompt_sha", "prediction", "golds",
                 "score", "prefill_ms", "density", "peak_mem_mb", "prefill_chunk_ms", "chunk_density", "group")

# config keys that do not change what a run computes, so they do not change its directory
_NOT_HASHED = ("tool_version", "git_commit")


def config_hash(config: dict[str, Any]) -> str:
    """Short stable hash of what a run computes; the same command finds the same directory."""
    hashed = {k: v for k, v in config.items() if k not in _NOT_HASHED}
    text = json.dumps(hashed, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# What a line of samples.jsonl must hold to count as a finished sample (``reading.shape_problem``); any
# other line (torn, garbage that happens to parse, a NaN score) is redone. Reports add up every number.
_NUMBER_OR_NULL = AnyOf((None, float))
SAMPLE_SHAPE = {"task": str, "ctx": int, "index": int, "score": float, "prompt_tokens?": AnyOf((None, int)),
                "prefill_ms?": _NUMBER_OR_NULL, "density?": _NUMBER_OR_NULL, "peak_mem_mb?": _NUMBER_OR_NULL,
                # chunked prefill (--prefill-chunk) only: per chunk, in order
                "prefill_chunk_ms?": AnyOf((None, [float])), "chunk_density?": AnyOf((None, [_NUMBER_OR_NULL])),
                "group?": AnyOf((None, str, [str]))}
# A config.json that lacks these is damaged (cut down to {} or another object), not another run's
CONFIG_SHAPE = {"model": object, "method": str, "method_resolved?": AnyOf((None, str)), "method_args?": dict,
                "tasks?": [str], "ctx?": [int], "rope_scaling?": AnyOf((None, {"factor": float})),
                "prefill_chunk?": AnyOf((None, int)), "later_chunks?": AnyOf((None, str))}
SUMMARY_SHAPE = {"config": CONFIG_SHAPE, "results": [dict]}
SESSION_SHAPE = {"processes": int, "evaluated": int, "load_s": float, "eval_s": float,
                 "build_s?": _NUMBER_OR_NULL, "warmup_s?": _NUMBER_OR_NULL}


def sample_key(record: dict[str, Any]) -> tuple[str, int, int]:
    return (record["task"], int(record["ctx"]), int(record["index"]))


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``["limit: 3 there, 4 asked"]``: the fields that make two configs compute different runs."""
    keys = sorted((set(old) | set(new)) - set(_NOT_HASHED))
    return [f"{k}: {old.get(k)!r} there, {new.get(k)!r} asked" for k in keys if old.get(k) != new.get(k)]


class UnreadableRunFile(UnreadableFile):
    """A run directory's JSON file that does not parse (cut short, or overwritten with garbage) or is
    not what the tool wrote there."""


def output_problem(path: Path, what: str) -> str | None:
    """Why a run directory could not be made or written at ``path`` (``what`` names it in the message:
    "--out"), or None when it can. Checked before any work, so that nothing is computed that could
    not be kept."""
    samples = Path(path) / "samples.jsonl"
    if samples.exists() and not (samples.is_file() and os.access(samples, os.W_OK)):
        return f"{samples} cannot be written: make it a writable file again, or pass another {what}"
    return outputs.output_problem(path, what)


def _read_json_object(path: Path, shape: Any) -> dict[str, Any]:
    source = InputFile(path, "rerun the `s2o-eval run` command that made the run, which rewrites it",
                       UnreadableRunFile)
    return source.read_json(shape, f"what `s2o-eval run` writes as {path.name}")


def _run_file(path: Path) -> InputFile:
    """A JSON-lines file of the run, read line by line: what a killed process tore is skipped."""
    return InputFile(path, "make it a readable file again (it holds the run's finished work)")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
    os.replace(tmp, path)  # atomic: an interrupted write never leaves half a file


@dataclass
class RunDir:
    path: Path
    shard: int | None = None  # the data-parallel rank whose shard this process appends to

    def __post_init__(self):
        self.path = Path(self.path)

    # -- files -----------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def env_path(self) -> Path:
        return self.path / "env.json"

    @property
    def samples_path(self) -> Path:
        return self.path / "samples.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def append_path(self) -> Path:
        """Where this process appends: its own shard in a data-parallel run, else samples.jsonl."""
        return self.samples_path if self.shard is None else self.path / f"samples.rank{self.shard}.jsonl"

    @property
    def sessions_path(self) -> Path:
        return self.path / "sessions.jsonl"

    @property
    def lock_path(self) -> Path:
        return self.path / "run.lock"

    def shard_paths(self) -> list[Path]:
        return sorted(self.path.glob("samples.rank*.jsonl"))

    def exists(self) -> bool:
        return self.config_path.exists()

    def config(self) -> dict[str, Any]:
        """config.json; UnreadableRunFile when it does not parse or is not a run's config."""
        return _read_json_object(self.config_path, CONFIG_SHAPE)

    def recorded_config(self) -> dict[str, Any] | None:
        """config.json, or when it is missing or damaged the copy inside summary.json; None when
        neither can be read."""
        for read in (self.config, lambda: self.summary()["config"]):
            try:
                return read()
            except UnreadableRunFile:  # missing, or damaged
                continue
        return None

    def env(self) -> dict[str, Any]:
        """env.json ({} when there is none); UnreadableRunFile when it does not parse."""
        return _read_json_object(self.env_path, dict) if self.env_path.exists() else {}

    def summary(self) -> dict[str, Any]:
        """summary.json; UnreadableRunFile when it does not parse or is not a run's summary."""
        return _read_json_object(self.summary_path, SUMMARY_SHAPE)

    def hold(self):
        """A context manager: this process alone works on the run until it exits (``lock``)."""
        return lock.hold(self.lock_path)

    def check_writable(self) -> None:
        """UserError now, not after the first sample's work, when this run's samples cannot be written."""
        if problem := output_problem(self.path, "run directory"):
            raise UserError(problem)

    def write_config(self, config: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _write_json(self.config_path, config)

    def write_env(self, env: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _write_json(self.env_path, env)

    # -- samples ---------------------------------------------------------------------------------
    def append_sample(self, record: dict[str, Any]) -> None:
        """Append one finished sample and flush it to disk before the next one starts."""
        missing = [f for f in ("task", "ctx", "index", "score") if f not in record]
        if missing:
            raise ValueError(f"sample record lacks {missing}")
        append_line(self.append_path, {f: record.get(f) for f in SAMPLE_FIELDS if f in record} | record)

    def samples(self) -> list[dict[str, Any]]:
        """Finished samples of samples.jsonl and of any rank shards not merged yet; a line that is not a
        whole record (a torn write, garbage) is skipped; the newest record of a (task, ctx, index) wins."""
        latest: dict[tuple, dict] = {}
        for path in [self.samples_path, *self.shard_paths()]:  # shards are newer than the merged file
            if path.exists():
                latest.update((sample_key(r), r) for r in _run_file(path).objects(SAMPLE_SHAPE))
        return list(latest.values())

    def merge_shards(self) -> None:
        """Fold the rank shards into samples.jsonl (atomically), then remove them; no-op without shards.

        Called by one process after every process finished appending."""
        shards = self.shard_paths()
        if not shards:
            return
        # a stable order, whatever the number of processes was: by (ctx, task, index)
        records = sorted(self.samples(), key=lambda r: (int(r["ctx"]), r["task"], int(r["index"])))
        tmp = self.samples_path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as fh:
            for record in records:
                fh.write(json.dumps(record, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.samples_path)
        for path in shards:
            path.unlink()

    def done_keys(self) -> set[tuple[str, int, int]]:
        return {sample_key(r) for r in self.samples()}

    # -- sessions --------------------------------------------------------------------------------
    def append_session(self, session: dict[str, Any]) -> None:
        """Record one command's work on this run (written by one process, after the merge)."""
        self.path.mkdir(parents=True, exist_ok=True)
        append_line(self.sessions_path, session)

    def sessions(self) -> list[dict[str, Any]]:
        """The recorded sessions, oldest first; a line that does not parse (a torn write) is skipped."""
        return list(_run_file(self.sessions_path).objects(SESSION_SHAPE)) if self.sessions_path.exists() else []

    # -- summary ---------------------------------------------------------------------------------
    def write_summary(self) -> dict[str, Any]:
        config = self.config()
        summary = {"config": config, "env": self.env(),
                   "results": summarize(self.samples(), method=config.get("method_resolved"))}
        _write_json(self.summary_path, summary)
        return summary


def _percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), without numpy."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are not None; None when there are none."""
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def summarize(samples: list[dict[str, Any]], method: str | None = None) -> list[dict[str, Any]]:
    """One result row per (task, ctx), plus one per (task, ctx, group label) where samples have groups.

    Scores are 0-100 means over samples; prefill statistics are in milliseconds. Cells of a chunked
    prefill add the mean number of chunks and the mean time of the first and of the last chunk (the one
    that attends to the most cache).
    """
    cells: dict[tuple, list[dict]] = {}
    for record in samples:
        cells.setdefault((record["task"], int(record["ctx"]), None), []).append(record)
        groups = record.get("group") or []
        for label in [groups] if isinstance(groups, str) else groups:
            cells.setdefault((record["task"], int(record["ctx"]), label), []).append(record)
    results = []
    for (task, ctx, group), records in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
        prefill = [r["prefill_ms"] for r in records if r.get("prefill_ms") is not None]
        row = {
            "task": task,
            "ctx": ctx,
            "method": method,
            "n": len(records),
            "score": mean_or_none(r["score"] for r in records),
            "prefill_ms_mean": mean_or_none(prefill),
            "prefill_ms_p50": _percentile(prefill, 0.5),
            "prefill_ms_p90": _percentile(prefill, 0.9),
            "density_mean": mean_or_none(r.get("density") for r in records),
        }
        chunked = [r["prefill_chunk_ms"] for r in records if r.get("prefill_chunk_ms")]
        if chunked:
            row["chunks_mean"] = mean_or_none(len(c) for c in chunked)
            row["first_chunk_ms_mean"] = mean_or_none(c[0] for c in chunked)
            row["last_chunk_ms_mean"] = mean_or_none(c[-1] for c in chunked)
        if group is not None:
            row["group"] = group
        results.append(row)
    return results
