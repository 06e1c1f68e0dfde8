"""``s2o-eval methods``: every registered method, whether it runs here, and its parameters."""

from __future__ import annotations

from rich.console import Console

from .tables import methods_table

COMMAND_KWARGS = {"help": "List attention methods, their availability here and their parameters."}


def command() -> None:
    Console().print(methods_table())
