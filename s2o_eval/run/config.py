"""A run's configuration (config.json) and the run directory it names: the same command finds the same
directory and resumes there; another configuration never reuses it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .. import __version__
from ..env import git_commit
from ..errors import UserError
from ..methods import AttentionMethod
from .decoding import resolve_decode
from .distributed import Place
from .request import RunRequest
from .rundir import RunDir, UnreadableRunFile, config_differences, config_hash, output_problem
from .suites import TaskRef


def build_config(request: RunRequest, loaded, method_name: str, method: AttentionMethod, refs: list[TaskRef],
                 use_template: bool) -> dict[str, Any]:
    return {
        "model": request.model,
        "model_name": loaded.name,
        "model_revision": loaded.revision,
        # only when scaled: runs without the flag keep the directories (config hashes) they always had
        **({"rope_scaling": loaded.rope_scaling} if loaded.rope_scaling else {}),
        # only when chunked, as rope_scaling; later_chunks: whether the chunks after the first ran the method
        # or dense attention (a method that takes no queries at an offset)
        **({"prefill_chunk": request.prefill_chunk, "later_chunks": "method" if method.takes_offset else "dense"}
           if request.prefill_chunk else {}),
        "method": method_name,
        "method_resolved": method.name,
        "method_args": method.params(),
        "tasks": [r.lm_eval_name for r in refs],
        "task_specs": list(request.tasks),
        "suite": request.suite,
        "ctx": list(request.ctx),
        "limit": request.limit,
        "sample_selection": "RULER: documents 0..limit-1 generated from the seed; datasets: a seeded sample of limit",
        "seed": request.seed,
        "chat_template": use_template,
        "batch_size": 1,
        # how the (dense) decode runs: compiled and eager kernels may round bf16 differently
        "decode": resolve_decode(request.decode, loaded.model.device),
        "dtype": str(loaded.model.dtype).replace("torch.", ""),
        # the device kind, not its index: every process of a data-parallel run computes the same config
        "device": loaded.model.device.type,
        "data_dir": request.data_dir,
        "allow_beyond_window": request.allow_beyond_window,
        "model_window": loaded.max_window,
        "tool_version": __version__,
        "git_commit": git_commit(),
    }


def run_dir_for(request: RunRequest, config: dict[str, Any], many: bool) -> RunDir:
    if request.out is not None:
        out = Path(request.out)
        if many:  # one directory per sweep value beneath --out
            out = out / f"{config['method_resolved']}-{config_hash(config)}"
        return RunDir(out)
    name = f"{config['model_name']}-{config['method_resolved']}-{config_hash(config)}"
    return RunDir(Path(request.runs_dir) / name.replace("/", "_"))


def check_output(request: RunRequest) -> None:
    """Refuse, before the model loads, an output place the run could not write: no work to lose."""
    problem = (output_problem(request.out, "--out") if request.out is not None
               else output_problem(request.runs_dir, "--runs-dir"))
    if problem:
        raise UserError(problem)


def check_same_config(run_dir: RunDir, config: dict[str, Any], place: Place) -> None:
    """A run directory holds one configuration: refuse another, naming the fields that differ. A
    damaged config.json is judged by the copy in summary.json, and rewritten from this command."""
    old = run_dir.recorded_config()
    if old is not None and config_hash(old) != config_hash(config):
        differences = config_differences(old, config)
        shown = "; ".join(differences[:3]) + ("; ..." if len(differences) > 3 else "")
        raise UserError(f"{run_dir.path} holds a run with another configuration ({shown}): pass another --out, "
                        "or the options of that run to resume it")
    if place.is_main and run_dir.exists():
        try:
            run_dir.config()
        except UnreadableRunFile:
            print(f"Note: {run_dir.config_path} was unreadable: rewritten from this command", file=sys.stderr)
