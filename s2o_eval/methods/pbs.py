"""pbs: permuted block-sparse prefill (PBS-Attn)."""

from __future__ import annotations

from dataclasses import dataclass

from .block_sparse import BlockSparseMethod, check_block, check_share


@dataclass
class PBS(BlockSparseMethod):
    """PBS-Attn: keys are permuted within segments by the attention the last query block pays them,
    then blocks of the permuted layout are chosen by mean-pooled query/key scores until their share
    reaches ``threshold``; the permuted block holding token 0 and the query block's own segment (in
    original order, causal) are always kept. A permuted block is a set of token positions in the plan.

    https://arxiv.org/abs/2510.21270 (2025). Selection in s2o_kernels.peers.pbs.
    Inputs q ``(batch, q_heads, seq_len, head_dim)``, k, v ``(batch, kv_heads, seq_len, head_dim)``.
    threshold (0.9): cumulative share of the pooled block scores to keep (1 = dense).
    segment (256): keys are permuted within segments of this many tokens; a multiple of block.
    block (128): query and key block size.
    """

    name = "pbs"
    summary = "PBS-Attn: keys permuted within segments, cumulative-threshold block selection"

    threshold: float = 0.9
    segment: int = 256
    block: int = 128

    def __post_init__(self):
        check_share("threshold", self.threshold)
        check_block(self.block)
        if self.segment < self.block or self.segment % self.block:
            raise ValueError(f"segment must be a multiple of block {self.block}; got {self.segment}")

    def plan(self, q, k, *, scale):
        from s2o_kernels.peers.pbs import pbs_plan

        return pbs_plan(q, k, block=self.block, segment=self.segment, scale=scale, threshold=self.threshold)
