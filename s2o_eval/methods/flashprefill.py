"""flashprefill: FlashPrefill's pooled block probe with a max-relative threshold."""

from __future__ import annotations

from dataclasses import dataclass

from .block_sparse import BlockSparseMethod, check_block


@dataclass
class FlashPrefill(BlockSparseMethod):
    """FlashPrefill (arXiv 2026), https://arxiv.org/abs/2603.06199, as a planner for the shared executor.

    Every query row is dotted with the mean-pooled key blocks it has passed; a query block's score
    per key block sums exp(logit - the block's largest logit) over its rows. A key block is kept when
    its score reaches ``alpha`` x the row's best (no sort, no cumulative sum), or it is a sink block,
    in the local window, or in one of the last query blocks (computed dense). Per q head.
    Inputs q ``(batch, q_heads, seq_len, head_dim)``, k, v ``(batch, kv_heads, seq_len, head_dim)``.
    Selection and where it departs from the authors' code: s2o_kernels.peers.flashprefill.

    alpha (0.12): keep key blocks scoring at least this share of the best one (the knob to sweep;
        0 = dense). The authors set it per model: 0.08 (Qwen2) to 0.22 (Qwen3-MoE-VL); 0.12 is
        their Qwen3-MoE setting, the model their RULER script runs.
    sink_blocks (2): the first key blocks, always kept.
    window_blocks (4): blocks ending at the diagonal (diagonal included), always kept.
    full_last_blocks (2): the last query blocks keep every causal block.
    min_blocks (0): also keep each query block's best this many key blocks (0 = off).
    block (128): query and key block size; one list per (q head, query block).
    """

    name = "flashprefill"
    summary = "peer: FlashPrefill, pooled block probe, blocks above alpha x the best (no sort)"

    alpha: float = 0.12
    sink_blocks: int = 2
    window_blocks: int = 4
    full_last_blocks: int = 2
    min_blocks: int = 0
    block: int = 128

    def __post_init__(self):
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (0 = dense); got {self.alpha}")
        counts = dict(sink_blocks=self.sink_blocks, window_blocks=self.window_blocks,
                      full_last_blocks=self.full_last_blocks, min_blocks=self.min_blocks)
        for key, value in counts.items():
            if value < 0:
                raise ValueError(f"{key} must be >= 0; got {value}")
        check_block(self.block)

    def plan(self, q, k, *, scale):
        from s2o_kernels.peers.flashprefill import flashprefill_plan

        return flashprefill_plan(q, k, block=self.block, scale=scale, alpha=self.alpha,
                                 sink_blocks=self.sink_blocks, window_blocks=self.window_blocks,
                                 full_last_blocks=self.full_last_blocks, min_blocks=self.min_blocks)
