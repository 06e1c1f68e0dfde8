"""Dense causal attention baselines: FlashAttention-2 / cuDNN through SDPA, FlashAttention-3, eager.

Every sparse number is quoted against these, measured in the same run on the same inputs. k, v may
hold more positions than q (queries at an offset: a chunk after the KV cache); causal is then aligned
bottom-right, as in FlashAttention (query i sees keys [0, kv_len - q_len + i]).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

from .base import AttentionMethod, AttentionStats


def _sdpa(q, k, v, scale, backends=None):
    gqa = q.shape[1] != k.shape[1]
    # SDPA's is_causal aligns top-left when q_len != kv_len; the lower-right bias aligns bottom-right
    # (and still runs the flash kernel where it can)
    if q.shape[2] == k.shape[2]:
        causal = dict(is_causal=True)
    else:
        causal = dict(attn_mask=causal_lower_right(q.shape[2], k.shape[2]))
    if backends is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa, **causal)
    with sdpa_kernel(backends):
        if gqa and SDPBackend.FLASH_ATTENTION not in backends:
            # cuDNN and math backends take GQA only as repeated heads on some torch builds
            group = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            gqa = False
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa, **causal)


def _cuda_reason() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (none here): use `sdpa` or `eager` on the CPU"
    return None


@dataclass
class SDPA(AttentionMethod):
    """torch SDPA with whichever backend torch picks (any device, the CPU included)."""

    name = "sdpa"
    summary = "torch scaled_dot_product_attention, backend chosen by torch (CPU too)"

    def prefill(self, q, k, v, *, scale, stats: AttentionStats | None = None):
        return _sdpa(q, k, v, scale)


@dataclass
class Eager(AttentionMethod):
    """Plain matmul-softmax-matmul in fp32: slow, the numerical reference."""

    name = "eager"
    summary = "matmul + softmax in fp32 (reference; any device)"

    def prefill(self, q, k, v, *, scale, stats: AttentionStats | None = None):
        group = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(group, dim=1).float()
        v = v.repeat_interleave(group, dim=1).float()
        s = torch.matmul(q.float(), k.transpose(-1, -2)) * scale
        n, m = s.shape[-2:]
        mask = torch.ones(n, m, dtype=torch.bool, device=q.device).tril(m - n)
        s = s.masked_fill(~mask, float("-inf"))
        return torch.matmul(torch.softmax(s, dim=-1), v).to(q.dtype)


@dataclass
class FA2(AttentionMethod):
    """FlashAttention-2 as built into torch (SDPA flash backend)."""

    name = "fa2"
    summary = "FlashAttention-2 (torch SDPA flash backend)"

    def unavailable_reason(self):
        return _cuda_reason()

    def prefill(self, q, k, v, *, scale, stats: AttentionStats | None = None):
        return _sdpa(q, k, v, scale, [SDPBackend.FLASH_ATTENTION])


@dataclass
class CuDNN(AttentionMethod):
    """cuDNN fused attention through SDPA."""

    name = "cudnn"
    summary = "cuDNN fused attention (torch SDPA cuDNN backend)"

    def unavailable_reason(self):
        return _cuda_reason()

    def prefill(self, q, k, v, *, scale, stats: AttentionStats | None = None):
        return _sdpa(q, k, v, scale, [SDPBackend.CUDNN_ATTENTION])


@functools.cache
def fa3_unavailable_reason() -> str | None:
    if importlib.util.find_spec("fa3_fwd_interface") is None:
        return "needs the fa3-fwd package: pip install 's2o-eval[gpu]' (Hopper GPUs only)"
    reason = _cuda_reason()
    if reason:
        return reason
    if torch.cuda.get_device_capability()[0] != 9:
        return "FlashAttention-3 runs on Hopper (sm90) GPUs only: use fa2 or cudnn here"
    return None


def fa3_attention(q, k, v, scale: float) -> torch.Tensor:
    """Causal FlashAttention-3 on (batch, heads, seq, dim) tensors (GQA handled by FA3 itself).
    (The fa3-fwd build has no local attention, so sliding layers cannot use it.)"""
    from fa3_fwd_interface import flash_attn_func

    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                          softmax_scale=scale, causal=True)
    if isinstance(out, tuple):
        out = out[0]
    return out.transpose(1, 2)


def fastest_causal(q, k, v, scale: float) -> torch.Tensor:
    """Dense causal attention by the fastest kernel this machine has: FlashAttention-3 on Hopper, else
    whatever torch SDPA picks (the CPU included)."""
    if q.is_cuda and fa3_unavailable_reason() is None:
        return fa3_attention(q, k, v, scale)
    return _sdpa(q, k, v, scale)


@dataclass
class FA3(AttentionMethod):
    """FlashAttention-3 forward (Hopper) from the ``fa3-fwd`` wheel."""

    name = "fa3"
    summary = "FlashAttention-3 forward, Hopper only (pip package fa3-fwd)"

    def unavailable_reason(self):
        return fa3_unavailable_reason()

    def prefill(self, q, k, v, *, scale, stats: AttentionStats | None = None):
        return fa3_attention(q, k, v, scale)


# fastest first: what `dense` resolves to on a machine is the first available here
DENSE_PREFERENCE = ("fa3", "cudnn", "fa2", "sdpa")
