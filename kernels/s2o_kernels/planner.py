"""S2O planner: per query segment, every prefix key ranked by a guide query (arXiv 2602.22575).

For each (batch, plan head, segment of S queries) the planner builds one guide vector from the
segment's queries, scores every prefix key ``r_j = g . k_j`` (keys [sinks, s * S): the sinks and the
segment's own keys are computed exactly in the executor's pass 1), and lists the prefix in descending
score order. The list holds EVERY prefix key exactly once, so ``tau = 0`` in the executor gives dense
attention; the early-stopping executor walks it in chunks and stops when a chunk adds too little mass.

Two implementations with one signature:

- ``s2o_plan``: linear time, Triton. Three passes over (segments x keys) score tiles, each recomputed
  on tensor cores from K (cheaper than storing n_seg x N scores): score statistics per segment; bucket
  counts; scatter. The top ``fine_fraction`` of each segment's keys (above ``mean + z * std`` of its
  scores) falls into ``n_buckets`` equal score steps and is placed key by key (atomics: exact up to
  one bucket, in no set order inside a bucket); the rest falls into ``n_coarse`` bands, written in
  contiguous position-ordered runs. That is what the executor needs: it never looks at the order
  inside a chunk, near the top buckets hold fewer keys than a chunk, and it rarely walks the tail.
- ``torch_s2o_plan``: the PyTorch twin, with an exact stable argsort (for tests and CPU studies);
  ``torch_bucket_ids`` reproduces the Triton planner's buckets.

Guides (``guide=``), measured in PLANNER_NOTES.md:

- ``"head_mean"`` (this function's default; the ``s2o`` method passes ``"mean"``): one list per query
  head (H_plan = q_heads); the guide is the mean of the segment's queries over its tokens. 15-21% lower
  density than ``"mean"`` at equal error on real attention at 8K-16K (CPU tables), for G times the
  planning work; on the H100 the executor then loses its GQA sharing and runs slower overall
  (reports/bench/NOTES.md).
- ``"mean"``: one list per kv head (H_plan = kv_heads, shared by its G query heads, which the executor
  then walks as one tile); the guide is the mean over the tokens and over the G heads.
- ``"head_mix"`` (PyTorch twin only, a measured dead end): one shared list per kv head ranked by the
  sum over heads of each head's softmax over the prefix.

Shapes: q ``(batch, q_heads, seq_len, head_dim)``, k ``(batch, kv_heads, seq_len, head_dim)``; the
plan's layout is kernels/plan.py.
"""

from __future__ import annotations

import math
import os
from statistics import NormalDist

import torch
import triton
import triton.language as tl
from torch import Tensor

from .plan import Plan, plan_layout, segment_plan

DEFAULT_SEGMENT = 1024
DEFAULT_SINKS = 64
DEFAULT_BLOCK_M = 128
DEFAULT_GUIDE = "head_mean"
DEFAULT_BUCKETS = 1024
DEFAULT_COARSE = 4
DEFAULT_FINE_FRACTION = 0.5
COARSE_SPAN = 2.0  # standard deviations of the scores covered by the coarse bands
GUIDES = ("mean", "head_mean", "head_mix")


# ----------------------------------------------------------------------------------------------
# Shared by both implementations: validation, list layout, guides, query order.
# ----------------------------------------------------------------------------------------------

def validate_layout(q: Tensor, k: Tensor, segment: int, sinks: int, block_m: int) -> None:
    """The checks every planner makes of its inputs and list layout (ValueError with what is wrong)."""
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


def _validate(q: Tensor, k: Tensor, segment: int, sinks: int, block_m: int, guide: str, n_buckets: int) -> None:
    validate_layout(q, k, segment, sinks, block_m)
    if guide not in GUIDES:
        raise ValueError(f"guide must be one of {GUIDES}; got {guide!r}")
    if n_buckets < 2 or n_buckets & (n_buckets - 1):
        raise ValueError(f"n_buckets must be a power of two >= 2; got {n_buckets}")


def segment_guides(q: Tensor, segment: int) -> Tensor:
    """Mean query of each segment, per query head: fp32 ``(batch, q_heads, n_seg, head_dim)``.

    A ragged last segment is averaged over the tokens it has.
    """
    batch, q_heads, n_ctx, dim = q.shape
    n_full = n_ctx // segment
    # fp32 accumulation without an fp32 copy of q; the ragged tail is summed on its own (no padded copy).
    sums = [q[:, :, :n_full * segment].reshape(batch, q_heads, n_full, segment, dim).sum(3, dtype=torch.float32) / segment]
    if n_full * segment < n_ctx:
        sums.append(q[:, :, n_full * segment:].sum(2, keepdim=True, dtype=torch.float32) / (n_ctx - n_full * segment))
    return torch.cat(sums, 2) if len(sums) > 1 else sums[0]


def _guides_for(q: Tensor, k: Tensor, segment: int, guide: str) -> Tensor:
    """Guides per plan head: ``(batch, H_plan, n_seg, n_guides, head_dim)`` fp32, rounded to k's dtype.

    Rounding to k's dtype makes the twin score exactly what the tensor-core kernel scores.
    """
    batch, q_heads, n_ctx, dim = q.shape
    kv_heads = k.shape[1]
    group = q_heads // kv_heads
    per_head = segment_guides(q, segment)  # (B, Hq, n_seg, D)
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
                   block_m: int = DEFAULT_BLOCK_M, guide: str = DEFAULT_GUIDE, query_permute: bool = False,
                   n_buckets: int = DEFAULT_BUCKETS, n_coarse: int = DEFAULT_COARSE,
                   fine_fraction: float = DEFAULT_FINE_FRACTION, scale: float | None = None) -> Plan:
    """S2O plan in plain PyTorch, every segment's prefix in exact descending score order.

    Same arguments and layout as ``s2o_plan``; ``n_buckets``, ``n_coarse`` and ``fine_fraction``
    are accepted and ignored (the twin sorts exactly; ties keep ascending position). Costs a full
    sort: for tests and studies (``torch_bucket_ids`` gives the Triton planner's bucketed order).
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
    return segment_plan(q, segment, sinks, key_index, order)


# ----------------------------------------------------------------------------------------------
# Bucketing: how the Triton planner orders a segment's prefix (a torch version for studies and tests).
# ----------------------------------------------------------------------------------------------

def fine_threshold_z(fine_fraction: float) -> float:
    """Standard scores above which keys get fine buckets: ``mean + z * std`` keeps about
    ``fine_fraction`` of a Gaussian-looking score distribution (-inf for 1: every key is fine)."""
    if fine_fraction >= 1.0:
        return float("-inf")
    return NormalDist().inv_cdf(1.0 - fine_fraction)


def bucket_scales(top: Tensor, bottom: Tensor, mean: Tensor, std: Tensor, *, n_buckets: int, n_coarse: int,
                  fine_fraction: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per segment: ``(top, threshold, fine inverse width, coarse inverse width)``, fp32.

    Scores in [threshold, top] fall into ``n_buckets`` fine buckets (bucket 0 holds the highest);
    scores below the threshold into ``n_coarse`` coarse bands of equal width over the
    ``COARSE_SPAN * std`` under it (the lowest band also takes everything further down), after every
    fine bucket. Empty prefixes (top = -inf) get zeros.
    """
    z = fine_threshold_z(fine_fraction)
    threshold = bottom if math.isinf(z) else torch.maximum(bottom, torch.minimum(top, mean + z * std))
    # Coarse bands share the COARSE_SPAN standard deviations under the threshold (the last band also
    # takes everything lower): equal-width bands down to a far minimum would leave most keys in one.
    fine_span, coarse_span = top - threshold, torch.minimum(threshold - bottom, COARSE_SPAN * std)
    fine_inv = torch.where(fine_span > 0, n_buckets / fine_span, torch.zeros_like(fine_span))
    coarse_inv = torch.where(coarse_span > 0, n_coarse / coarse_span, torch.zeros_like(coarse_span))
    finite = torch.isfinite(top)
    zero = torch.zeros_like(top)
    return tuple(torch.where(finite, x, zero).float().contiguous() for x in (top, threshold, fine_inv, coarse_inv))


def torch_bucket_ids(score: Tensor, top, threshold, fine_inv, coarse_inv, *, n_buckets: int, n_coarse: int) -> Tensor:
    """The bucket of each score (int64), the same arithmetic as the Triton kernel's ``_bucket_of``."""
    fine = ((top - score) * fine_inv).to(torch.int32).clamp(0, n_buckets - 1)
    coarse = n_buckets + ((threshold - score) * coarse_inv).to(torch.int32).clamp(0, n_coarse - 1)
    return torch.where(score >= threshold, fine, coarse).long()


# ----------------------------------------------------------------------------------------------
# Triton: three passes over the same (segments x keys) score tiles, recomputed on tensor cores each
# time (cheaper than storing n_seg x N scores): statistics, bucket counts, scatter.
# ----------------------------------------------------------------------------------------------

@triton.jit
def _score_tile(K, GUIDE, b, h, kv_head, pid_n, pid_s, n_ctx, n_seg, segment, sinks,
                stride_kb, stride_kh, stride_kn, stride_kd, stride_gb, stride_gh, stride_gs, stride_gd,
                HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Scores ``(BLOCK_S, BLOCK_N)`` of a block of keys against a block of segment guides, and the
    mask of the pairs where the key lies in the segment's prefix [sinks, s * segment)."""
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    g_ptrs = GUIDE + b * stride_gb + h * stride_gh + offs_s[:, None] * stride_gs + offs_d[None, :] * stride_gd
    guide = tl.load(g_ptrs, mask=offs_s[:, None] < n_seg, other=0.0)
    k_ptrs = K + b * stride_kb + kv_head * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
    keys = tl.load(k_ptrs, mask=offs_n[:, None] < n_ctx, other=0.0)
    score = tl.dot(guide, tl.trans(keys), input_precision=DOT_PRECISION)
    in_prefix = (offs_n[None, :] >= sinks) & (offs_n[None, :] < offs_s[:, None] * segment) & (offs_s[:, None] < n_seg)
    return score, in_prefix, offs_s, offs_n


@triton.jit
def _bucket_of(score, top, threshold, fine_inv, coarse_inv, N_BUCKETS: tl.constexpr, N_COARSE: tl.constexpr):
    # Fine buckets 0..N_BUCKETS-1 from the top score down to the threshold, then the coarse bands.
    fine = tl.minimum(tl.maximum(((top - score) * fine_inv).to(tl.int32), 0), N_BUCKETS - 1)
    coarse = N_BUCKETS + tl.minimum(tl.maximum(((threshold - score) * coarse_inv).to(tl.int32), 0), N_COARSE - 1)
    return tl.where(score >= threshold, fine, coarse)


@triton.jit
def _plan_kernel(
    K, GUIDE,            # k (B, Hkv, N, D); guides (B, Hp, n_seg, D) in k's dtype
    STATS,               # PHASE 0 out: (4, B, Hp, n_seg, n_kb) fp32 max, min, sum, sum of squares per key block
    SCALES,              # PHASE 1, 2 in: (4, B, Hp, n_seg) fp32 top, threshold, fine and coarse inverse widths
    COUNT,               # PHASE 1 out: (B, Hp, n_seg, N_BUCKETS + N_COARSE) int32 keys per bucket;
                         # PHASE 2 in/out: next free slot of each bucket in key_index[b, h]
    KEY_INDEX,           # PHASE 2 out: (B, Hp, L) int32
    n_ctx, n_seg, segment, sinks, h_plan, heads_per_kv,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_gb, stride_gh, stride_gs, stride_gd,
    stride_xq, stride_xb, stride_xh, stride_xs,
    stride_cq, stride_cb, stride_ch,
    stride_nb, stride_nh, stride_ns,
    stride_ib, stride_ih,
    PHASE: tl.constexpr, HEAD_DIM: tl.constexpr, N_BUCKETS: tl.constexpr, N_COARSE: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """One (block of keys, block of segments, batch x plan head) tile of the plan, in three phases:
    0: score statistics per segment; 1: bucket counts; 2: every key to a free slot of its bucket.

    Fine buckets take one atomic per key (the top of the order, where it matters); a coarse band
    takes one atomic per tile row and writes its keys of the row contiguously, in position order.
    """
    tl.static_assert(BLOCK_S >= 16 and BLOCK_N >= 16)
    # Axis 0 runs over the segment blocks and the plan heads of one kv head, so that programs
    # launched together read the same block of keys (from L2, not again from memory).
    n_seg_blocks = tl.cdiv(n_seg, BLOCK_S)
    pid_s = tl.program_id(0) % n_seg_blocks
    pid_n = tl.program_id(1)
    b = tl.program_id(2) // (h_plan // heads_per_kv)
    h = (tl.program_id(2) % (h_plan // heads_per_kv)) * heads_per_kv + tl.program_id(0) // n_seg_blocks
    last_seg = tl.minimum(n_seg, (pid_s + 1) * BLOCK_S) - 1
    # Keys at or after the last segment's start are in no prefix of this block of segments.
    if pid_n * BLOCK_N < last_seg * segment:
        score, in_prefix, offs_s, offs_n = _score_tile(
            K, GUIDE, b, h, h // heads_per_kv, pid_n, pid_s, n_ctx, n_seg, segment, sinks,
            stride_kb, stride_kh, stride_kn, stride_kd, stride_gb, stride_gh, stride_gs, stride_gd,
            HEAD_DIM, BLOCK_S, BLOCK_N, DOT_PRECISION)
        seg_ok = offs_s < n_seg
        if PHASE == 0:
            x_ptrs = STATS + b * stride_xb + h * stride_xh + offs_s * stride_xs + pid_n
            kept = tl.where(in_prefix, score, 0.0)
            tl.store(x_ptrs, tl.max(tl.where(in_prefix, score, float("-inf")), axis=1), mask=seg_ok)
            tl.store(x_ptrs + stride_xq, tl.min(tl.where(in_prefix, score, float("inf")), axis=1), mask=seg_ok)
            tl.store(x_ptrs + 2 * stride_xq, tl.sum(kept, axis=1), mask=seg_ok)
            tl.store(x_ptrs + 3 * stride_xq, tl.sum(kept * kept, axis=1), mask=seg_ok)
        else:
            c_off = b * stride_cb + h * stride_ch + offs_s
            top = tl.load(SCALES + c_off, mask=seg_ok, other=0.0)[:, None]
            threshold = tl.load(SCALES + stride_cq + c_off, mask=seg_ok, other=0.0)[:, None]
            fine_inv = tl.load(SCALES + 2 * stride_cq + c_off, mask=seg_ok, other=0.0)[:, None]
            coarse_inv = tl.load(SCALES + 3 * stride_cq + c_off, mask=seg_ok, other=0.0)[:, None]
            bucket = _bucket_of(score, top, threshold, fine_inv, coarse_inv, N_BUCKETS, N_COARSE)
            row = COUNT + b * stride_nb + h * stride_nh + offs_s * stride_ns  # (BLOCK_S,) pointers
            is_fine = in_prefix & (bucket < N_BUCKETS)
            ones = tl.full(bucket.shape, 1, tl.int32)
            # Relaxed atomics: only the totals (phase 1) and distinct slots (phase 2) matter.
            slot = tl.atomic_add(row[:, None] + bucket, ones, mask=is_fine, sem="relaxed")
            out = KEY_INDEX + b * stride_ib + h * stride_ih
            keys = (offs_n[None, :] + tl.zeros_like(bucket)).to(tl.int32)
            if PHASE == 2:
                tl.store(out + slot, keys, mask=is_fine)
            for band in tl.static_range(N_COARSE):
                in_band = in_prefix & (bucket == N_BUCKETS + band)
                n_row = tl.sum(in_band.to(tl.int32), axis=1)
                first = tl.atomic_add(row + N_BUCKETS + band, n_row, mask=seg_ok & (n_row > 0), sem="relaxed")
                if PHASE == 2:
                    pos = first[:, None] + tl.cumsum(in_band.to(tl.int32), axis=1) - 1
                    tl.store(out + pos, keys, mask=in_band)


def s2o_plan(q: Tensor, k: Tensor, *, segment: int = DEFAULT_SEGMENT, sinks: int = DEFAULT_SINKS,
             block_m: int = DEFAULT_BLOCK_M, guide: str = DEFAULT_GUIDE, query_permute: bool = False,
             n_buckets: int = DEFAULT_BUCKETS, n_coarse: int = DEFAULT_COARSE,
             fine_fraction: float = DEFAULT_FINE_FRACTION, scale: float | None = None) -> Plan:
    """Build the S2O plan in linear time (Triton): every prefix key of every segment, ranked by a guide.

    q: ``(batch, q_heads, seq_len, head_dim)``; k: ``(batch, kv_heads, seq_len, head_dim)``; fp16,
    bf16 or fp32, on the GPU (or on the CPU with ``TRITON_INTERPRET=1``).
    segment: S, queries per segment, a multiple of block_m (the executor's query tile).
    sinks: keys [0, sinks) are left out of the lists (the executor computes them in pass 1).
    guide: how keys are ranked, one of GUIDES (see the module docstring).
    query_permute: order each segment's queries by ``q . g`` and emit ``plan.query_order``.
    n_buckets, fine_fraction: the top ``fine_fraction`` of a segment's keys (estimated from the mean
        and spread of its scores) is ordered exactly up to one of ``n_buckets`` equal score steps
        between the top score and that threshold; keys of one bucket come in no set order (they are
        placed by atomics), so two runs may order near-equal keys differently.
    n_coarse: the keys below the threshold follow in ``n_coarse`` equal score bands, position order
        inside a band (the executor rarely walks that deep; they are written in contiguous runs).
    scale: softmax scale, used by the ``head_mix`` guide only.
    Returns a ``Plan`` (kernels/plan.py) with int32 key lists holding every prefix key once.
    """
    _validate(q, k, segment, sinks, block_m, guide, n_buckets)
    if guide == "head_mix":
        raise ValueError("guide='head_mix' exists in torch_s2o_plan only (see PLANNER_NOTES.md): use mean or head_mean")
    if n_coarse < 1 or not 0.0 < fine_fraction <= 1.0:
        raise ValueError(f"n_coarse must be >= 1 and fine_fraction in (0, 1]; got {n_coarse}, {fine_fraction}")
    batch, _, n_ctx, dim = q.shape
    if dim & (dim - 1) or dim < 16:
        raise ValueError(f"head_dim must be a power of two >= 16 for the Triton planner; got {dim}")
    group = q.shape[1] // k.shape[1]
    guides = _guides_for(q, k, segment, guide)[:, :, :, 0, :]  # (B, Hp, n_seg, D) fp32
    h_plan = guides.shape[1]
    lengths, starts = plan_layout(n_ctx, segment, sinks)
    total = int(lengths.sum())
    if total >= 2**31:
        raise ValueError(f"the plan would list {total} keys per head, over int32 offsets: use a longer segment")
    key_index = torch.empty(batch, h_plan, total, dtype=torch.int32, device=q.device)
    if total > 0:
        heads_per_kv = group if h_plan == q.shape[1] else 1
        _rank_prefixes(k, guides.to(k.dtype), key_index, starts.to(q.device), segment, sinks, heads_per_kv,
                       n_buckets, n_coarse, fine_fraction)
    order = query_order_by_guide(q, guides, segment) if query_permute else None
    return segment_plan(q, segment, sinks, key_index, order)


CONFIG_ENV = "S2O_PLAN_CONFIG"


def _launch_shape(n_seg: int, dim: int) -> tuple[int, int, int]:
    """(segments per tile, keys per tile, warps); env S2O_PLAN_CONFIG="block_s=32,block_n=128,num_warps=4"
    overrides, for tuning on a GPU."""
    shape = {"block_s": 16 if n_seg <= 16 else 32, "block_n": 128 if dim <= 128 else 64, "num_warps": 4}
    for item in filter(None, os.environ.get(CONFIG_ENV, "").split(",")):
        name, _, value = item.partition("=")
        if name.strip() not in shape or not value.strip().isdigit():
            raise ValueError(f"{CONFIG_ENV}: cannot read {item!r}; expected e.g. 'block_s=32,block_n=128,num_warps=4'")
        shape[name.strip()] = int(value)
    return shape["block_s"], shape["block_n"], shape["num_warps"]


def _rank_prefixes(k: Tensor, guides: Tensor, key_index: Tensor, starts: Tensor, segment: int, sinks: int,
                   heads_per_kv: int, n_buckets: int, n_coarse: int, fine_fraction: float) -> None:
    """Fills ``key_index`` (B, Hp, L): statistics pass, count pass, bucket offsets (torch), scatter pass."""
    batch, h_plan, n_seg, dim = guides.shape
    n_ctx = k.shape[2]
    block_s, block_n, num_warps = _launch_shape(n_seg, dim)
    n_kb = triton.cdiv(n_ctx, block_n)
    stats = torch.empty(4, batch, h_plan, n_seg, n_kb, device=k.device)
    stats[0], stats[1], stats[2:] = float("-inf"), float("inf"), 0.0
    count = torch.zeros(batch, h_plan, n_seg, n_buckets + n_coarse, dtype=torch.int32, device=k.device)
    grid = (triton.cdiv(n_seg, block_s) * heads_per_kv, n_kb, batch * h_plan // heads_per_kv)

    def launch(phase, scales):
        _plan_kernel[grid](
            k, guides, stats, scales, count, key_index,
            n_ctx, n_seg, segment, sinks, h_plan, heads_per_kv,
            *k.stride(), *guides.stride(), *stats.stride()[:4], *scales.stride()[:3], *count.stride()[:3],
            *key_index.stride()[:2],
            PHASE=phase, HEAD_DIM=dim, N_BUCKETS=n_buckets, N_COARSE=n_coarse, BLOCK_S=block_s, BLOCK_N=block_n,
            # fp32 inputs (tests, studies) score exactly; fp16 / bf16 products are exact in fp32 anyway.
            DOT_PRECISION="ieee" if k.dtype == torch.float32 else "tf32", num_warps=num_warps,
        )

    launch(0, stats)  # scales unused in phase 0
    n_keys = (torch.arange(n_seg, device=k.device) * segment - sinks).clamp(min=1)
    mean = stats[2].sum(-1) / n_keys
    std = (stats[3].sum(-1) / n_keys - mean * mean).clamp(min=0).sqrt()
    scales = torch.stack(bucket_scales(stats[0].amax(-1), stats[1].amin(-1), mean, std, n_buckets=n_buckets,
                                       n_coarse=n_coarse, fine_fraction=fine_fraction))
    launch(1, scales)
    # Buckets in order, highest first: a bucket's run starts after every higher bucket's keys.
    count.copy_(torch.cumsum(count, -1, dtype=torch.int32) - count + starts[:, None].to(torch.int32))
    launch(2, scales)
