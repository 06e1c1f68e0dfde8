"""What ``s2o-eval run`` was asked (``RunRequest``), the methods it names, and what each run gave back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..methods import AttentionMethod, create
from ..models.rope_scaling import RopeScaling
from .rundir import RunDir


@dataclass
class RunRequest:
    """Everything ``s2o-eval run`` was asked for."""

    model: str
    method: str  # one method, or several comma-separated (one run each, sharing the model load)
    tasks: list[str]
    ctx: list[int]
    method_args: dict[str, str] = field(default_factory=dict)
    limit: int | None = None
    seed: int = 0
    chat_template: str = "auto"  # auto | on | off
    data_dir: str | None = None
    out: Path | None = None
    runs_dir: Path = Path("runs")
    allow_beyond_window: bool = False
    device: str | None = None
    dtype: str = "auto"
    suite: str | None = None
    decode: str = "auto"  # auto | static | dynamic (see decoding.resolve_decode)
    rope_scaling: RopeScaling | None = None  # --rope-scaling linear:F on the global layers
    prefill_chunk: int | None = None  # --prefill-chunk: tokens per prefill chunk (None: the whole prompt)


@dataclass
class RunOutcome:
    run_dir: RunDir
    summary: dict[str, Any]
    skipped: list[str]  # one line per task that could not run (missing data ...)


def method_names(spec: str) -> list[str]:
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise UserError("--method is empty: name a method (see `s2o-eval methods`)")
    return names


def configured_methods(request: RunRequest, sweep: list[dict[str, str]] | None = None
                       ) -> list[tuple[str, AttentionMethod]]:
    """One (name, method) per method and sweep value, in that order (the runs of one command, all
    sharing the model load); raises UserError for an unknown method or parameter, or one that
    cannot run here."""
    runs = [(name, create(name, dict(request.method_args, **values)))
            for name in method_names(request.method) for values in (sweep or [{}])]
    for _, method in runs:
        reason = method.unavailable_reason()
        if reason:
            raise UserError(f"method '{method.name}' is not available here: {reason}")
    return runs
