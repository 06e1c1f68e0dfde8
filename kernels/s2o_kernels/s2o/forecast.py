"""How much of its lists a walk will visit, forecast from the planner's score histogram (no Triton).

The planner already counts, per list, the keys in each score bucket (``Plan.score_histogram``). Read
as estimated logits, those counts say when the stop rule would fire if the estimate were the truth:
a chunk of ``block_n`` keys of per-key mass m, after a running mass M, is dull once
``block_n * m < tau * M``. In bucket j (keys ``(j + 1/2) * width`` nats below the top, mass
``exp(-(j + 1/2) * width)``; the last bucket, ``span`` or more below, counts as no mass) the first dull
chunk starts ``block_n / tau - block_n - C_j / m_j`` keys in, C_j the mass of the buckets before it.

The forecast leaves out pass 1's mass and the estimate's own errors, so on real attention it
undershoots the walk (by how much: reports/bench/NOTES.md): a head forecast near-dense is
walked whole, but a head forecast sharp may be walked whole too. Use it as a one-sided flag, not a
density. Where every estimated logit is alike (random inputs, diffuse heads), no chunk is ever dull
and the forecast is the whole list.
"""

from __future__ import annotations

import torch
from torch import Tensor


def forecast_walk(histogram: Tensor, width: float, *, tau: float, block_n: int, patience: int) -> Tensor:
    """Keys each list's walk is forecast to visit: float64 (batch, H_plan, n_seg).

    histogram: int (batch, H_plan, n_seg, n_buckets), keys per score bucket, bucket 0 at the top;
    width: nats per bucket; tau, block_n, patience: the stop rule's (knobs.py).
    """
    counts = histogram.double()
    length = counts.sum(-1)
    if tau <= 0:  # nothing is ever dull
        return length
    n_buckets = counts.shape[-1]
    mass = torch.exp(-(torch.arange(n_buckets, dtype=torch.float64, device=counts.device) + 0.5) * width)
    mass[-1] = 0.0
    bucket_mass = counts * mass
    before_mass = torch.cumsum(bucket_mass, -1) - bucket_mass
    before_keys = torch.cumsum(counts, -1) - counts
    first_dull = torch.where(mass > 0, block_n / tau - block_n - before_mass / mass.clamp(min=1e-300),
                             torch.where(before_mass > 0, 0.0, float("inf"))).clamp(min=0.0)
    dull_here = (first_dull < counts) & (counts > 0)
    bucket = dull_here.double().argmax(-1, keepdim=True)  # the first bucket where a chunk is dull
    stop = (before_keys.gather(-1, bucket) + first_dull.gather(-1, bucket)).squeeze(-1) + patience * block_n
    return torch.where(dull_here.any(-1), torch.minimum(stop, length), length)


def forecast_density(histogram: Tensor, width: float, n_ctx: int, segment: int, *, tau: float, block_n: int,
                     patience: int, q_offset: int = 0) -> Tensor:
    """Forecast density (QK pairs / causal pairs) per plan head: float64 (batch, H_plan).

    Pass 1 (sinks and each segment's own diagonal) is always computed; of each segment's list, the
    forecast walk (``forecast_walk``) is, by every row of the segment. ``n_ctx`` queries at offset
    ``q_offset`` into the keys (plan.q_offset): query i has q_offset + i + 1 causal keys.
    """
    walked = forecast_walk(histogram, width, tau=tau, block_n=block_n, patience=patience)
    length = histogram.double().sum(-1)
    n_seg = histogram.shape[2]
    rows = torch.full((n_seg,), float(segment), dtype=torch.float64, device=histogram.device)
    rows[-1] = n_ctx - (n_seg - 1) * segment
    causal = n_ctx * (n_ctx + 1) / 2 + n_ctx * q_offset
    return 1.0 - ((length - walked) * rows).sum(-1) / causal


def dense_heads(histogram: Tensor, width: float, n_ctx: int, segment: int, q_heads: int, *, tau: float,
                block_n: int, patience: int, dense_above: float, q_offset: int = 0) -> Tensor | None:
    """Query heads (bool ``(q_heads,)``) whose forecast density, averaged over the batch, reaches
    ``dense_above``; None when none does. A plan with one list per kv head routes its GQA group together.

    Such a head is cheaper on the dense kernel than walked nearly whole through the gathering executor,
    which runs below dense speed per pair (reports/bench/NOTES.md). Being one-sided (see the module
    docstring), the flag catches heads whose estimate is nearly flat and misses some others.
    """
    forecast = forecast_density(histogram, width, n_ctx, segment, tau=tau, block_n=block_n, patience=patience,
                                q_offset=q_offset).mean(0)
    dense = forecast >= dense_above
    if dense.numel() != q_heads:
        dense = dense.repeat_interleave(q_heads // dense.numel())
    return dense if bool(dense.any()) else None
