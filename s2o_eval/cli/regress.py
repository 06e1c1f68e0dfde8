"""``s2o-eval regress``: gate a run against a baseline of per-sample scores (exit 0 pass, 1 regression,
2 not comparable, 4 a missing or corrupt baseline or a bad option), or write that baseline with ``--update``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..errors import CheckFailed, UserError
from ..outputs import check_output
from ..reporting import baseline_from_run, check_comparable, evaluate, load_baseline, load_runs, save_baseline
from ..reporting.regress import DEFAULT_ALPHA, DEFAULT_TOLERANCE
from .options import RunsDirOpt
from .tables import verdict_table

COMMAND_KWARGS = {
    "help": "Fail (exit 1) when a run's accuracy regressed against a stored baseline; exit 2 when the two "
            "cannot be compared, 4 when the baseline is missing or corrupt or an option is wrong. --update writes "
            "the baseline from the run instead.",
    "epilog": "Examples:\n\n"
              "  s2o-eval regress runs/nightly/s2o --against reports/baselines/nightly-gemma3-270m-h100.json\n\n"
              "  s2o-eval regress s2o --against reports/baselines/nightly-gemma3-270m-h100.json --tolerance 3\n\n"
              "  s2o-eval regress runs/nightly/s2o --against reports/baselines/nightly-gemma3-270m-h100.json --update",
}


def command(
    run: Annotated[str, typer.Argument(help="A run directory or a method name (its newest run under --runs-dir).",
                                       metavar="RUN", show_default=False)],
    against: Annotated[Path, typer.Option("--against", help="Baseline JSON of per-sample scores.",
                                          show_default=False)],
    tolerance: Annotated[float, typer.Option(help="Largest allowed drop of a suite average, in points (0-100).")]
    = DEFAULT_TOLERANCE,
    update: Annotated[bool, typer.Option("--update", help="Write the baseline from RUN instead of checking.")]
    = False,
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    if not tolerance >= 0:  # nan too; checked before any file is read: a usage error, not a verdict
        raise UserError(f"--tolerance {tolerance:g}: pass zero or more points (0-100)")
    if update:
        check_output(against, "--against", is_file=True)
    (loaded,) = load_runs([run], runs_dir)
    console = Console()
    if update:
        baseline = baseline_from_run(loaded)
        save_baseline(baseline, against)
        console.print(f"Wrote baseline {against}: {len(baseline['samples'])} samples of {loaded.label} "
                      f"({loaded.path})", highlight=False, markup=False, soft_wrap=True)
        return
    baseline = load_baseline(against)
    check_comparable(baseline, loaded)
    if baseline.get("method_resolved") not in (None, loaded.method):
        console.print(f"[yellow]Note:[/] the baseline was made with {baseline['method_resolved']}, "
                      f"this run used {loaded.method}", highlight=False)
    verdict = evaluate(baseline, loaded, tolerance=tolerance, alpha=DEFAULT_ALPHA)
    if verdict.passed:
        console.print(verdict_table(verdict, only_regressions=False))
        console.print(f"No regression against {against} (averages within {tolerance:g} points, no cell "
                      f"dropping at p < {DEFAULT_ALPHA:g}).", highlight=False, markup=False, soft_wrap=True)
        return
    console.print(verdict_table(verdict, only_regressions=True))
    count = len(verdict.regressions)
    raise CheckFailed(f"{count} regression{'s' if count > 1 else ''} against {against} (table above): find the "
                    "cause, or if the change is intended refresh the baseline with --update")
