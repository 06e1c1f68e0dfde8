"""JSON-lines files that survive a process killed mid-write: every append starts on a line of its own,
and reading skips whatever does not parse (a torn last line, bytes that are not JSON)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line and flush it to disk before returning.

    A process killed mid-write leaves a fragment without its newline; appending right after it would
    glue the new record onto the fragment and lose both. The fragment gets its newline first: it stays
    a line of its own, which ``read_objects`` skips (or keeps, when only the newline was missing)."""
    data = (json.dumps(record, default=str) + "\n").encode()
    with open(path, "a+b") as fh:
        if fh.seek(0, os.SEEK_END) > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                data = b"\n" + data
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def read_objects(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of ``path``, one a line, in file order; any other line is skipped."""
    with open(path, "rb") as fh:  # bytes: a garbled line must not stop the lines after it from decoding
        for raw in fh:
            try:
                value = json.loads(raw)
            except (ValueError, RecursionError):  # not JSON, not UTF-8, or absurdly nested garbage
                continue
            if isinstance(value, dict):
                yield value
