"""Exact sliding-window causal attention that never materializes an (N, N) mask.

transformers runs sliding-window layers (Gemma 3: window 512) through SDPA with a boolean
``(1, 1, N, N)`` mask: 16 GB at 128K tokens. Here the queries go in chunks, each against only the
keys its window can reach, so memory is ``O(chunk x (chunk + window))`` per head.

Semantics match transformers' ``sliding_window_causal_mask_function``: query ``i`` attends key ``j``
when ``i - window < j <= i`` (the window counts the query's own position).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sliding_window_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, window: int,
                             scale: float | None = None, *, query_chunk: int = 1024) -> torch.Tensor:
    """Causal attention where each query sees itself and the ``window - 1`` keys before it.

    query ``(batch, q_heads, seq_len, head_dim)``; key, value ``(batch, kv_heads, seq_len, head_dim)``
    with ``q_heads`` a multiple of ``kv_heads`` (GQA: kv head h serves q heads [h*G, (h+1)*G)).
    ``scale`` defaults to ``head_dim ** -0.5``. Returns ``(batch, q_heads, seq_len, head_dim)`` in
    the query's dtype. ``query_chunk``: queries per SDPA call (memory knob; the result does not
    depend on it beyond rounding).
    """
    if query.dim() != 4 or key.dim() != 4 or key.shape != value.shape:
        raise ValueError("query must be (batch, q_heads, seq_len, head_dim) and key, value (batch, kv_heads, "
                         f"seq_len, head_dim); got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    if query.shape[2] != key.shape[2]:
        raise ValueError(f"sliding_window_attention is for prefill: {query.shape[2]} queries but {key.shape[2]} keys")
    if query.shape[1] % key.shape[1] != 0:
        raise ValueError(f"q_heads ({query.shape[1]}) must be a multiple of kv_heads ({key.shape[1]})")
    if int(window) < 1 or int(query_chunk) < 1:
        raise ValueError(f"window and query_chunk must be >= 1; got {window}, {query_chunk}")
    window, query_chunk = int(window), int(query_chunk)
    group = query.shape[1] // key.shape[1]
    n_ctx = query.shape[2]
    out = torch.empty_like(query)
    for start in range(0, n_ctx, query_chunk):
        end = min(start + query_chunk, n_ctx)
        first_key = max(0, start - window + 1)  # the earliest key the chunk's first query can see
        q_pos = torch.arange(start, end, device=query.device)[:, None]
        k_pos = torch.arange(first_key, end, device=query.device)[None, :]
        allowed = (k_pos <= q_pos) & (k_pos > q_pos - window)
        # repeated kv heads rather than enable_gqa: SDPA's fused kernels take a mask only without GQA
        k = key[:, :, first_key:end].repeat_interleave(group, dim=1)
        v = value[:, :, first_key:end].repeat_interleave(group, dim=1)
        out[:, :, start:end] = F.scaled_dot_product_attention(query[:, :, start:end], k, v, attn_mask=allowed,
                                                              scale=scale)
    return out
