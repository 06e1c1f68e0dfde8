"""``s2o-eval scale``: the same run made with --gpus 1 and --gpus N: identical results, wall-clock speedup."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..errors import ExitCode
from ..formatting import fmt_ratio
from ..outputs import check_output
from ..reporting.scale import scale_report

COMMAND_KWARGS = {
    "help": "Check a data-parallel run against the same run with fewer processes: per-sample scores must be "
            "identical (exit 1 if not); lists samples whose generated text differs; reports the wall-clock speedup (report.md and scale.json in --out).",
    "epilog": "Example:\n\n"
              "  s2o-eval run --task ruler --ctx 4k,8k --limit 10 --method fa2 --out runs/scale-1 --gpus 1\n\n"
              "  s2o-eval run --task ruler --ctx 4k,8k --limit 10 --method fa2 --out runs/scale-2 --gpus 2\n\n"
              "  s2o-eval scale runs/scale-1 runs/scale-2 --out reports/scale/ruler-h200x2",
}


def command(
    runs: Annotated[list[Path], typer.Argument(help="run directories of one configuration, any process counts",
                                               show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="report directory")] = Path("reports/scale/latest"),
) -> None:
    check_output(out, "--out")
    result = scale_report(runs, out)
    console = Console()
    for row in result["runs"]:
        same = ("identical" if row["identical_to_base"] else
                f"{row['n_differences']} samples differ" + (" (scores equal)" if row["same_scores"] else ""))
        console.print(f"{row['processes']} process(es): {row['samples']} samples, eval {row['eval_s']:.1f} s, "
                      f"wall {row['wall_s']:.1f} s, speedup {fmt_ratio(row['speedup_wall'])}; {same}", highlight=False)
    console.print(f"Report: {result['report']}", highlight=False, markup=False, soft_wrap=True)
    if not all(row["same_scores"] for row in result["runs"]):
        raise typer.Exit(ExitCode.CHECK_FAILED)
