"""Hostile versions of a valid input file, for the property tests of every reader (``test_fuzz_readers``).

Seeded loops stand in for hypothesis (not a dependency): the same cases on every run, each named, so a
failure says which input broke which reader.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterator

# valid JSON of the wrong shape: objects, lists, null, NaN, a string for a number, numbers for a string
WRONG_VALUES: tuple[Any, ...] = ({}, [], None, float("nan"), "1", 1, True)
INVALID_UTF8 = (b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80")


def json_paths(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every node of a JSON value, the value itself first, as a path of keys and indices."""
    yield path
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from json_paths(child, path + (key,))


def replaced(value: Any, path: tuple, new: Any) -> Any:
    """``value`` with the node at ``path`` replaced by ``new`` (copies along the path only)."""
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


def wrong_shapes(value: Any, stride: int = 1) -> Iterator[tuple[str, Any]]:
    """``value`` with one node (every ``stride``-th) replaced by each of ``WRONG_VALUES``."""
    for number, path in enumerate(json_paths(value)):
        if number % stride == 0:
            for new in WRONG_VALUES:
                yield f"{'.'.join(map(str, path)) or 'the whole'} = {new!r}", replaced(value, path, new)


def byte_mutations(valid: bytes, rng: random.Random, *, random_cases: int = 20, utf8_cases: int = 10,
                   cut_stride: int = 1) -> Iterator[tuple[str, bytes]]:
    """Random bytes, ``valid`` cut at every offset (every ``cut_stride``-th), and invalid UTF-8 put in."""
    for case in range(random_cases):
        yield f"random bytes #{case}", rng.randbytes(rng.randint(0, 300))
    for end in range(0, len(valid), cut_stride):
        yield f"cut at byte {end}", valid[:end]
    for case in range(utf8_cases):
        at = rng.randrange(len(valid) + 1)
        yield f"invalid UTF-8 at byte {at}", valid[:at] + rng.choice(INVALID_UTF8) + valid[at:]


def json_mutations(valid: Any, rng: random.Random, *, lines: bool = False, cut_stride: int = 1,
                   shape_stride: int = 1) -> Iterator[tuple[str, bytes]]:
    """``byte_mutations`` of ``valid`` as JSON (a list of records one a line with ``lines``), then
    every ``wrong_shapes`` of it."""
    def dump(value: Any) -> bytes:
        text = "\n".join(json.dumps(record) for record in value) + "\n" if lines else json.dumps(value)
        return text.encode()

    yield from byte_mutations(dump(valid), rng, cut_stride=cut_stride)
    for what, value in wrong_shapes(valid, shape_stride):
        if lines and not isinstance(value, list):
            continue  # the file is lines: the list itself is not in it
        yield f"wrong shape: {what}", dump(value)


def unreadable(path: Path) -> Iterator[str]:
    """Put, in turn, each kind of unreadable thing at ``path`` (a directory, a link to itself, a file
    without read permission), yielding its name while it is there."""
    path.mkdir()
    yield "a directory"
    path.rmdir()
    path.symlink_to(path.name)
    yield "a link to itself"
    path.unlink()
    path.write_bytes(b"{}")
    os.chmod(path, 0)  # root reads it anyway: then it is just a small file
    yield "no read permission"
    os.chmod(path, 0o600)
    path.unlink()


def check_reader(read: Callable[[], Any], promised: type[Exception] | tuple[type[Exception], ...],
                 case: str, names: tuple[Path, ...]) -> None:
    """``read()`` returns, or raises ``promised`` in one line that names one of ``names``; anything else
    (a traceback for the user) fails the test, naming the case."""
    try:
        read()
    except promised as err:
        text = str(err)
        assert "\n" not in text, f"{case}: a message of several lines: {text!r}"
        assert any(str(name) in text for name in names), f"{case}: the message names no file: {text!r}"
    except Exception as err:  # noqa: BLE001 - the property: nothing else escapes
        raise AssertionError(f"{case}: {type(err).__name__}: {err}") from err
