"""FlashPrefill's block selection (Fan et al., 2026, https://arxiv.org/abs/2603.06199; code:
github.com/qhfan/FlashPrefill, ``ops/flashprefill_native_forward.py``).

The probe: every key block is mean-pooled to one vector (per kv head); every real query row of a
query block (not a pooled query) is dotted with the pooled key blocks it has fully passed (row r
sees key block j when r >= the block's last slot, j * block + block - 1, so a block's own diagonal
counts through its last row only). A query block's score for key block j is the sum over its rows of
exp(logit - m), m being the largest logit anywhere in the query block: one shared maximum, not a
softmax per row, so the rows with the strongest logits dominate. Per q head.

The rule: key block j is kept when its score is at least ``alpha`` times the best score of the row
(max-relative, no sort and no cumulative sum), or it is forced: one of the first ``sink_blocks``
blocks, one of the ``window_blocks`` blocks ending at the diagonal, or any block of the last
``full_last_blocks`` query blocks (those are dense). With ``min_blocks`` > 0 the best that many
blocks are kept too (their native path has this; their RULER and vLLM settings leave it at 0, and
their vLLM path, ``flashprefill_varlen_func``, selects the same way without it).

Defaults, from the authors' code: block 128 (queries and keys alike); sink 2 blocks; window 4
blocks; last 2 query blocks dense; min_blocks 0; alpha per model in their configs (Llama 0.18,
Qwen2 0.08, Qwen3-MoE 0.12, Qwen2.5-VL 0.10, Qwen3-MoE-VL 0.22). Ours is 0.12, their setting for
the model their RULER script runs (Qwen3-30B-A3B-Instruct-2507).

Where ours differs, and why:
- only real query rows count. Their probe also scores the zero rows that pad a ragged last query
  block (each adds exp(0 - m) to every block it sees, and its 0 logits enter m); that block is
  dense under their default ``full_last_blocks`` = 2, so this shows only when that is set to 0;
- ``min_blocks`` ranks causal blocks only; theirs ranks all blocks (causal ones score above the
  zeros of the others unless a score underflows to 0 too), then drops the non-causal ones;
- the scores need not be divided by their row sum (they do): the rule compares a score with
  a fraction of its row's best, which the division leaves unchanged.
Pooled keys are rounded to the input dtype before the dot products, as their kernel stores them.

Queries at an offset P into the keys (k longer than q: a chunk after the KV cache): query blocks are
the chunk's, key blocks the cache's from key 0; a row's position is its key position P + r, and a
query block's diagonal is the key block of its last row (``block_plan``'s geometry).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..block_plan import blocks_to_plan, causal_blocks
from ..plan import Plan
from .flexprefill import pool_blocks


def probe_scores(q: Tensor, k: Tensor, *, block: int, scale: float, query_chunk: int = 8192) -> Tensor:
    """fp32 ``(batch, q_heads, n_qblocks, n_kblocks)``: each query block's probe score per key block,
    exp(logit - the query block's largest logit) summed over its rows; 0 where no row sees the block.

    q ``(batch, q_heads, seq_len, head_dim)``, k ``(batch, kv_heads, kv_len, head_dim)`` (queries at
    offset kv_len - seq_len). Computed ``query_chunk`` query rows at a time (whole query blocks), all
    heads at once.
    """
    batch, q_heads, n_ctx, head_dim = q.shape
    kv_heads, n_keys = k.shape[1], k.shape[2]
    group = q_heads // kv_heads
    n_kblocks = -(-n_keys // block)
    k_pooled = pool_blocks(k, block).to(k.dtype).float()                     # (B, Hkv, n_kblocks, D)
    key_blocks = torch.arange(n_kblocks, device=q.device)
    scores = torch.zeros(batch, q_heads, -(-n_ctx // block), n_kblocks, dtype=torch.float32, device=q.device)
    rows_per_chunk = block * max(1, query_chunk // block)
    for lo in range(0, n_ctx, rows_per_chunk):
        hi = min(lo + rows_per_chunk, n_ctx)
        n_rows, first_block = hi - lo, lo // block
        chunk_blocks = -(-n_rows // block)
        # q head h reads kv head h // group: one product per kv head covers its whole group
        q_chunk = q[:, :, lo:hi].float().reshape(batch, kv_heads, group * n_rows, head_dim)
        logits = (q_chunk @ k_pooled.transpose(-1, -2)).reshape(batch, q_heads, n_rows, n_kblocks) * scale
        rows = torch.arange(n_keys - n_ctx + lo, n_keys - n_ctx + hi, device=q.device)  # key positions
        seen = key_blocks[None, :] < ((rows + 1) // block)[:, None]          # row r has passed block j's last slot
        logits.masked_fill_(~seen, float("-inf"))
        if n_rows < chunk_blocks * block:  # a ragged last query block: pad it with rows that see nothing
            logits = torch.nn.functional.pad(logits, (0, 0, 0, chunk_blocks * block - n_rows), value=float("-inf"))
        logits = logits.view(batch, q_heads, chunk_blocks, block, n_kblocks)
        peak = logits.amax(dim=(3, 4), keepdim=True)                         # one maximum per query block
        peak.masked_fill_(peak == float("-inf"), 0.0)                        # a block that sees nothing scores 0
        scores[:, :, first_block:first_block + chunk_blocks] = logits.sub_(peak).exp_().sum(3)
    return scores


def forced_blocks(causal: Tensor, *, sink_blocks: int, window_blocks: int, full_last_blocks: int) -> Tensor:
    """bool ``(n_qblocks, n_kblocks)``: the blocks kept whatever their score (causal ones only).
    ``causal`` (``block_plan.causal_blocks``) marks the key blocks each query block sees; the last of
    them is its diagonal, where the window ends (block t when the queries start at key 0)."""
    n_qblocks, n_kblocks = causal.shape
    t = torch.arange(n_qblocks, device=causal.device)[:, None]
    j = torch.arange(n_kblocks, device=causal.device)[None, :]
    diagonal = causal.sum(-1, keepdim=True) - 1
    forced = (j < sink_blocks) | (diagonal - j < window_blocks) | (t >= n_qblocks - full_last_blocks)
    return forced & causal


def flashprefill_select(q: Tensor, k: Tensor, *, block: int, scale: float, alpha: float = 0.12,
                        sink_blocks: int = 2, window_blocks: int = 4, full_last_blocks: int = 2,
                        min_blocks: int = 0) -> Tensor:
    """Bool ``(batch, q_heads, n_qblocks, n_kblocks)``: per q head and query block, the causal key
    blocks whose probe score reaches ``alpha`` x the row's best (0: every block), the ``min_blocks``
    best, and the forced ones (see ``forced_blocks``)."""
    scores = probe_scores(q, k, block=block, scale=scale)
    n_kblocks = scores.shape[-1]
    causal = causal_blocks(q.shape[2], k.shape[2], block, q.device)
    keep = scores >= alpha * scores.amax(-1, keepdim=True)
    if min_blocks > 0:
        best = scores.masked_fill(~causal, -1.0).topk(min(min_blocks, n_kblocks), dim=-1).indices
        keep.scatter_(-1, best, True)
    forced = forced_blocks(causal, sink_blocks=sink_blocks, window_blocks=window_blocks,
                           full_last_blocks=full_last_blocks)
    return (keep | forced) & causal


def flashprefill_select_reference(q: Tensor, k: Tensor, *, block: int, scale: float, alpha: float = 0.12,
                                  sink_blocks: int = 2, window_blocks: int = 4, full_last_blocks: int = 2,
                                  min_blocks: int = 0) -> tuple[Tensor, Tensor]:
    """The twin of ``flashprefill_select``, one (batch, q head, query block) at a time and each rule
    written out: (selection, the margin ``score / best - alpha`` per block, fp64, for telling
    near-ties apart when comparing). Slow; for tests."""
    batch, q_heads, n_ctx, _ = q.shape
    n_keys = k.shape[2]
    q_offset = n_keys - n_ctx
    group = q_heads // k.shape[1]
    n_blocks, n_kblocks = -(-n_ctx // block), -(-n_keys // block)
    selected = torch.zeros(batch, q_heads, n_blocks, n_kblocks, dtype=torch.bool)
    margin = torch.full((batch, q_heads, n_blocks, n_kblocks), float("inf"), dtype=torch.float64)
    for b in range(batch):
        for h in range(q_heads):
            keys = k[b, h // group]
            pooled = torch.stack([keys[j * block:(j + 1) * block].float().mean(0) for j in range(n_kblocks)])
            pooled = pooled.to(k.dtype).float()
            for t in range(n_blocks):
                rows = q[b, h, t * block:min((t + 1) * block, n_ctx)].float()
                diagonal = (q_offset + t * block + len(rows) - 1) // block  # the key block of the last row
                logits = {}                                   # (row, key block) -> logit, for the pairs seen
                for i, row in enumerate(rows):
                    position = q_offset + t * block + i
                    for j in range(diagonal + 1):
                        if position >= j * block + block - 1:
                            logits[i, j] = float(row @ pooled[j]) * scale
                peak = max(logits.values(), default=0.0)
                score = [0.0] * (diagonal + 1)
                for (_, j), logit in logits.items():
                    score[j] += math.exp(logit - peak)
                best = max(score)
                ranked = sorted(range(diagonal + 1), key=lambda j: -score[j])[:min_blocks]
                for j in range(diagonal + 1):
                    in_sink = j < sink_blocks
                    in_window = diagonal - j < window_blocks
                    dense_row = t >= n_blocks - full_last_blocks
                    above = score[j] >= alpha * best
                    selected[b, h, t, j] = above or j in ranked or in_sink or in_window or dense_row
                    if best > 0:
                        margin[b, h, t, j] = score[j] / best - alpha
    return selected.to(q.device), margin


def flashprefill_plan(q: Tensor, k: Tensor, *, block: int, scale: float, alpha: float = 0.12,
                      sink_blocks: int = 2, window_blocks: int = 4, full_last_blocks: int = 2,
                      min_blocks: int = 0) -> Plan:
    """FlashPrefill's selection as a plan (one list per q head and query block); run it with tau = 0."""
    selected = flashprefill_select(q, k, block=block, scale=scale, alpha=alpha, sink_blocks=sink_blocks,
                                   window_blocks=window_blocks, full_last_blocks=full_last_blocks,
                                   min_blocks=min_blocks)
    return blocks_to_plan(selected, block, q.shape[2], q_offset=k.shape[2] - q.shape[2])
