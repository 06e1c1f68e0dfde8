"""S2O planner (Triton): per query segment, every prefix key ranked by its estimated attention mass.

For each (batch, plan head, segment of S queries) the planner scores every prefix key (keys
[sinks, P + s * S), P the queries' offset into the keys (plan.py; 0 for a whole prompt): the sinks
and the segment's own keys are computed exactly in the executor's pass 1)
with the segment's projections (ranking.py: the mean query's logit plus half its variance across the
segment's queries) and lists the prefix in descending score order. The list holds EVERY prefix key
exactly once, so ``tau = 0`` in the executor gives dense attention.

The order is a stable counting sort on score buckets, linear in the prefix:

  1. ``_score_kernel``: one pass over (segments x keys) tiles on tensor cores writes every score and
     the top score of each segment's prefix;
  2. ``_rank_kernel`` phase 0: one program per (list, range of keys) counts the range's keys per
     bucket. Bucket 0 holds scores within ``span / n_buckets`` nats of the list's top score, and so
     on down; the last bucket also takes every score more than ``span`` nats below the top (keys
     the walk rarely reaches). Buckets are ``span / n_buckets`` nats wide (1/16 nat by default):
     finer than the executor needs, since it never looks at the order inside a chunk of keys;
  3. the counts become each range's slots per bucket (cumulative sums in torch);
  4. ``_rank_kernel`` phase 1 sorts each range by (bucket, position) in registers and writes its
     keys to their slots: bucket by bucket, position order inside a bucket (deterministic, the
     same as a stable sort of the list by bucket).

``twins.torch_s2o_plan`` is the PyTorch twin (the same buckets, or an exact sort).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..knobs import DEFAULT_ROWS, DEFAULT_SEGMENT, DEFAULT_SINKS, PLAN_CONFIG_ENV
from ..plan import Plan, plan_layout, segment_plan, validate_layout
from .ranking import (
    DEFAULT_BUCKETS,
    DEFAULT_RANK,
    DEFAULT_SCORE,
    DEFAULT_SPAN,
    check_buckets,
    check_score,
    query_order_by_guide,
    score_projections,
)

# ----------------------------------------------------------------------------------------------
# Scoring: one pass over (segments x keys) tiles.
# ----------------------------------------------------------------------------------------------
@triton.jit
def _score_kernel(
    K, PROJ,        # k (B, Hkv, N, D); projection vectors (B, Hp, n_seg, C, D) in k's dtype
    OFFSETS,        # (B, Hp, n_seg, C) fp32, contiguous: what the squared projections are centred on
    SQUARES,        # (B, Hp, n_seg, D) in k's dtype, contiguous: weights of the squared key (HAS_SQUARES)
    SCORES,         # out (B, Hp, n_seg, n_keys) fp32: written inside each segment's prefix only
    TOPS,           # out (B, Hp, n_seg, n_kb) fp32: largest score of the tile's keys in the prefix
    n_keys, q_offset,  # keys in k; key position of query 0 (segment s's prefix ends at q_offset + s * segment)
    n_seg, segment, sinks, h_plan, heads_per_kv,
    stride_kb, stride_kh, stride_kn,
    stride_pb, stride_ph, stride_ps, stride_pc,
    stride_sb, stride_sh, stride_ss,
    stride_tb, stride_th, stride_ts,
    HEAD_DIM: tl.constexpr, N_PROJ: tl.constexpr, HAS_SQUARES: tl.constexpr, BLOCK_S: tl.constexpr,
    BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # Axis 0 runs over the segment blocks and the plan heads of one kv head, so that programs
    # launched together read the same block of keys (from L2, not again from memory).
    n_seg_blocks = tl.cdiv(n_seg, BLOCK_S)
    pid_s = tl.program_id(0) % n_seg_blocks
    pid_n = tl.program_id(1)
    b = tl.program_id(2) // (h_plan // heads_per_kv)
    h = (tl.program_id(2) % (h_plan // heads_per_kv)) * heads_per_kv + tl.program_id(0) // n_seg_blocks
    last_seg = tl.minimum(n_seg, (pid_s + 1) * BLOCK_S) - 1
    # Keys at or after the last segment's start are in no prefix of this block of segments.
    if pid_n * BLOCK_N < q_offset + last_seg * segment:
        offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        b64 = b.to(tl.int64)
        k_ptrs = K + b64 * stride_kb + (h // heads_per_kv).to(tl.int64) * stride_kh + offs_n[:, None] * stride_kn
        keys = tl.load(k_ptrs + offs_d[None, :], mask=offs_n[:, None] < n_keys, other=0.0)
        p_ptrs = PROJ + b64 * stride_pb + h.to(tl.int64) * stride_ph + offs_s[:, None] * stride_ps + offs_d[None, :]
        seg_ok = offs_s < n_seg
        o_ptrs = OFFSETS + ((b * h_plan + h) * n_seg + offs_s).to(tl.int64) * N_PROJ
        score = tl.zeros([BLOCK_S, BLOCK_N], dtype=tl.float32)
        for c in tl.static_range(N_PROJ):
            proj_vec = tl.load(p_ptrs + c * stride_pc, mask=seg_ok[:, None], other=0.0)
            proj = tl.dot(proj_vec, tl.trans(keys), input_precision=DOT_PRECISION)
            if c == 0:
                score += proj
            else:
                centred = proj - tl.load(o_ptrs + c, mask=seg_ok, other=0.0)[:, None]
                score += 0.5 * centred * centred
        if HAS_SQUARES:
            w_ptrs = SQUARES + ((b * h_plan + h) * n_seg + offs_s).to(tl.int64)[:, None] * HEAD_DIM + offs_d[None, :]
            weights = tl.load(w_ptrs, mask=seg_ok[:, None], other=0.0)
            squared = keys.to(tl.float32) * keys.to(tl.float32)
            score += tl.dot(weights, tl.trans(squared.to(keys.dtype)), input_precision=DOT_PRECISION)
        in_prefix = ((offs_n[None, :] >= sinks) & (offs_n[None, :] < q_offset + offs_s[:, None] * segment)
                     & seg_ok[:, None])
        s_ptrs = SCORES + b64 * stride_sb + h.to(tl.int64) * stride_sh + offs_s[:, None].to(tl.int64) * stride_ss
        tl.store(s_ptrs + offs_n[None, :], score, mask=in_prefix)
        top = tl.max(tl.where(in_prefix, score, float("-inf")), axis=1)
        tl.store(TOPS + b64 * stride_tb + h * stride_th + offs_s * stride_ts + pid_n, top, mask=seg_ok)


# ----------------------------------------------------------------------------------------------
# Ranking: a stable counting sort per list, in ranges of RANGE keys that run in parallel.
# ----------------------------------------------------------------------------------------------
@triton.jit
def _bucket_ids(SCORES_ROW, TOP_ROW, start, n_keys, inv_width, N_BUCKETS: tl.constexpr, RANGE: tl.constexpr):
    """Buckets of keys [start, start + RANGE) of a list; keys past its end go to the last bucket
    (phase 0 takes them out of its count, phase 1 sorts them after every real key and drops them)."""
    offs = tl.arange(0, RANGE)
    valid = start + offs < n_keys
    score = tl.load(SCORES_ROW + start + offs, mask=valid, other=0.0)
    top = tl.load(TOP_ROW)
    bucket = tl.minimum(tl.maximum(((top - score) * inv_width).to(tl.int32), 0), N_BUCKETS - 1)
    return tl.where(valid, bucket, N_BUCKETS - 1), valid, offs


@triton.jit
def _rank_kernel(
    SCORES,         # (B, Hp, n_seg, n_keys) fp32
    TOP,            # (B, Hp, n_seg) fp32: each list's top score, contiguous
    COUNTS,         # PHASE 0 out: (B, Hp, n_seg, n_ranges, N_BUCKETS) int32, contiguous: keys per range and bucket
    SLOT_BASE,      # PHASE 1 in: same shape: slot in key_index[b, h] of the range's first key of each bucket,
                    # minus the keys of lower buckets in the range (see _rank_prefixes)
    KEY_INDEX,      # PHASE 1 out: (B, Hp, L) int32
    n_seg, segment, sinks, q_offset, h_plan, n_ranges, inv_width,
    stride_sb, stride_sh, stride_ss, stride_ib, stride_ih,
    PHASE: tl.constexpr, N_BUCKETS: tl.constexpr, RANGE: tl.constexpr,
):
    """One program per (list, range of RANGE keys). Phase 0 counts the range's keys per bucket; phase 1
    sorts them by (bucket, position) and writes each to its bucket's slots: list order is then bucket
    by bucket, position order inside a bucket, the same as a stable sort of the whole list."""
    row = tl.program_id(0)  # (b, h, s), row-major
    r = tl.program_id(1)
    s = row % n_seg
    h = (row // n_seg) % h_plan
    b = row // (n_seg * h_plan)
    n_keys = tl.maximum(q_offset + s * segment - sinks, 0)
    start = r * RANGE
    if start < n_keys:
        scores_row = SCORES + b.to(tl.int64) * stride_sb + h.to(tl.int64) * stride_sh + s.to(tl.int64) * stride_ss + sinks
        bucket, valid, offs = _bucket_ids(scores_row, TOP + row, start, n_keys, inv_width, N_BUCKETS, RANGE)
        cell = (row.to(tl.int64) * n_ranges + r) * N_BUCKETS
        if PHASE == 0:
            count = tl.histogram(bucket, N_BUCKETS)
            past_end = RANGE - tl.sum(valid.to(tl.int32), axis=0)
            count -= tl.where(tl.arange(0, N_BUCKETS) == N_BUCKETS - 1, past_end, 0)
            tl.store(COUNTS + cell + tl.arange(0, N_BUCKETS), count)
        else:
            order = tl.sort(bucket * RANGE + offs)  # (bucket, position): a total order, so stable
            sorted_bucket = order // RANGE
            local = order % RANGE
            slot = tl.load(SLOT_BASE + cell + sorted_bucket) + offs  # the k-th key of the sorted range
            out = KEY_INDEX + b.to(tl.int64) * stride_ib + h.to(tl.int64) * stride_ih
            tl.store(out + slot, (sinks + start + local).to(tl.int32), mask=start + local < n_keys)


# ----------------------------------------------------------------------------------------------
# Host side.
# ----------------------------------------------------------------------------------------------
def _launch_shape(n_seg: int, dim: int) -> dict[str, int]:
    """Tile shapes; env S2O_PLAN_CONFIG="block_s=32,block_n=128,num_warps=4,rank_range=2048" overrides."""
    interpreting = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    shape = {"block_s": 16 if n_seg <= 16 else 32, "block_n": 128 if dim <= 128 else 64, "num_warps": 4,
             # the CPU interpreter sorts element by element: short ranges keep the tests quick
             "rank_range": 64 if interpreting else 2048, "rank_warps": 8}
    for item in filter(None, os.environ.get(PLAN_CONFIG_ENV, "").split(",")):
        name, _, value = item.partition("=")
        if name.strip() not in shape or not value.strip().isdigit():
            raise ValueError(f"{PLAN_CONFIG_ENV}: cannot read {item!r}; expected e.g. "
                             "'block_s=32,block_n=128,num_warps=4,rank_range=2048,rank_warps=8'")
        shape[name.strip()] = int(value)
    return shape


def s2o_plan(q: Tensor, k: Tensor, *, segment: int = DEFAULT_SEGMENT, sinks: int = DEFAULT_SINKS,
             block_m: int = DEFAULT_ROWS, score: str = DEFAULT_SCORE, rank: int = DEFAULT_RANK,
             n_buckets: int = DEFAULT_BUCKETS, span: float = DEFAULT_SPAN, query_permute: bool = False,
             scale: float | None = None) -> Plan:
    """Build the S2O plan in linear time (Triton): every prefix key of every segment, by estimated mass.

    q: ``(batch, q_heads, seq_len, head_dim)``; k: ``(batch, kv_heads, kv_len, head_dim)``; fp16,
    bf16 or fp32, on the GPU (or on the CPU with ``TRITON_INTERPRET=1``). kv_len > seq_len: the
    queries are the last seq_len positions (offset P = kv_len - seq_len), their segments the
    chunk's, and each segment's prefix [sinks, P + s * segment) holds the earlier keys too.
    segment: S, queries per segment, a multiple of block_m (the executor's query tile).
    sinks: keys [0, sinks) are left out of the lists (the executor computes them in pass 1).
    score, rank: what keys are ranked by (ranking.py): ``"head_mean"`` (one list per query head, the
        mean query), ``"gauss"`` (the same plus a rank-``rank`` covariance), ``"diag"`` (plus a diagonal
        one) or ``"mean"`` (one list per kv head).
    n_buckets, span: keys within ``span`` nats of a list's top score are ordered up to buckets of
        ``span / n_buckets`` nats, the rest follow in position order (see the module docstring).
    query_permute: order each segment's queries by their logit against the mean query and emit
        ``plan.query_order``.
    scale: the softmax scale (default head_dim ** -0.5): scores are in nats.
    Returns a ``Plan`` (plan.py) with int32 key lists holding every prefix key once.
    """
    validate_layout(q, k, segment, sinks, block_m)
    check_score(score, rank)
    check_buckets(n_buckets, span)
    if n_buckets == 0:
        raise ValueError("n_buckets=0 (an exact sort) exists in torch_s2o_plan only")
    batch, q_heads, n_ctx, dim = q.shape
    if dim & (dim - 1) or dim < 16:
        raise ValueError(f"head_dim must be a power of two >= 16 for the Triton planner; got {dim}")
    scale = dim ** -0.5 if scale is None else scale
    kv_heads = k.shape[1]
    q_offset = k.shape[2] - n_ctx
    projections = score_projections(q, k, segment, score=score, rank=rank, scale=scale)
    h_plan, n_seg = projections.vectors.shape[1], projections.vectors.shape[2]
    lengths, starts = plan_layout(n_ctx, segment, sinks, q_offset)
    total = int(lengths.sum())
    if total >= 2**31:
        raise ValueError(f"the plan would list {total} keys per head, over int32 offsets: use a longer segment")
    key_index = torch.empty(batch, h_plan, total, dtype=torch.int32, device=q.device)
    histogram = torch.zeros(batch, h_plan, n_seg, n_buckets, dtype=torch.int32, device=q.device)
    if total > 0:
        heads_per_kv = h_plan // kv_heads
        histogram = _rank_prefixes(k, projections.vectors.to(k.dtype), projections.offsets,
                                   None if projections.squares is None else projections.squares.to(k.dtype),
                                   key_index, starts.to(q.device), segment, sinks, q_offset, heads_per_kv, n_buckets,
                                   span)
    order = query_order_by_guide(q, projections.guides, segment) if query_permute else None
    return segment_plan(q, segment, sinks, key_index, order, score_histogram=histogram, bucket_width=span / n_buckets,
                        q_offset=q_offset)


def _rank_prefixes(k: Tensor, projections: Tensor, offsets: Tensor, squares: Tensor | None, key_index: Tensor,
                   starts: Tensor, segment: int, sinks: int, q_offset: int, heads_per_kv: int, n_buckets: int,
                   span: float) -> Tensor:
    """Fills ``key_index`` (B, Hp, L): scores, bucket counts per range, slot bases (torch), scatter.
    Returns the keys per bucket of each list, int32 (B, Hp, n_seg, n_buckets)."""
    batch, h_plan, n_seg, n_proj, dim = projections.shape
    n_keys = k.shape[2]
    shape = _launch_shape(n_seg, dim)
    block_s, block_n, key_range = shape["block_s"], shape["block_n"], shape["rank_range"]
    n_kb = triton.cdiv(n_keys, block_n)
    scores = torch.empty(batch, h_plan, n_seg, n_keys, dtype=torch.float32, device=k.device)
    tops = torch.full((batch, h_plan, n_seg, n_kb), float("-inf"), device=k.device)
    grid = (triton.cdiv(n_seg, block_s) * heads_per_kv, n_kb, batch * h_plan // heads_per_kv)
    _score_kernel[grid](
        k, projections, offsets.contiguous(), offsets if squares is None else squares.contiguous(), scores, tops,
        n_keys, q_offset, n_seg, segment, sinks, h_plan, heads_per_kv,
        *k.stride()[:3], *projections.stride()[:4], *scores.stride()[:3], *tops.stride()[:3],
        HEAD_DIM=dim, N_PROJ=n_proj, HAS_SQUARES=squares is not None, BLOCK_S=block_s, BLOCK_N=block_n,
        # fp32 inputs (tests, studies) score exactly; fp16 / bf16 products are exact in fp32 anyway.
        DOT_PRECISION="ieee" if k.dtype == torch.float32 else "tf32", num_warps=shape["num_warps"],
    )
    top = tops.amax(-1).contiguous()
    longest = max(q_offset + (n_seg - 1) * segment - sinks, 1)
    n_ranges = triton.cdiv(longest, key_range)
    counts = torch.zeros(batch, h_plan, n_seg, n_ranges, n_buckets, dtype=torch.int32, device=k.device)

    def launch(phase, slot_base):
        _rank_kernel[(batch * h_plan * n_seg, n_ranges)](
            scores, top, counts, slot_base, key_index, n_seg, segment, sinks, q_offset, h_plan, n_ranges,
            float(n_buckets / span), *scores.stride()[:3], *key_index.stride()[:2],
            PHASE=phase, N_BUCKETS=n_buckets, RANGE=key_range, num_warps=shape["rank_warps"],
        )

    launch(0, counts)
    # Slot of the k-th key (in bucket-then-position order) of range r: the list's start, the keys of
    # higher buckets in the whole list, the keys of its bucket in earlier ranges, and k minus the
    # range's keys of higher buckets.
    per_bucket = counts.sum(3, dtype=torch.int32)
    higher_buckets = torch.cumsum(per_bucket, -1, dtype=torch.int32) - per_bucket
    earlier_ranges = torch.cumsum(counts, 3, dtype=torch.int32) - counts
    higher_in_range = torch.cumsum(counts, -1, dtype=torch.int32) - counts
    slot_base = (starts.to(torch.int32)[:, None, None] + higher_buckets[:, :, :, None, :] + earlier_ranges
                 - higher_in_range)
    launch(1, slot_base.contiguous())
    return per_bucket
