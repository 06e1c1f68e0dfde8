"""What an executor launch is: its pinned configuration, and what it computed (pair counts, density).

Plain PyTorch, no Triton: the PyTorch path on machines without a GPU reports the same statistics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from .knobs import EXEC_CONFIG_ENV
from .plan import Plan

DEFAULT_STOP_BURST = 4  # chunks per pipelined burst of the stopping walk


@dataclass(frozen=True)
class ExecConfig:
    """A pinned launch config.

    block_m: query positions per tile (rows = block_m x packed GQA heads); block_n: keys per chunk;
    num_warps: None = one warpgroup per 64 rows; stop_burst (tau > 0 at patience 1 only): chunks per
    pipelined burst (1 pipelines nothing);
    maxnreg: a register cap per thread (a lower cap fits more programs per SM: 128 at head dim <= 128);
    interleave_heads: with per-head lists, the G heads of a kv group run each tile in adjacent
    programs (their walks over one K/V share L2) rather than head after head.
    """

    block_m: int
    block_n: int
    num_warps: int | None = None
    num_stages: int = 2
    stop_burst: int = DEFAULT_STOP_BURST
    maxnreg: int | None = None
    interleave_heads: bool = True

    @classmethod
    def parse(cls, text: str) -> "ExecConfig":
        """Parse ``"block_m=16,block_n=32,num_warps=4,num_stages=2,stop_burst=4,maxnreg=128"``."""
        fields: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            if not sep or name.strip() not in cls.__dataclass_fields__:
                raise ValueError(f"{EXEC_CONFIG_ENV}: cannot read {item!r}; expected e.g. "
                                 "'block_m=16,block_n=32,num_warps=4,num_stages=2,stop_burst=4,maxnreg=128'")
            fields[name.strip()] = int(value)
        if "block_m" not in fields or "block_n" not in fields:
            raise ValueError(f"{EXEC_CONFIG_ENV} must set at least block_m and block_n; got {text!r}")
        fields["interleave_heads"] = bool(fields.get("interleave_heads", 1))
        return cls(**fields)


@dataclass
class ExecStats:
    """What one executor call computed.

    chunks: int32 (B, Hq, n_tiles), pass-2 chunks walked per tile (equal over a GQA group when lists
        are shared); computed_pairs: int64 (B, Hq), QK pairs of valid rows x keys actually visited
        (pass 1 causal pairs + walked list keys); causal_pairs: per (batch, head), the pairs of causal
        attention, sum over queries i of (P + i + 1) = N (N + 1) / 2 + N P for N queries at offset P;
        density: computed / causal over everything; density_per_head: float64 (Hq,), averaged over
        the batch; block_m, block_n: the tile shape used (what a replay needs); config: the launch;
        pv_pairs, pv_density: the same for the P.V products, which skip-softmax leaves out of some
        chunks whose QK it computed (equal to the QK counts otherwise); skipped_keys: int32
        (B, Hq, n_tiles), the keys whose P.V each tile skipped (None when not skipping).
    """

    chunks: Tensor
    computed_pairs: Tensor
    causal_pairs: int
    density: float
    density_per_head: Tensor
    block_m: int
    block_n: int
    config: ExecConfig
    pv_pairs: Tensor
    pv_density: float
    skipped_keys: Tensor | None = None


def causal_pairs(n_ctx: int, q_offset: int = 0) -> int:
    """QK pairs of causal attention per head for ``n_ctx`` queries at offset P = ``q_offset``: query i
    sees the P + i + 1 keys [0, P + i]."""
    return n_ctx * (n_ctx + 1) // 2 + n_ctx * q_offset


def pass1_pairs(n_ctx: int, segment: int, sinks: int, device=None, q_offset: int = 0) -> Tensor:
    """QK pairs of pass 1 per head (int64 scalar): each query's sinks before its segment and its own
    segment up to the diagonal (queries at offset ``q_offset``: the segment starts at key P + s * S)."""
    positions = torch.arange(n_ctx, device=device, dtype=torch.int64)
    seg_start = positions // segment * segment
    return ((seg_start + q_offset).clamp(max=sinks) + positions - seg_start + 1).sum()


def exec_stats(chunks: Tensor, plan: Plan, n_ctx: int, group: int, used: ExecConfig, *,
               skipped_keys: Tensor | None = None) -> ExecStats:
    """Count the QK (and P.V) pairs a launch computed from its chunk counts and the plan (host arithmetic).

    chunks: int32 (B, Hq, n_tiles), chunks walked per tile; group: G = Hq / Hkv; used: the tile shape;
    skipped_keys: int32 (B, Hq, n_tiles), keys whose P.V skip-softmax left out, per tile.
    """
    device = chunks.device
    batch, q_heads, n_tiles = chunks.shape
    shared = plan.heads == q_heads // group  # one list per kv head, walked by its group's heads together
    pass1 = pass1_pairs(n_ctx, plan.segment, plan.sinks, device, plan.q_offset)
    tile_first = torch.arange(n_tiles, device=device, dtype=torch.int64) * used.block_m
    tile_rows = (n_ctx - tile_first).clamp(max=used.block_m)
    plan_head = torch.arange(q_heads, device=device) // group if shared else torch.arange(q_heads, device=device)
    lengths = plan.list_len.long()[:, plan_head][:, :, tile_first // plan.segment]  # (B, Hq, n_tiles)
    walked_keys = torch.minimum(chunks.long() * used.block_n, lengths)
    computed = pass1 + (walked_keys * tile_rows).sum(-1)
    pv = computed if skipped_keys is None else computed - (skipped_keys.long() * tile_rows).sum(-1)
    causal = causal_pairs(n_ctx, plan.q_offset)
    per_head = computed.double().sum(0) / (batch * causal)
    return ExecStats(chunks=chunks, computed_pairs=computed, causal_pairs=causal,
                     density=float(computed.double().sum()) / (batch * q_heads * causal),
                     density_per_head=per_head, block_m=used.block_m, block_n=used.block_n, config=used,
                     pv_pairs=pv, pv_density=float(pv.double().sum()) / (batch * q_heads * causal),
                     skipped_keys=skipped_keys)


def stats_from_chunks(chunks: Tensor, plan: Plan, n_ctx: int, group: int, *, block_m: int, block_n: int,
                      skipped_keys: Tensor | None = None) -> ExecStats:
    """ExecStats for chunk counts decided elsewhere (the PyTorch path on machines without a GPU)."""
    return exec_stats(chunks, plan, n_ctx, group, ExecConfig(block_m=block_m, block_n=block_n),
                      skipped_keys=skipped_keys)


def with_dense_heads(stats: ExecStats, dense: Tensor) -> ExecStats:
    """``stats`` after the query heads marked in ``dense`` (bool (Hq,)) were recomputed by a dense kernel:
    every causal pair of those heads counts as computed, QK and P.V alike."""
    full = torch.full_like(stats.computed_pairs, stats.causal_pairs)
    computed = torch.where(dense.to(full.device), full, stats.computed_pairs)
    pv = torch.where(dense.to(full.device), full, stats.pv_pairs)
    batch, q_heads = computed.shape
    total = batch * q_heads * stats.causal_pairs
    return dataclasses.replace(stats, computed_pairs=computed, pv_pairs=pv,
                               density=float(computed.double().sum()) / total,
                               density_per_head=computed.double().sum(0) / (batch * stats.causal_pairs),
                               pv_density=float(pv.double().sum()) / total)
