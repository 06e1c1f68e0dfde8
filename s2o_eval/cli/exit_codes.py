"""The one error mapper: how every command ends, with the codes of ``errors.ExitCode``."""

from __future__ import annotations

import contextlib
import os
import traceback

import typer
from typer.core import TyperGroup

from ..errors import CommandFailed, ExitCode
from ..run import distributed, interruption


@contextlib.contextmanager
def _interruptions_end_in_one_line():
    """Ctrl-C or SIGTERM outside a run's samples (which say what they kept: ``run.evaluate``): one calm line
    from the main process, and the signal's exit code (typer would give 130 to SIGTERM too, silently)."""
    try:
        yield
    except KeyboardInterrupt as stop:
        if distributed.place_from_env().is_main:
            typer.echo(f"Interrupted: stopped by {interruption.describe(stop)}; rerun the same command to go on",
                       err=True)
        raise typer.Exit(code=interruption.exit_code(stop)) from None


@contextlib.contextmanager
def _usage_errors_exit_4():
    """Typer (its click) ends a usage error (unknown option, bad value, no command) with 2, which means
    "not comparable" here: give it the usage code instead, and let typer print it as usual."""
    try:
        yield
    except typer.TyperException as err:  # the base of click's usage errors as typer ships them
        err.exit_code = ExitCode.USAGE
        raise


class ExitCodeGroup(TyperGroup):
    """Ends every command with one of the codes of ``errors.ExitCode``: a CommandFailed prints its one
    line (``Error: <what to do>``) on stderr; Ctrl-C and SIGTERM print ``Interrupted: ...``; anything
    unexpected prints its traceback and exits 5. S2O_EVAL_DEBUG=1 lets every exception through with its
    traceback."""

    def main(self, *args, **kwargs):
        try:
            return super().main(*args, **kwargs)
        except SystemExit as done:  # every command ends here, with its code
            distributed.record_exit_code(done.code or 0)
            raise

    def make_context(self, *args, **kwargs):
        with _interruptions_end_in_one_line(), _usage_errors_exit_4():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        try:
            with _interruptions_end_in_one_line(), _usage_errors_exit_4():
                return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own endings, printed by typer
        except CommandFailed as err:
            if os.environ.get("S2O_EVAL_DEBUG"):
                raise
            typer.echo(f"{err.label}: {err}", err=True)
            raise typer.Exit(code=err.exit_code) from None
        except Exception:
            if os.environ.get("S2O_EVAL_DEBUG"):
                raise
            traceback.print_exc()
            typer.echo("Error: an unexpected error (traceback above), most likely a bug in s2o-eval: please "
                       "report it with the command you ran", err=True)
            raise typer.Exit(code=ExitCode.INTERNAL) from None
