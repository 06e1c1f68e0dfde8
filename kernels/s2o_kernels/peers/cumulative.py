"""The selection rule the block-sparse peers share: per query block, the fewest key blocks whose
scores add up to a share ``threshold`` of the row-block's total (forced blocks counted first)."""

from __future__ import annotations

import torch
from torch import Tensor


def cumulative_select(scores: Tensor, allowed: Tensor, forced: Tensor, threshold: float, *,
                      top_k: int = 0) -> Tensor:
    """Bool, shaped like ``scores (..., n_kblocks)``: the key blocks each row (query block) keeps.

    scores: non-negative importance per key block; allowed: bool, the causal blocks a row may keep
    (broadcastable); forced: bool, blocks kept whatever their score (diagonal, first block), taken
    first. Then blocks in descending score until the kept share of the allowed total reaches
    ``threshold`` (>= 1: every allowed block), or, with ``top_k`` > 0, the first ``top_k`` blocks of
    that order in all (forced ones included; at least the forced ones).
    """
    allowed = allowed.expand_as(scores)
    forced = forced.expand_as(scores) & allowed
    if top_k <= 0 and threshold >= 1.0:
        return allowed.clone()
    share = scores.double().clamp(min=0).masked_fill(~allowed, 0.0)
    share = share / share.sum(-1, keepdim=True).clamp(min=1e-300)
    # forced blocks first (any share is <= 1 < 2), then by share; disallowed blocks last
    priority = (share + 2.0 * forced).masked_fill(~allowed, -1.0)
    order = priority.argsort(dim=-1, descending=True)
    sorted_share = share.gather(-1, order)
    if top_k > 0:
        rank = torch.arange(scores.shape[-1], device=scores.device)
        keep_sorted = (rank < top_k).expand_as(sorted_share)
    else:
        before = sorted_share.cumsum(-1) - sorted_share  # share already kept before this block
        keep_sorted = before < threshold
    keep = torch.zeros_like(allowed).scatter(-1, order, keep_sorted)
    return (keep & allowed) | forced
