"""How a run decodes: ``--decode auto|static|dynamic``.

Decoding is dense for every method (only the prefill attention is swapped), so the choice changes
wall-clock time, not what is compared. ``static`` preallocates the KV cache, which lets transformers
compile the decode step (CUDA graphs on a GPU); ``dynamic`` is transformers' growing cache, eager.
"""

from __future__ import annotations

import torch

from ..errors import UserError

DECODE_MODES = ("auto", "dynamic", "static")


def resolve_decode(choice: str, device: torch.device | str) -> str:
    """``auto``: the compiled static-cache decode on CUDA, the dynamic cache elsewhere."""
    if choice not in DECODE_MODES:
        raise UserError(f"--decode {choice}: use one of {', '.join(DECODE_MODES)}")
    if choice == "auto":
        return "static" if torch.device(device).type == "cuda" else "dynamic"
    return choice
