"""JSON-lines files that survive a process killed mid-write: every append starts on a line of its own,
and reading (``reading.InputFile.objects``) skips whatever does not parse (a torn last line, garbage)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line and flush it to disk before returning.

    A process killed mid-write leaves a fragment without its newline; appending right after it would
    glue the new record onto the fragment and lose both. The fragment gets its newline first: it stays
    a line of its own, which reading skips (or keeps, when only the newline was missing)."""
    data = (json.dumps(record, default=str) + "\n").encode()
    with open(path, "a+b") as fh:
        if fh.seek(0, os.SEEK_END) > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                data = b"\n" + data
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())

