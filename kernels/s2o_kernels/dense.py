"""Dense causal attention by the kernels this machine has: FlashAttention-3 on Hopper, torch SDPA
(FlashAttention-2, cuDNN, or whatever torch picks, the CPU included).

q ``(batch, q_heads, q_len, head_dim)``, k, v ``(batch, kv_heads, kv_len, head_dim)`` with
``q_len <= kv_len``: causal aligned bottom-right as in FlashAttention (query i sits at key position
``kv_len - q_len + i``). S2O runs the heads it routes away from its walk here; the harness's dense
methods are these kernels.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right


def cuda_unavailable_reason() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (none here): use `sdpa` or `eager` on the CPU"
    return None


@functools.cache
def fa3_unavailable_reason() -> str | None:
    """None where FlashAttention-3 runs, else one line: why not and what to do."""
    if importlib.util.find_spec("fa3_fwd_interface") is None:
        return "needs the fa3-fwd package: pip install 's2o-eval[gpu]' (Hopper GPUs only)"
    reason = cuda_unavailable_reason()
    if reason:
        return reason
    if torch.cuda.get_device_capability()[0] != 9:
        return "FlashAttention-3 runs on Hopper (sm90) GPUs only: use fa2 or cudnn here"
    return None


def fa3_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Causal FlashAttention-3 (GQA handled by FA3 itself; its causal mask is bottom-right already).
    (The fa3-fwd build has no local attention, so sliding layers cannot use it.)"""
    from fa3_fwd_interface import flash_attn_func

    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                          softmax_scale=scale, causal=True)
    if isinstance(out, tuple):
        out = out[0]
    return out.transpose(1, 2)


def sdpa_causal(q: Tensor, k: Tensor, v: Tensor, scale: float, backends: list[SDPBackend] | None = None) -> Tensor:
    """Causal torch SDPA, by ``backends`` (None: torch's choice)."""
    gqa = q.shape[1] != k.shape[1]
    if backends is not None and gqa and SDPBackend.FLASH_ATTENTION not in backends:
        # cuDNN and math backends take GQA only as repeated heads on some torch builds
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        gqa = False
    # SDPA's is_causal aligns top-left when the lengths differ; the lower-right bias aligns bottom-right
    # and still runs the flash and efficient kernels (a boolean mask would not reach flash)
    if q.shape[2] == k.shape[2]:
        args = dict(is_causal=True, scale=scale, enable_gqa=gqa)
    else:
        args = dict(attn_mask=causal_lower_right(q.shape[2], k.shape[2]), scale=scale, enable_gqa=gqa)
    if backends is None:
        return F.scaled_dot_product_attention(q, k, v, **args)
    with sdpa_kernel(backends):
        return F.scaled_dot_product_attention(q, k, v, **args)


def fastest_causal(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Dense causal attention by the fastest kernel here: FlashAttention-3 on Hopper, else whatever torch
    SDPA picks (the CPU included). Output typed like q."""
    if q.is_cuda and fa3_unavailable_reason() is None:
        return fa3_attention(q, k, v, scale).to(q.dtype)
    return sdpa_causal(q, k, v, scale).to(q.dtype)
