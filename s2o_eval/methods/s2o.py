"""S2O: early stopping for sparse attention via online permutation (arXiv 2602.22575)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import AttentionStats, SparseMethod

# the guides the Triton planner builds (kernels/planner.py; head_mix exists in its PyTorch twin only)
GUIDES = ("mean", "head_mean")
STOP_RULES = ("chunk", "tail")  # kernels/executor.py STOP_RULES (not imported here: that loads triton)


def check_stop_rule_name(stop_rule: str) -> None:
    """Reject a stop_rule the executor does not know (a user's typo in --method-args)."""
    if stop_rule not in STOP_RULES:
        raise ValueError(f"stop_rule must be one of {', '.join(STOP_RULES)}; got {stop_rule!r}")


def record_stats(stats: AttentionStats | None, exec_stats) -> None:
    """Add an executor launch's pair counts to the run's running stats."""
    if stats is None:
        return
    batch, q_heads = exec_stats.computed_pairs.shape
    stats.add(computed=float(exec_stats.computed_pairs.sum()), causal=float(exec_stats.causal_pairs * batch * q_heads),
              per_head=exec_stats.density_per_head.tolist())


def tile_positions(q_heads: int, kv_heads: int, block_m: int, segment: int) -> int:
    """Query positions per executor tile: explicit, or the executor's default (128 rows shared by the
    GQA group's heads, padded to a power of two) made to divide the segment."""
    if block_m:
        return block_m
    from s2o_kernels.executor import DEFAULT_ROWS

    group = q_heads // kv_heads
    return math.gcd(max(DEFAULT_ROWS // (1 << (group - 1).bit_length()), 1), segment)


def execute_plan(q, k, v, plan, *, tau: float, scale: float, block_m: int, block_n: int,
                 stats: AttentionStats | None = None, stop_rule: str = "chunk") -> torch.Tensor:
    """The shared index-guided executor on any plan: Triton on the GPU, its PyTorch twin elsewhere.

    stop_rule: "chunk" or "tail", which test ends a tile's walk at tau > 0 (executor.STOP_RULES)."""
    from s2o_kernels import sparse_attention, torch_decide_chunks, torch_sparse_attention
    from s2o_kernels.executor import default_block_n, stats_from_chunks

    if q.is_cuda:
        out, exec_stats = sparse_attention(q, k, v, plan, tau=tau, scale=scale, block_m=block_m,
                                           block_n=block_n or None, stop_rule=stop_rule, return_stats=True)
    else:  # no GPU: the same function through the PyTorch reference (correct, slow)
        block_n = block_n or default_block_n(q.shape[-1])
        chunks = torch_decide_chunks(q, k, plan, tau, scale=scale, block_m=block_m, block_n=block_n,
                                     stop_rule=stop_rule)
        out = torch_sparse_attention(q, k, v, plan, chunks=chunks, scale=scale, block_m=block_m,
                                     block_n=block_n).to(q.dtype)
        exec_stats = stats_from_chunks(chunks, plan, q.shape[2], q.shape[1] // k.shape[1], block_m=block_m,
                                       block_n=block_n)
    record_stats(stats, exec_stats)
    return out


@dataclass
class S2O(SparseMethod):
    """S2O prefill attention: keys ranked per segment by a pooled query guide, walked by importance
    through an index list, each query tile stopping once a chunk adds less than ``tau`` of its mass.

    https://arxiv.org/abs/2602.22575 (our reconstruction: see kernels/ and the design notes).
    Inputs q ``(batch, q_heads, seq_len, head_dim)``, k, v ``(batch, kv_heads, seq_len, head_dim)``.

    tau (0.0003): stop a tile after the first chunk bringing every row less than this share of its
        softmax mass; 0 = dense attention (every key visited). The default is the largest tau whose
        RULER accuracy matched fa2's on the H100 (gemma-3-270m, 4K-32K; 0.001 lost 2 points, 0.003
        lost 12): reports/ruler-gemma3-270m-h100/report.md.
    segment (1024): queries per segment; the keys before a segment are ranked once for it.
    sinks (64): first keys always computed exactly (attention sinks).
    block_m (0 = executor default): query positions per tile; must divide segment.
    block_n (0 = executor default): keys per chunk, the stopping rule's granularity.
    guide ("mean"): one guide per kv head and segment ("mean") or one per query head ("head_mean":
        lower density at equal error, a dearer plan; kernels/PLANNER_NOTES.md).
    query_permute (False): order queries within a segment by their agreement with the guide.
    stop_rule ("chunk"): what tau is compared with after each chunk: "chunk", the chunk's share of
        each row's mass; "tail", (keys left) x (the chunk's largest per-key mass) over each row's mass,
        a bound on the unseen rest that keeps diffuse rows walking (H100: reports/bench/NOTES.md).
    """

    name = "s2o"
    summary = "S2O: index-guided sparse prefill, keys by importance, per-tile early stop (Triton)"

    tau: float = 0.0003
    segment: int = 1024
    sinks: int = 64
    block_m: int = 0
    block_n: int = 0
    guide: str = "mean"
    query_permute: bool = False
    stop_rule: str = "chunk"

    def __post_init__(self):
        if self.tau < 0:
            raise ValueError(f"tau must be >= 0 (0 = dense); got {self.tau}")
        if self.segment < 16 or self.sinks < 0 or self.block_m < 0 or self.block_n < 0:
            raise ValueError("segment must be >= 16; sinks, block_m, block_n >= 0")
        if self.block_m and self.segment % self.block_m:
            raise ValueError(f"block_m {self.block_m} must divide segment {self.segment}")
        if self.guide not in GUIDES:
            raise ValueError(f"guide must be one of {', '.join(GUIDES)}; got {self.guide!r}")
        check_stop_rule_name(self.stop_rule)

    def _tile(self, q, k) -> int:
        return tile_positions(q.shape[1], k.shape[1], self.block_m, self.segment)

    def plan(self, q, k, *, scale):
        from s2o_kernels import s2o_plan, torch_s2o_plan

        make = s2o_plan if q.is_cuda else torch_s2o_plan
        return make(q, k, segment=self.segment, sinks=self.sinks, block_m=self._tile(q, k), guide=self.guide,
                    query_permute=self.query_permute, scale=scale)

    def execute(self, q, k, v, plan, *, scale, stats: AttentionStats | None = None):
        return execute_plan(q, k, v, plan, tau=self.tau, scale=scale, block_m=self._tile(q, k),
                            block_n=self.block_n, stats=stats, stop_rule=self.stop_rule)
