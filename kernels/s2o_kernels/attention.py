"""The front doors: one call per operation, whatever this machine has.

``s2o_attention`` plans and executes S2O; ``execute_plan`` runs any plan (S2O's, a block-sparse peer's,
an oracle's) through the index-guided executor. On CUDA tensors they run the Triton kernels; elsewhere
the PyTorch twins of twins.py, which compute the same function (correct, slow: for tests and
machines without a GPU). Callers never pick a backend.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from .dense import fastest_causal
from .knobs import (
    DEFAULT_DENSE_ABOVE,
    DEFAULT_PATIENCE,
    DEFAULT_SEGMENT,
    DEFAULT_SINKS,
    DEFAULT_STOP_RULE,
    DEFAULT_TAU,
    check_dense_above,
    default_block_n,
    tile_positions,
)
from .launch import ExecStats, stats_from_chunks, with_dense_heads
from .plan import Plan, check_walk
from .s2o.forecast import dense_heads
from .s2o.ranking import DEFAULT_BUCKETS, DEFAULT_RANK, DEFAULT_SCORE, DEFAULT_SPAN, plan_heads


def execute_plan(q: Tensor, k: Tensor, v: Tensor, plan: Plan, *, tau: float = 0.0, scale: float | None = None,
                 block_m: int = 0, block_n: int = 0, stop_rule: str = DEFAULT_STOP_RULE,
                 patience: int = 1, skip_gap: float = 0.0, dense_above: float = 0.0) -> tuple[Tensor, ExecStats]:
    """Causal attention over ``plan`` with S2O's early stop: ``(output like q, ExecStats)``.

    q ``(batch, q_heads, seq_len, head_dim)``, k, v ``(batch, kv_heads, plan.q_offset + seq_len,
    head_dim)`` (queries at an offset into the keys: plan.py). tau,
    stop_rule, patience: the stop (knobs.py; tau 0 walks every listed key). skip_gap (tau 0 only):
    skip-softmax's gap in nats (0 = off). block_m: query positions per tile (0: DEFAULT_ROWS rows,
    see ``knobs.tile_positions``); block_n: keys per chunk (0: by head dim). scale: softmax scale
    (head_dim ** -0.5). dense_above (tau > 0, a plan with a score histogram): query heads whose walk is
    forecast to visit at least this density run on the fastest dense kernel instead (s2o/forecast.py);
    0 = never. Their pairs count as computed in the stats.
    """
    check_walk(q, k, v, plan, tau=tau, stop_rule=stop_rule, patience=patience, skip_gap=skip_gap)
    check_dense_above(dense_above)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    block_m = tile_positions(q.shape[1], plan.heads, k.shape[1], plan.segment, block_m)
    walk = dict(tau=tau, scale=scale, block_m=block_m, block_n=block_n, stop_rule=stop_rule, patience=patience,
                skip_gap=skip_gap)
    stop_block_n = block_n or default_block_n(q.shape[-1])  # the stop's granularity at tau > 0
    dense = None
    if tau > 0 and dense_above > 0 and plan.score_histogram is not None:
        dense = dense_heads(plan.score_histogram, plan.bucket_width, q.shape[2], plan.segment, q.shape[1], tau=tau,
                            block_n=stop_block_n, patience=patience, dense_above=dense_above, q_offset=plan.q_offset)
    if dense is None:
        return _walk_plan(q, k, v, plan, **walk)
    if bool(dense.all()):  # nothing left to walk: the dense kernel alone, GQA and all
        nothing = torch.zeros(q.shape[0], q.shape[1], -(-q.shape[2] // block_m), dtype=torch.int32, device=q.device)
        stats = stats_from_chunks(nothing, plan, q.shape[2], q.shape[1] // k.shape[1], block_m=block_m,
                                  block_n=stop_block_n)
        return fastest_causal(q, k, v, scale), with_dense_heads(stats, dense)
    # The dense heads' lists are emptied (the executor then runs only their cheap pass 1), and their
    # output is replaced by the dense kernel's.
    plan_dense = dense if plan.heads == q.shape[1] else dense[:: q.shape[1] // plan.heads]
    walked = dataclasses.replace(plan, list_len=plan.list_len.masked_fill(plan_dense[None, :, None], 0))
    out, stats = _walk_plan(q, k, v, walked, **walk)
    heads = dense.nonzero().flatten()
    kv_of = heads // (q.shape[1] // k.shape[1])
    out[:, heads] = fastest_causal(q[:, heads], k[:, kv_of], v[:, kv_of], scale)
    return out, with_dense_heads(stats, dense)


def _walk_plan(q: Tensor, k: Tensor, v: Tensor, plan: Plan, *, tau: float, scale: float, block_m: int, block_n: int,
               stop_rule: str, patience: int, skip_gap: float) -> tuple[Tensor, ExecStats]:
    """The executor on this machine: the Triton kernel on CUDA tensors, its PyTorch twin elsewhere."""
    if q.is_cuda:
        from .executor import sparse_attention

        return sparse_attention(q, k, v, plan, tau=tau, scale=scale, block_m=block_m, block_n=block_n or None,
                                stop_rule=stop_rule, patience=patience, skip_gap=skip_gap, return_stats=True)
    from .twins import torch_decide_chunks, torch_decide_skips, torch_sparse_attention

    block_n = block_n or default_block_n(q.shape[-1])
    chunks = torch_decide_chunks(q, k, plan, tau, scale=scale, block_m=block_m, block_n=block_n,
                                 stop_rule=stop_rule, patience=patience)
    skipped, skipped_keys = (torch_decide_skips(q, k, plan, skip_gap, scale=scale, block_m=block_m, block_n=block_n)
                             if skip_gap > 0 else (None, None))
    out = torch_sparse_attention(q, k, v, plan, chunks=chunks, scale=scale, block_m=block_m, block_n=block_n,
                                 skipped=skipped)
    stats = stats_from_chunks(chunks, plan, q.shape[2], q.shape[1] // k.shape[1], block_m=block_m, block_n=block_n,
                              skipped_keys=skipped_keys)
    return out.to(q.dtype), stats


def s2o_plan_any(q: Tensor, k: Tensor, *, segment: int = DEFAULT_SEGMENT, block_m: int = 0,
                 score: str = DEFAULT_SCORE, **plan_args) -> Plan:
    """S2O's plan from the Triton planner on CUDA tensors, from its PyTorch twin elsewhere. block_m: the
    executor tile the plan must fit (0: the one ``execute_plan`` will pick)."""
    block_m = tile_positions(q.shape[1], plan_heads(score, q.shape[1], k.shape[1]), k.shape[1], segment, block_m)
    if q.is_cuda:
        from .s2o.planner import s2o_plan

        return s2o_plan(q, k, segment=segment, block_m=block_m, score=score, **plan_args)
    from .twins import torch_s2o_plan

    return torch_s2o_plan(q, k, segment=segment, block_m=block_m, score=score, **plan_args)


def s2o_attention(q: Tensor, k: Tensor, v: Tensor, *, tau: float = DEFAULT_TAU, scale: float | None = None,
                  segment: int = DEFAULT_SEGMENT, sinks: int = DEFAULT_SINKS, score: str = DEFAULT_SCORE,
                  rank: int = DEFAULT_RANK, patience: int = DEFAULT_PATIENCE, stop_rule: str = DEFAULT_STOP_RULE,
                  block_m: int = 0, block_n: int = 0, n_buckets: int = DEFAULT_BUCKETS, span: float = DEFAULT_SPAN,
                  query_permute: bool = False, dense_above: float = DEFAULT_DENSE_ABOVE,
                  return_stats: bool = False) -> Tensor | tuple[Tensor, ExecStats]:
    """S2O causal prefill attention, like ``flash_attn_func``: plan (rank every prefix key per segment)
    then execute (walk the ranked lists, stopping each tile early; heads forecast to be walked nearly
    whole run on the dense kernel, see ``dense_above``).

    q ``(batch, q_heads, seq_len, head_dim)``, k, v ``(batch, kv_heads, kv_len, head_dim)``, fp16 or
    bf16 (head dim 64, 128 or 256). kv_len > seq_len: the queries are the last seq_len positions (a
    chunk after the KV cache of the earlier ones; causal aligned bottom-right), and each segment's
    prefix holds the cache too. tau: the speed/accuracy knob (0 = dense). The other arguments are
    the planner's (``s2o.planner.s2o_plan``) and the executor's (``execute_plan``). This is what
    ``--method s2o`` runs. Returns the output, shaped and typed like q, and with ``return_stats`` the
    launch's ExecStats (density, chunks walked).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    plan = s2o_plan_any(q, k, segment=segment, sinks=sinks, block_m=block_m, score=score, rank=rank,
                        n_buckets=n_buckets, span=span, query_permute=query_permute, scale=scale)
    out, stats = execute_plan(q, k, v, plan, tau=tau, scale=scale, block_m=block_m, block_n=block_n,
                              stop_rule=stop_rule, patience=patience, dense_above=dense_above)
    return (out, stats) if return_stats else out
