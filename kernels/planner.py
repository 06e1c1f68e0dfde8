"""S2O planner: per query segment, every prefix key ranked by a guide query (arXiv 2602.22575).

For each (batch, plan head, segment of S queries) the planner builds one guide vector from the
segment's queries, scores every prefix key ``r_j = g . k_j`` (keys [sinks, s * S): the sinks and the
segment's own keys are computed exactly in the executor's pass 1), and lists the prefix in descending
score order. The list holds EVERY prefix key exactly once, so ``tau = 0`` in the executor gives dense
attention; the early-stopping executor walks it in chunks and stops when a chunk adds too little mass.

Two implementations with one signature:

- ``s2o_plan``: linear time, Triton. Scores come from one tensor-core pass over K per block of
  segments; each segment's scores are cut into ``n_buckets`` equal-width buckets between its own
  minimum and maximum, counted, and scattered bucket by bucket (highest first, ascending position
  within a bucket, deterministic). The order is exact up to one bucket width, which is what matters:
  the executor never looks at the order inside a chunk, and near the top of the list buckets hold
  fewer keys than a chunk.
- ``torch_s2o_plan``: the PyTorch twin, with an exact stable argsort (for tests and CPU studies).

Guides (``guide=``), measured in PLANNER_NOTES.md:

- ``"mean"``: one list per kv head (H_plan = kv_heads, shared by its G query heads); the guide is the
  mean of the segment's queries over its tokens and over the G heads.
- ``"head_mean"``: one list per query head (H_plan = q_heads); the guide is the mean over the tokens.
- ``"head_mix"``: one list per kv head, ranked by the G per-head guides together: each head's scores
  become a softmax over the prefix and the key's score is the sum over heads, so every head's own top
  keys come early in the shared list.

Shapes: q ``(batch, q_heads, seq_len, head_dim)``, k ``(batch, kv_heads, seq_len, head_dim)``; the
plan's layout is kernels/plan.py.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from .plan import Plan

DEFAULT_SEGMENT = 1024
DEFAULT_SINKS = 64
DEFAULT_BLOCK_M = 128
DEFAULT_BUCKETS = 1024
GUIDES = ("mean", "head_mean", "head_mix")


# ----------------------------------------------------------------------------------------------
# Shared by both implementations: validation, list layout, guides, query order.
# ----------------------------------------------------------------------------------------------

def _validate(q: Tensor, k: Tensor, segment: int, sinks: int, block_m: int, guide: str, n_buckets: int) -> None:
    if not isinstance(q, Tensor) or not isinstance(k, Tensor) or q.dim() != 4 or k.dim() != 4:
        raise ValueError("q and k must be 4-D tensors (batch, heads, seq_len, head_dim)")
    if q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree on batch, seq_len and head_dim")
    if k.shape[1] < 1 or q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"q_heads ({q.shape[1]}) must be a multiple of kv_heads ({k.shape[1]})")
    if q.device != k.device or q.dtype != k.dtype:
        raise ValueError("q and k must share one device and one dtype")
    if q.shape[2] < 1:
        raise ValueError("seq_len must be >= 1")
    if block_m < 1 or segment < 1 or segment % block_m != 0:
        raise ValueError(f"segment ({segment}) must be a positive multiple of block_m ({block_m})")
    if sinks < 0:
        raise ValueError(f"sinks must be >= 0; got {sinks}")
    if guide not in GUIDES:
        raise ValueError(f"guide must be one of {GUIDES}; got {guide!r}")
    if n_buckets < 2 or n_buckets & (n_buckets - 1):
        raise ValueError(f"n_buckets must be a power of two >= 2; got {n_buckets}")


def plan_layout(n_ctx: int, segment: int, sinks: int) -> tuple[Tensor, Tensor]:
    """Lengths and starts of the segment lists: segment s lists its prefix [sinks, s * segment).

    Returns ``(list_len int64 (n_seg,), list_start int64 (n_seg,))``; the lists are concatenated.
    """
    n_seg = -(-n_ctx // segment)
    lengths = (torch.arange(n_seg, dtype=torch.int64) * segment - sinks).clamp(min=0)
    return lengths, torch.cumsum(lengths, 0) - lengths


def plan_heads(q: Tensor, k: Tensor, guide: str) -> int:
    """H_plan for a guide: q_heads for per-head lists, kv_heads for lists shared by a GQA group."""
    return q.shape[1] if guide == "head_mean" else k.shape[1]


def segment_guides(q: Tensor, segment: int, group: int) -> Tensor:
    """Mean query of each segment, per query head: fp32 ``(batch, q_heads, n_seg, head_dim)``.

    A ragged last segment is averaged over the tokens it has.
    """
    batch, q_heads, n_ctx, dim = q.shape
    n_seg = -(-n_ctx // segment)
    pad = n_seg * segment - n_ctx
    sums = torch.nn.functional.pad(q, (0, 0, 0, pad)).view(batch, q_heads, n_seg, segment, dim).sum(3, dtype=torch.float32)
    counts = torch.full((n_seg,), float(segment), device=q.device)
    counts[-1] = n_ctx - (n_seg - 1) * segment
    return sums / counts[:, None]


def _guides_for(q: Tensor, k: Tensor, segment: int, guide: str) -> Tensor:
    """Guides per plan head: ``(batch, H_plan, n_seg, n_guides, head_dim)`` fp32, rounded to k's dtype.

    Rounding to k's dtype makes the twin score exactly what the tensor-core kernel scores.
    """
    batch, q_heads, n_ctx, dim = q.shape
    kv_heads = k.shape[1]
    group = q_heads // kv_heads
    per_head = segment_guides(q, segment, group)  # (B, Hq, n_seg, D)
    n_seg = per_head.shape[2]
    if guide == "head_mean":
        guides = per_head[:, :, :, None, :]
    elif guide == "mean":
        guides = per_head.view(batch, kv_heads, group, n_seg, dim).mean(2)[:, :, :, None, :]
    else:  # head_mix: the G per-head guides side by side
        guides = per_head.view(batch, kv_heads, group, n_seg, dim).transpose(2, 3)
    return guides.to(k.dtype).float().contiguous()


def query_order_by_guide(q: Tensor, guides: Tensor, segment: int) -> Tensor:
    """Within each segment, query positions sorted by ``q . g`` (descending, stable).

    ``q (B, Hq, N, D)``, ``guides (B, H_plan, n_seg, D)``; the score of a position for a plan head is
    summed over the query heads that plan head serves. Returns int32 ``(B, H_plan, N)``.
    """
    batch, q_heads, n_ctx, dim = q.shape
    h_plan, n_seg = guides.shape[1], guides.shape[2]
    heads_per_plan = q_heads // h_plan
    pad = n_seg * segment - n_ctx
    qs = torch.nn.functional.pad(q, (0, 0, 0, pad)).view(batch, h_plan, heads_per_plan, n_seg, segment, dim)
    align = torch.einsum("bhgstd,bhsd->bhst", qs.float(), guides)
    # Padding positions sort last so that the real positions fill the segment's first slots.
    valid = torch.arange(n_seg * segment, device=q.device).view(n_seg, segment) < n_ctx
    align = align.masked_fill(~valid, float("-inf"))
    order = torch.sort(align, dim=-1, descending=True, stable=True).indices
    order = order + (torch.arange(n_seg, device=q.device) * segment)[:, None]
    return order.reshape(batch, h_plan, n_seg * segment)[..., :n_ctx].to(torch.int32).contiguous()


def _new_plan(q, k, segment, sinks, h_plan, key_index, query_order) -> Plan:
    lengths, starts = plan_layout(q.shape[2], segment, sinks)
    batch = q.shape[0]
    return Plan(
        segment=segment,
        sinks=sinks,
        key_index=key_index,
        list_start=starts.to(q.device).expand(batch, h_plan, -1).contiguous(),
        list_len=lengths.to(torch.int32).to(q.device).expand(batch, h_plan, -1).contiguous(),
        query_order=query_order,
    )


def _combine_guide_scores(scores: Tensor, guide: str, scale: float) -> Tensor:
    """(..., n_guides, keys) raw dot products -> (..., keys) ranking scores."""
    if guide != "head_mix":
        return scores[..., 0, :]
    # Each head's softmax over the prefix, summed over heads: a key ranks high when it matters to
    # any head, whatever the heads' logit scales.
    return torch.softmax(scores * scale, dim=-1).sum(-2)


# ----------------------------------------------------------------------------------------------
# PyTorch twin: exact stable argsort.
# ----------------------------------------------------------------------------------------------

def torch_s2o_plan(q: Tensor, k: Tensor, *, segment: int = DEFAULT_SEGMENT, sinks: int = DEFAULT_SINKS,
                   block_m: int = DEFAULT_BLOCK_M, guide: str = "mean", query_permute: bool = False,
                   n_buckets: int = DEFAULT_BUCKETS, scale: float | None = None) -> Plan:
    """S2O plan in plain PyTorch, every segment's prefix in exact descending score order.

    Same arguments and layout as ``s2o_plan``; ``n_buckets`` is accepted and ignored (the twin
    sorts exactly; ties keep ascending position). Costs a full sort: for tests and studies.
    """
    _validate(q, k, segment, sinks, block_m, guide, n_buckets)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    batch, _, n_ctx, _ = q.shape
    group = q.shape[1] // k.shape[1]
    guides = _guides_for(q, k, segment, guide)  # (B, Hp, n_seg, n_g, D)
    h_plan = guides.shape[1]
    kv_of_plan = torch.arange(h_plan, device=q.device) // (group if h_plan == q.shape[1] else 1)
    lengths, _ = plan_layout(n_ctx, segment, sinks)
    pieces = []
    for b in range(batch):
        head_pieces = []
        for h in range(h_plan):
            keys = k[b, int(kv_of_plan[h])].float()
            seg_pieces = []
            for s, n in enumerate(lengths.tolist()):
                if n == 0:
                    continue
                raw = guides[b, h, s] @ keys[sinks:sinks + n].T  # (n_g, n)
                score = _combine_guide_scores(raw, guide, scale)
                order = torch.sort(score, descending=True, stable=True).indices
                seg_pieces.append((order + sinks).to(torch.int32))
            head_pieces.append(torch.cat(seg_pieces) if seg_pieces else torch.zeros(0, dtype=torch.int32, device=q.device))
        pieces.append(torch.stack(head_pieces))
    key_index = torch.stack(pieces).contiguous()
    order = None
    if query_permute:
        order = query_order_by_guide(q, guides.mean(3), segment)
    return _new_plan(q, k, segment, sinks, h_plan, key_index, order)


# ----------------------------------------------------------------------------------------------
# Triton: score, bucket histogram, stable scatter.
# ----------------------------------------------------------------------------------------------

@triton.jit
def _score_kernel(
    K, GUIDE, SCORE, PART_MAX, PART_MIN,  # k (B, Hkv, N, D); guides (B, Hp, n_seg, D); scores (B, Hp, n_seg, N) fp32;
    n_ctx, n_seg, segment, sinks, heads_per_kv, h_plan,  # partial max / min (B, Hp, n_seg, n_kb) fp32
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_gb, stride_gh, stride_gs, stride_gd,
    stride_sb, stride_sh, stride_ss, stride_sn,
    stride_pb, stride_ph, stride_ps, stride_pk,
    HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Scores of one block of keys against the guides of one block of segments (tensor cores)."""
    tl.static_assert(BLOCK_S >= 16 and BLOCK_N >= 16)
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_bh = tl.program_id(2)
    b = pid_bh // h_plan
    h = pid_bh % h_plan
    last_seg = tl.minimum(n_seg, (pid_s + 1) * BLOCK_S) - 1
    # Keys at or after the last segment's start are in no prefix of this block of segments.
    if pid_n * BLOCK_N < last_seg * segment:
        offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        g_ptrs = GUIDE + b * stride_gb + h * stride_gh + offs_s[:, None] * stride_gs + offs_d[None, :] * stride_gd
        guide = tl.load(g_ptrs, mask=offs_s[:, None] < n_seg, other=0.0)
        k_ptrs = K + b * stride_kb + (h // heads_per_kv) * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
        keys = tl.load(k_ptrs, mask=offs_n[:, None] < n_ctx, other=0.0)
        score = tl.dot(guide, tl.trans(keys))  # (BLOCK_S, BLOCK_N) fp32
        in_prefix = (offs_n[None, :] >= sinks) & (offs_n[None, :] < offs_s[:, None] * segment) & (offs_s[:, None] < n_seg)
        s_ptrs = SCORE + b * stride_sb + h * stride_sh + offs_s[:, None] * stride_ss + offs_n[None, :] * stride_sn
        tl.store(s_ptrs, score, mask=in_prefix)
        p_off = b * stride_pb + h * stride_ph + offs_s * stride_ps + pid_n * stride_pk
        tl.store(PART_MAX + p_off, tl.max(tl.where(in_prefix, score, float("-inf")), axis=1), mask=offs_s < n_seg)
        tl.store(PART_MIN + p_off, tl.min(tl.where(in_prefix, score, float("inf")), axis=1), mask=offs_s < n_seg)


@triton.jit
def _bucket_of(score, top, inv_width, N_BUCKETS: tl.constexpr):
    # Bucket 0 holds the highest scores; the segment's minimum lands in the last bucket.
    return tl.minimum(tl.maximum(((top - score) * inv_width).to(tl.int32), 0), N_BUCKETS - 1)


@triton.jit
def _histogram_kernel(
    SCORE, TOP, INV_WIDTH, HIST,  # scores (B, Hp, n_seg, N); top, inv_width (B, Hp, n_seg) fp32;
    n_seg, segment, sinks, h_plan,  # hist (B, Hp, n_seg, n_kt, N_BUCKETS) int32
    stride_sb, stride_sh, stride_ss, stride_sn,
    stride_tb, stride_th, stride_ts,
    stride_hb, stride_hh, stride_hs, stride_ht,
    KEY_TILE: tl.constexpr, N_BUCKETS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Bucket counts of one segment's scores over one tile of KEY_TILE key positions."""
    pid_t = tl.program_id(0)
    s = tl.program_id(1)
    pid_bh = tl.program_id(2)
    b = pid_bh // h_plan
    h = pid_bh % h_plan
    tile_lo = tl.maximum(pid_t * KEY_TILE, sinks)
    tile_hi = tl.minimum((pid_t + 1) * KEY_TILE, s * segment)
    if tile_lo < tile_hi:
        t_off = b * stride_tb + h * stride_th + s * stride_ts
        top = tl.load(TOP + t_off)
        inv_width = tl.load(INV_WIDTH + t_off)
        row = SCORE + b * stride_sb + h * stride_sh + s * stride_ss
        hist = tl.zeros((N_BUCKETS,), dtype=tl.int32)
        for start in range(tile_lo, tile_hi, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            valid = offs_n < tile_hi
            score = tl.load(row + offs_n * stride_sn, mask=valid, other=0.0)
            # Padding lanes go to the last bucket and are taken out again below.
            bucket = tl.where(valid, _bucket_of(score, top, inv_width, N_BUCKETS), N_BUCKETS - 1)
            hist += tl.histogram(bucket, N_BUCKETS)
        n_pad = tl.cdiv(tile_hi - tile_lo, BLOCK_N) * BLOCK_N - (tile_hi - tile_lo)
        offs_b = tl.arange(0, N_BUCKETS)
        hist -= tl.where(offs_b == N_BUCKETS - 1, n_pad, 0)
        tl.store(HIST + b * stride_hb + h * stride_hh + s * stride_hs + pid_t * stride_ht + offs_b, hist)


@triton.jit
def _scatter_kernel(
    SCORE, TOP, INV_WIDTH, CURSOR, KEY_INDEX,  # cursor (B, Hp, n_seg, n_kt, N_BUCKETS) int64: where the tile's
    n_seg, segment, sinks, h_plan,  # next key of each bucket goes in key_index[b, h]; key_index (B, Hp, L) int32
    stride_sb, stride_sh, stride_ss, stride_sn,
    stride_tb, stride_th, stride_ts,
    stride_cb, stride_ch, stride_cs, stride_ct,
    stride_ib, stride_ih,
    KEY_TILE: tl.constexpr, N_BUCKETS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Writes one tile of a segment's prefix into the list: bucket by bucket, positions ascending."""
    pid_t = tl.program_id(0)
    s = tl.program_id(1)
    pid_bh = tl.program_id(2)
    b = pid_bh // h_plan
    h = pid_bh % h_plan
    tile_lo = tl.maximum(pid_t * KEY_TILE, sinks)
    tile_hi = tl.minimum((pid_t + 1) * KEY_TILE, s * segment)
    if tile_lo < tile_hi:
        t_off = b * stride_tb + h * stride_th + s * stride_ts
        top = tl.load(TOP + t_off)
        inv_width = tl.load(INV_WIDTH + t_off)
        row = SCORE + b * stride_sb + h * stride_sh + s * stride_ss
        cursor = CURSOR + b * stride_cb + h * stride_ch + s * stride_cs + pid_t * stride_ct
        out = KEY_INDEX + b * stride_ib + h * stride_ih
        lane = tl.arange(0, BLOCK_N)
        earlier = lane[None, :] < lane[:, None]  # (i, j): key j comes before key i in position order
        for start in range(tile_lo, tile_hi, BLOCK_N):
            offs_n = start + lane
            valid = offs_n < tile_hi
            score = tl.load(row + offs_n * stride_sn, mask=valid, other=0.0)
            bucket = tl.where(valid, _bucket_of(score, top, inv_width, N_BUCKETS), N_BUCKETS - 1)
            same = (bucket[:, None] == bucket[None, :]) & valid[None, :]
            rank = tl.sum((same & earlier).to(tl.int32), axis=1)  # stable: earlier positions first
            count = tl.sum(same.to(tl.int32), axis=1)
            base = tl.load(cursor + bucket, mask=valid, other=0)
            tl.store(out + base + rank, offs_n.to(tl.int32), mask=valid)
            # The last key of each bucket in this block moves that bucket's cursor past the block.
            tl.store(cursor + bucket, base + count, mask=valid & (rank == count - 1))
            tl.debug_barrier()


def _key_tile(n_ctx: int) -> int:
    # Big enough that the per-tile histograms stay small next to the scores, small enough that
    # every (segment, tile) program has work to spread over the GPU.
    return max(64, min(4096, triton.next_power_of_2(n_ctx)))


def s2o_plan(q: Tensor, k: Tensor, *, segment: int = DEFAULT_SEGMENT, sinks: int = DEFAULT_SINKS,
             block_m: int = DEFAULT_BLOCK_M, guide: str = "mean", query_permute: bool = False,
             n_buckets: int = DEFAULT_BUCKETS, scale: float | None = None) -> Plan:
    """Build the S2O plan in linear time (Triton): every prefix key of every segment, ranked by a guide.

    q: ``(batch, q_heads, seq_len, head_dim)``; k: ``(batch, kv_heads, seq_len, head_dim)``; fp16,
    bf16 or fp32, on the GPU (or on the CPU with ``TRITON_INTERPRET=1``).
    segment (1024): S, queries per segment, a multiple of block_m (128, the executor's query tile).
    sinks (64): keys [0, sinks) are left out of the lists (the executor computes them in pass 1).
    guide ("mean"): how keys are ranked, one of GUIDES (see the module docstring).
    query_permute (False): order each segment's queries by ``q . g`` and emit ``plan.query_order``.
    n_buckets (1024): score buckets per segment; the list is exact up to one bucket width
        ``(max - min) / n_buckets`` of that segment's scores.
    scale (head_dim ** -0.5): softmax scale, used by the ``head_mix`` guide only.
    Returns a ``Plan`` (kernels/plan.py) with int32 key lists holding every prefix key once.
    """
    _validate(q, k, segment, sinks, block_m, guide, n_buckets)
    if guide == "head_mix":
        raise NotImplementedError("guide='head_mix' exists in torch_s2o_plan only (see PLANNER_NOTES.md)")
    batch, _, n_ctx, dim = q.shape
    if dim & (dim - 1) or dim < 16:
        raise ValueError(f"head_dim must be a power of two >= 16 for the Triton planner; got {dim}")
    group = q.shape[1] // k.shape[1]
    guides = _guides_for(q, k, segment, guide)[:, :, :, 0, :]  # (B, Hp, n_seg, D)
    h_plan, n_seg = guides.shape[1], guides.shape[2]
    heads_per_kv = group if h_plan == q.shape[1] else 1
    lengths, starts = plan_layout(n_ctx, segment, sinks)
    total = int(lengths.sum())
    key_index = torch.empty(batch, h_plan, total, dtype=torch.int32, device=q.device)
    if total > 0:
        _rank_prefixes(k, guides.to(k.dtype), key_index, starts.to(q.device), segment, sinks, heads_per_kv, n_buckets)
    order = query_order_by_guide(q, guides, segment) if query_permute else None
    return _new_plan(q, k, segment, sinks, h_plan, key_index, order)


def _rank_prefixes(k: Tensor, guides: Tensor, key_index: Tensor, starts: Tensor, segment: int, sinks: int,
                   heads_per_kv: int, n_buckets: int) -> None:
    """Fills ``key_index`` (B, Hp, L): the three kernels, with the offsets computed in between."""
    batch, h_plan, n_seg, dim = guides.shape
    n_ctx = k.shape[2]
    block_s, block_n = 16 if n_seg <= 16 else 32, 64
    n_kb = triton.cdiv(n_ctx, block_n)
    score = torch.empty(batch, h_plan, n_seg, n_ctx, dtype=torch.float32, device=k.device)
    part_max = torch.full((batch, h_plan, n_seg, n_kb), float("-inf"), device=k.device)
    part_min = torch.full((batch, h_plan, n_seg, n_kb), float("inf"), device=k.device)
    grid = (n_kb, triton.cdiv(n_seg, block_s), batch * h_plan)
    _score_kernel[grid](
        k, guides, score, part_max, part_min,
        n_ctx, n_seg, segment, sinks, heads_per_kv, h_plan,
        *k.stride(), *guides.stride(), *score.stride(), *part_max.stride(),
        HEAD_DIM=dim, BLOCK_S=block_s, BLOCK_N=block_n,
    )
    top = part_max.amax(-1)
    spread = top - part_min.amin(-1)
    # Empty prefixes give -inf - inf = nan; a zero spread puts everything in bucket 0.
    inv_width = torch.where(spread > 0, n_buckets / spread, torch.zeros_like(spread)).contiguous()
    top = torch.nan_to_num(top, neginf=0.0).contiguous()

    key_tile = _key_tile(n_ctx)
    n_kt = triton.cdiv(n_ctx, key_tile)
    hist = torch.zeros(batch, h_plan, n_seg, n_kt, n_buckets, dtype=torch.int32, device=k.device)
    grid = (n_kt, n_seg, batch * h_plan)
    common = dict(KEY_TILE=key_tile, N_BUCKETS=n_buckets, BLOCK_N=64)
    _histogram_kernel[grid](
        score, top, inv_width, hist, n_seg, segment, sinks, h_plan,
        *score.stride(), *top.stride(), *hist.stride()[:4], **common,
    )
    # Bucket-major, then tile order: the exclusive running count is where each (bucket, tile) run starts.
    counts = hist.transpose(3, 4).reshape(batch, h_plan, n_seg, n_buckets * n_kt).to(torch.int64)
    cursor = torch.cumsum(counts, -1) - counts + starts[:, None]
    cursor = cursor.view(batch, h_plan, n_seg, n_buckets, n_kt).transpose(3, 4).contiguous()
    _scatter_kernel[grid](
        score, top, inv_width, cursor, key_index, n_seg, segment, sinks, h_plan,
        *score.stride(), *top.stride(), *cursor.stride()[:4], *key_index.stride()[:2], **common,
    )
