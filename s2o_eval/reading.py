"""The reading layer (``s2o_tasks.reading``) as the harness uses it: a file that cannot be read, decoded,
parsed or does not have its shape ends the command in one line with exit 4 (``UnreadableFile``)."""

from __future__ import annotations

from dataclasses import dataclass

from s2o_tasks.reading import AnyOf, InputFile as _InputFile, shape_problem

from .errors import UserError

__all__ = ["AnyOf", "InputFile", "UnreadableFile", "shape_problem"]


class UnreadableFile(UserError):
    """A file that cannot be read, decoded, parsed or does not have its shape (exit 4)."""


@dataclass(frozen=True)
class InputFile(_InputFile):
    """``s2o_tasks.reading.InputFile`` whose problems are ``UnreadableFile`` unless told otherwise."""

    error: type[Exception] = UnreadableFile
