"""``s2o-eval methods``: every registered method, whether it runs here, and its parameters."""

from __future__ import annotations

import dataclasses

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..methods import METHODS, resolve_dense

COMMAND_KWARGS = {"help": "List attention methods, their availability here and their parameters."}


def command() -> None:
    table = Table(title=f"attention methods (dense = {resolve_dense()} here)")
    for col in ("method", "available", "parameters (defaults)", "what"):
        table.add_column(col)
    for name, cls in METHODS.items():
        method = cls()
        reason = method.unavailable_reason()
        params = ", ".join(f"{f.name}={getattr(method, f.name)}" for f in dataclasses.fields(cls)) or "-"
        note = getattr(method, "fallback_note", lambda: None)()
        if reason is not None:
            available = f"[red]no[/]: {escape(reason)}"
        else:
            available = "[green]yes[/]" + (" (PyTorch reference here: correct, slow)" if note else "")
        table.add_row(name, available, escape(params), escape(cls.summary))
    Console().print(table)
