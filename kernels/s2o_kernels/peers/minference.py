"""MInference's vertical-slash selection (arXiv 2407.02490) as a token-granular plan.

From the attention of the last few queries, a head's important keys are read as vertical columns
(key positions every query attends to) and slash lines (fixed query-key offsets). Each query block's
list holds the chosen columns before the block plus, for every chosen offset, the keys that offset
reaches from any of the block's rows (the union over the rows, as a block-sparse executor computes
it). The executor adds the block's own causal diagonal, so that block is always kept.

Queries at an offset P into the keys (k longer than q: a chunk after the KV cache): columns and
offsets are over key positions, the last queries are the chunk's last (key positions up to
kv_len - 1), and query block t's rows sit at key positions P + t * block on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..plan import Plan


def last_queries_probs(q: Tensor, k: Tensor, head: int, n_last: int, scale: float) -> Tensor:
    """Causal softmax of the last ``n_last`` queries of q head ``head`` over all keys: fp32
    ``(batch, n_last, kv_len)`` (GQA: the q head reads kv head ``head // G``). The queries are the
    last of the keys' positions (bottom-right), so the rows sit at key positions kv_len - n_last on."""
    n_ctx, n_keys = q.shape[2], k.shape[2]
    group = q.shape[1] // k.shape[1]
    rows = torch.arange(n_keys - n_last, n_keys, device=q.device)
    scores = q[:, head, n_ctx - n_last:].float() @ k[:, head // group].float().transpose(-1, -2) * scale
    causal = torch.arange(n_keys, device=q.device)[None, :] <= rows[:, None]
    return torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)


def vertical_slash_scores(probs: Tensor) -> tuple[Tensor, Tensor]:
    """Column and diagonal sums of the last queries' attention ``probs (batch, n_last, kv_len)`` (the
    rows are the last n_last key positions, as ``last_queries_probs`` gives them).

    Returns (vertical, slash), each fp32 ``(batch, kv_len)``: vertical[j] is the mass key j gets;
    slash[o] the mass on offset o = query position - key position (o = 0 is the main diagonal).
    """
    batch, n_last, n_ctx = probs.shape
    rows = torch.arange(n_ctx - n_last, n_ctx, device=probs.device)
    offsets = (rows[:, None] - torch.arange(n_ctx, device=probs.device)[None, :]).clamp(min=0)  # masked keys: prob 0
    slash = torch.zeros(batch, n_ctx, dtype=torch.float32, device=probs.device)
    slash.index_add_(1, offsets.reshape(-1), probs.reshape(batch, -1))
    return probs.sum(1), slash


def vertical_slash_to_plan(columns: Tensor, offsets: Tensor, block: int, n_ctx: int, *, sinks: int = 0,
                           query_chunk: int = 64) -> Plan:
    """A plan with one list per (batch, q head, query block) from chosen columns and offsets.

    columns, offsets: bool ``(batch, q_heads, kv_len)``, True where key position j (columns) or
    offset o (offsets) is chosen; ``n_ctx`` queries, the last of the kv_len positions (offset
    P = kv_len - n_ctx). Block t's list holds, in ascending order, every key j in [sinks, P + t * block)
    that is a chosen column or lies at a chosen offset from one of the block's rows.
    """
    batch, q_heads, n_keys = columns.shape
    q_offset = n_keys - n_ctx
    if q_offset < 0:
        raise ValueError(f"columns cover {n_keys} key positions, fewer than the {n_ctx} queries")
    device = columns.device
    n_blocks = -(-n_ctx // block)
    keys_pos = torch.arange(n_keys, device=device)
    lists, lengths = [], torch.zeros(batch, q_heads, n_blocks, dtype=torch.int64, device=device)
    for b in range(batch):
        for h in range(q_heads):
            # chosen offsets in [lo, hi] exist iff the running count rises across that range
            count = torch.cat([torch.zeros(1, dtype=torch.int32, device=device), offsets[b, h].int().cumsum(0)])
            pieces = []
            for t0 in range(0, n_blocks, query_chunk):
                t = torch.arange(t0, min(t0 + query_chunk, n_blocks), device=device)[:, None]
                # the rows' key positions
                first_row, last_row = q_offset + t * block, q_offset + (t * block + block).clamp(max=n_ctx) - 1
                lo, hi = first_row - keys_pos, (last_row - keys_pos).clamp(max=n_keys - 1)
                prefix = (keys_pos < first_row) & (keys_pos >= sinks)    # lo >= 1 here: count indexing is safe
                by_slash = count[hi.clamp(min=0) + 1] > count[lo.clamp(min=0, max=n_keys)]
                keep = prefix & (columns[b, h][None, :] | by_slash)
                lengths[b, h, t0:t0 + keep.shape[0]] = keep.sum(-1)
                pieces.append(keep.nonzero(as_tuple=True)[1])                # row-major: by block, then key
            lists.append(torch.cat(pieces))
    total = max(max(int(x.numel()) for x in lists), 1)
    key_index = torch.zeros(batch, q_heads, total, dtype=torch.int32, device=device)
    for i, keys in enumerate(lists):
        key_index[i // q_heads, i % q_heads, : keys.numel()] = keys.to(torch.int32)
    list_start = lengths.cumsum(-1) - lengths
    return Plan(segment=block, sinks=sinks, key_index=key_index, list_start=list_start,
                list_len=lengths.to(torch.int32), q_offset=q_offset)


def top_mask(scores: Tensor, count: int) -> Tensor:
    """bool mask of the ``count`` largest entries along the last dim (clipped to its size)."""
    count = min(count, scores.shape[-1])
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter_(-1, scores.topk(count, dim=-1).indices, True) if count > 0 else mask


def minference_selection(q: Tensor, k: Tensor, *, vertical: int, slash: int, last_q: int,
                         scale: float) -> tuple[Tensor, Tensor]:
    """MInference's choice per (batch, q head): bool ``(batch, q_heads, kv_len)`` masks of the top
    ``vertical`` key columns and the top ``slash`` offsets by the last ``last_q`` queries' attention."""
    batch, q_heads, n_ctx, _ = q.shape
    n_last = min(last_q, n_ctx)
    columns = torch.zeros(batch, q_heads, k.shape[2], dtype=torch.bool, device=q.device)
    offsets = torch.zeros_like(columns)
    for h in range(q_heads):
        col_mass, diag_mass = vertical_slash_scores(last_queries_probs(q, k, h, n_last, scale))
        columns[:, h] = top_mask(col_mass, vertical)
        offsets[:, h] = top_mask(diag_mass, slash)
    return columns, offsets


def minference_plan(q: Tensor, k: Tensor, *, vertical: int = 1000, slash: int = 6096, last_q: int = 64,
                    block: int = 128, scale: float) -> Plan:
    """MInference's vertical-slash plan (one list per q head and query block of ``block`` queries)."""
    columns, offsets = minference_selection(q, k, vertical=vertical, slash=slash, last_q=last_q, scale=scale)
    return vertical_slash_to_plan(columns, offsets, block, q.shape[2])
