"""PBS-Attn's selection: permuted block-sparse attention (Wang et al., 2025,
https://arxiv.org/abs/2510.21270).

Keys are permuted within segments of ``segment`` tokens, most important first (importance: the
attention the sequence's last query block pays each key), so that a few permuted blocks gather a
segment's scattered heavy keys. Block selection then runs on the permuted layout. Permuting within
segments keeps causality between segments; a query block's own segment stays in original order and
is computed causally. In our plans a permuted block is just a set of token positions.

Queries at an offset P into the keys (k longer than q: a chunk after the KV cache): key segments and
key blocks are the cache's, from key 0; query blocks are the chunk's. A key segment is permuted for a
query block when it ends at or before the block's first position (P + t * block); the segment the
block starts in stays in original order and is computed causally (at P = 0: its own segment).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..block_plan import causal_blocks, list_layout, prefix_block_sizes
from ..plan import Plan
from .cumulative import cumulative_select


def segment_key_order(q: Tensor, k: Tensor, *, block: int, segment: int, scale: float) -> Tensor:
    """int64 ``(batch, q_heads, kv_len)``: key positions, each segment's keys sorted by the last query
    block's total attention to them (descending). A permutation within every segment."""
    batch, q_heads, n_ctx, _ = q.shape
    n_keys = k.shape[2]
    group = q_heads // k.shape[1]
    positions = torch.arange(n_keys, device=q.device)
    last = positions[max(n_keys - block, n_keys - n_ctx):]  # the last query block's key positions
    order = torch.empty(batch, q_heads, n_keys, dtype=torch.int64, device=q.device)
    seg_of = positions // segment
    for h in range(q_heads):
        scores = q[:, h, last - (n_keys - n_ctx)].float() @ k[:, h // group].float().transpose(-1, -2) * scale
        probs = torch.softmax(scores.masked_fill(positions[None, :] > last[:, None], float("-inf")), dim=-1)
        importance = probs.sum(dim=1)  # (batch, seq_len), in [0, rows]
        # sort by (segment ascending, importance descending) in one stable sort
        key = seg_of.double() * (2.0 * last.numel() + 2.0) - importance.double()
        order[:, h] = key.argsort(dim=-1, stable=True)
    return order


def pbs_select(q: Tensor, k: Tensor, order: Tensor, *, block: int, segment: int, scale: float,
               threshold: float = 0.9) -> Tensor:
    """Bool ``(batch, q_heads, n_qblocks, n_kblocks)`` over PERMUTED key blocks (block j holds the
    positions ``order[..., j*block:(j+1)*block]`` when j lies in a segment that ends before the query
    block starts, else the original positions). Kept always: the query block's own segment up to its
    diagonal and the permuted block holding token 0; then blocks by descending pooled score until
    the cumulative share reaches ``threshold`` (>= 1: every causal block)."""
    batch, q_heads, n_ctx, head_dim = q.shape
    n_keys = k.shape[2]
    group = q_heads // k.shape[1]
    earlier, causal = _permuted_geometry(n_ctx, n_keys, block, segment, q.device)
    key_blocks = torch.arange(causal.shape[1], device=q.device)

    def pooled(x: Tensor) -> Tensor:  # mean over the real tokens of each block
        n = x.shape[-2]
        n_x = -(-n // block)
        x = torch.nn.functional.pad(x.float(), (0, 0, 0, n_x * block - n)).reshape(*x.shape[:-2], n_x, block, head_dim)
        counts = (n - torch.arange(n_x, device=x.device) * block).clamp(max=block).float()
        return x.sum(-2) / counts[:, None]

    q_pool = pooled(q)                                                        # (B, Hq, n_qblocks, D)
    k_pool = pooled(k).repeat_interleave(group, dim=1)                        # original layout
    kp_pool = torch.empty_like(k_pool)                                        # permuted layout
    for h in range(q_heads):  # one head at a time: a permuted copy of all keys would be large
        kp_pool[:, h] = pooled(k[:, h // group].gather(1, order[:, h, :, None].expand(-1, -1, head_dim)))
    logits = torch.where(earlier, q_pool @ kp_pool.transpose(-1, -2), q_pool @ k_pool.transpose(-1, -2))
    probs = torch.softmax((logits * scale).masked_fill(~causal, float("-inf")), dim=-1)
    first = (order == 0).int().argmax(dim=-1) // block                       # (B, Hq): token 0's block
    forced = (~earlier & causal).expand(batch, q_heads, -1, -1).clone()
    forced |= (key_blocks == first[..., None])[:, :, None, :] & causal
    return cumulative_select(probs, causal, forced, threshold)


def _permuted_geometry(n_ctx: int, n_keys: int, block: int, segment: int, device) -> tuple[Tensor, Tensor]:
    """bool ``(n_qblocks, n_kblocks)`` each: key block j lies in a segment that ends at or before query
    block t's first position (permuted for it; at offset 0: an earlier segment than t's), and key
    block j is causal for t (``block_plan.causal_blocks``)."""
    causal = causal_blocks(n_ctx, n_keys, block, device)
    key_first = torch.arange(causal.shape[1], device=device) * block
    first = (n_keys - n_ctx) + torch.arange(causal.shape[0], device=device) * block
    earlier = (key_first[None, :] // segment + 1) * segment <= first[:, None]
    return earlier, causal


def permuted_blocks_to_plan(selected: Tensor, order: Tensor, *, block: int, segment: int, n_ctx: int) -> Plan:
    """A plan (one list per q head and query block) from a selection over permuted key blocks:
    blocks in earlier segments contribute the positions ``order`` puts in them, blocks of the query
    block's own segment (before its diagonal) their original positions. ``n_ctx`` queries, the last
    of ``order``'s key positions (offset kv_len - n_ctx). Run it with tau = 0."""
    batch, q_heads, n_blocks, n_kblocks = selected.shape
    n_keys = order.shape[-1]
    if n_blocks != -(-n_ctx // block) or n_kblocks != -(-n_keys // block) or n_keys < n_ctx:
        raise ValueError(f"selection {tuple(selected.shape)} and order {tuple(order.shape)} do not fit {n_ctx} queries "
                         f"in blocks of {block}")
    device = selected.device
    earlier, _ = _permuted_geometry(n_ctx, n_keys, block, segment, device)
    sizes = prefix_block_sizes(n_ctx, n_keys, block, device)  # whole for permuted blocks: their segment is over
    keep = selected.bool() & (sizes > 0)  # the rest of the diagonal is pass 1's
    key_index, list_start, list_len = list_layout(keep, sizes)
    offsets = torch.arange(block, device=device)
    for b in range(batch):
        for h in range(q_heads):
            qblocks, kblocks = keep[b, h].nonzero(as_tuple=True)
            slots = kblocks[:, None] * block + offsets[None, :]
            inside = offsets[None, :] < sizes[qblocks, kblocks][:, None]
            tokens = torch.where(earlier[qblocks, kblocks][:, None], order[b, h][slots.clamp(max=n_keys - 1)], slots)
            key_index[b, h, : int(inside.sum())] = tokens[inside].to(torch.int32)
    return Plan(segment=block, sinks=0, key_index=key_index, list_start=list_start, list_len=list_len,
                q_offset=n_keys - n_ctx)


def pbs_plan(q: Tensor, k: Tensor, *, block: int, segment: int, scale: float, threshold: float = 0.9) -> Plan:
    """PBS-Attn's selection as a plan; ``segment`` must be a multiple of ``block``."""
    if segment < block or segment % block:
        raise ValueError(f"segment ({segment}) must be a multiple of the block size ({block})")
    order = segment_key_order(q, k, block=block, segment=segment, scale=scale)
    selected = pbs_select(q, k, order, block=block, segment=segment, scale=scale, threshold=threshold)
    return permuted_blocks_to_plan(selected, order, block=block, segment=segment, n_ctx=q.shape[2])
