"""xattention: block-sparse prefill with antidiagonal block scoring (XAttention)."""

from __future__ import annotations

from dataclasses import dataclass

from .block_sparse import BlockSparseMethod, check_block, check_share


@dataclass
class XAttention(BlockSparseMethod):
    """XAttention: each (query block, key block) is scored by summing the attention logits on strided
    antidiagonals (a softmax over these estimates per query row); each query block keeps its diagonal,
    the first block, and key blocks by descending score until their share reaches ``threshold``.

    https://arxiv.org/abs/2503.16428 (ICML 2025). Selection in s2o_kernels.peers.xattention.
    Inputs q ``(batch, q_heads, seq_len, head_dim)``, k, v ``(batch, kv_heads, seq_len, head_dim)``.
    threshold (0.9): cumulative share of the estimated block scores to keep (1 = dense).
    stride (8): antidiagonal stride; must divide block.
    block (128): query and key block size.
    """

    name = "xattention"
    summary = "XAttention: antidiagonal block scores, cumulative-threshold block selection"

    threshold: float = 0.9
    stride: int = 8
    block: int = 128

    def __post_init__(self):
        check_share("threshold", self.threshold)
        check_block(self.block)
        if self.stride < 1 or self.block % self.stride:
            raise ValueError(f"stride must be >= 1 and divide block {self.block}; got {self.stride}")

    def plan(self, q, k, *, scale):
        from s2o_kernels.peers.xattention import xattention_plan

        return xattention_plan(q, k, block=self.block, scale=scale, stride=self.stride, threshold=self.threshold)
