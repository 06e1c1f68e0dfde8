"""minference: MInference's vertical-slash pattern from the last 64 queries, token-granular lists."""

from __future__ import annotations

from dataclasses import dataclass

from .block_sparse import BlockSparseMethod, check_block


@dataclass
class MInference(BlockSparseMethod):
    """MInference (NeurIPS 2024), https://arxiv.org/abs/2407.02490, vertical-slash heads, as a planner.

    From the attention of the last ``last_q`` queries, per q head, the top key columns (vertical) and
    the top query-key offsets (slash). Query block t then visits the chosen columns before it and the
    keys the chosen offsets reach from any of its rows; its own diagonal block is always computed.
    Inputs q ``(batch, q_heads, seq_len, head_dim)``, k, v ``(batch, kv_heads, seq_len, head_dim)``.

    vertical (1000): key columns kept per head.
    slash (6096): diagonals kept per head.
    budget_scale (1.0): multiplies both budgets (the knob to sweep); budgets are clipped to the sequence.
    last_q (64): trailing queries whose attention picks the pattern.
    block (128): query positions per list (the executor's tile).
    """

    name = "minference"
    summary = "peer: MInference vertical-slash (top columns and diagonals of the last 64 queries)"

    vertical: int = 1000
    slash: int = 6096
    budget_scale: float = 1.0
    last_q: int = 64
    block: int = 128

    def __post_init__(self):
        if self.vertical < 0 or self.slash < 0 or self.budget_scale < 0:
            raise ValueError("vertical, slash and budget_scale must be >= 0")
        if self.last_q < 1:
            raise ValueError("last_q must be >= 1")
        check_block(self.block)

    def plan(self, q, k, *, scale):
        from s2o_kernels.peers.minference import minference_plan

        return minference_plan(q, k, vertical=round(self.vertical * self.budget_scale),
                               slash=round(self.slash * self.budget_scale), last_q=self.last_q,
                               block=self.block, scale=scale)
