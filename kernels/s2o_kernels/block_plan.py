"""Block-sparse selections as plans: how every block-sparse peer (FlexPrefill, XAttention, PBS,
MInference, the block oracle) feeds the same index-guided executor as S2O.

A selection is a boolean ``(batch, q_heads, n_qblocks, n_kblocks)``: query block t computes key block
j when it is True. The diagonal block and the sink blocks are always computed (pass 1 of the
executor), so only blocks strictly before the diagonal and past the sinks go into the lists, as
token positions in ascending order. Run the result with ``tau = 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .launch import pass1_pairs
from .plan import Plan


def block_mass(q: Tensor, k: Tensor, block: int, scale: float, *, query_chunk: int = 4096) -> Tensor:
    """Exact attention mass per (query block, key block): fp32 ``(batch, q_heads, n_qblocks, n_kblocks)``.

    Entry [t, j] sums the causal softmax probabilities that the queries of block t give the keys of
    block j. Computed in query chunks, so memory stays O(chunk x seq_len) per head.
    """
    batch, q_heads, n_ctx, _ = q.shape
    group = q_heads // k.shape[1]
    n_blocks = -(-n_ctx // block)
    out = torch.zeros(batch, q_heads, n_blocks, n_blocks, dtype=torch.float32, device=q.device)
    key_block = torch.arange(n_ctx, device=q.device) // block
    for start in range(0, n_ctx, query_chunk):
        stop = min(start + query_chunk, n_ctx)
        rows = torch.arange(start, stop, device=q.device)
        causal = torch.arange(n_ctx, device=q.device)[None, :] <= rows[:, None]
        for h in range(q_heads):
            scores = q[:, h, start:stop].float() @ k[:, h // group].float().transpose(-1, -2) * scale
            probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)  # (B, rows, N)
            per_key_block = torch.zeros(batch, stop - start, n_blocks, device=q.device)
            per_key_block.index_add_(2, key_block, probs)
            out[:, h].index_add_(1, rows // block, per_key_block)
    return out


def list_layout(keep: Tensor, block: int) -> tuple[Tensor, Tensor, Tensor]:
    """Room for the lists of a block selection ``keep (batch, heads, n_qblocks, n_kblocks)`` holding only
    blocks before each diagonal (so every listed block is whole): ``key_index`` (zeros, to be filled
    list after list in query-block order), ``list_start`` and ``list_len``."""
    batch, heads, n_blocks, _ = keep.shape
    counts = keep.sum(-1)  # (B, H, n_q) blocks per list
    list_len = (counts * block).to(torch.int32)
    list_start = torch.zeros(batch, heads, n_blocks, dtype=torch.int64, device=keep.device)
    list_start[..., 1:] = (counts * block).cumsum(-1)[..., :-1]
    total = int(list_len.sum(-1).max()) if list_len.numel() else 0
    key_index = torch.zeros(batch, heads, max(total, 1), dtype=torch.int32, device=keep.device)
    return key_index, list_start, list_len


def blocks_to_plan(selected: Tensor, block: int, n_ctx: int, *, sinks: int = 0) -> Plan:
    """Turn a block selection into a plan with one list per (batch, query head, query block).

    selected: bool ``(batch, q_heads, n_qblocks, n_kblocks)``; entries on or after the diagonal and
    inside the sinks are ignored (pass 1 computes those blocks whatever the selection says).
    sinks: a multiple of ``block`` (whole sink blocks), default 0.
    """
    if sinks % block:
        raise ValueError(f"sinks ({sinks}) must be a multiple of the block size ({block})")
    batch, q_heads, n_q, n_k = selected.shape
    n_blocks = -(-n_ctx // block)
    if n_q != n_blocks or n_k != n_blocks:
        raise ValueError(f"selection must be (batch, heads, {n_blocks}, {n_blocks}) for {n_ctx} tokens in blocks "
                         f"of {block}; got {tuple(selected.shape)}")
    device = selected.device
    keep = selected.bool() & torch.ones(n_blocks, n_blocks, dtype=torch.bool, device=device).tril(-1)
    keep[..., : sinks // block] = False
    key_index, list_start, list_len = list_layout(keep, block)
    offsets = torch.arange(block, device=device)
    for b in range(batch):
        for h in range(q_heads):
            _, kblocks = keep[b, h].nonzero(as_tuple=True)  # row-major: by query block, then key block
            tokens = (kblocks[:, None] * block + offsets[None, :]).reshape(-1)
            key_index[b, h, : tokens.numel()] = tokens.to(torch.int32)
    return Plan(segment=block, sinks=sinks, key_index=key_index, list_start=list_start, list_len=list_len)


def plan_density(selected: Tensor, block: int, n_ctx: int, sinks: int = 0) -> float:
    """Share of causal QK pairs a selection computes (diagonal and sink blocks included)."""
    plan = blocks_to_plan(selected, block, n_ctx, sinks=sinks)
    pass1 = float(pass1_pairs(n_ctx, block, sinks, selected.device))
    rows = (n_ctx - torch.arange(plan.list_len.shape[-1], device=selected.device) * block).clamp(max=block)
    listed = float((plan.list_len.double() * rows).sum()) / (selected.shape[0] * selected.shape[1])
    return (pass1 + listed) / (n_ctx * (n_ctx + 1) / 2)
