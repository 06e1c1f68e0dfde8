"""S2O: early stopping for sparse attention via online permutation (arXiv 2602.22575)."""

from __future__ import annotations

from dataclasses import dataclass

from s2o_kernels import knobs
from s2o_kernels.s2o.ranking import DEFAULT_RANK, DEFAULT_SCORE, check_score

from .base import AttentionStats, SparseMethod, run_plan


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
    score ("diag"): what keys are ranked by: "diag", one list per query head, by the segment's mean
        query's logit plus half its variance over the segment's queries, the covariance cut to its
        diagonal; "head_mean", the mean query's logit alone; "gauss", the variance from a
        rank-``rank`` covariance (an eigen-decomposition per segment: a slower plan); "mean", one list
        per kv head shared by its GQA group. The default is the one that measured fastest at matched
        error on the GPU (reports/bench/NOTES.md).
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
    dense_above: float = knobs.DEFAULT_DENSE_ABOVE

    def __post_init__(self):
        knobs.check_tau(self.tau)
        knobs.check_dense_above(self.dense_above)
        if self.segment < 16 or self.sinks < 0 or self.block_m < 0 or self.block_n < 0:
            raise ValueError("segment must be >= 16; sinks, block_m, block_n >= 0")
        if self.block_m and self.segment % self.block_m:
            raise ValueError(f"block_m {self.block_m} must divide segment {self.segment}")
        check_score(self.score, self.rank)
        knobs.check_patience(self.patience)
        knobs.check_stop_rule_name(self.stop_rule)

    def plan(self, q, k, *, scale):
        from s2o_kernels import s2o_plan_any

        return s2o_plan_any(q, k, segment=self.segment, sinks=self.sinks, block_m=self.block_m, score=self.score,
                            rank=self.rank, query_permute=self.query_permute, scale=scale)

    def execute(self, q, k, v, plan, *, scale, stats: AttentionStats | None = None):
        return run_plan(q, k, v, plan, stats=stats, tau=self.tau, scale=scale, block_m=self.block_m,
                        block_n=self.block_n, stop_rule=self.stop_rule, patience=self.patience,
                        dense_above=self.dense_above)
