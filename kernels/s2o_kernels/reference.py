"""Plain-PyTorch twins of the executor, in fp32 (float64 for the stopping rule), for tests.

``torch_sparse_attention`` computes what ``sparse_attention`` computes from the same plan, REPLAYING
the kernel's per-tile chunk counts (``ExecStats.chunks``) instead of re-deciding the stop, so that a
tile whose gain lands within rounding of tau cannot make the two disagree. ``check_stop_rule``
then checks those chunk counts against the rule itself (either stop_rule, executor.STOP_RULES).
Shapes: q (batch, q_heads, seq_len, head_dim), k, v (batch, kv_heads, seq_len, head_dim). Memory is
O(seq_len^2) per head: tests only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .executor import check_stop_rule_name
from .plan import Plan


def torch_dense_causal(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """Dense causal attention in fp32 (GQA: kv head h serves q heads [h*G, (h+1)*G))."""
    group = q.shape[1] // k.shape[1]
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    kf = k.float().repeat_interleave(group, dim=1)
    vf = v.float().repeat_interleave(group, dim=1)
    scores = q.float() @ kf.transpose(-1, -2) * scale
    n_ctx = q.shape[2]
    causal = torch.ones(n_ctx, n_ctx, dtype=torch.bool, device=q.device).tril()
    return torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1) @ vf


def _plan_head(plan: Plan, q_head: int, group: int, kv_heads: int) -> int:
    return q_head // group if plan.heads == kv_heads else q_head


def _slot_positions(plan: Plan, b: int, hp: int, n_ctx: int) -> Tensor:
    """Query position of each tile slot (slot i of tile t is t * block_m + i)."""
    if plan.query_order is None:
        return torch.arange(n_ctx, device=plan.key_index.device)
    return plan.query_order[b, hp].long()


def _pass1_mask(plan: Plan, rows: Tensor, seg_start: Tensor | int, n_ctx: int) -> Tensor:
    """(rows, N) keys of pass 1: sinks before the segment, own segment up to each row's position."""
    keys = torch.arange(n_ctx, device=rows.device)
    seg_start = torch.as_tensor(seg_start, device=rows.device).reshape(-1, 1)
    sinks = keys[None, :] < seg_start.clamp(max=plan.sinks)
    own = (keys[None, :] >= seg_start) & (keys[None, :] <= rows[:, None])
    return sinks | own


def _list_keys(plan: Plan, b: int, hp: int, seg: int) -> Tensor:
    start, length = int(plan.list_start[b, hp, seg]), int(plan.list_len[b, hp, seg])
    return plan.key_index[b, hp, start:start + length].long()


def _list_ranks(plan: Plan, b: int, hp: int, n_ctx: int) -> Tensor:
    """(n_seg, N) int64: each key's rank in its segment's list (int64 max when it is not listed)."""
    n_seg = plan.list_len.shape[-1]
    # unlisted keys rank beyond any walk (a walk of c chunks may pass n_ctx when the list is ragged)
    ranks = torch.full((n_seg, n_ctx), torch.iinfo(torch.int64).max, dtype=torch.int64, device=plan.key_index.device)
    for seg in range(n_seg):
        keys = _list_keys(plan, b, hp, seg)
        ranks[seg, keys] = torch.arange(keys.numel(), device=keys.device)
    return ranks


def torch_sparse_attention(q: Tensor, k: Tensor, v: Tensor, plan: Plan, *, chunks: Tensor, scale: float | None = None,
                           block_m: int, block_n: int) -> Tensor:
    """fp32 output of the executor's function, with pass 2 walking ``chunks[b, h, t]`` chunks per tile.

    The online softmax is order-free, so each row is one softmax over the union of its pass-1 keys
    and the first ``min(chunks * block_n, list_len)`` keys of its segment's list.
    """
    batch, q_heads, n_ctx, head_dim = q.shape
    kv_heads = k.shape[1]
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
            allowed = _list_ranks(plan, b, hp, n_ctx)[seg_of_slot] < walked[:, None]
            allowed |= _pass1_mask(plan, rows, seg_of_slot * plan.segment, n_ctx)
            scores = q[b, h, rows].float() @ k[b, kvh].float().T * scale
            probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
            out[b, h, rows] = probs @ v[b, kvh].float()
    return out


def check_stop_rule(q: Tensor, k: Tensor, v: Tensor, plan: Plan, chunks: Tensor, tau: float, *,
                    scale: float | None = None, block_m: int, block_n: int, rtol: float = 2e-3,
                    atol: float = 1e-7, stop_rule: str = "chunk") -> list[str]:
    """Recompute each tile's per-chunk stop statistic in float64 and list every way ``chunks`` breaks the rule.

    A tile's rows are its positions for every query head the program served (the G heads of a kv
    head when lists are shared). The statistic of row i after chunk c, over l_i(c) = mass of pass 1
    and chunks 0..c: stop_rule "chunk", gain_i(c) = mass of chunk c / l_i(c); stop_rule "tail",
    bound_i(c) = (keys left in the list after chunk c) x (largest per-key mass in chunk c) / l_i(c).
    The rule: a tile with a non-empty list walks >= 1 chunk; every chunk before the last walked had
    max_i statistic >= tau; the walk ends at the first chunk with max_i statistic < tau or at the
    list's end (tau = 0: always the end). ``rtol`` / ``atol`` absorb fp rounding near tau. Returns a
    list of messages, empty when the counts obey the rule.
    """
    check_stop_rule_name(stop_rule)
    what = "max gain" if stop_rule == "chunk" else "max tail bound"
    batch, q_heads, n_ctx, head_dim = q.shape
    kv_heads = k.shape[1]
    group = q_heads // kv_heads
    shared = plan.heads == kv_heads
    scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
    n_seg = plan.list_len.shape[-1]
    problems: list[str] = []
    for b in range(batch):
        for hp in range(plan.heads):
            heads = list(range(hp * group, (hp + 1) * group)) if shared else [hp]
            kvh = hp if shared else hp // group
            positions = _slot_positions(plan, b, hp, n_ctx)
            for seg in range(n_seg):
                keys = _list_keys(plan, b, hp, seg)
                n_chunks = -(-keys.numel() // block_n)
                lo, hi = seg * plan.segment, min((seg + 1) * plan.segment, n_ctx)
                tiles = range(lo // block_m, -(-hi // block_m))
                gains = None
                for t in tiles:
                    where = f"batch {b}, plan head {hp}, tile {t}"
                    walked = {int(chunks[b, h, t]) for h in heads}
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
                        gains = _segment_gains(q[b, heads].double(), k[b, kvh].double(), positions[lo:hi], keys,
                                               plan, seg, n_ctx, scale, block_n, stop_rule)
                    tile_gains = gains[t * block_m - lo: min((t + 1) * block_m, hi) - lo].amax(0).tolist()
                    for c in range(walked_n - 1):
                        if tile_gains[c] < tau * (1 - rtol) - atol:
                            problems.append(f"{where}: walked on after chunk {c} whose {what} {tile_gains[c]:.3g} "
                                            f"< tau {tau:g}")
                            break
                    last = walked_n - 1
                    if walked_n < n_chunks and tile_gains[last] >= tau * (1 + rtol) + atol:
                        problems.append(f"{where}: stopped after chunk {last} whose {what} {tile_gains[last]:.3g} "
                                        f">= tau {tau:g}")
    return problems


def _segment_gains(qd: Tensor, kd: Tensor, rows: Tensor, keys: Tensor, plan: Plan, seg: int, n_ctx: int, scale: float,
                   block_n: int, stop_rule: str = "chunk") -> Tensor:
    """(rows, n_chunks) float64: per row slot the largest stop statistic over ``qd``'s heads, for each
    chunk of ``keys``: the chunk's gain ("chunk") or its tail bound over the mass so far ("tail")."""
    scores = qd[:, rows] @ kd.T * scale  # (heads, rows, N)
    pass1 = _pass1_mask(plan, rows, seg * plan.segment, n_ctx)
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


def torch_decide_chunks(q: Tensor, k: Tensor, plan: Plan, tau: float, *, scale: float | None = None,
                        block_m: int, block_n: int, stop_rule: str = "chunk") -> Tensor:
    """The executor's stopping decisions made in PyTorch (float64): int32 ``(batch, q_heads, n_tiles)``.

    With ``torch_sparse_attention(..., chunks=...)`` this is the whole S2O function on machines with
    no GPU (correct, slow: O(seq_len^2) memory per head). Tiles of one shared list decide together,
    as the executor's programs do: a chunk's statistic (gain or tail bound, by ``stop_rule``, as in
    ``check_stop_rule``) is the max over every row of every head they serve.
    """
    check_stop_rule_name(stop_rule)
    batch, q_heads, n_ctx, head_dim = q.shape
    kv_heads = k.shape[1]
    group = q_heads // kv_heads
    shared = plan.heads == kv_heads
    scale = scale if scale is not None else 1.0 / math.sqrt(head_dim)
    n_tiles = -(-n_ctx // block_m)
    chunks = torch.zeros(batch, q_heads, n_tiles, dtype=torch.int32)
    for b in range(batch):
        for hp in range(plan.heads):
            heads = list(range(hp * group, (hp + 1) * group)) if shared else [hp]
            kvh = hp if shared else hp // group
            positions = _slot_positions(plan, b, hp, n_ctx)
            for seg in range(plan.list_len.shape[-1]):
                keys = _list_keys(plan, b, hp, seg)
                n_chunks = -(-keys.numel() // block_n)
                lo, hi = seg * plan.segment, min((seg + 1) * plan.segment, n_ctx)
                if n_chunks == 0 or lo >= hi:
                    continue
                gains = _segment_gains(q[b, heads].double(), k[b, kvh].double(), positions[lo:hi], keys, plan,
                                       seg, n_ctx, scale, block_n, stop_rule)
                for t in range(lo // block_m, -(-hi // block_m)):
                    tile = gains[t * block_m - lo: min((t + 1) * block_m, hi) - lo].amax(0)
                    below = (tile < tau).nonzero()
                    walked = int(below[0]) + 1 if tau > 0 and below.numel() else n_chunks
                    chunks[b, heads, t] = walked
    return chunks
