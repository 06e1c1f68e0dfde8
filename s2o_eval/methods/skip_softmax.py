"""skip_softmax: BLASST's skip-softmax on the shared executor (arXiv 2512.12087)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import AttentionStats, SparseMethod, run_plan


@dataclass
class SkipSoftmax(SparseMethod):
    """Skip-softmax (BLASST; in SGLang, TensorRT-LLM and FlashInfer): no planner. Every key is walked in
    its original order, and a chunk of keys whose largest score sits more than ``threshold`` nats below
    the running maximum of every row of the query tile skips its softmax and P.V; its QK is still
    computed. The density it reports is of P.V pairs; the QK pairs (all of them) are in ExecStats.

    https://arxiv.org/abs/2512.12087. On our executor a tile first computes its sinks and its own
    segment up to the diagonal (pass 1, exact), then the rest of the prefix in position order: the
    running maximum starts from the local keys, where a kernel walking keys left to right would start
    from the first ones. Inputs q ``(batch, q_heads, seq_len, head_dim)``, k, v ``(batch, kv_heads,
    seq_len, head_dim)``.

    threshold (9.0): the gap in nats (a skipped chunk's keys each hold < exp(-threshold) of the row's
        largest weight).
    block_m (128): query positions per tile (one query head).
    block_n (0 = executor default): keys per chunk, the granularity of a skip.
    segment (1024): the own-segment window computed exactly in pass 1.
    """

    name = "skip_softmax"
    summary = "skip-softmax (BLASST): keys in order, a chunk far below every row's max skips softmax and P.V"

    threshold: float = 9.0
    block_m: int = 128
    block_n: int = 0
    segment: int = 1024

    def __post_init__(self):
        if not 0.0 < self.threshold < float("inf"):
            raise ValueError(f"threshold must be a finite gap in nats > 0; got {self.threshold}")
        if self.block_m < 16 or self.block_n < 0 or self.segment % self.block_m:
            raise ValueError("block_m must be >= 16 and divide segment; block_n >= 0")

    def plan(self, q, k, *, scale):
        from s2o_kernels import dense_plan

        return dense_plan(q, k, self.segment, 0, self.block_m, per_head=True, in_order=True)

    def execute(self, q, k, v, plan, *, scale, stats: AttentionStats | None = None):
        return run_plan(q, k, v, plan, stats=stats, tau=0.0, scale=scale, block_m=self.block_m, block_n=self.block_n,
                        skip_gap=self.threshold)
