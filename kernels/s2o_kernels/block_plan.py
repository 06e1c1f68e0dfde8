"""Block-sparse selections as plans: how every block-sparse peer (FlexPrefill, XAttention, PBS,
MInference, the block oracle) feeds the same index-guided executor as S2O.

A selection is a boolean ``(batch, q_heads, n_qblocks, n_kblocks)``: query block t computes key block
j when it is True. The diagonal block and the sink blocks are always computed (pass 1 of the
executor), so only blocks strictly before the diagonal and past the sinks go into the lists, as
token positions in ascending order. Run the result with ``tau = 0``.

Queries at an offset P into the keys (plan.py: a chunk after the KV cache, kv_len = P + seq_len):
query blocks are the chunk's (block t = queries [t * block, (t + 1) * block), at key positions
P + t * block on), key blocks are the cache's, from key 0 (block j = keys [j * block, (j + 1) *
block)), so a key block means the same keys whatever the chunking. When P is not a multiple of the
block, the key block holding a query block's first position straddles its diagonal: its keys before
the query block go into the list when it is selected, the rest is pass 1's. ``causal_blocks`` and
``diagonal_blocks`` give the peers this geometry; at P = 0 they are the lower triangle and the
diagonal.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .launch import causal_pairs, pass1_pairs
from .plan import Plan


def _block_bounds(n_ctx: int, n_keys: int, block: int, device=None) -> tuple[Tensor, Tensor, Tensor]:
    """Per query block, the key positions of its first and last query (P + t * block, P + last row),
    and each key block's first key: int64 ``(n_qblocks,)``, ``(n_qblocks,)``, ``(n_kblocks,)``."""
    q_offset = n_keys - n_ctx
    starts = torch.arange(-(-n_ctx // block), device=device) * block
    first = q_offset + starts
    last = q_offset + (starts + block).clamp(max=n_ctx) - 1
    return first, last, torch.arange(-(-n_keys // block), device=device) * block


def causal_blocks(n_ctx: int, n_keys: int, block: int, device=None) -> Tensor:
    """bool ``(n_qblocks, n_kblocks)``: key block j holds a key that some query of block t sees (its
    first key is at or before the block's last query). ``n_ctx`` queries, the last of ``n_keys`` keys."""
    _, last, key_first = _block_bounds(n_ctx, n_keys, block, device)
    return key_first[None, :] <= last[:, None]


def diagonal_blocks(n_ctx: int, n_keys: int, block: int, device=None) -> Tensor:
    """bool ``(n_qblocks, n_kblocks)``: the key blocks overlapping query block t's own positions (the
    one diagonal block at an offset that is a multiple of ``block``, else the two it straddles)."""
    first, last, key_first = _block_bounds(n_ctx, n_keys, block, device)
    return (key_first[None, :] <= last[:, None]) & (key_first[None, :] + block > first[:, None])


def prefix_block_sizes(n_ctx: int, n_keys: int, block: int, device=None) -> Tensor:
    """int64 ``(n_qblocks, n_kblocks)``: how many keys of key block j lie before query block t (its
    prefix, what its list may hold): ``block`` for blocks wholly before it, fewer for the block it
    starts inside, 0 from there on."""
    first, _, key_first = _block_bounds(n_ctx, n_keys, block, device)
    return (first[:, None] - key_first[None, :]).clamp(0, block)


def block_mass(q: Tensor, k: Tensor, block: int, scale: float, *, query_chunk: int = 4096) -> Tensor:
    """Exact attention mass per (query block, key block): fp32 ``(batch, q_heads, n_qblocks, n_kblocks)``.

    Entry [t, j] sums the causal softmax probabilities that the queries of block t give the keys of
    block j. q ``(batch, q_heads, seq_len, head_dim)``, k ``(batch, kv_heads, kv_len, head_dim)``
    (queries at offset kv_len - seq_len, causal bottom-right). Computed in query chunks, so memory
    stays O(chunk x kv_len) per head.
    """
    batch, q_heads, n_ctx, _ = q.shape
    n_keys = k.shape[2]
    group = q_heads // k.shape[1]
    n_blocks, n_kblocks = -(-n_ctx // block), -(-n_keys // block)
    out = torch.zeros(batch, q_heads, n_blocks, n_kblocks, dtype=torch.float32, device=q.device)
    key_block = torch.arange(n_keys, device=q.device) // block
    for start in range(0, n_ctx, query_chunk):
        stop = min(start + query_chunk, n_ctx)
        rows = torch.arange(start, stop, device=q.device)
        causal = torch.arange(n_keys, device=q.device)[None, :] <= (n_keys - n_ctx + rows)[:, None]
        for h in range(q_heads):
            scores = q[:, h, start:stop].float() @ k[:, h // group].float().transpose(-1, -2) * scale
            probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)  # (B, rows, kv_len)
            per_key_block = torch.zeros(batch, stop - start, n_kblocks, device=q.device)
            per_key_block.index_add_(2, key_block, probs)
            out[:, h].index_add_(1, rows // block, per_key_block)
    return out


def list_layout(keep: Tensor, sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Room for the lists of a block selection ``keep (batch, heads, n_qblocks, n_kblocks)`` of which
    query block t lists ``sizes[t, j]`` keys of key block j (``prefix_block_sizes``: the whole block
    before the diagonal): ``key_index`` (zeros, to be filled list after list in query-block order),
    ``list_start`` and ``list_len``."""
    batch, heads, n_blocks, _ = keep.shape
    lengths = (keep * sizes).sum(-1)  # (B, H, n_q) keys per list
    list_len = lengths.to(torch.int32)
    list_start = torch.zeros(batch, heads, n_blocks, dtype=torch.int64, device=keep.device)
    list_start[..., 1:] = lengths.cumsum(-1)[..., :-1]
    total = int(list_len.sum(-1).max()) if list_len.numel() else 0
    key_index = torch.zeros(batch, heads, max(total, 1), dtype=torch.int32, device=keep.device)
    return key_index, list_start, list_len


def blocks_to_plan(selected: Tensor, block: int, n_ctx: int, *, sinks: int = 0, q_offset: int = 0) -> Plan:
    """Turn a block selection into a plan with one list per (batch, query head, query block).

    selected: bool ``(batch, q_heads, n_qblocks, n_kblocks)`` for ``n_ctx`` queries at offset
    ``q_offset`` (n_kblocks covers q_offset + n_ctx keys); entries on or after the diagonal and
    inside the sinks are ignored (pass 1 computes those keys whatever the selection says).
    sinks: a multiple of ``block`` (whole sink blocks), default 0.
    """
    if sinks % block:
        raise ValueError(f"sinks ({sinks}) must be a multiple of the block size ({block})")
    batch, q_heads, n_q, n_k = selected.shape
    n_keys = q_offset + n_ctx
    n_blocks, n_kblocks = -(-n_ctx // block), -(-n_keys // block)
    if n_q != n_blocks or n_k != n_kblocks:
        raise ValueError(f"selection must be (batch, heads, {n_blocks}, {n_kblocks}) for {n_ctx} queries at offset "
                         f"{q_offset} in blocks of {block}; got {tuple(selected.shape)}")
    device = selected.device
    sizes = prefix_block_sizes(n_ctx, n_keys, block, device)
    keep = selected.bool() & (sizes > 0)
    keep[..., : sinks // block] = False
    key_index, list_start, list_len = list_layout(keep, sizes)
    offsets = torch.arange(block, device=device)
    for b in range(batch):
        for h in range(q_heads):
            qblocks, kblocks = keep[b, h].nonzero(as_tuple=True)  # row-major: by query block, then key block
            # a key block straddling the diagonal lists only its keys before the query block
            inside = offsets[None, :] < sizes[qblocks, kblocks][:, None]
            tokens = (kblocks[:, None] * block + offsets[None, :])[inside]
            key_index[b, h, : tokens.numel()] = tokens.to(torch.int32)
    return Plan(segment=block, sinks=sinks, key_index=key_index, list_start=list_start, list_len=list_len,
                q_offset=q_offset)


def plan_density(selected: Tensor, block: int, n_ctx: int, sinks: int = 0, q_offset: int = 0) -> float:
    """Share of causal QK pairs a selection computes (diagonal and sink blocks included)."""
    plan = blocks_to_plan(selected, block, n_ctx, sinks=sinks, q_offset=q_offset)
    pass1 = float(pass1_pairs(n_ctx, block, sinks, selected.device, q_offset))
    rows = (n_ctx - torch.arange(plan.list_len.shape[-1], device=selected.device) * block).clamp(max=block)
    listed = float((plan.list_len.double() * rows).sum()) / (selected.shape[0] * selected.shape[1])
    return (pass1 + listed) / causal_pairs(n_ctx, q_offset)
