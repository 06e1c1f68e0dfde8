"""The one reading layer: every file a user supplies (datasets, baselines, captures, text) or the tool
wrote (run directories, bench records, the model cache) is read through an ``InputFile``.

Whatever is wrong with such a file (missing, a directory, no permission, not UTF-8, not JSON, a NaN, the
wrong shape) becomes one line naming the file, the line where that is known, and what to do about it:
``<path> [line N] <what is wrong>: <fix>``. The caller knows the fix, and the error: here the default is
``DataUnavailable`` (a suite's data file: its task is skipped); the harness reads its own inputs through
``s2o_eval.reading``, whose default ends the command with exit 4. The layer lives here, the lowest
package that reads user files, because the task adapters may not import the harness.

A shape is a plain value that says what JSON a reader expects (``shape_problem``), so that code past the
reader never meets a ``KeyError`` or a string where it expects a number.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NoReturn

from s2o_tasks.common import DataUnavailable


class AnyOf(tuple):
    """A shape met by any one of its members: ``AnyOf((None, float))`` is a number or null."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number" if math.isfinite(value) else f"{value}"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), f"a {type(value).__name__}")


def _name(shape: Any) -> str:
    if isinstance(shape, AnyOf):
        return " or ".join(_name(option) for option in shape)
    if shape is None:
        return "null"
    if isinstance(shape, (list, tuple)):
        return "a list" if isinstance(shape, list) else f"a list of {len(shape)}"
    if isinstance(shape, dict):
        return "an object"
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", dict: "an object",
             list: "a list", object: "anything"}
    return names.get(shape, f"a {getattr(shape, '__name__', shape)}")


def _fits_type(value: Any, kind: type) -> bool:
    if kind is object:
        return True
    if isinstance(value, bool):  # JSON's true is no number, though Python's bool is an int
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def shape_problem(value: Any, shape: Any, where: str = "", items: str | None = None) -> str | None:
    """Where ``value`` departs from ``shape`` and how (``samples[3].score is a string, not a number``), or
    None when it fits. ``items`` names the elements of a top-level list (``record 1 lacks question``).

    A shape is a type (``str``, ``int`` (not a bool), ``float`` (any finite number), ``bool``, ``dict``,
    ``list``, ``object`` (anything), or a class such as ``torch.Tensor``); ``None`` (null); ``[s]`` (a list
    of ``s``); ``(s1, s2)`` (a list of exactly these); ``{"key": s, "other?": s}`` (an object with these
    keys, ``?`` marking one that may be absent; other keys are free); ``{str: s}`` (an object whose
    every value is ``s``); or ``AnyOf((s1, s2))``."""
    subject = where or "it"
    if isinstance(shape, AnyOf):
        if any(shape_problem(value, option) is None for option in shape):
            return None
        return f"{subject} is {_kind(value)}, not {_name(shape)}"
    if shape is None or isinstance(shape, type):
        fits = value is None if shape is None else _fits_type(value, shape)
        return None if fits else f"{subject} is {_kind(value)}, not {_name(shape)}"
    if isinstance(shape, (list, tuple)):
        if not isinstance(value, list) or (isinstance(shape, tuple) and len(value) != len(shape)):
            return f"{subject} is {_kind(value)}, not {_name(shape)}"
        for index, item in enumerate(value):
            inner = shape[0] if isinstance(shape, list) else shape[index]
            at = f"{items} {index}" if items and not where else f"{where}[{index}]"
            if problem := shape_problem(item, inner, at):
                return problem
        return None
    if not isinstance(value, dict):
        return f"{subject} is {_kind(value)}, not an object"
    if list(shape) == [str]:  # {str: s}: any keys, every value of shape s
        shape = {key: shape[str] for key in value}
    for key, inner in shape.items():
        name = key.removesuffix("?")
        if name not in value:
            if key.endswith("?"):
                continue
            return f"{subject} lacks {name}"
        if problem := shape_problem(value[name], inner, f"{where}.{name}" if where else name):
            return problem
    return None


class _NotFinite(ValueError):
    """NaN or Infinity in a JSON text: Python's json reads them, JSON has no such numbers."""


def _refuse_constant(name: str) -> NoReturn:
    raise _NotFinite(name)


@dataclass(frozen=True)
class InputFile:
    """A file to read, what to do when it is bad (``fix``), and the error that says so (``error``)."""

    path: Path
    fix: str
    error: type[Exception] = DataUnavailable

    def problem(self, what: str, line: int | None = None) -> Exception:
        """The one-line error ``<path> [line N] <what>: <fix>``."""
        where = f"{self.path} line {line}" if line is not None else str(self.path)
        return self.error(f"{where} {what}: {self.fix}")

    def _opened(self):
        try:
            return open(self.path, "rb")
        except IsADirectoryError:
            raise self.problem("is a directory, not a file") from None
        except FileNotFoundError:
            raise self.problem("does not exist") from None
        except PermissionError:
            raise self.problem("cannot be read (permission denied)") from None
        except OSError as err:  # a dangling or looping link, a name too long, an I/O error
            raise self.problem(f"cannot be read ({err.strerror or err})") from None

    def check_readable(self) -> None:
        """Raise the error unless the file can be opened for reading (for readers that open it themselves)."""
        self._opened().close()

    def read_bytes(self) -> bytes:
        with self._opened() as fh:
            try:
                return fh.read()
            except OSError as err:
                raise self.problem(f"cannot be read ({err.strerror or err})") from None

    def _decode(self, data: bytes, line: int | None = None) -> str:
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise self.problem("is not UTF-8 text",
                               line if line is not None else data.count(b"\n", 0, err.start) + 1) from None

    def read_text(self) -> str:
        return self._decode(self.read_bytes())

    def _parse(self, text: str, line: int | None, shape: Any, what: str, items: str | None) -> Any:
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except _NotFinite as err:
            raise self.problem(f"holds {err}, which is not a JSON number", line) from None
        except json.JSONDecodeError as err:
            raise self.problem(f"is not valid JSON ({err.msg})", err.lineno if line is None else line) from None
        except RecursionError:
            raise self.problem("is not valid JSON (nested too deeply)", line) from None
        self.check_shape(value, shape, what, line, items)
        return value

    def check_shape(self, value: Any, shape: Any, what: str, line: int | None = None, items: str | None = None) -> None:
        """Raise the error, naming ``what`` the file should be, unless ``value`` has ``shape``."""
        if problem := shape_problem(value, shape, items=items):
            raise self.problem(f"is not {what} ({problem})", line)

    def read_json(self, shape: Any = object, what: str = "in the expected shape", items: str | None = None) -> Any:
        """The file's JSON value, checked to have ``shape`` (``shape_problem``); NaN and Infinity are refused."""
        return self._parse(self.read_text(), None, shape, what, items)

    def lines(self) -> Iterator[tuple[int, bytes]]:
        """``(line number, bytes)`` of every line, undecoded: a bad line cannot stop the others from reading."""
        with self._opened() as fh:
            yield from enumerate(fh, start=1)

    def parse_line(self, number: int, raw: bytes, shape: Any = object, what: str = "in the expected shape") -> Any:
        """Line ``number`` of the file (``raw``, from ``lines``) as JSON of ``shape``."""
        return self._parse(self._decode(raw, number), number, shape, what, None)

    def objects(self, shape: Any = dict) -> Iterator[dict[str, Any]]:
        """The JSON values of ``shape`` one a line, in file order; any other line (torn by a killed process,
        garbage, another shape) is skipped: for files that the tool appends to and repairs itself."""
        for number, raw in self.lines():
            try:
                yield self.parse_line(number, raw, shape)
            except self.error:
                continue

    def check_weights(self) -> None:
        """A safetensors file whose header parses and whose tensors fill the rest of the file exactly, as
        the loader demands: a copy cut short (a full disk, a killed process) fails here instead of deep
        inside the loader."""
        with self._opened() as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            header_size = int.from_bytes(fh.read(8), "little")
            if size < 8 or header_size > size - 8:
                raise self.problem(f"is cut short ({size} bytes, less than its header)")
            header = self._parse(self._decode(fh.read(header_size)), None, {"__metadata__?": dict},
                                 "a safetensors file", None)
        tensors = {name: info for name, info in header.items() if name != "__metadata__"}
        self.check_shape(tensors, {str: {"dtype": str, "shape": [int], "data_offsets": (int, int)}},
                         "a safetensors file")
        end = max((info["data_offsets"][1] for info in tensors.values()), default=0)
        if 8 + header_size + end != size:
            raise self.problem(f"is not whole ({size} bytes where its header says {8 + header_size + end})")

