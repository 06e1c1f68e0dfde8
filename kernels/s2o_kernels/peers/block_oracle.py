"""Block oracle: key blocks ranked by their TRUE attention mass (the ceiling of block granularity).

It needs the dense attention it is meant to avoid, so it measures block-sparse planners; it is not
a method to ship.
"""

from __future__ import annotations

from torch import Tensor

from ..block_plan import block_mass, blocks_to_plan, causal_blocks, diagonal_blocks
from ..plan import Plan
from .cumulative import cumulative_select


def block_oracle_select(q: Tensor, k: Tensor, *, block: int, scale: float, threshold: float = 0.95,
                        top_k: int = 0) -> Tensor:
    """Bool ``(batch, q_heads, n_qblocks, n_kblocks)``: per query block, its diagonal block, then key
    blocks by descending exact attention mass until their cumulative share of the query block's mass
    reaches ``threshold``; with ``top_k`` > 0, the best ``top_k`` blocks (diagonal included) instead.

    q ``(batch, q_heads, seq_len, head_dim)``, k ``(batch, kv_heads, kv_len, head_dim)`` (queries at
    offset kv_len - seq_len: the diagonal is the key blocks the query block's own positions fall in).
    """
    mass = block_mass(q, k, block, scale)
    n_ctx, n_keys = q.shape[2], k.shape[2]
    return cumulative_select(mass, causal_blocks(n_ctx, n_keys, block, q.device),
                             diagonal_blocks(n_ctx, n_keys, block, q.device), threshold, top_k=top_k)


def block_oracle_plan(q: Tensor, k: Tensor, *, block: int, scale: float, threshold: float = 0.95,
                      top_k: int = 0) -> Plan:
    """The oracle's selection as a plan (one list per q head and query block); run it with tau = 0."""
    selected = block_oracle_select(q, k, block=block, scale=scale, threshold=threshold, top_k=top_k)
    return blocks_to_plan(selected, block, q.shape[2], q_offset=k.shape[2] - q.shape[2])
