"""block_oracle: key blocks ranked by their true attention mass (the ceiling of block granularity)."""

from __future__ import annotations

from dataclasses import dataclass

from .block_sparse import BlockSparseMethod, check_share


@dataclass
class BlockOracle(BlockSparseMethod):
    """Per (batch, q head, query block): its diagonal block, then key blocks by descending exact
    attention mass until they hold ``threshold`` of the query block's mass (or the best ``top_k``).
    It needs the dense attention it is meant to avoid, so it measures block-sparse planners; it is
    not a method to ship. (The "oracle" block selection of the block-sparse literature, e.g.
    https://arxiv.org/abs/2503.16428 section 4.)

    Inputs q ``(batch, q_heads, seq_len, head_dim)``, k, v ``(batch, kv_heads, seq_len, head_dim)``.
    threshold (0.95): share of each query block's attention mass its kept blocks must hold (1 = dense).
    top_k (0 = off): keep exactly this many blocks per query block (diagonal included) instead.
    block (128): query and key block size.
    """

    name = "block_oracle"
    yardstick = True
    summary = "yardstick: key blocks ranked by true attention mass, cumulative threshold"

    threshold: float = 0.95
    top_k: int = 0
    block: int = 128

    def __post_init__(self):
        check_share("threshold", self.threshold)
        if self.top_k < 0 or self.block < 16 or self.block & (self.block - 1):
            raise ValueError(f"top_k must be >= 0 and block a power of two >= 16; got {self.top_k}, {self.block}")

    def plan(self, q, k, *, scale):
        from s2o_kernels.peers.block_oracle import block_oracle_plan

        return block_oracle_plan(q, k, block=self.block, scale=scale, threshold=self.threshold, top_k=self.top_k)
