"""Stopping a command from outside: Ctrl-C (SIGINT) and SIGTERM (sent by batch schedulers, containers and
``kill``) end it the same way. Python raises KeyboardInterrupt for SIGINT only; ``install`` makes SIGTERM
raise it too, as ``Stopped``, so that every cleanup written for Ctrl-C (a run keeps its finished samples,
records its session and says how to resume) runs for both. The command then exits 128 + the signal's
number: 130 for Ctrl-C, 143 for SIGTERM, as shells report a process the signal ended.

A second signal while the first is being handled, or one that comes while the interpreter shuts down,
ends the process at once and quietly: finished samples are on disk already (``jsonl``), and a cleanup
cut half way would print tracebacks ("Exception ignored in atexit callback").
"""

from __future__ import annotations

import os
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

_stopping = False  # a stop signal was received: the next one ends the process at once


class Stopped(KeyboardInterrupt):
    """A stop signal arrived (``signum``); a KeyboardInterrupt, so that Ctrl-C's handling applies."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def signal_of(interrupt: BaseException) -> int:
    """The signal behind a KeyboardInterrupt: SIGINT unless it is a ``Stopped`` for another."""
    return getattr(interrupt, "signum", signal.SIGINT)


def exit_code(interrupt: BaseException) -> int:
    """128 + the signal's number: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + signal_of(interrupt)


def describe(interrupt: BaseException) -> str:
    """``Ctrl-C`` or ``SIGTERM``: what stopped the command, for its last line."""
    signum = signal_of(interrupt)
    return _SIGNAL_NAMES.get(signum, signal.Signals(signum).name)


def _exit_at_once(signum: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


def _on_signal(signum, frame) -> None:
    global _stopping
    if _stopping:
        _exit_at_once(signum)
    _stopping = True
    raise Stopped(signum)


def install() -> None:
    """From now on in this process, SIGINT and SIGTERM raise ``Stopped`` (the first) or end it at once."""
    global _stopping
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers belong to the main thread (a command driven from another one keeps Python's)
    _stopping = False
    for signum in STOP_SIGNALS:
        signal.signal(signum, _on_signal)


def shutting_down() -> None:
    """The command has ended: a signal from here on ends the process at once (atexit callbacks included)."""
    global _stopping
    _stopping = True
