"""The plain-PyTorch twins of the Triton kernels: what each computes, written as loops.

- ``torch_s2o_plan``: the twin of S2O's planner (s2o/planner.py).
- ``torch_decide_chunks`` + ``torch_sparse_attention``: the twin of the executor (executor.py).
- ``torch_decide_skips``: the twin of the executor's skip-softmax decisions.

``torch_sparse_attention`` computes what ``sparse_attention`` computes from the same plan, REPLAYING
the kernel's per-tile chunk counts (``ExecStats.chunks``) instead of re-deciding the stop, so that a
tile whose gain lands within rounding of tau cannot make the two disagree. ``check_stop_rule``
then checks those chunk counts against the rule itself (knobs.STOP_RULES). Shapes: q (batch, q_heads,
seq_len, head_dim), k, v (batch, kv_heads, plan.q_offset + seq_len, head_dim) (queries at an offset:
plan.py). The twins hold O(seq_len x kv_len) memory per head: tests, studies and short prompts on
machines without a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .knobs import DEFAULT_ROWS, DEFAULT_SEGMENT, DEFAULT_SINKS, DEFAULT_STOP_RULE, check_patience, check_stop_rule_name
from .plan import Plan, plan_layout, segment_plan, validate_layout
from .s2o.ranking import (
    DEFAULT_BUCKETS,
    DEFAULT_RANK,
    DEFAULT_SCORE,
    DEFAULT_SPAN,
    bucket_of,
    check_buckets,
    check_score,
    query_order_by_guide,
    ranking_scores,
    score_projections,
)


def _plan_head(plan: Plan, q_head: int, group: int, kv_heads: int) -> int:
    return q_head // group if plan.heads == kv_heads else q_head


def _slot_positions(plan: Plan, b: int, hp: int, n_ctx: int) -> Tensor:
    """Query position of each tile slot (slot i of tile t is t * block_m + i)."""
    if plan.query_order is None:
        return torch.arange(n_ctx, device=plan.key_index.device)
    return plan.query_order[b, hp].long()


def _pass1_mask(plan: Plan, rows: Tensor, seg_start: Tensor | int, n_keys: int) -> Tensor:
    """(rows, n_keys) keys of pass 1: sinks before the segment, own segment up to each row's position.
    ``rows`` and ``seg_start`` are query positions; query i sits at key position plan.q_offset + i."""
    keys = torch.arange(n_keys, device=rows.device)
    seg_key = torch.as_tensor(seg_start, device=rows.device).reshape(-1, 1) + plan.q_offset
    sinks = keys[None, :] < seg_key.clamp(max=plan.sinks)
    own = (keys[None, :] >= seg_key) & (keys[None, :] <= rows[:, None] + plan.q_offset)
    return sinks | own


def _list_keys(plan: Plan, b: int, hp: int, seg: int) -> Tensor:
    start, length = int(plan.list_start[b, hp, seg]), int(plan.list_len[b, hp, seg])
    if plan.in_order:
        return torch.arange(plan.sinks, plan.sinks + length, device=plan.list_len.device)
    return plan.key_index[b, hp, start:start + length].long()


@dataclass
class _SegmentList:
    """One (batch, plan head, segment) as the executor's programs see it: the query heads it serves
    (the G heads of a kv head when lists are shared), its kv head, the query positions of the plan
    head's tile slots (whole sequence), its slots [lo, hi) and its ranked list of keys."""

    b: int
    hp: int
    heads: list[int]
    kv_head: int
    positions: Tensor
    seg: int
    lo: int
    hi: int
    keys: Tensor


def _segment_lists(q: Tensor, k: Tensor, plan: Plan):
    """Every (batch, plan head, segment) that holds queries, in order (the twins' shared loop)."""
    batch, q_heads, n_ctx, _ = q.shape
    group = q_heads // k.shape[1]
    shared = plan.heads == k.shape[1]
    for b in range(batch):
        for hp in range(plan.heads):
            heads = list(range(hp * group, (hp + 1) * group)) if shared else [hp]
            positions = _slot_positions(plan, b, hp, n_ctx)
            for seg in range(plan.list_len.shape[-1]):
                lo, hi = seg * plan.segment, min((seg + 1) * plan.segment, n_ctx)
                if lo < hi:
                    yield _SegmentList(b, hp, heads, hp if shared else hp // group, positions, seg, lo, hi,
                                       _list_keys(plan, b, hp, seg))


def _list_ranks(plan: Plan, b: int, hp: int, n_keys: int) -> Tensor:
    """(n_seg, n_keys) int64: each key's rank in its segment's list (int64 max when it is not listed)."""
    n_seg = plan.list_len.shape[-1]
    # unlisted keys rank beyond any walk (a walk of c chunks may pass n_keys when the list is ragged)
    ranks = torch.full((n_seg, n_keys), torch.iinfo(torch.int64).max, dtype=torch.int64, device=plan.key_index.device)
    for seg in range(n_seg):
        keys = _list_keys(plan, b, hp, seg)
        ranks[seg, keys] = torch.arange(keys.numel(), device=keys.device)
    return ranks


def torch_sparse_attention(q: Tensor, k: Tensor, v: Tensor, plan: Plan, *, chunks: Tensor, scale: float | None = None,
                           block_m: int, block_n: int, skipped: Tensor | None = None) -> Tensor:
    """fp32 output of the executor's function, with pass 2 walking ``chunks[b, h, t]`` chunks per tile.

    The online softmax is order-free, so each row is one softmax over the union of its pass-1 keys
    and the first ``min(chunks * block_n, list_len)`` keys of its segment's list, less the chunks
    ``skipped[b, h, t, c]`` marks (skip-softmax; see ``torch_decide_skips``).
    """
    batch, q_heads, n_ctx, head_dim = q.shape
    kv_heads, n_keys = k.shape[1], k.shape[2]
    group = q_heads // kv_heads
    scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
    n_tiles = -(-n_ctx // block_m)
    if tuple(chunks.shape) != (batch, q_heads, n_tiles):
        raise ValueError(f"chunks must have shape {(batch, q_heads, n_tiles)} for block_m {block_m}; got {tuple(chunks.shape)}")
    slots = torch.arange(n_ctx, device=q.device)
    tile_of_slot = slots // block_m
    seg_of_slot = tile_of_slot * block_m // plan.segment
    out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    for b in range(batch):
        for h in range(q_heads):
            hp, kvh = _plan_head(plan, h, group, kv_heads), h // group
            rows = _slot_positions(plan, b, hp, n_ctx)
            walked = (chunks[b, h].long().to(q.device)[tile_of_slot] * block_n)  # keys walked, per slot
            ranks = _list_ranks(plan, b, hp, n_keys)[seg_of_slot]
            allowed = ranks < walked[:, None]
            if skipped is not None:
                chunk_of_key = (ranks // block_n).clamp(max=skipped.shape[-1] - 1)
                allowed &= ~skipped[b, h].to(q.device)[tile_of_slot[:, None], chunk_of_key]
            allowed |= _pass1_mask(plan, rows, seg_of_slot * plan.segment, n_keys)
            scores = q[b, h, rows].float() @ k[b, kvh].float().T * scale
            probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
            out[b, h, rows] = probs @ v[b, kvh].float()
    return out


def check_stop_rule(q: Tensor, k: Tensor, v: Tensor, plan: Plan, chunks: Tensor, tau: float, *,
                    scale: float | None = None, block_m: int, block_n: int, rtol: float = 2e-3,
                    atol: float = 1e-7, stop_rule: str = DEFAULT_STOP_RULE, patience: int = 1) -> list[str]:
    """Recompute each tile's per-chunk stop statistic in float64 and list every way ``chunks`` breaks the rule.

    A tile's rows are its positions for every query head the program served (the G heads of a kv
    head when lists are shared). The statistic of row i after chunk c, over l_i(c) = mass of pass 1
    and chunks 0..c: stop_rule "chunk", gain_i(c) = mass of chunk c / l_i(c); stop_rule "tail",
    bound_i(c) = (keys left in the list after chunk c) x (largest per-key mass in chunk c) / l_i(c).
    A chunk is dull when its max_i statistic < tau. The rule: the list is walked in bursts of
    ``patience`` chunks; the walk ends after the first burst whose chunks are all dull, or at the
    list's end (tau = 0: always the end). ``rtol`` / ``atol`` absorb fp rounding near tau.
    Returns a list of messages, empty when the counts obey the rule.
    """
    check_stop_rule_name(stop_rule)
    check_patience(patience)
    what = "max gain" if stop_rule == "chunk" else "max tail bound"
    n_keys, head_dim = k.shape[2], q.shape[3]
    scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
    problems: list[str] = []
    for lst in _segment_lists(q, k, plan):
        b, keys, lo, hi = lst.b, lst.keys, lst.lo, lst.hi
        n_chunks = -(-keys.numel() // block_n)
        gains = None
        for t in range(lo // block_m, -(-hi // block_m)):
            where = f"batch {b}, plan head {lst.hp}, tile {t}"
            walked = {int(chunks[b, h, t]) for h in lst.heads}
            if len(walked) != 1:
                problems.append(f"{where}: heads sharing a list walked different chunk counts {sorted(walked)}")
                continue
            walked_n = walked.pop()
            if not (min(n_chunks, 1) <= walked_n <= n_chunks):
                problems.append(f"{where}: walked {walked_n} chunks of {n_chunks}")
                continue
            if walked_n == n_chunks and (tau == 0 or n_chunks == 0):
                continue
            if tau == 0:
                problems.append(f"{where}: tau = 0 but stopped after {walked_n} of {n_chunks} chunks")
                continue
            if gains is None:  # (rows of the segment, n_chunks), max over the program's heads
                gains = _segment_gains(q[b, lst.heads].double(), k[b, lst.kv_head].double(), lst.positions[lo:hi],
                                       keys, plan, lst.seg, n_keys, scale, block_n, stop_rule)
            tile_gains = gains[t * block_m - lo: min((t + 1) * block_m, hi) - lo].amax(0).tolist()
            surely_dull = [g < tau * (1 - rtol) - atol for g in tile_gains]
            maybe_dull = [g < tau * (1 + rtol) + atol for g in tile_gains]
            if walked_n < n_chunks and walked_n % patience:
                problems.append(f"{where}: stopped after {walked_n} chunks, inside a burst of {patience}")
                continue
            for first in range(0, walked_n - patience, patience):
                if all(surely_dull[first:first + patience]):
                    problems.append(f"{where}: walked on after the burst of chunks {first}..{first + patience - 1}"
                                    f" whose {what} were all < tau {tau:g}")
                    break
            last = walked_n - patience
            if walked_n < n_chunks and not all(maybe_dull[last:walked_n]):
                problems.append(f"{where}: stopped after the burst of chunks {last}..{walked_n - 1} though "
                                f"one had {what} >= tau {tau:g} ({max(tile_gains[last:walked_n]):.3g})")
    return problems


def _segment_gains(qd: Tensor, kd: Tensor, rows: Tensor, keys: Tensor, plan: Plan, seg: int, n_keys: int, scale: float,
                   block_n: int, stop_rule: str = "chunk") -> Tensor:
    """(rows, n_chunks) float64: per row slot the largest stop statistic over ``qd``'s heads, for each
    chunk of ``keys``: the chunk's gain ("chunk") or its tail bound over the mass so far ("tail")."""
    scores = qd[:, rows] @ kd.T * scale  # (heads, rows, n_keys)
    pass1 = _pass1_mask(plan, rows, seg * plan.segment, n_keys)
    # Masses relative to each row's pass-1 maximum: every denominator is then >= 1 (float64 range).
    ref = scores.masked_fill(~pass1, float("-inf")).amax(-1, keepdim=True)
    mass = torch.exp(scores - ref)
    pass1_mass = (mass * pass1).sum(-1)
    n_chunks = -(-keys.numel() // block_n)
    padded = torch.zeros(mass.shape[:2] + (n_chunks * block_n,), dtype=mass.dtype, device=mass.device)
    padded[..., : keys.numel()] = mass[..., keys]
    per_chunk = padded.view(*mass.shape[:2], n_chunks, block_n)
    chunk_mass = per_chunk.sum(-1)
    seen_mass = pass1_mass[..., None] + chunk_mass.cumsum(-1)
    if stop_rule == "tail":  # padding slots hold 0, never above a listed key's mass
        chunk_end = torch.arange(1, n_chunks + 1, dtype=mass.dtype, device=mass.device) * block_n
        keys_left = (keys.numel() - chunk_end).clamp(min=0)
        return (keys_left * per_chunk.amax(-1) / seen_mass).amax(0)
    return (chunk_mass / seen_mass).amax(0)


def _chunks_until_dull_burst(dull: Tensor, patience: int) -> int:
    """Chunks walked: to the end of the first burst of ``patience`` chunks that are all dull, else all."""
    flags = dull.tolist()
    for first in range(0, len(flags), patience):
        if all(flags[first:first + patience]):
            return min(first + patience, len(flags))
    return len(flags)


def torch_decide_chunks(q: Tensor, k: Tensor, plan: Plan, tau: float, *, scale: float | None = None,
                        block_m: int, block_n: int, stop_rule: str = DEFAULT_STOP_RULE, patience: int = 1) -> Tensor:
    """The executor's stopping decisions made in PyTorch (float64): int32 ``(batch, q_heads, n_tiles)``.

    With ``torch_sparse_attention(..., chunks=...)`` this is the whole S2O function on machines with
    no GPU (correct, slow: O(seq_len^2) memory per head). Tiles of one shared list decide together,
    as the executor's programs do: a chunk's statistic (gain or tail bound, by ``stop_rule``, as in
    ``check_stop_rule``) is the max over every row of every head they serve; the walk ends after the
    first burst of ``patience`` chunks that are all dull.
    """
    check_stop_rule_name(stop_rule)
    check_patience(patience)
    batch, q_heads, n_ctx, head_dim = q.shape
    scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
    chunks = torch.zeros(batch, q_heads, -(-n_ctx // block_m), dtype=torch.int32)
    for lst in _segment_lists(q, k, plan):
        n_chunks = -(-lst.keys.numel() // block_n)
        if n_chunks == 0:
            continue
        gains = _segment_gains(q[lst.b, lst.heads].double(), k[lst.b, lst.kv_head].double(),
                               lst.positions[lst.lo:lst.hi], lst.keys, plan, lst.seg, k.shape[2], scale, block_n,
                               stop_rule)
        for t in range(lst.lo // block_m, -(-lst.hi // block_m)):
            tile = gains[t * block_m - lst.lo: min((t + 1) * block_m, lst.hi) - lst.lo].amax(0)
            chunks[lst.b, lst.heads, t] = _chunks_until_dull_burst(tile < tau, patience) if tau > 0 else n_chunks
    return chunks


def torch_s2o_plan(q: Tensor, k: Tensor, *, segment: int = DEFAULT_SEGMENT, sinks: int = DEFAULT_SINKS,
                   block_m: int = DEFAULT_ROWS, score: str = DEFAULT_SCORE, rank: int = DEFAULT_RANK,
                   n_buckets: int = DEFAULT_BUCKETS, span: float = DEFAULT_SPAN, query_permute: bool = False,
                   scale: float | None = None) -> Plan:
    """The PyTorch twin of ``planner.s2o_plan``: same arguments, layout and buckets.

    Keys of one bucket keep position order (a stable sort by bucket), as in the Triton planner;
    ``n_buckets=0`` sorts by exact score instead (ties in position order). The projections are
    rounded to k's dtype first, as the kernel's tensor cores see them. A loop over lists: for
    tests, studies and machines without a GPU.
    """
    validate_layout(q, k, segment, sinks, block_m)
    check_score(score, rank)
    check_buckets(n_buckets, span)
    batch, q_heads, n_ctx, dim = q.shape
    scale = dim ** -0.5 if scale is None else scale
    kv_heads = k.shape[1]
    q_offset = k.shape[2] - n_ctx  # queries at an offset: the prefixes hold the keys before them too
    projections = score_projections(q, k, segment, score=score, rank=rank, scale=scale)
    rounded = projections.vectors.to(k.dtype).float()
    squares = None if projections.squares is None else projections.squares.to(k.dtype).float()
    h_plan = projections.heads
    heads_per_kv = h_plan // kv_heads
    lengths, _ = plan_layout(n_ctx, segment, sinks, q_offset)
    key_index = torch.empty(batch, h_plan, int(lengths.sum()), dtype=torch.int32, device=q.device)
    histogram = torch.zeros(batch, h_plan, len(lengths), max(n_buckets, 1), dtype=torch.int32, device=q.device)
    for b in range(batch):
        for h in range(h_plan):
            keys = k[b, h // heads_per_kv].float()
            offset = 0
            for s, n in enumerate(lengths.tolist()):
                if n == 0:
                    continue
                listed = keys[sinks:sinks + n]
                if squares is None:
                    scores = ranking_scores(listed, rounded[b, h, s], projections.offsets[b, h, s])
                else:  # the kernel squares each key in fp32 and multiplies in k's dtype
                    scores = (ranking_scores(listed, rounded[b, h, s], projections.offsets[b, h, s])
                              + (listed ** 2).to(k.dtype).float() @ squares[b, h, s])
                if n_buckets:
                    buckets = bucket_of(scores, scores.max(), n_buckets, span)
                    histogram[b, h, s] = torch.bincount(buckets, minlength=n_buckets).to(torch.int32)
                    order = torch.sort(buckets, stable=True).indices
                else:
                    order = torch.sort(scores, descending=True, stable=True).indices
                key_index[b, h, offset:offset + n] = (order + sinks).to(torch.int32)
                offset += n
    order = query_order_by_guide(q, projections.guides, segment) if query_permute else None
    if not n_buckets:  # an exact sort counts no buckets
        return segment_plan(q, segment, sinks, key_index, order, q_offset=q_offset)
    return segment_plan(q, segment, sinks, key_index, order, score_histogram=histogram, bucket_width=span / n_buckets,
                        q_offset=q_offset)


def torch_decide_skips(q: Tensor, k: Tensor, plan: Plan, skip_gap: float, *, scale: float | None = None,
                       block_m: int, block_n: int) -> tuple[Tensor, Tensor]:
    """Skip-softmax's decisions made in PyTorch (float64), for a walk of every listed key (tau = 0).

    A tile skips chunk c when, for every row it serves, the chunk's largest score is more than
    ``skip_gap`` below the row's running maximum over its pass-1 keys and chunks 0..c-1 (a skipped
    chunk never raises a maximum, so skipping does not change later decisions). Returns
    ``(skipped bool (batch, q_heads, n_tiles, max_chunks), skipped_keys int32 (batch, q_heads, n_tiles))``.
    """
    batch, q_heads, n_ctx, head_dim = q.shape
    n_keys = k.shape[2]
    scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
    n_tiles = -(-n_ctx // block_m)
    max_chunks = max(1, -(-int(plan.list_len.max()) // block_n)) if plan.list_len.numel() else 1
    skipped = torch.zeros(batch, q_heads, n_tiles, max_chunks, dtype=torch.bool)
    skipped_keys = torch.zeros(batch, q_heads, n_tiles, dtype=torch.int32)
    for lst in _segment_lists(q, k, plan):
        b, heads, keys = lst.b, lst.heads, lst.keys
        if keys.numel() == 0:
            continue
        for t in range(lst.lo // block_m, -(-lst.hi // block_m)):
            rows = lst.positions[t * block_m:min((t + 1) * block_m, lst.hi)]
            scores = q[b, heads][:, rows].double() @ k[b, lst.kv_head].double().T * scale  # (heads, rows, n_keys)
            pass1 = _pass1_mask(plan, rows, lst.lo, n_keys)
            running = scores.masked_fill(~pass1, float("-inf")).amax(-1)  # (heads, rows)
            for c in range(-(-keys.numel() // block_n)):
                chunk_max = scores[..., keys[c * block_n:(c + 1) * block_n]].amax(-1)
                if float((chunk_max - running).max()) < -skip_gap:
                    skipped[b, heads, t, c] = True
                    skipped_keys[b, heads, t] += min(block_n, keys.numel() - c * block_n)
                running = torch.maximum(running, chunk_max)
    return skipped, skipped_keys
