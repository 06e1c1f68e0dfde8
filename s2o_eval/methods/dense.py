"""Dense causal attention baselines: FlashAttention-2 / cuDNN through SDPA, FlashAttention-3, eager.

Every sparse number is quoted against these, measured in the same run on the same inputs. Each takes
queries at an offset (k, v longer than q: a chunk after the KV cache), causal aligned bottom-right as
in FlashAttention: ``s2o_kernels.dense`` and ``Eager``'s ``tril(m - n)`` both do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend

from s2o_kernels.dense import cuda_unavailable_reason, fa3_attention, fa3_unavailable_reason, sdpa_causal

from .base import AttentionMethod, AttentionStats


@dataclass
class SDPA(AttentionMethod):
    """torch SDPA with whichever backend torch picks (any device, the CPU included)."""

    name = "sdpa"
    summary = "torch scaled_dot_product_attention, backend chosen by torch (CPU too)"
    takes_offset = True

    def prefill(self, q, k, v, *, scale, stats: AttentionStats | None = None):
        return sdpa_causal(q, k, v, scale)


@dataclass
class Eager(AttentionMethod):
    """Plain matmul-softmax-matmul in fp32: slow, the numerical reference."""

    name = "eager"
    summary = "matmul + softmax in fp32 (reference; any device)"
    takes_offset = True

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
    takes_offset = True

    def unavailable_reason(self):
        return cuda_unavailable_reason()

    def prefill(self, q, k, v, *, scale, stats: AttentionStats | None = None):
        return sdpa_causal(q, k, v, scale, [SDPBackend.FLASH_ATTENTION])


@dataclass
class CuDNN(AttentionMethod):
    """cuDNN fused attention through SDPA."""

    name = "cudnn"
    summary = "cuDNN fused attention (torch SDPA cuDNN backend)"
    takes_offset = True

    def unavailable_reason(self):
        return cuda_unavailable_reason()

    def prefill(self, q, k, v, *, scale, stats: AttentionStats | None = None):
        return sdpa_causal(q, k, v, scale, [SDPBackend.CUDNN_ATTENTION])


@dataclass
class FA3(AttentionMethod):
    """FlashAttention-3 forward (Hopper) from the ``fa3-fwd`` wheel."""

    name = "fa3"
    summary = "FlashAttention-3 forward, Hopper only (pip package fa3-fwd)"
    takes_offset = True

    def unavailable_reason(self):
        return fa3_unavailable_reason()

    def prefill(self, q, k, v, *, scale, stats: AttentionStats | None = None):
        return fa3_attention(q, k, v, scale)


# fastest first: what `dense` resolves to on a machine is the first available here
DENSE_PREFERENCE = ("fa3", "cudnn", "fa2", "sdpa")
