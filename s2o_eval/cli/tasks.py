"""``s2o-eval tasks``: every task of the three suites, where its data comes from, and whether it is here."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..suites import SUITES
from .options import DataDirOpt

COMMAND_KWARGS = {"help": "List the tasks of RULER, LongBench-v2 and InfiniteBench and whether their data is available."}


def command(data_dir: DataDirOpt = None,
            suite: Annotated[Optional[str], typer.Argument(help="only this suite")] = None) -> None:
    table = Table(title="tasks (run with --task SUITE or SUITE:TASK,TASK)")
    for col in ("suite", "task", "lm-eval name", "data"):
        table.add_column(col)
    for suite_obj in SUITES.values():
        if suite and suite_obj.cli_name != suite:
            continue
        for short in suite_obj.short_names():
            status = suite_obj.data_status(short, data_dir)
            table.add_row(suite_obj.cli_name, short, suite_obj.lm_eval_name(short),
                          "[green]ready[/]" if status is None else f"[yellow]missing[/]: {escape(status)}")
    Console().print(table)
