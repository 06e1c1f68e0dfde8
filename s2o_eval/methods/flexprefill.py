"""flexprefill: FlexPrefill's per-head choice of query-aware blocks or a vertical-slash pattern."""

from __future__ import annotations

from dataclasses import dataclass

from .block_sparse import BlockSparseMethod, check_block


@dataclass
class FlexPrefill(BlockSparseMethod):
    """FlexPrefill (ICLR 2025), https://arxiv.org/abs/2502.20766, as a planner for the shared executor.

    Per head, the last query block's true attention per key block is compared with the estimate from
    mean-pooled queries and keys (Jensen-Shannon distance). Below ``tau`` every query block keeps the
    fewest key blocks covering ``gamma`` of the pooled estimate; otherwise the head takes the vertical-
    slash pattern of the last block's attention (fewest columns and diagonals covering ``gamma``), as blocks.
    Inputs q ``(batch, q_heads, seq_len, head_dim)``, k, v ``(batch, kv_heads, seq_len, head_dim)``.

    gamma (0.9): share of the estimated attention mass to keep (the knob to sweep; 1 = dense).
    tau (0.1): JS distance below which a head trusts the pooled estimate (query-aware blocks).
    min_budget (1024): at least this many keys' worth per query block (query-aware) or of columns and
        of diagonals each (vertical-slash); clipped to the sequence.
    block (128): query and key block size; one list per (q head, query block).
    """

    name = "flexprefill"
    summary = "peer: FlexPrefill, query-aware or vertical-slash blocks per head (JS distance)"

    gamma: float = 0.9
    tau: float = 0.1
    min_budget: int = 1024
    block: int = 128

    def __post_init__(self):
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1] (1 = dense); got {self.gamma}")
        if self.tau < 0 or self.min_budget < 0:
            raise ValueError("tau and min_budget must be >= 0")
        check_block(self.block)

    def plan(self, q, k, *, scale):
        from s2o_kernels.peers.flexprefill import flexprefill_plan

        plan, _ = flexprefill_plan(q, k, block=self.block, gamma=self.gamma, tau=self.tau,
                                   min_budget=self.min_budget, scale=scale)
        return plan
