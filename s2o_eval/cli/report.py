"""``s2o-eval report``: one stored run -> reports/<name>/report.md with plots (no deltas)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..outputs import check_output
from ..reporting import load_runs, write_report
from .options import ReportNameOpt, ReportOutOpt, RunsDirOpt
from .tables import prefill_table, suite_averages_table

COMMAND_KWARGS = {
    "help": "Render one stored run: scores by task and length, prefill time, density, environment, plots.",
    "epilog": "Examples:\n\n"
              "  s2o-eval report s2o\n\n"
              "  s2o-eval report runs/gemma-s2o-4d5e6f --out reports/s2o-gemma-16k",
}


def command(
    run: Annotated[str, typer.Argument(help="A run directory or a method name (its newest run under --runs-dir).",
                                       metavar="RUN", show_default=False)],
    out: ReportOutOpt = None,
    name: ReportNameOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    (loaded,) = load_runs([run], runs_dir)
    out = out or Path("reports") / (name or loaded.path.name)
    check_output(out, "--out")
    report, content = write_report([loaded], out, title=f"Run report: {loaded.label} ({loaded.path.name})")
    console = Console()
    console.print(suite_averages_table(content))
    if content.prefill:
        console.print(prefill_table(content))
    console.print(f"Report: {report}", highlight=False, markup=False, soft_wrap=True)
