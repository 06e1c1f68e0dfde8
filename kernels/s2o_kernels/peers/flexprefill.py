"""FlexPrefill's selection (arXiv 2502.20766): per head, query-aware blocks or a vertical-slash pattern.

The last query block decides. Its true attention, summed per key block, is compared with the cheap
estimate from mean-pooled queries and keys (Jensen-Shannon distance). When the two agree the pooled
estimate can be trusted, and every query block keeps the smallest set of key blocks whose estimated
mass reaches ``gamma``. When they disagree, attention is not block-smooth (hot columns, diagonals) and
the head takes the vertical-slash pattern read from the last block's attention instead.

Queries at an offset into the keys (k longer than q, a chunk after the KV cache): query blocks are
the chunk's, key blocks the cache's from key 0, causal bottom-right (``block_plan``'s geometry).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..block_plan import blocks_to_plan, causal_blocks
from ..plan import Plan
from .minference import last_queries_probs, vertical_slash_scores


def pool_blocks(x: Tensor, block: int) -> Tensor:
    """Mean over consecutive blocks of ``block`` positions (the last one may be short):
    ``(batch, heads, seq_len, dim)`` -> fp32 ``(batch, heads, n_blocks, dim)``."""
    batch, heads, n_ctx, dim = x.shape
    n_blocks = -(-n_ctx // block)
    sums = torch.zeros(batch, heads, n_blocks, dim, dtype=torch.float32, device=x.device)
    sums.index_add_(2, torch.arange(n_ctx, device=x.device) // block, x.float())
    sizes = (n_ctx - torch.arange(n_blocks, device=x.device) * block).clamp(max=block)
    return sums / sizes[:, None]


def smallest_cover(probs: Tensor, gamma: float, minimum: int = 0) -> Tensor:
    """bool mask of the fewest largest entries (along the last dim) whose sum reaches ``gamma`` of the
    row's total, and at least ``minimum`` entries; ``gamma >= 1`` keeps everything."""
    if gamma >= 1.0:
        return torch.ones_like(probs, dtype=torch.bool)
    ranked, order = probs.sort(dim=-1, descending=True)
    before = ranked.cumsum(-1) - ranked                            # mass of the entries ranked above
    keep_ranked = before < gamma * ranked.sum(-1, keepdim=True)
    keep_ranked[..., :minimum] = True
    return torch.zeros_like(keep_ranked).scatter_(-1, order, keep_ranked)


def js_distance(p: Tensor, r: Tensor) -> Tensor:
    """Jensen-Shannon distance (square root of the divergence, natural log) along the last dim."""
    p = p / p.sum(-1, keepdim=True)
    r = r / r.sum(-1, keepdim=True)
    mid = (p + r) / 2

    def kl(a: Tensor) -> Tensor:
        return torch.where(a > 0, a * (a.clamp(min=1e-30).log() - mid.clamp(min=1e-30).log()), 0.0).sum(-1)

    return ((kl(p) + kl(r)) / 2).clamp(min=0).sqrt()


def pooled_block_probs(q_pooled: Tensor, k_pooled: Tensor, scale: float, causal: Tensor) -> Tensor:
    """Causal softmax over key blocks of pooled queries against pooled keys, fp32
    ``(batch, q_heads, n_qblocks, n_kblocks)``; query block t sees the key blocks ``causal[t]`` marks
    (``block_plan.causal_blocks``: 0..t when the queries start at key 0)."""
    group = q_pooled.shape[1] // k_pooled.shape[1]
    scores = q_pooled @ k_pooled.repeat_interleave(group, dim=1).transpose(-1, -2) * scale
    return torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)


def flexprefill_decision(q: Tensor, k: Tensor, *, block: int, tau: float, scale: float) -> tuple[Tensor, Tensor]:
    """Per (batch, q head): (query_aware bool, JS distance fp32), both ``(batch, q_heads)``.

    The last ``block`` queries' true attention summed per key block is compared with the softmax of
    their pooled query against the pooled key blocks; query-aware when the distance is below ``tau``.
    """
    batch, q_heads, n_ctx, _ = q.shape
    n_keys = k.shape[2]
    n_last = min(block, n_ctx)
    key_block = torch.arange(n_keys, device=q.device) // block
    n_blocks = -(-n_keys // block)
    q_last = q[:, :, n_ctx - n_last:].float().mean(2)                          # (B, Hq, D)
    k_pooled = pool_blocks(k, block).repeat_interleave(q_heads // k.shape[1], dim=1)
    estimate = torch.softmax((k_pooled @ q_last[..., None])[..., 0] * scale, dim=-1)  # the last block sees all
    distance = torch.zeros(batch, q_heads, dtype=torch.float32, device=q.device)
    for h in range(q_heads):
        true_mass = torch.zeros(batch, n_blocks, dtype=torch.float32, device=q.device)
        true_mass.index_add_(1, key_block, last_queries_probs(q, k, h, n_last, scale).sum(1))
        distance[:, h] = js_distance(estimate[:, h], true_mass)
    return distance < tau, distance


def query_aware_blocks(q: Tensor, k: Tensor, *, block: int, gamma: float, min_blocks: int, scale: float) -> Tensor:
    """Per query block, the fewest key blocks covering ``gamma`` of the pooled estimate (at least
    ``min_blocks``): bool ``(batch, q_heads, n_blocks, n_blocks)``."""
    probs = pooled_block_probs(pool_blocks(q, block), pool_blocks(k, block), scale,
                               causal_blocks(q.shape[2], k.shape[2], block, q.device))
    return smallest_cover(probs, gamma, min_blocks)  # blocks on or after the diagonal: ignored by blocks_to_plan


def vertical_slash_blocks(q: Tensor, k: Tensor, head: int, *, block: int, gamma: float, min_budget: int,
                          scale: float) -> Tensor:
    """The vertical-slash pattern of one q head as blocks: bool ``(batch, n_blocks, n_blocks)``.

    From the last block's attention, the fewest key columns and the fewest diagonals that each cover
    ``gamma`` of the mass (at least ``min_budget`` of each); a block is kept when it holds a chosen
    column or a chosen diagonal crosses it. Returns ``(batch, n_qblocks, n_kblocks)`` (queries at
    offset P = kv_len - seq_len: query block t's rows sit at key positions P + t * block on).
    """
    n_ctx, n_keys = q.shape[2], k.shape[2]
    q_offset = n_keys - n_ctx
    n_blocks, n_kblocks = -(-n_ctx // block), -(-n_keys // block)
    col_mass, diag_mass = vertical_slash_scores(last_queries_probs(q, k, head, min(block, n_ctx), scale))
    columns = smallest_cover(col_mass, gamma, min_budget)
    offsets = smallest_cover(diag_mass, gamma, min_budget)
    batch = q.shape[0]
    key_block = torch.arange(n_keys, device=q.device) // block
    hit = torch.zeros(batch, n_kblocks, device=q.device).index_add_(1, key_block, columns.float()) > 0
    # a diagonal at offset o crosses key block j from query block t when some row r of t (key position
    # P + r) has P + r - o in block j: o in [P + t*block - (j*block + block - 1), P + last row of t - j*block]
    count = torch.cat([torch.zeros(batch, 1, device=q.device), offsets.float().cumsum(-1)], dim=-1)
    t = torch.arange(n_blocks, device=q.device)
    j = torch.arange(n_kblocks, device=q.device)
    last_row = q_offset + (t * block + block).clamp(max=n_ctx) - 1
    lo = (q_offset + t[:, None] * block - j[None, :] * block - block + 1).clamp(0, n_keys)
    hi = (last_row[:, None] - j[None, :] * block).clamp(-1, n_keys - 1)
    crossed = count[:, (hi + 1).reshape(-1)] > count[:, lo.reshape(-1)]
    return hit[:, None, :] | crossed.reshape(batch, n_blocks, n_kblocks)  # hot columns: every query block


def flexprefill_plan(q: Tensor, k: Tensor, *, block: int = 128, gamma: float = 0.9, tau: float = 0.1,
                     min_budget: int = 1024, scale: float) -> tuple[Plan, Tensor]:
    """FlexPrefill's plan (one list per q head and query block) and, per (batch, q head), whether the
    head took the query-aware pattern (bool ``(batch, q_heads)``)."""
    n_ctx = q.shape[2]
    query_aware, _ = flexprefill_decision(q, k, block=block, tau=tau, scale=scale)
    min_blocks = -(-min_budget // block)
    selected = query_aware_blocks(q, k, block=block, gamma=gamma, min_blocks=min_blocks, scale=scale)
    for h in range(q.shape[1]):
        if not bool(query_aware[:, h].all()):
            pattern = vertical_slash_blocks(q, k, h, block=block, gamma=gamma, min_budget=min_budget, scale=scale)
            selected[:, h] = torch.where(query_aware[:, h, None, None], selected[:, h], pattern)
    return blocks_to_plan(selected, block, n_ctx, q_offset=k.shape[2] - n_ctx), query_aware
