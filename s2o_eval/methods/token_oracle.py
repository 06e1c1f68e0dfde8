"""token_oracle: S2O's stopping rule on keys ranked by each tile's TRUE attention mass (a yardstick)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import AttentionStats, SparseMethod
from .s2o import check_stop_rule_name, execute_plan


@dataclass
class TokenOracle(SparseMethod):
    """The best token-granular ranking the stopping rule could be fed: per query tile and query head,
    every prefix key in descending order of the tile's exact attention mass. It needs the dense
    attention it is meant to avoid, so it measures planners; it is not a method to ship.

    Inputs q ``(batch, q_heads, seq_len, head_dim)``, k, v ``(batch, kv_heads, seq_len, head_dim)``.
    tau (0.003): S2O's stop rule threshold (0 = dense).
    block_m (128): query positions per tile; each tile gets its own list.
    block_n (0 = executor default): keys per chunk.
    sinks (64): first keys always computed exactly.
    stop_rule ("chunk"): S2O's stop test, "chunk" or "tail" (see S2O).
    """

    name = "token_oracle"
    yardstick = True
    summary = "yardstick: keys ranked by each tile's true attention mass, S2O's stop rule"

    tau: float = 0.003
    block_m: int = 128
    block_n: int = 0
    sinks: int = 64
    stop_rule: str = "chunk"

    def __post_init__(self):
        if self.tau < 0 or self.block_m < 1 or self.block_n < 0 or self.sinks < 0:
            raise ValueError("tau, block_n, sinks must be >= 0 and block_m >= 1")
        check_stop_rule_name(self.stop_rule)

    def plan(self, q, k, *, scale):
        from s2o_kernels import token_oracle_plan

        return token_oracle_plan(q, k, segment=self.block_m, sinks=self.sinks, block_m=self.block_m, scale=scale)

    def execute(self, q, k, v, plan, *, scale, stats: AttentionStats | None = None):
        return execute_plan(q, k, v, plan, tau=self.tau, scale=scale, block_m=self.block_m, block_n=self.block_n,
                            stats=stats, stop_rule=self.stop_rule)
