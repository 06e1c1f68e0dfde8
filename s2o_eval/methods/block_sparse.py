"""What the block-sparse peers share: their plans run on S2O's executor with no early stop."""

from __future__ import annotations

from dataclasses import dataclass

from .base import AttentionStats, SparseMethod, run_plan


def check_share(name: str, value: float) -> None:
    """A cumulative-share knob (threshold, gamma): in (0, 1], 1 = dense."""
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1]; got {value}")


def check_block(block: int) -> None:
    """A block size the executor tiles well: a power of two >= 16."""
    if block < 16 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 16; got {block}")


@dataclass
class BlockSparseMethod(SparseMethod):
    """A peer whose plan lists, per query block of ``self.block`` queries, the keys it selected; the
    shared executor walks every listed key (tau = 0). Subclasses define ``block`` and ``plan``."""

    def execute(self, q, k, v, plan, *, scale, stats: AttentionStats | None = None):
        return run_plan(q, k, v, plan, stats=stats, tau=0.0, scale=scale, block_m=self.block)
