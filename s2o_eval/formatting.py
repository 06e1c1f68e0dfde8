"""How numbers print in every table (run and bench reports, the terminal): one rule per kind of number,
and ``-`` for a value that was not measured."""

from __future__ import annotations

from typing import Any

MISSING = "-"


def ctx_label(tokens: int) -> str:
    """A context length as tables and file names show it: ``32K`` for 32768 (k = 1024), else the number."""
    return f"{tokens // 1024}K" if tokens % 1024 == 0 else str(tokens)


def fmt_args(args: dict[str, Any] | None) -> str:
    """A method's parameters in one cell: ``tau=0.01, segment=1024``, ``-`` for none."""
    return ", ".join(f"{k}={v}" for k, v in (args or {}).items()) or MISSING


def fmt_num(value: float | None, spec: str = ".1f") -> str:
    """``value`` in format ``spec``: a score ``.1f``, a density ``.3f``, an error ``.2e``."""
    return MISSING if value is None else format(value, spec)


def fmt_delta(value: float | None, bold: bool = False) -> str:
    """A signed difference of scores, ``+1.5``; in markdown bold where ``bold``."""
    if value is None:
        return MISSING
    text = f"{value:+.1f}"
    return f"**{text}**" if bold else text


def fmt_ratio(value: float | None) -> str:
    """A speedup or a ratio: ``1.57x``."""
    return MISSING if value is None else f"{value:.2f}x"


def fmt_ms(value: float | None, *, below_10: str = ".2f", separator: str = ",") -> str:
    """Milliseconds with the digits their size warrants: ``1,234``, ``12.3``, ``1.23``.

    Operator times (the bench) reach far below a millisecond: they pass ``below_10=".3g"`` (``0.0123``)
    and no thousands ``separator``."""
    if value is None:
        return MISSING
    if value >= 100:
        return format(value, f"{separator}.0f")
    return format(value, ".1f" if value >= 10 else below_10)


def operator_ms(value: float | None) -> str:
    """An operator's time: three significant digits below 10 ms (kernels run in microseconds)."""
    return fmt_ms(value, below_10=".3g", separator="")
