"""``s2o-eval compare``: two or more stored runs -> reports/<name>/report.md with plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import UserError
from ..outputs import check_output
from ..reporting import load_runs, write_report
from .options import ReportNameOpt, ReportOutOpt, RunsDirOpt
from .tables import chunk_table, prefill_table, suite_averages_table

COMMAND_KWARGS = {
    "help": "Compare stored runs (the first is the baseline): scores, deltas, prefill speedup, density, plots.",
    "epilog": "Examples:\n\n"
              "  s2o-eval compare dense s2o\n\n"
              "  s2o-eval compare runs/gemma-fa3-1a2b3c runs/gemma-s2o-4d5e6f --name s2o-tau0.01\n\n"
              "  s2o-eval compare fa3 s2o flexprefill --out reports/peers-16k\n\n"
              "  s2o-eval compare runs/gemma-s2o-1a2b3c runs/gemma-s2o-7e8f9a   # whole vs --prefill-chunk 8k",
}


def command(
    runs: Annotated[list[str], typer.Argument(help="Run directories or method names (newest run of that "
                                                   "method under --runs-dir); the first is the baseline.",
                                              metavar="RUN...", show_default=False)],
    out: ReportOutOpt = None,
    name: ReportNameOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    if len(runs) < 2:
        raise UserError("compare needs at least two runs: for a single run use `s2o-eval report RUN`")
    loaded = load_runs(runs, runs_dir)
    labels = [r.label for r in loaded]
    name = name or "-vs-".join(labels)
    out = out or Path("reports") / name
    check_output(out, "--out")
    report, content = write_report(loaded, out, title=f"Comparison: {' vs '.join(labels)}")
    console = Console()
    for warning in content.warnings:
        console.print(f"[yellow]Warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    console.print(suite_averages_table(content))
    if content.prefill:
        console.print(prefill_table(content))
    if content.chunks:
        console.print(chunk_table(content))
    console.print(f"Report: {report}", highlight=False, markup=False, soft_wrap=True)
