"""The exact reference every method is scored against, and how far an output is from it.

- ``exact_reference``: dense causal attention in fp32 (true fp32 matmuls, TF32 off), chunked over
  queries so that 128K tokens fit.
- ``output_error``: the relative L2 and mean squared error of an output against it.

Shapes: q (batch, q_heads, seq_len, head_dim), k, v (batch, kv_heads, kv_len, head_dim), kv_len >=
seq_len: the queries are the last seq_len positions (causal aligned bottom-right, as FlashAttention).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch

DEFAULT_CHUNK_BYTES = 1 << 30  # fp32 scores (and their softmax) per chunk: ~1 GB at most


@contextmanager
def _ieee_fp32():
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # TF32 would put ~1e-3 error into the reference itself
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def exact_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None, *,
                    chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    """Dense causal attention in fp32: q (B, Hq, N, D), k, v (B, Hkv, P + N, D) -> fp32 (B, Hq, N, D).

    Query i sits at key position P + i and sees keys [0, P + i] (bottom-right; P = 0: the whole
    prompt). GQA: kv head h serves q heads [h*G, (h+1)*G). scale: head_dim ** -0.5 by default.
    ``chunk_bytes`` bounds the scores held at once.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    batch, q_heads, n_ctx, head_dim = q.shape
    kv_heads, n_keys = k.shape[1], k.shape[2]
    if n_keys < n_ctx:
        raise ValueError(f"k holds {n_keys} keys, fewer than q's {n_ctx} queries: the queries must be the last "
                         "positions")
    q_offset = n_keys - n_ctx
    group = q_heads // kv_heads
    # two fp32 (G, chunk, P + N) buffers live at once: the scores and their softmax
    chunk = max(1, min(n_ctx, chunk_bytes // (2 * 4 * group * n_keys)))
    out = torch.empty((batch, q_heads, n_ctx, head_dim), dtype=torch.float32, device=q.device)
    positions = torch.arange(n_keys, device=q.device)
    with _ieee_fp32(), torch.no_grad():
        for b in range(batch):
            for h in range(kv_heads):
                keys, values = k[b, h].float(), v[b, h].float()
                heads = slice(h * group, (h + 1) * group)
                for start in range(0, n_ctx, chunk):
                    end = min(start + chunk, n_ctx)
                    seen = q_offset + end  # keys any query of the chunk sees
                    scores = q[b, heads, start:end].float() @ keys[:seen].T * scale  # (G, chunk, seen)
                    future = positions[None, :seen] > positions[q_offset + start:seen, None]
                    scores.masked_fill_(future, float("-inf"))
                    out[b, heads, start:end] = torch.softmax(scores, dim=-1) @ values[:seen]
                    del scores
    return out


def output_error(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(rel_l2, mse) of ``out`` against ``ref``: ||out - ref|| / ||ref|| and mean((out - ref)^2).

    Accumulated one head at a time in float64, so no full-size temporary is made.
    """
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}")
    diff_sq = 0.0
    ref_sq = 0.0
    for b in range(out.shape[0]):
        for h in range(out.shape[1]):
            o, r = out[b, h].double(), ref[b, h].double()
            diff_sq += float(((o - r) ** 2).sum())
            ref_sq += float((r ** 2).sum())
    rel_l2 = math.sqrt(diff_sq) / math.sqrt(ref_sq) if ref_sq > 0 else math.inf
    return rel_l2, diff_sq / out.numel()
