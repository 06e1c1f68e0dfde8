"""The ``s2o-eval`` command groups, assembled: one module each, one line here to add one."""

from __future__ import annotations

import importlib
import os

import typer

from ..errors import EXIT_CODES_HELP
from .exit_codes import ExitCodeGroup

# lm-eval and transformers draw a tqdm bar per request; the harness shows one rich bar instead
os.environ.setdefault("TQDM_DISABLE", "1")

# (module in s2o_eval.cli, command name): adding a command is one module and one line here
COMMANDS = [
    ("run", "run"),
    ("methods", "methods"),
    ("tasks", "tasks"),
    ("compare", "compare"),
    ("report", "report"),
    ("regress", "regress"),
    ("bench", "bench"),
    ("capture", "capture"),
    ("scale", "scale"),
]


app = typer.Typer(
    cls=ExitCodeGroup,
    help="Measure what a sparse prefill attention kernel costs in accuracy and buys in speed.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module_name, command_name in COMMANDS:
    module = importlib.import_module(f"{__package__}.{module_name}")
    app.command(command_name, **getattr(module, "COMMAND_KWARGS", {}))(module.command)
