"""One command at a time per run directory: a lock file, held with ``flock``, naming its holder.

Two commands appending to one ``samples.jsonl`` would each evaluate every sample (each reads what is
done before the other appends) and share the device, which spoils the prefill times. The second is
refused in one line that names the holder. The kernel drops an ``flock`` when its process dies, so a
lock left by a killed process (SIGKILL, a lost machine) is simply taken over.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import IO, Iterator

from ..errors import UserError


def _describe_holder(fh: IO[str]) -> str:
    fh.seek(0)
    try:
        holder = json.loads(fh.read())
        return f"process {int(holder['pid'])} on {holder['host']} (since {holder['since']})"
    except (ValueError, KeyError, TypeError):  # the holder has not written itself in yet
        return "another process"


def _lock(path: Path) -> IO[str]:
    """The open lock file, locked by this process; UserError when a live process holds it."""
    while True:
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fh)
            fh.close()
            raise UserError(f"{path.parent} is in use by {holder}: wait for it to finish or stop it, or pass "
                            "another --out") from None
        try:
            same_file = os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            return fh
        fh.close()  # the holder removed the file between our open and our lock: lock the new one


@contextlib.contextmanager
def hold(path: Path) -> Iterator[None]:
    """Hold the lock file ``path`` (created if needed) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = _lock(path)
    try:
        since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}) + "\n")
        fh.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # before the unlock: nobody can lock this file once it is gone
        fh.close()
