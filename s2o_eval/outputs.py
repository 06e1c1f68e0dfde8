"""Where a command writes (a run directory, a report, a baseline, a capture): refused in one line before
any work when nothing could be written there, so that no work is done that could not be kept."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import UserError


def output_problem(path: Path, what: str, *, is_file: bool = False) -> str | None:
    """Why ``path`` (a directory, or with ``is_file`` a file) could not be made or written, or None when it
    can; ``what`` names it in the message (``--out``)."""
    path = Path(path)
    kind, other = ("file", "directory") if is_file else ("directory", "file")
    if path.exists() and path.is_dir() == is_file:
        return f"{what} {path} is a {other}: pass a {kind} (a new one, or one to add to)"
    existing = next(p for p in [path, *path.parents] if p.exists())
    if existing != path and not existing.is_dir():
        return f"{what} {path} cannot be made: {existing} is a file; pass another {what}"
    folder = existing if existing.is_dir() else existing.parent
    try:
        # a file made and removed at once: os.access says yes to root where the kernel says no (/sys,
        # /proc, read-only mounts)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return f"{what} {path} cannot be written: {folder} takes no new files ({err.strerror}); pass another {what}"
    return None


def check_output(path: Path, what: str, *, is_file: bool = False) -> None:
    """UserError, before any work, when ``output_problem`` finds one."""
    if problem := output_problem(path, what, is_file=is_file):
        raise UserError(problem)
