"""Prefill attention methods: the registry (``registry``: built-ins and other packages' entry points),
and a method configured from text (``--method-args``) or from Python (``s2o_eval.register``).

Adding a method: see ``registry``.
"""

from __future__ import annotations

import dataclasses
import math
import typing

from ..errors import UserError
from .base import AttentionMethod, AttentionStats, SparseMethod
from .dense import DENSE_PREFERENCE
from .registry import BUILTIN_METHODS, ENTRY_POINT_GROUP, METHODS, dense_method_names


def _coerce(value: object, annotation) -> object:
    kind = annotation if isinstance(annotation, type) else eval(annotation, {})  # "float" -> float
    if not isinstance(value, str):  # typed already: a Python caller's s2o_eval.register("s2o", tau=0.001)
        if kind is float and type(value) is int:
            return float(value)
        if isinstance(value, kind):
            return value
        raise TypeError(value)
    if kind is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)
    return kind(value)


def parse_method_args(text: str | None) -> dict[str, str]:
    """``"tau=0.01,segment=1024"`` -> ``{"tau": "0.01", "segment": "1024"}``."""
    args: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "=" not in part:
            raise UserError(f"method argument '{part}' is not key=value: write e.g. --method-args tau=0.01")
        key, value = part.split("=", 1)
        args[key.strip()] = value.strip()
    return args


def parse_sweep(text: str, *, given: str | None = None, example: str = "tau=0.01,0.003") -> tuple[str, list[str]]:
    """``"tau=0.01,0.003"`` -> ``("tau", ["0.01", "0.003"])``: one parameter and the values to try.

    ``given`` (the option as the user wrote it) and ``example`` make the error message."""
    key, sep, values = text.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key.strip() or not items:
        raise UserError(f"--sweep '{given or text}': write one parameter and its values, e.g. --sweep {example}")
    return key.strip(), items


def resolve_dense() -> str:
    """The fastest dense method that runs on this machine."""
    for name in DENSE_PREFERENCE:
        if METHODS[name]().unavailable_reason() is None:
            return name
    return "eager"


def create(name: str, args: dict[str, object] | None = None) -> AttentionMethod:
    """A configured method instance; ``dense`` resolves to the fastest dense method here.

    ``args``: parameter -> value, as text (``--method-args``) or already typed (Python callers)."""
    if name == "dense":
        name = resolve_dense()
    if name not in METHODS:
        known = ", ".join(sorted([*METHODS, "dense"]))
        raise UserError(f"unknown method '{name}': choose one of {known} (see `s2o-eval methods`)")
    cls = METHODS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in (args or {}).items():
        if key not in fields:
            allowed = ", ".join(fields) or "none"
            raise UserError(f"method '{name}' has no parameter '{key}': its parameters are {allowed}")
        try:
            kwargs[key] = _coerce(value, hints.get(key, str))
        except (ValueError, TypeError):
            raise UserError(f"method '{name}': {key}={value!r} is not a valid {hints.get(key, str).__name__}") from None
    try:
        method = cls(**kwargs)
    except ValueError as err:  # a method's own validation (__post_init__)
        raise UserError(f"method '{name}': {err}") from None
    # float("nan") and float("inf") parse, but no hyper-parameter means anything at them
    for key, value in kwargs.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"method '{name}': {key}={value} is not a finite number: pass e.g. "
                            f"{key}={getattr(cls(), key)} (its default)")
    return method


__all__ = ["AttentionMethod", "AttentionStats", "BUILTIN_METHODS", "ENTRY_POINT_GROUP", "METHODS", "SparseMethod",
           "create", "dense_method_names", "parse_method_args", "parse_sweep", "resolve_dense"]
