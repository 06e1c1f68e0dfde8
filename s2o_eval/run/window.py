"""Whether ``--ctx`` fits the model's window: a longer one is refused unless ``--allow-beyond-window``."""

from __future__ import annotations

from ..errors import UserError
from ..formatting import ctx_label
from ..models.rope_scaling import RopeScaling
from .request import RunRequest


def window_refusal(ctx: int, loaded, scaling: RopeScaling | None) -> str | None:
    """Why ``ctx`` is refused without --allow-beyond-window, or None when it fits the model's window.

    --rope-scaling does not lift the check: the window stays the one the model was trained to, since what
    interpolation is worth past it has not been measured (issue 16). For the same reason the plain refusal
    does not suggest the flag yet: it should once a measurement shows the flag keeps the model useful there."""
    if ctx <= loaded.max_window:
        return None
    where = f"--ctx {ctx_label(ctx)} is beyond {loaded.name}'s window of {loaded.max_window} tokens"
    if scaling is not None and not scaling.is_identity:
        return (f"{where}, which --rope-scaling {scaling.text} does not lift: pass --allow-beyond-window to run "
                "past it with the interpolated RoPE (both recorded in the run), or lower --ctx")
    return f"{where}: lower --ctx, or pass --allow-beyond-window to run past it (recorded in the run)"


def check_window(request: RunRequest, loaded) -> None:
    if request.allow_beyond_window:
        return
    refusal = window_refusal(max(request.ctx), loaded, request.rope_scaling)
    if refusal:
        raise UserError(refusal)
