"""One small finished run of the tiny model (3 RULER vt samples at 1K, sdpa), made once per session by
the ``finished_run`` fixture; the tests that damage, interrupt, lock or resume a run directory work on
copies of it, through the same command that made it."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from s2o_eval.cli import app
from s2o_eval.run.rundir import RunDir

ARGS = ["--task", "ruler:vt", "--ctx", "1k", "--limit", "3", "--method", "sdpa", "-q"]
SAMPLES = 3

# what depends on the clock or the machine, not on what was computed
TIMING = ("prefill_ms", "peak_mem_mb")
SUMMARY_TIMING = ("prefill_ms_mean", "prefill_ms_p50", "prefill_ms_p90")


def run(model: Path, out: Path, *extra: str):
    """``s2o-eval run`` of the finished run's command into ``out`` (``extra`` appended: later options win)."""
    return CliRunner().invoke(app, ["run", "--model", str(model), *ARGS, "--out", str(out), *extra])


def copy(run_dir: RunDir, dest: Path) -> RunDir:
    return RunDir(shutil.copytree(run_dir.path, dest))


def results_without_timing(run_dir: RunDir) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in SUMMARY_TIMING} for row in run_dir.summary()["results"]]


def error_lines(output: str, label: str = "Error") -> list[str]:
    return [line for line in output.splitlines() if line.startswith(f"{label}:")]
