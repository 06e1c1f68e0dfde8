"""XAttention's block selection (Xu et al., ICML 2025, https://arxiv.org/abs/2503.16428).

Each (query block, key block) is scored by antidiagonal sums: cut the attention matrix into
``stride x stride`` cells and sum, in each cell, the ``stride`` logits on its antidiagonal. Every
antidiagonal crosses every row and every column of its cell once, so its sum sees each query and
each key, yet costs ``1 / stride`` of the full product. The estimated logits go through a softmax per
strided query row; their sums per block pair are the block scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..block_plan import blocks_to_plan, causal_blocks, diagonal_blocks
from ..plan import Plan
from .cumulative import cumulative_select


def antidiagonal_block_scores(q: Tensor, k: Tensor, *, block: int, stride: int, scale: float,
                              query_chunk: int = 32768) -> Tensor:
    """fp32 ``(batch, q_heads, n_qblocks, n_kblocks)``: each query block's estimated attention mass
    per key block (rows sum to the number of strided query rows of the block).

    q ``(batch, q_heads, seq_len, head_dim)``, k ``(batch, kv_heads, kv_len, head_dim)`` (queries at
    offset P = kv_len - seq_len: query cells are the chunk's, key cells start at key 0);
    ``stride`` must divide ``block``. Computed ``query_chunk`` query positions at a time, so memory
    stays O(query_chunk / stride x kv_len / stride) per head.
    """
    batch, q_heads, n_ctx, head_dim = q.shape
    n_keys = k.shape[2]
    q_offset = n_keys - n_ctx
    group = q_heads // k.shape[1]
    n_blocks, n_kblocks = -(-n_ctx // block), -(-n_keys // block)
    padded, padded_keys = n_blocks * block, n_kblocks * block
    cells, key_cells = padded // stride, padded_keys // stride
    per_block = block // stride
    # cell rows: queries a*stride + (stride-1-r) meet keys b*stride + r (r = 0..stride-1), so one
    # product of these concatenations sums a cell's antidiagonal
    qs = F.pad(q.float(), (0, 0, 0, padded - n_ctx)).reshape(batch, q_heads, cells, stride, head_dim)
    qs = qs.flip(3).reshape(batch, q_heads, cells, stride * head_dim)
    ks = F.pad(k.float(), (0, 0, 0, padded_keys - n_keys)).reshape(batch, k.shape[1], key_cells, stride * head_dim)
    cell, key_cell = torch.arange(cells, device=q.device), torch.arange(key_cells, device=q.device)
    # a cell is visible when its antidiagonal has a causal element: its first key (r = 0) is at or
    # before its last query's key position P + a*stride + stride - 1 (at P = 0: key cell <= query
    # cell); and its keys are real tokens (padding keys start where real ones end)
    visible = ((key_cell[None, :] * stride <= q_offset + cell[:, None] * stride + stride - 1)
               & (key_cell[None, :] * stride < n_keys))
    real_row = (cell * stride < n_ctx).float()
    out = torch.empty(batch, q_heads, n_blocks, n_kblocks, dtype=torch.float32, device=q.device)
    rows_per_chunk = per_block * max(1, query_chunk // block)  # whole query blocks per chunk
    for h in range(q_heads):
        for lo in range(0, cells, rows_per_chunk):
            hi = min(lo + rows_per_chunk, cells)
            # the mean of a cell's antidiagonal logits estimates one logit
            logits = qs[:, h, lo:hi] @ ks[:, h // group].transpose(-1, -2) * (scale / stride)
            probs = torch.softmax(logits.masked_fill(~visible[lo:hi], float("-inf")), dim=-1) * real_row[lo:hi, None]
            out[:, h, lo // per_block:hi // per_block] = (
                probs.reshape(batch, (hi - lo) // per_block, per_block, n_kblocks, per_block).sum(dim=(2, 4)))
    return out


def xattention_select(q: Tensor, k: Tensor, *, block: int, scale: float, stride: int = 8,
                      threshold: float = 0.9) -> Tensor:
    """Bool ``(batch, q_heads, n_qblocks, n_kblocks)``: per query block its diagonal and the first
    block, then key blocks by descending antidiagonal score until their cumulative share of the row's
    total score reaches ``threshold`` (>= 1: every causal block)."""
    scores = antidiagonal_block_scores(q, k, block=block, stride=stride, scale=scale)
    n_ctx, n_keys = q.shape[2], k.shape[2]
    causal = causal_blocks(n_ctx, n_keys, block, q.device)
    forced = diagonal_blocks(n_ctx, n_keys, block, q.device)
    forced[:, 0] = True
    return cumulative_select(scores, causal, forced, threshold)


def xattention_plan(q: Tensor, k: Tensor, *, block: int, scale: float, stride: int = 8,
                    threshold: float = 0.9) -> Plan:
    """XAttention's selection as a plan (one list per q head and query block); run it with tau = 0."""
    selected = xattention_select(q, k, block=block, scale=scale, stride=stride, threshold=threshold)
    return blocks_to_plan(selected, block, q.shape[2], q_offset=k.shape[2] - q.shape[2])
