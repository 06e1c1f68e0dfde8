"""The one registry of prefill attention methods: a short name -> a method class.

A built-in method takes one file in this package (a dataclass subclassing ``AttentionMethod``; a sparse
one also has its planner in ``s2o_kernels``) and one line in ``BUILTIN_METHODS`` below.

A method from another package takes no change here: its distribution declares an entry point

    [project.entry-points."s2o_eval.methods"]
    local = "my_package.local:Local"

and, once installed, ``Local`` (named ``local``) is in ``METHODS``: ``s2o-eval methods``, ``run``, ``bench``
and ``s2o_eval.register()`` take it like any other. An entry point that does not load, is no method, or
takes a name already taken (a built-in's, ``dense``, another package's) is left out with one warning line
on stderr; the rest of the registry works as ever.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from typing import Callable

from ..errors import print_warning
from .base import AttentionMethod
from .block_oracle import BlockOracle
from .dense import FA2, FA3, SDPA, CuDNN, Eager
from .flashprefill import FlashPrefill
from .flexprefill import FlexPrefill
from .minference import MInference
from .pbs import PBS
from .s2o import S2O
from .skip_softmax import SkipSoftmax
from .token_oracle import SegmentOracle, TokenOracle
from .xattention import XAttention

ENTRY_POINT_GROUP = "s2o_eval.methods"
#: resolved at run start to the fastest dense method here (``create``): no method may take it
RESERVED_NAMES = frozenset({"dense"})

BUILTIN_METHODS: dict[str, type[AttentionMethod]] = {
    cls.name: cls
    for cls in (FA2, CuDNN, FA3, SDPA, Eager, S2O, TokenOracle, SegmentOracle, FlexPrefill, MInference, BlockOracle,
                XAttention, PBS, FlashPrefill, SkipSoftmax)
}


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def _refusal(name: str, cls: object, taken: dict[str, str]) -> str | None:
    """Why the entry point ``name`` -> ``cls`` cannot join the registry, or None when it can."""
    if name in BUILTIN_METHODS or name in RESERVED_NAMES:
        return f"'{name}' is a built-in method's name; the built-in is kept"
    if name in taken:
        return f"'{name}' is taken by {taken[name]}"
    if not name.isidentifier():  # the CLI splits on , / : and = (--methods a,b; s2o/r4:rank=4)
        return f"'{name}' is not a plain name (letters, digits and _)"
    if not (isinstance(cls, type) and issubclass(cls, AttentionMethod) and dataclasses.is_dataclass(cls)):
        return "it is not a dataclass subclassing s2o_eval.methods.AttentionMethod"
    if cls.name != name:
        return f"its class names itself '{cls.name}': the entry point and the class's name must agree"
    try:
        cls()  # `s2o-eval methods` and `register()` make every method with its defaults
    except Exception as err:
        return f"it cannot be made with its defaults ({_one_line(err)})"
    return None


def entry_point_methods(warn: Callable[[str], None] = print_warning) -> dict[str, type[AttentionMethod]]:
    """The methods installed packages declare in the entry point group ``s2o_eval.methods``; each one
    that cannot join (see the module's docstring) is left out with one ``warn`` line."""
    found: dict[str, type[AttentionMethod]] = {}
    taken: dict[str, str] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(entry, "dist", None)
        source = f"{entry.value} ({dist.name} {dist.version})" if dist is not None else entry.value
        try:
            cls = entry.load()
        except Exception as err:  # a broken plugin must not take the tool down with it
            warn(f"attention method '{entry.name}' from {source} left out: it does not load ({_one_line(err)})")
            continue
        refusal = _refusal(entry.name, cls, taken)
        if refusal is not None:
            warn(f"attention method '{entry.name}' from {source} left out: {refusal}")
            continue
        found[entry.name] = cls
        taken[entry.name] = source
    return found


METHODS: dict[str, type[AttentionMethod]] = {**BUILTIN_METHODS, **entry_point_methods()}


def dense_method_names() -> frozenset[str]:
    """Every method that computes full attention (not ``sparse``), and ``dense``, which resolves to one."""
    return frozenset({name for name, cls in METHODS.items() if not cls.sparse} | RESERVED_NAMES)
