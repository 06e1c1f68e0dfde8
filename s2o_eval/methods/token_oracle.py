"""Oracles: S2O's stopping rule on keys ranked by their TRUE attention mass (yardsticks for planners)."""

from __future__ import annotations

from dataclasses import dataclass

from s2o_kernels import knobs

from .base import AttentionStats, SparseMethod, run_plan


@dataclass
class TokenOracle(SparseMethod):
    """The best token-granular ranking the stopping rule could be fed: per query tile and query head,
    every prefix key in descending order of the tile's exact attention mass. It needs the dense
    attention it is meant to avoid, so it measures planners; it is not a method to ship.

    Inputs q ``(batch, q_heads, seq_len, head_dim)``, k, v ``(batch, kv_heads, seq_len, head_dim)``.
    tau, patience, stop_rule: S2O's stop (defaults S2O's).
    block_m (128): query positions per tile.
    segment (0 = block_m): queries per list; 0 gives each tile its own list.
    block_n (0 = executor default): keys per chunk.
    sinks (64): first keys always computed exactly.
    """

    name = "token_oracle"
    yardstick = True
    summary = "yardstick: keys ranked by each tile's true attention mass, S2O's stop rule"

    tau: float = knobs.DEFAULT_TAU
    patience: int = knobs.DEFAULT_PATIENCE
    stop_rule: str = knobs.DEFAULT_STOP_RULE
    block_m: int = 128
    segment: int = 0
    block_n: int = 0
    sinks: int = knobs.DEFAULT_SINKS

    def __post_init__(self):
        knobs.check_tau(self.tau)
        knobs.check_patience(self.patience)
        knobs.check_stop_rule_name(self.stop_rule)
        if self.block_m < 1 or self.block_n < 0 or self.sinks < 0 or self.segment < 0:
            raise ValueError("block_m must be >= 1; block_n, sinks and segment >= 0")
        if self.segment % self.block_m:
            raise ValueError(f"segment {self.segment} must be a multiple of block_m {self.block_m}")

    def plan(self, q, k, *, scale):
        from s2o_kernels import token_oracle_plan

        return token_oracle_plan(q, k, segment=self.segment or self.block_m, sinks=self.sinks, block_m=self.block_m,
                                 scale=scale)

    def execute(self, q, k, v, plan, *, scale, stats: AttentionStats | None = None):
        return run_plan(q, k, v, plan, stats=stats, tau=self.tau, scale=scale, block_m=self.block_m,
                        block_n=self.block_n, stop_rule=self.stop_rule, patience=self.patience)


@dataclass
class SegmentOracle(TokenOracle):
    """The best ranking one list per (segment, query head) can have: every prefix key by the true
    attention mass the segment's queries give it, S2O's stop rule on it. The ceiling of any S2O
    planner with S2O's list layout (a yardstick, like token_oracle)."""

    name = "segment_oracle"
    summary = "yardstick: keys ranked by each segment's true attention mass (S2O's list layout)"

    segment: int = knobs.DEFAULT_SEGMENT
