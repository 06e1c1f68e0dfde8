"""The ``s2o-eval`` command: this module only assembles the command groups, one module each."""

from __future__ import annotations

import importlib
import os
import sys

import typer
from typer.core import TyperGroup

from ..errors import UserError

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


class _ErrorMappingGroup(TyperGroup):
    """Turns a UserError into ``Error: <what to do>`` on stderr; S2O_EVAL_DEBUG=1 shows the traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as err:
            if os.environ.get("S2O_EVAL_DEBUG"):
                raise
            typer.echo(f"Error: {err}", err=True)
            raise typer.Exit(code=getattr(err, "exit_code", 1)) from None


app = typer.Typer(
    cls=_ErrorMappingGroup,
    help="Measure what a sparse prefill attention kernel costs in accuracy and buys in speed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module_name, command_name in COMMANDS:
    module = importlib.import_module(f"{__name__}.{module_name}")
    app.command(command_name, **getattr(module, "COMMAND_KWARGS", {}))(module.command)


def main() -> None:
    app(prog_name="s2o-eval")


if __name__ == "__main__":
    sys.exit(main())
