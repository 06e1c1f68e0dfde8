"""Token oracle: every prefix key ranked by the true attention mass it receives (the planners' yardstick).

For each query head and each segment of queries, prefix keys [sinks, P + s * S) (P the queries' offset
into the keys, plan.py) are listed in descending
order of ``sum_i softmax_i(j)``: the probability that query i gives key j, computed exactly against
the query's full causal normaliser, summed over the segment's queries. With ``segment == block_m``
every query tile gets its own list, the best order a per-tile early-stopping walk can get at token
granularity. Run through the same executor and stop rule as S2O, it shows how far a planner's ranking
is from the ideal one.

It is a yardstick, not a fast path: it computes dense attention scores, a block of rows at a time
(no N x N matrix is ever held), in plain PyTorch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .plan import Plan, plan_layout, segment_plan, validate_layout

# Score elements held at once per block of rows (fp32): bounds memory at long contexts.
_ROW_BLOCK_ELEMENTS = 1 << 26


def segment_key_mass(q_head: Tensor, k_head: Tensor, segment: int, scale: float) -> Tensor:
    """True attention mass each key receives from each segment's queries, for one head.

    ``q_head (seq_len, head_dim)``, ``k_head (kv_len, head_dim)``, the queries the last seq_len
    positions (offset P = kv_len - seq_len, query i at key position P + i). Returns fp32
    ``(n_seg, kv_len)``: entry ``[s, j]`` is ``sum_{i in segment s} softmax(scale * q_i . k_{<=P+i})_j``
    (zero for keys after the query).
    """
    n_ctx, n_keys = q_head.shape[0], k_head.shape[0]
    q_offset = n_keys - n_ctx
    n_seg = -(-n_ctx // segment)
    mass = torch.zeros(n_seg, n_keys, dtype=torch.float32, device=q_head.device)
    segs_per_block = max(1, _ROW_BLOCK_ELEMENTS // (segment * n_keys))
    keys = k_head.float()
    for first in range(0, n_seg, segs_per_block):
        last = min(n_seg, first + segs_per_block)
        row_lo, row_hi = first * segment, min(n_ctx, last * segment)
        rows = torch.arange(row_lo, row_hi, device=q_head.device)
        seen = q_offset + row_hi  # keys the block's last row sees
        scores = (q_head[row_lo:row_hi].float() @ keys[:seen].T) * scale
        causal = torch.arange(seen, device=q_head.device)[None, :] <= (q_offset + rows)[:, None]
        probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        seg_of_row = rows // segment - first
        mass[first:last, :seen].index_add_(0, seg_of_row, probs)
    return mass


def token_oracle_plan(q: Tensor, k: Tensor, *, segment: int, sinks: int, block_m: int, scale: float | None = None,
                      query_order: Tensor | None = None) -> Plan:
    """One list per (batch, query head, segment): every prefix key, by true attention mass, descending.

    q: ``(batch, q_heads, seq_len, head_dim)``; k: ``(batch, kv_heads, kv_len, head_dim)`` (queries at
    offset kv_len - seq_len into the keys: each prefix holds the keys before the chunk too).
    segment: queries per list; pass ``segment=block_m`` for the per-tile oracle.
    sinks: keys [0, sinks) stay out of the lists (the executor's pass 1 computes them).
    block_m: the executor's query tile (segment must be a multiple of it).
    scale (head_dim ** -0.5): the softmax scale of the attention being planned.
    query_order: optional int32 ``(batch, q_heads, seq_len)`` permutation within each segment, passed
        through to the plan (the mass of a segment does not depend on the order of its queries).
    Returns a ``Plan`` with H_plan = q_heads; ties keep ascending key position.
    """
    validate_layout(q, k, segment, sinks, block_m)
    batch, q_heads, n_ctx, dim = q.shape
    group = q_heads // k.shape[1]
    scale = dim ** -0.5 if scale is None else scale
    n_seg = -(-n_ctx // segment)
    q_offset = k.shape[2] - n_ctx
    lengths, _ = plan_layout(n_ctx, segment, sinks, q_offset)
    positions = torch.arange(k.shape[2], device=q.device)
    seg_keys = q_offset + torch.arange(n_seg, device=q.device) * segment  # where each segment's queries start
    in_prefix = (positions[None, :] >= sinks) & (positions[None, :] < seg_keys[:, None])
    keep = positions[None, :] < lengths.to(q.device)[:, None]
    key_index = torch.empty(batch, q_heads, int(lengths.sum()), dtype=torch.int32, device=q.device)
    for b in range(batch):
        for h in range(q_heads):
            mass = segment_key_mass(q[b, h], k[b, h // group], segment, scale)
            # Keys outside the prefix sort last (mass >= 0 > -1); each segment keeps its first len.
            ranked = torch.sort(mass.masked_fill(~in_prefix, -1.0), dim=-1, descending=True, stable=True).indices
            # Row-major boolean selection concatenates the segments' heads, which is the plan layout.
            key_index[b, h] = ranked[keep].to(torch.int32)
    if query_order is not None:
        if not isinstance(query_order, Tensor) or tuple(query_order.shape) != (batch, q_heads, n_ctx):
            raise ValueError(f"query_order must be a tensor of shape {(batch, q_heads, n_ctx)}")
        query_order = query_order.to(device=q.device, dtype=torch.int32).contiguous()
    plan = segment_plan(q, segment, sinks, key_index, query_order, q_offset=q_offset)
    plan.check(q, k, block_m=block_m)
    return plan
