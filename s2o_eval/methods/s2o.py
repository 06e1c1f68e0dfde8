"""S2O: early stopping for sparse attention via online permutation (arXiv 2602.22575)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from s2o_kernels import knobs
from s2o_kernels.s2o.ranking import DEFAULT_RANK, DEFAULT_SCORE, check_score, plan_heads

from .base import AttentionStats, SparseMethod, record_stats, run_plan
from .dense import fastest_causal

# Forecast density (s2o_kernels/s2o/forecast.py) from which a head runs on the dense kernel instead. A
# head the walk visits almost whole costs ~2x more through the gathering executor (efficiency ~0.5 of
# FA3) than dense. The forecast undershoots real walks (reports/bench/NOTES.md): at 0.75 it flags only
# heads whose estimate is nearly flat (random inputs: all of them), which the walk visits whole, and
# misses some others.
DEFAULT_DENSE_ABOVE = 0.75


@dataclass
class S2O(SparseMethod):
    """S2O prefill attention: every prefix key ranked per segment and query head by its estimated mass,
    walked by importance through an index list, each query tile stopping once ``patience`` chunks in
    a row added less than ``tau`` of its mass.

    https://arxiv.org/abs/2602.22575 (our reconstruction: kernels/s2o_kernels, and reports/bench/NOTES.md
    for what was measured). Inputs q ``(batch, q_heads, seq_len, head_dim)``, k, v ``(batch, kv_heads,
    seq_len, head_dim)``.

    tau: the speed/accuracy knob, a share of each row's softmax mass; 0 = dense attention.
    segment (1024): queries per segment; the keys before a segment are ranked once for it.
    sinks (64): first keys always computed exactly (attention sinks).
    score ("head_mean"): what keys are ranked by: "head_mean", one list per query head, by the
        segment's mean query's logit; "gauss", the same plus half the logit's variance over the
        segment's queries (a rank-``rank`` covariance); "diag", the same with the covariance's diagonal
        (no eigen-decomposition: about head_mean's plan cost); "mean", one list per kv head shared by
        its GQA group. The default is the one that measured best at equal error on the GPU
        (reports/bench/NOTES.md).
    rank (8): the covariance's rank for score "gauss".
    patience (4): chunks in a row that must each bring every row < tau before a tile stops.
    stop_rule ("chunk"): the test of a chunk: "chunk", its share of each row's mass; "tail", (keys
        left) x (its largest per-key mass) over each row's mass, a bound on the unseen rest.
    block_m (0 = executor default): query positions per tile; must divide segment.
    block_n (0 = executor default): keys per chunk, the stopping rule's granularity.
    query_permute (False): order queries within a segment by their logit against the mean query.
    dense_above (0.75): query heads whose walk is forecast (from the planner's score histogram) to visit
        at least this density run on the fastest dense kernel (FA3, else SDPA) instead: exact, and
        cheaper than walking nearly everything through the gather. 0 = never (tau > 0 only).
    """

    name = "s2o"
    summary = "S2O: index-guided sparse prefill, keys by estimated mass, per-tile early stop (Triton)"

    tau: float = knobs.DEFAULT_TAU
    segment: int = knobs.DEFAULT_SEGMENT
    sinks: int = knobs.DEFAULT_SINKS
    score: str = DEFAULT_SCORE
    rank: int = DEFAULT_RANK
    patience: int = knobs.DEFAULT_PATIENCE
    stop_rule: str = knobs.DEFAULT_STOP_RULE
    block_m: int = 0
    block_n: int = 0
    query_permute: bool = False
    dense_above: float = DEFAULT_DENSE_ABOVE

    def __post_init__(self):
        knobs.check_tau(self.tau)
        if not 0.0 <= self.dense_above <= 1.0:
            raise ValueError(f"dense_above must be within [0, 1] (0 = never); got {self.dense_above}")
        if self.segment < 16 or self.sinks < 0 or self.block_m < 0 or self.block_n < 0:
            raise ValueError("segment must be >= 16; sinks, block_m, block_n >= 0")
        if self.block_m and self.segment % self.block_m:
            raise ValueError(f"block_m {self.block_m} must divide segment {self.segment}")
        check_score(self.score, self.rank)
        knobs.check_patience(self.patience)
        knobs.check_stop_rule_name(self.stop_rule)

    def _tile(self, q, k) -> int:
        heads = plan_heads(self.score, q.shape[1], k.shape[1])
        return knobs.tile_positions(q.shape[1], heads, k.shape[1], self.segment, self.block_m)

    def plan(self, q, k, *, scale):
        from s2o_kernels import s2o_plan_any

        return s2o_plan_any(q, k, segment=self.segment, sinks=self.sinks, block_m=self._tile(q, k), score=self.score,
                            rank=self.rank, query_permute=self.query_permute, scale=scale)

    def execute(self, q, k, v, plan, *, scale, stats: AttentionStats | None = None):
        executor_args = dict(tau=self.tau, scale=scale, block_m=self._tile(q, k), block_n=self.block_n,
                             stop_rule=self.stop_rule, patience=self.patience)
        dense = self.dense_heads(q, k, plan)
        if dense is None:
            return run_plan(q, k, v, plan, stats=stats, **executor_args)
        if bool(dense.all()):  # nothing left to walk: the dense kernel alone, GQA and all
            out = fastest_causal(q, k, v, scale).to(q.dtype)
            if stats is not None:
                from s2o_kernels.launch import causal_pairs

                causal = causal_pairs(q.shape[2], plan.q_offset)
                stats.add(computed=causal * q.shape[0] * q.shape[1], causal=causal * q.shape[0] * q.shape[1],
                          per_head=[1.0] * q.shape[1])
            return out
        from s2o_kernels import execute_plan
        from s2o_kernels.launch import with_dense_heads

        # The dense heads' lists are emptied (the executor then runs only their cheap pass 1), and
        # their output is replaced by the dense kernel's.
        plan_dense = dense if plan.heads == q.shape[1] else dense[:: q.shape[1] // plan.heads]
        walked = dataclasses.replace(plan, list_len=plan.list_len.masked_fill(plan_dense[None, :, None], 0))
        out, exec_stats = execute_plan(q, k, v, walked, **executor_args)
        heads = dense.nonzero().flatten()
        kv_of = heads // (q.shape[1] // k.shape[1])
        out[:, heads] = fastest_causal(q[:, heads], k[:, kv_of], v[:, kv_of], scale).to(out.dtype)
        record_stats(stats, with_dense_heads(exec_stats, dense))
        return out

    def dense_heads(self, q, k, plan) -> torch.Tensor | None:
        """Query heads (bool (q_heads,)) whose forecast density reaches ``dense_above``; None when none
        does (or the plan has no histogram, tau is 0, or dense_above is 0)."""
        if self.tau <= 0 or self.dense_above <= 0 or plan.score_histogram is None:
            return None
        from s2o_kernels import forecast_density

        block_n = self.block_n or knobs.default_block_n(q.shape[-1])
        forecast = forecast_density(plan.score_histogram, plan.bucket_width, q.shape[2], plan.segment,
                                    tau=self.tau, block_n=block_n, patience=self.patience,
                                    q_offset=plan.q_offset).mean(0)
        dense = forecast >= self.dense_above
        if plan.heads != q.shape[1]:  # one list per kv head: its group goes together
            dense = dense.repeat_interleave(q.shape[1] // plan.heads)
        return dense if bool(dense.any()) else None
