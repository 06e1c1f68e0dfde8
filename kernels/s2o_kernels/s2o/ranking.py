"""What the S2O planner ranks keys by: per (batch, plan head, segment), a few projection vectors.

A key's ranking score, in nats (the query side is scaled by the softmax scale), is

    score(k) = P[0] . k + 1/2 * sum_{c >= 1} (P[c] . k - o[c])^2  [+ w . (k * k)]

where P = ``vectors[b, h, s]`` has C rows of head_dim, o = ``offsets[b, h, s]`` C numbers (o[0]
unused) and w = ``squares[b, h, s]`` head_dim weights of the squared key (only for "diag").
Scores (``score=``):

- ``"mean"``: one list per kv head, shared by its GQA group; P = [mean of the segment's queries over
  its tokens and the group's heads] (C = 1).
- ``"head_mean"``: one list per query head; P = [mean query] (C = 1).
- ``"gauss"``: one list per query head; P = [mean query mu, F_1 .. F_rank] with F^T F the best
  rank-``rank`` approximation of the covariance of the segment's scaled queries (C = 1 + rank),
  found by a few steps of subspace iteration; o[c] = F_c . b, where b is the softmax(mu . k)-weighted
  mean of the keys the segment sees. The score is then mu . k + 1/2 (k - b)^T Sigma (k - b): the mean
  query's logit plus half the variance of the logit *relative to the row's normaliser*, to first
  order. Without the centring on b (log E[exp(q . k)] of a Gaussian q), keys share a large common
  part whose variance term only says how much a query shifts all its logits, which the softmax
  cancels: on real attention that ranked worse than the mean query alone (reports/bench/NOTES.md).
- ``"diag"``: one list per query head; the same idea with the covariance cut to its diagonal and
  centred on the plain mean kbar of the segment's prefix keys: mu . k + 1/2 sum_d var_d (k_d -
  kbar_d)^2 = (mu - var * kbar) . k + 1/2 var . (k * k) + const, so P = [mu - var * kbar] (C = 1)
  and w = var / 2. No eigen-decomposition and no softmax pass: one pass over the queries (sums and
  sums of squares), one over the keys (segment sums), and two products per key when scoring.

Plain PyTorch, no Triton: the Triton planner and its twin share these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SCORES = ("mean", "head_mean", "gauss", "diag")
DEFAULT_SCORE = "diag"
DEFAULT_RANK = 8
DEFAULT_BUCKETS = 256
DEFAULT_SPAN = 16.0  # nats below a list's top score that get fine buckets
SUBSPACE_ITERATIONS = 2
OVERSAMPLE = 2  # the iteration carries OVERSAMPLE x rank directions; the top rank are kept


def check_score(score: str, rank: int) -> None:
    """Reject an unknown score or a rank it cannot use."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}; got {score!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1 or rank > 64:
        raise ValueError(f"rank must be an int in 1..64; got {rank!r}")


def plan_heads(score: str, q_heads: int, kv_heads: int) -> int:
    """H_plan: lists per batch entry and segment (kv heads when shared by a GQA group, else q heads)."""
    return kv_heads if score == "mean" else q_heads


def _segment_rows(x: Tensor, segment: int) -> tuple[Tensor, Tensor]:
    """x (B, H, N, D) -> zero-padded rows (B, H, n_seg, segment, D) and the real rows per segment."""
    batch, heads, n_ctx, dim = x.shape
    n_seg = -(-n_ctx // segment)
    padded = x if n_ctx % segment == 0 else torch.nn.functional.pad(x, (0, 0, 0, n_seg * segment - n_ctx))
    counts = (n_ctx - torch.arange(n_seg, device=x.device) * segment).clamp(max=segment)
    return padded.reshape(batch, heads, n_seg, segment, dim), counts


def segment_means(q: Tensor, segment: int, scale: float = 1.0) -> Tensor:
    """Mean of each segment's (scaled) queries, per head: fp32 ``(batch, heads, n_seg, head_dim)``.

    A ragged last segment is averaged over the tokens it has.
    """
    rows, counts = _segment_rows(q, segment)
    return rows.sum(3, dtype=torch.float32) * (scale / counts.to(torch.float32))[:, None]


def segment_moments(x: Tensor, segment: int) -> tuple[Tensor, Tensor]:
    """Mean and variance over each segment's rows, per dimension: fp32 ``(batch, heads, n_seg, dim)``
    each. Reduced in x's dtype with fp32 accumulation (no fp32 copy of x: at 128K that would be GBs);
    a ragged last segment over the rows it has."""
    n_ctx = x.shape[2]
    full = n_ctx // segment
    parts = []
    if full:  # (an empty reduction would warn and give NaN)
        parts.append(torch.var_mean(x[:, :, :full * segment].unflatten(2, (full, segment)), dim=3, correction=0))
    if n_ctx % segment:
        parts.append(torch.var_mean(x[:, :, full * segment:], dim=2, keepdim=True, correction=0))
    var, mean = (torch.cat(t, 2) for t in zip(*parts))
    return mean.float(), var.float()


def covariance_factors(rows: Tensor, counts: Tensor, mean: Tensor, rank: int,
                       iterations: int = SUBSPACE_ITERATIONS) -> Tensor:
    """F ``(..., rank, D)`` with F^T F the rank-``rank`` approximation of each segment's covariance.

    rows ``(..., S, D)`` (zero padding past ``counts``), mean ``(..., D)`` fp32. The covariance is one
    product per segment, in the rows' dtype on a GPU (half precision is plenty for a ranking), in
    fp32 elsewhere. Subspace iteration on
    OVERSAMPLE x rank directions, started from the means of that many consecutive groups of rows
    (directions along which the segment's queries drift), orthonormalised through the
    eigen-decomposition of the small Gram matrix (batched); then Rayleigh-Ritz keeps the
    top ``rank``. Directions with no variance get zero rows.
    """
    seg = rows.shape[-2]
    work = rows.dtype if rows.is_cuda else torch.float32
    centered = rows.to(work) - mean.to(work)[..., None, :]
    ragged = counts < seg
    if bool(ragged.any()):  # padding rows must add nothing
        valid = torch.arange(seg, device=rows.device) < counts[:, None]
        centered = centered * valid[..., None].to(work)
    # The covariance once per segment (one large product), then the iteration on D x D matrices.
    cov = (centered.transpose(-1, -2) @ centered).float() * (1.0 / counts.to(torch.float32))[:, None, None]

    def cov_times(basis: Tensor) -> Tensor:  # (..., D, r)
        return cov @ basis

    width = min(OVERSAMPLE * rank, rows.shape[-1])
    groups = -(-seg // width)
    # Group sums of the raw rows: centred ones sum to zero over the groups and would start one short.
    start = rows if groups * width == seg else torch.nn.functional.pad(rows, (0, 0, 0, groups * width - seg))
    basis = start.reshape(*rows.shape[:-2], width, groups, -1).sum(-2, dtype=torch.float32).transpose(-1, -2)
    basis = _orthonormal(basis)
    for _ in range(iterations):
        basis = _orthonormal(cov_times(basis))
    ritz = basis.transpose(-1, -2) @ cov_times(basis)  # (..., r, r)
    values, vectors = torch.linalg.eigh(0.5 * (ritz + ritz.transpose(-1, -2)))  # ascending
    values, vectors = values[..., -rank:], vectors[..., -rank:]
    factors = values.clamp(min=0).sqrt()[..., :, None] * (basis @ vectors).transpose(-1, -2)
    if factors.shape[-2] < rank:  # rank > head_dim: the rest has no variance to hold
        factors = torch.nn.functional.pad(factors, (0, 0, 0, rank - factors.shape[-2]))
    return factors  # (..., rank, D)


def _orthonormal(w: Tensor) -> Tensor:
    """Columns spanning w's range, orthonormal; columns of a (near) null direction become zero.

    Through the eigen-decomposition of the small Gram matrix, in float64: the Gram squares the
    condition number, which float32 would not hold for a start of nearly parallel directions.
    """
    wd = w.double()
    gram = wd.transpose(-1, -2) @ wd
    values, vectors = torch.linalg.eigh(0.5 * (gram + gram.transpose(-1, -2)))
    floor = values.amax(-1, keepdim=True).clamp(min=1e-300) * 1e-12
    inv_sqrt = torch.where(values > floor, values.clamp(min=1e-300).rsqrt(), torch.zeros_like(values))
    return (wd @ (vectors * inv_sqrt[..., None, :])).to(w.dtype)


@dataclass
class Projections:
    """The ranking of every (batch, plan head, segment): ``vectors`` fp32 ``(B, H_plan, n_seg, C, D)``,
    ``offsets`` fp32 ``(B, H_plan, n_seg, C)``, ``squares`` fp32 ``(B, H_plan, n_seg, D)`` or None (see
    the module docstring), and ``guides`` fp32 ``(B, H_plan, n_seg, D)``, the segment's mean scaled
    query (what ``query_order_by_guide`` aligns queries with)."""

    vectors: Tensor
    offsets: Tensor
    guides: Tensor
    squares: Tensor | None = None

    @property
    def heads(self) -> int:
        return int(self.vectors.shape[1])


def score_projections(q: Tensor, k: Tensor, segment: int, *, score: str = DEFAULT_SCORE,
                      rank: int = DEFAULT_RANK, scale: float) -> Projections:
    """The projections of every (batch, plan head, segment) for ``score``.

    q ``(batch, q_heads, seq_len, head_dim)``, k ``(batch, kv_heads, kv_len, head_dim)``; ``scale`` is
    the softmax scale (scores come out in nats). kv_len > seq_len: the queries are the last seq_len
    positions, and the keys a segment sees (its prefix, the cache included) are the keys before it.
    See the module docstring for the scores.
    """
    check_score(score, rank)
    batch, q_heads, n_ctx, dim = q.shape
    kv_heads = k.shape[1]
    q_offset = k.shape[2] - n_ctx
    group = q_heads // kv_heads
    if score in ("mean", "head_mean"):
        means = segment_means(q, segment, scale)
        if score == "mean":
            means = means.view(batch, kv_heads, group, -1, dim).mean(2)
        vectors = means[:, :, :, None, :].contiguous()
        return Projections(vectors, torch.zeros(vectors.shape[:-1], device=q.device), means)
    if score == "diag":
        mean, var = segment_moments(q, segment)
        mean, var = mean * scale, var * scale ** 2  # of the scaled queries, per dim
        centre = prefix_mean_keys(k, segment, q_offset).repeat_interleave(group, 1)  # (B, Hq, n_seg, D)
        vectors = (mean - var * centre)[:, :, :, None, :].contiguous()
        return Projections(vectors, torch.zeros(vectors.shape[:-1], device=q.device), mean,
                           (0.5 * var).contiguous())
    rows, counts = _segment_rows(q, segment)
    mean = rows.sum(3, dtype=torch.float32) / counts.to(torch.float32)[:, None]
    factors = covariance_factors(rows, counts, mean, rank) * scale  # (B, Hq, n_seg, rank, D)
    mean = mean * scale
    centre = softmax_mean_keys(mean, k, segment, q_offset)  # (B, Hq, n_seg, D)
    offsets = torch.einsum("bhsrd,bhsd->bhsr", factors, centre)
    return Projections(torch.cat([mean[:, :, :, None, :], factors], dim=3).contiguous(),
                       torch.nn.functional.pad(offsets, (1, 0)).contiguous(), mean)


def prefix_mean_keys(k: Tensor, segment: int, q_offset: int = 0) -> Tensor:
    """kbar per (batch, kv head, segment): the plain mean of the segment's prefix keys
    [0, q_offset + s * segment) (zero where there are none: the first segment at offset 0), fp32
    ``(B, Hkv, n_seg, D)``, from segment sums. The segments are those of the queries, which sit at
    key positions [q_offset, kv_len)."""
    rows, _ = _segment_rows(k[:, :, q_offset:], segment)
    sums = rows.sum(3, dtype=torch.float32).cumsum(2)
    prefix = torch.nn.functional.pad(sums[:, :, :-1], (0, 0, 1, 0))  # sums of the segments before
    if q_offset:  # and of the keys before the queries (the cache)
        prefix = prefix + k[:, :, :q_offset].sum(2, dtype=torch.float32)[:, :, None]
    seen = (q_offset + torch.arange(sums.shape[2], device=k.device) * segment).clamp(min=1).to(torch.float32)
    return prefix / seen[:, None]


def softmax_mean_keys(mean: Tensor, k: Tensor, segment: int, q_offset: int = 0) -> Tensor:
    """b per (batch, q head, segment): the keys [0, segment end) averaged with weights softmax(mu . k),
    mu = the segment's mean scaled query ``mean (B, Hq, n_seg, D)``. fp32 ``(B, Hq, n_seg, D)``.
    Segment s of queries at offset ``q_offset`` ends at key position q_offset + (s + 1) * segment.

    One kv head at a time (the logits of its G heads' segments against every key), in k's dtype on a
    GPU: a weighting needs no more."""
    batch, q_heads, n_seg, dim = mean.shape
    kv_heads, n_ctx = k.shape[1], k.shape[2]
    group = q_heads // kv_heads
    work = k.dtype if k.is_cuda else torch.float32
    seg_end = (q_offset + (torch.arange(n_seg, device=k.device) + 1) * segment).clamp(max=n_ctx)
    unseen = torch.arange(n_ctx, device=k.device)[None, :] >= seg_end[:, None]  # (n_seg, N)
    out = torch.empty_like(mean)
    for b in range(batch):
        for h in range(kv_heads):
            keys = k[b, h].to(work)
            heads = slice(h * group, (h + 1) * group)
            logits = (mean[b, heads].to(work) @ keys.T).float()  # (G, n_seg, N)
            weights = torch.softmax(logits.masked_fill_(unseen, float("-inf")), dim=-1)
            out[b, heads] = (weights.to(work) @ keys).float()
    return out


def ranking_scores(keys: Tensor, vectors: Tensor, offsets: Tensor, squares: Tensor | None = None) -> Tensor:
    """score(k) for keys ``(n, D)`` and one segment's ``vectors (C, D)``, ``offsets (C,)`` and
    ``squares (D,)`` (or None): fp32 ``(n,)``."""
    proj = keys.float() @ vectors.T  # (n, C)
    score = proj[:, 0] + 0.5 * ((proj[:, 1:] - offsets[1:]) ** 2).sum(-1)
    return score if squares is None else score + (keys.float() ** 2) @ squares


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


def check_buckets(n_buckets: int, span: float) -> None:
    """Bucket settings both implementations accept (n_buckets 0 = an exact sort, twin only)."""
    if isinstance(n_buckets, bool) or not isinstance(n_buckets, int) or n_buckets < 0 or n_buckets == 1:
        raise ValueError(f"n_buckets must be an int >= 2 (or 0 for an exact sort); got {n_buckets!r}")
    if not span > 0:
        raise ValueError(f"span must be > 0 nats; got {span!r}")


def bucket_of(score: Tensor, top: Tensor, n_buckets: int, span: float) -> Tensor:
    """Bucket of each score below its list's ``top`` (int64): 0 within span / n_buckets of the top, and
    so on; everything span or more below the top lands in the last bucket. Same arithmetic as the
    Triton kernel (fp32)."""
    inv_width = torch.tensor(n_buckets / span, dtype=torch.float32)
    steps = ((top.float() - score.float()) * inv_width).to(torch.int32)
    return steps.clamp(0, n_buckets - 1).long()
