"""``--rope-scaling linear:F``: position interpolation (Chen et al. 2023) on the global layers' RoPE.

Linear scaling divides the RoPE's inverse frequencies by F, so a key or query at position p is rotated
as one at p / F was: F times the positions fit in the angles the model saw in training. Gemma 3's
larger models reach 128K this way, on their global layers only.

How it reaches the model: through its own config, before the weights load. transformers 5 keeps
Gemma 3's two RoPEs apart (``rope_parameters = {"full_attention": {...}, "sliding_attention": {...}}``)
and its rotary embedding builds one set of inverse frequencies per layer type from them, so setting
``full_attention`` to ``{"rope_type": "linear", "factor": F}`` changes the global layers alone; the
sliding-window layers keep their local RoPE (their window is short: they never need the stretch).

A model with one RoPE for all layers (Llama, Qwen 2) is scaled as a whole only when it has no
sliding-window layers, since then every layer is global; otherwise (Gemma 2, Mistral) the one RoPE
would stretch the sliding layers too, and the flag is refused. So is a model without RoPE (GPT-2).

No transformers import at module level: reports label runs with ``label`` without loading torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from s2o_eval.errors import UserError

KINDS = ("linear",)
FORMAT_HINT = "write linear:F with a factor F >= 1, e.g. linear:4 (F = 1 is the model's own RoPE)"
GLOBAL = "full_attention"
SLIDING = "sliding_attention"


@dataclass(frozen=True)
class RopeScaling:
    """A parsed ``--rope-scaling``: the kind (only ``linear``) and the factor F (>= 1)."""

    kind: str
    factor: float

    @property
    def text(self) -> str:
        return f"{self.kind}:{self.factor:g}"

    @property
    def is_identity(self) -> bool:
        """F = 1 computes exactly what the model's own RoPE does: the same run as no flag."""
        return self.factor == 1.0


def parse_rope_scaling(text: str | None) -> RopeScaling | None:
    """``"linear:4"`` -> RopeScaling("linear", 4.0); None or "" -> None; anything else: UserError."""
    if text is None or not text.strip():
        return None
    kind, _, factor_text = text.strip().lower().partition(":")
    if kind not in KINDS:
        raise UserError(f"--rope-scaling {text}: unknown kind '{kind}'; {FORMAT_HINT}")
    try:
        factor = float(factor_text)
    except ValueError:
        raise UserError(f"--rope-scaling {text}: '{factor_text}' is not a number; {FORMAT_HINT}") from None
    # F < 1 would squeeze positions past the trained angles, the opposite of interpolation
    if not math.isfinite(factor) or factor < 1.0:
        raise UserError(f"--rope-scaling {text}: the factor must be a finite number >= 1; {FORMAT_HINT}")
    return RopeScaling(kind, factor)


def label(record: dict[str, Any] | None) -> str | None:
    """``"linear4"`` for a run's recorded ``rope_scaling`` (config.json), None for none: a short tag
    for report labels and file names."""
    if not record:
        return None
    return f"{record.get('type', 'linear')}{float(record.get('factor', 1.0)):g}"


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _has_sliding_layers(text_config) -> bool:
    layer_types = getattr(text_config, "layer_types", None)
    if layer_types:
        return any(kind != GLOBAL for kind in layer_types)
    # no per-layer types (Mistral): a sliding window, unless switched off, applies to every layer
    return bool(getattr(text_config, "sliding_window", None)) and getattr(text_config, "use_sliding_window", True)


def _scaled(params: dict[str, Any], scaling: RopeScaling, model_name: str) -> dict[str, Any]:
    """``params`` (one RoPE's parameters) with linear factor F; on top of the model's own linear factor
    if it has one (the two compose: positions / (own x F))."""
    own_type = params.get("rope_type", params.get("type", "default"))
    if own_type == "default":
        own_factor = 1.0
    elif own_type == "linear":
        own_factor = float(params.get("factor", 1.0))
    else:
        raise UserError(f"--rope-scaling {scaling.text}: {model_name} already uses '{own_type}' RoPE scaling, which "
                        "linear scaling cannot be combined with: leave --rope-scaling out")
    kept = {k: v for k, v in params.items() if k not in ("rope_type", "type", "factor")}
    return {**kept, "rope_type": "linear", "factor": own_factor * scaling.factor}


def apply_rope_scaling(config, scaling: RopeScaling | None, model_name: str) -> dict[str, Any] | None:
    """Set linear RoPE scaling in ``config`` (a transformers config, changed in place, before the model
    is built from it) and return what a run records: ``{"type", "factor", "layers", "applies_to",
    "rope_parameters"}`` (the scaled layers and their RoPE as now configured), or None when there is
    nothing to scale (no flag, or F = 1). Raises UserError, in one line, for a model it cannot apply to."""
    if scaling is None:
        return None
    text_config = _text_config(config)
    rope = getattr(text_config, "rope_parameters", None)
    refuse = f"--rope-scaling {scaling.text}: {model_name}"
    if not rope:
        raise UserError(f"{refuse} has no RoPE to scale (its config names no rope_parameters: learned or no "
                        "position embeddings): leave --rope-scaling out")
    if GLOBAL in rope or SLIDING in rope:  # one RoPE per layer type (Gemma 3): the global one alone
        layers = [i for i, kind in enumerate(getattr(text_config, "layer_types", None) or []) if kind == GLOBAL]
        if not rope.get(GLOBAL) or not layers:
            raise UserError(f"{refuse}'s global layers have no RoPE to scale: leave --rope-scaling out")
        scaled = _scaled(dict(rope[GLOBAL]), scaling, model_name)
        # a new dict, never an edit of one the config may share with another
        new_rope, applies_to = {**rope, GLOBAL: scaled}, "global layers"
    else:  # one RoPE for every layer (Llama): scaled only where every layer is global
        if _has_sliding_layers(text_config):
            raise UserError(f"{refuse} has one RoPE for all its layers, sliding-window ones included, so scaling "
                            "it would stretch those too: leave --rope-scaling out")
        layers = list(range(text_config.num_hidden_layers))
        scaled = new_rope = _scaled(dict(rope), scaling, model_name)
        applies_to = "every layer (one RoPE, no sliding-window layers)"
    if scaling.is_identity:  # checked above all the same: linear:1 is refused where linear:4 would be
        return None
    text_config.rope_parameters = new_rope
    text_config.validate_rope()
    return {"type": scaling.kind, "factor": scaling.factor, "layers": layers, "applies_to": applies_to,
            "rope_parameters": dict(scaled)}
