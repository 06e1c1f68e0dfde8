"""``s2o-eval tasks``: every task of the three suites, where its data comes from, and whether it is here."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

from .options import DataDirOpt
from .tables import tasks_tables

COMMAND_KWARGS = {"help": "List the tasks of RULER, LongBench-v2 and InfiniteBench and whether their data is available."}


def command(data_dir: DataDirOpt = None,
            suite: Annotated[Optional[str], typer.Argument(help="only this suite")] = None) -> None:
    console = Console()
    tables, notes = tasks_tables(data_dir, suite)
    for table in tables:
        console.print(table)
    for note in notes:  # whole, never wrapped by rich: the URLs and paths in them are to be copied
        console.print(note, soft_wrap=True, markup=False, highlight=False)
