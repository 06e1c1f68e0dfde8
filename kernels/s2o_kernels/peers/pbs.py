"""PBS-Attn's selection: permuted block-sparse attention (Wang et al., 2025,
https://arxiv.org/abs/2510.21270).

Keys are permuted within segments of ``segment`` tokens, most important first (importance: the
attention the sequence's last query block pays each key), so that a few permuted blocks gather a
segment's scattered heavy keys. Block selection then runs on the permuted layout. Permuting within
segments keeps causality between segments; a query block's own segment stays in original order and
is computed causally. In our plans a permuted block is just a set of token positions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..block_plan import list_layout
from ..plan import Plan
from .cumulative import cumulative_select


def segment_key_order(q: Tensor, k: Tensor, *, block: int, segment: int, scale: float) -> Tensor:
    """int64 ``(batch, q_heads, seq_len)``: key positions, each segment's keys sorted by the last query
    block's total attention to them (descending). A permutation within every segment."""
    batch, q_heads, n_ctx, _ = q.shape
    group = q_heads // k.shape[1]
    positions = torch.arange(n_ctx, device=q.device)
    last = positions[max(n_ctx - block, 0):]
    order = torch.empty(batch, q_heads, n_ctx, dtype=torch.int64, device=q.device)
    seg_of = positions // segment
    for h in range(q_heads):
        scores = q[:, h, last].float() @ k[:, h // group].float().transpose(-1, -2) * scale
        probs = torch.softmax(scores.masked_fill(positions[None, :] > last[:, None], float("-inf")), dim=-1)
        importance = probs.sum(dim=1)  # (batch, seq_len), in [0, rows]
        # sort by (segment ascending, importance descending) in one stable sort
        key = seg_of.double() * (2.0 * last.numel() + 2.0) - importance.double()
        order[:, h] = key.argsort(dim=-1, stable=True)
    return order


def pbs_select(q: Tensor, k: Tensor, order: Tensor, *, block: int, segment: int, scale: float,
               threshold: float = 0.9) -> Tensor:
    """Bool ``(batch, q_heads, n_qblocks, n_kblocks)`` over PERMUTED key blocks (block j holds the
    positions ``order[..., j*block:(j+1)*block]`` when j lies in an earlier segment than the query
    block, else the original positions). Kept always: the query block's own segment up to its
    diagonal and the permuted block holding token 0; then blocks by descending pooled score until
    the cumulative share reaches ``threshold`` (>= 1: every causal block)."""
    batch, q_heads, n_ctx, head_dim = q.shape
    group = q_heads // k.shape[1]
    n_blocks = -(-n_ctx // block)
    blocks = torch.arange(n_blocks, device=q.device)
    same_segment = (blocks[:, None] * block // segment) == (blocks[None, :] * block // segment)
    causal = blocks[None, :] <= blocks[:, None]
    padded = n_blocks * block
    pad = padded - n_ctx

    def pooled(x: Tensor) -> Tensor:  # mean over the real tokens of each block
        x = torch.nn.functional.pad(x.float(), (0, 0, 0, pad)).reshape(*x.shape[:-2], n_blocks, block, head_dim)
        counts = (n_ctx - blocks * block).clamp(max=block).float()
        return x.sum(-2) / counts[:, None]

    q_pool = pooled(q)                                                        # (B, Hq, n_blocks, D)
    k_pool = pooled(k).repeat_interleave(group, dim=1)                        # original layout
    kp_pool = torch.empty_like(q_pool)                                        # permuted layout
    for h in range(q_heads):  # one head at a time: a permuted copy of all keys would be large
        kp_pool[:, h] = pooled(k[:, h // group].gather(1, order[:, h, :, None].expand(-1, -1, head_dim)))
    logits = torch.where(same_segment, q_pool @ k_pool.transpose(-1, -2), q_pool @ kp_pool.transpose(-1, -2))
    probs = torch.softmax((logits * scale).masked_fill(~causal, float("-inf")), dim=-1)
    first = (order == 0).int().argmax(dim=-1) // block                       # (B, Hq): token 0's block
    forced = (same_segment & causal).expand(batch, q_heads, -1, -1).clone()
    forced |= (blocks == first[..., None])[:, :, None, :] & causal
    return cumulative_select(probs, causal, forced, threshold)


def permuted_blocks_to_plan(selected: Tensor, order: Tensor, *, block: int, segment: int, n_ctx: int) -> Plan:
    """A plan (one list per q head and query block) from a selection over permuted key blocks:
    blocks in earlier segments contribute the positions ``order`` puts in them, blocks of the query
    block's own segment (before its diagonal) their original positions. Run it with tau = 0."""
    batch, q_heads, n_blocks, _ = selected.shape
    if n_blocks != -(-n_ctx // block) or order.shape[-1] != n_ctx:
        raise ValueError(f"selection {tuple(selected.shape)} and order {tuple(order.shape)} do not fit {n_ctx} tokens "
                         f"in blocks of {block}")
    device = selected.device
    blocks = torch.arange(n_blocks, device=device)
    keep = selected.bool() & (blocks[None, :] < blocks[:, None])  # the diagonal is pass 1's
    same_segment = (blocks[:, None] * block // segment) == (blocks[None, :] * block // segment)
    key_index, list_start, list_len = list_layout(keep, block)
    offsets = torch.arange(block, device=device)
    for b in range(batch):
        for h in range(q_heads):
            qblocks, kblocks = keep[b, h].nonzero(as_tuple=True)
            slots = kblocks[:, None] * block + offsets[None, :]  # blocks before a diagonal are whole
            tokens = torch.where(same_segment[qblocks, kblocks][:, None], slots, order[b, h][slots])
            key_index[b, h, : tokens.numel()] = tokens.reshape(-1).to(torch.int32)
    return Plan(segment=block, sinks=0, key_index=key_index, list_start=list_start, list_len=list_len)


def pbs_plan(q: Tensor, k: Tensor, *, block: int, segment: int, scale: float, threshold: float = 0.9) -> Plan:
    """PBS-Attn's selection as a plan; ``segment`` must be a multiple of ``block``."""
    if segment < block or segment % block:
        raise ValueError(f"segment ({segment}) must be a multiple of the block size ({block})")
    order = segment_key_order(q, k, block=block, segment=segment, scale=scale)
    selected = pbs_select(q, k, order, block=block, segment=segment, scale=scale, threshold=threshold)
    return permuted_blocks_to_plan(selected, order, block=block, segment=segment, n_ctx=q.shape[2])
