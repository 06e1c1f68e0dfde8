"""The ``s2o-eval`` command: one module per command, assembled by ``commands``, with the options they share
(``options``), the tables they print (``tables``) and how every command ends (``exit_codes``).

``main`` takes Ctrl-C and SIGTERM over before anything else, then loads the command groups (torch and
lm-eval among their imports take seconds): a signal at any moment then ends in one line, never a traceback
(``run.interruption``)."""

from __future__ import annotations

import sys

from ..run import interruption


def main() -> None:
    interruption.install()
    try:
        try:
            from .commands import app
        except KeyboardInterrupt as stop:
            print(f"Interrupted: stopped by {interruption.describe(stop)} while starting; nothing was done",
                  file=sys.stderr)
            sys.exit(interruption.exit_code(stop))
        app(prog_name="s2o-eval")
    finally:
        interruption.shutting_down()


def __getattr__(name: str):
    # ``from s2o_eval.cli import app``: the command groups load on first use, not with this module
    if name in ("app", "COMMANDS"):
        from . import commands

        return getattr(commands, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
