"""How a command ends when it cannot simply succeed: one exit code per meaning, the same in every
command, and an exception per code that carries the one line the CLI prints.

    0    done
    1    a check failed: regress found a regression, scale found different scores
    2    not comparable: the runs (or the run and the baseline) differ in model, tasks, lengths or samples
    3    nothing evaluated: every task of the run was skipped (the lines above say why); bench: no
         method measured
    4    usage error or bad input: a bad option value, a missing or corrupt input file, a method that
         cannot run here, a run directory in use; the message says what to do
    5    internal error: a bug (the traceback is printed)
    130  interrupted (Ctrl-C); a run keeps its finished samples and the same command resumes
    143  terminated (SIGTERM, as batch schedulers and containers send): as 130
"""

import sys
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    CHECK_FAILED = 1
    NOT_COMPARABLE = 2
    NOTHING_EVALUATED = 3
    USAGE = 4
    INTERNAL = 5
    INTERRUPTED = 130  # 128 + SIGINT
    TERMINATED = 143  # 128 + SIGTERM


#: the table above as one paragraph, the epilog of ``s2o-eval --help`` (tests hold the README's table to it)
EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 check failed (regress: a regression; scale: scores differ); "
    "2 not comparable (regress, compare); 3 nothing evaluated (run: every task skipped; bench: no method "
    "measured); 4 usage error or bad input (the message says what to do); 5 internal error (a bug); "
    "130 interrupted by Ctrl-C, 143 by SIGTERM (a run resumes where it stopped)."
)


class CommandFailed(Exception):
    """A command that ends with ``<label>: <message>`` on stderr and ``exit_code``, never a traceback."""

    exit_code = ExitCode.USAGE
    label = "Error"


class UserError(CommandFailed):
    """A mistake or a missing piece on the user's side, with the fix in its message (exit 4)."""


class NotComparable(UserError):
    """Two runs that cannot be compared (different model, tasks, ctx or samples): exit 2."""

    exit_code = ExitCode.NOT_COMPARABLE


class CheckFailed(CommandFailed):
    """A check that ran and found a problem (a regression): exit 1."""

    exit_code = ExitCode.CHECK_FAILED


class NothingEvaluated(CommandFailed):
    """A run that evaluated nothing: every task was skipped (exit 3)."""

    exit_code = ExitCode.NOTHING_EVALUATED


class Interrupted(CommandFailed):
    """Ctrl-C or SIGTERM: what was kept and how to go on (exit 130, or 143 for SIGTERM)."""

    label = "Interrupted"

    def __init__(self, message: str, exit_code: int = ExitCode.INTERRUPTED):
        super().__init__(message)
        self.exit_code = exit_code


def print_warning(line: str) -> None:
    """One line on stderr about something left out or looked past, while the command goes on."""
    print(f"Warning: {line}", file=sys.stderr)
