"""Index-guided sparse attention executor (Triton): runs any ``Plan`` with S2O's early-stopping rule.

Per query tile (one program):
  pass 1, exact: attention sinks [0, sinks) and the tile's own segment up to the causal diagonal,
          masked per row on ORIGINAL positions (the plan's query_order may permute rows); queries at
          an offset P into the keys (plan.q_offset) sit at key positions P + i, so pass 1's bounds
          and mask shift by P, once per tile;
  pass 2: the segment's ranked key list, walked in chunks of BLOCK_N gathered keys
          (``K + idx * stride_kn``: K and V never move), online softmax; with tau > 0 the walk stops
          after a chunk (with patience P, a burst of P chunks) whose stop statistic was below tau for
          every row: the chunk's share of the row's softmax mass (stop_rule "chunk", the default), or
          a bound on the mass still unseen, (keys left in the list) x (the chunk's largest per-key
          mass), over the row's mass so far (stop_rule "tail"); see knobs.py.
Layers: ``_softmax_update`` / ``_attend_key_range`` / ``_walk_list*`` carry the online-softmax
state; ``_sparse_attention_fwd`` is the kernel; ``sparse_attention`` validates, builds the grid, passes
strides and derives the statistics.

Tuning knobs on the GPU: tile rows (BLOCK_M), chunk size (BLOCK_N), num_warps, num_stages, a register
cap (maxnreg) and, with tau > 0 at patience 1, STOP_BURST (chunks per pipelined burst of the stopping
walk). By default they are autotuned (configs below, keyed on power-of-two buckets of the query and key
counts, head dim and the plan's shape); ``config=ExecConfig(...)`` or
the environment variable ``S2O_EXEC_CONFIG="block_m=32,block_n=32,num_warps=8,num_stages=2,stop_burst=4"``
pins one (the CPU interpreter always runs one pinned config). Tile shapes change which keys the stopping
rule visits, so with tau > 0 they are never autotuned: they default to DEFAULT_ROWS x DEFAULT_BLOCK_N.

Measured speed and its decomposition: reports/bench/NOTES.md.
"""

from __future__ import annotations

import dataclasses
import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from .knobs import DEFAULT_ROWS, DEFAULT_STOP_RULE, EXEC_CONFIG_ENV, HEAD_DIMS, check_tile_shape, default_block_n
from .launch import DEFAULT_STOP_BURST, ExecConfig, ExecStats, exec_stats
from .plan import Plan, check_walk

LOG2_E = 1.4426950408889634  # scores run in log2 units: exp2 instead of exp


# ----------------------------------------------------------------------------------------------
# Inner loops: online-softmax state (acc, l_i, m_i) in, state out. Scores are in log2 units.
# ----------------------------------------------------------------------------------------------
@triton.jit
def _softmax_update(acc, l_i, m_i, qk, v):
    """Fold one block of scaled scores ``qk (BLOCK_M, BLOCK_N)`` and values ``v (BLOCK_N, D)`` in.

    Returns the new state and ``l_block``, the block's own mass per row under the new maximum.
    """
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(qk - m_new[:, None])
    l_block = tl.sum(p, 1)
    l_i = l_i * alpha + l_block
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, l_i, m_new, l_block


@triton.jit
def _attend_key_range(acc, l_i, m_i, q, q_pos, K_head, V_head, stride_kn, stride_vn, lo, hi, qk_scale,
                      offs_n, offs_d, MASK: tl.constexpr, BLOCK_N: tl.constexpr):
    """Pass 1: contiguous keys [lo, hi) in blocks of BLOCK_N.

    MASK 0: every key is visible to every row and (hi - lo) % BLOCK_N == 0 (no mask, no bounds);
    MASK 1: keys are visible to every row, the last block is ragged (sinks);
    MASK 2: per-row causal mask key <= q_pos (q_pos < hi, so it also bounds the loads); q_pos are
    the rows' KEY positions (query position + the plan's offset).
    """
    for start in tl.range(lo, hi, BLOCK_N):
        k_pos = start + offs_n
        if MASK == 0:
            k = tl.load(K_head + k_pos[:, None] * stride_kn + offs_d[None, :])
            v = tl.load(V_head + k_pos[:, None] * stride_vn + offs_d[None, :])
        else:
            in_range = (k_pos < hi)[:, None]
            k = tl.load(K_head + k_pos[:, None] * stride_kn + offs_d[None, :], mask=in_range, other=0.0)
            v = tl.load(V_head + k_pos[:, None] * stride_vn + offs_d[None, :], mask=in_range, other=0.0)
        qk = tl.dot(q, tl.trans(k))
        if MASK == 0:
            qk = qk * qk_scale
        elif MASK == 1:
            qk = qk * qk_scale + tl.where(k_pos < hi, 0.0, float("-inf"))[None, :]
        else:
            qk = tl.where(k_pos[None, :] <= q_pos[:, None], qk * qk_scale, float("-inf"))
        acc, l_i, m_i, _ = _softmax_update(acc, l_i, m_i, qk, v)
    return acc, l_i, m_i


@triton.jit
def _list_keys(LIST, chunk, n_keys, offs_n, first_key, BLOCK_N: tl.constexpr, IN_ORDER: tl.constexpr):
    """Key positions of list chunk ``chunk``: read from the list, or, for a plan whose lists are in
    position order (IN_ORDER), first_key + slot without a read. Slots past the list's end give key 0
    (always in bounds: the gathers need no mask)."""
    slot = chunk * BLOCK_N + offs_n
    if IN_ORDER:
        return tl.where(slot < n_keys, first_key + slot, 0)
    else:
        return tl.load(LIST + slot, mask=slot < n_keys, other=0)


@triton.jit
def _chunk_scores(q, K_head, stride_kn, idx, visible, qk_scale, offs_d):
    """Scaled scores (log2 units) of the tile's rows against the keys at positions ``idx``; slots not
    ``visible`` (past the list's end, or after the walk stopped) score -inf and so change nothing."""
    k = tl.load(K_head + idx[:, None] * stride_kn + offs_d[None, :])
    return tl.dot(q, tl.trans(k)) * qk_scale + tl.where(visible, 0.0, float("-inf"))[None, :]


@triton.jit
def _attend_chunk(acc, l_i, m_i, q, K_head, V_head, stride_kn, stride_vn, idx, visible, qk_scale, offs_d):
    """The walk's one step: gather a chunk's K/V rows through ``idx``, score them, fold them in.

    Returns the new state, the chunk's own mass per row (``_softmax_update``) and its scores.
    """
    qk = _chunk_scores(q, K_head, stride_kn, idx, visible, qk_scale, offs_d)
    v = tl.load(V_head + idx[:, None] * stride_vn + offs_d[None, :])
    acc, l_i, m_i, l_chunk = _softmax_update(acc, l_i, m_i, qk, v)
    return acc, l_i, m_i, l_chunk, qk


@triton.jit
def _walk_list(acc, l_i, m_i, q, K_head, V_head, stride_kn, stride_vn, LIST, n_keys, qk_scale,
               offs_n, offs_d, first_key, BLOCK_N: tl.constexpr, IN_ORDER: tl.constexpr):
    """Pass 2 without stopping (tau = 0): every chunk of the list, as a software-pipelined for loop."""
    n_chunks = tl.cdiv(n_keys, BLOCK_N)
    for c in tl.range(0, n_chunks):
        idx = _list_keys(LIST, c, n_keys, offs_n, first_key, BLOCK_N, IN_ORDER)
        acc, l_i, m_i, _, _ = _attend_chunk(acc, l_i, m_i, q, K_head, V_head, stride_kn, stride_vn, idx,
                                            c * BLOCK_N + offs_n < n_keys, qk_scale, offs_d)
    return acc, l_i, m_i, n_chunks


@triton.jit
def _walk_list_skipping(acc, l_i, m_i, q, row_valid, K_head, V_head, stride_kn, stride_vn, LIST, n_keys, qk_scale,
                        skip_gap, offs_n, offs_d, first_key, BLOCK_N: tl.constexpr, IN_ORDER: tl.constexpr):
    """Pass 2 of skip-softmax (BLASST): every chunk's QK is computed, but a chunk whose largest score
    sits more than ``skip_gap`` (log2 units) below the running maximum of every row skips its softmax
    and P.V (and the load of its V rows). Such a chunk cannot raise any row's maximum, so the running
    maxima are those of every key seen, skipped or not. Returns the state, the chunks walked and the
    keys whose P.V was skipped.
    """
    n_chunks = tl.cdiv(n_keys, BLOCK_N)
    skipped = n_chunks * 0
    for c in tl.range(0, n_chunks):
        idx = _list_keys(LIST, c, n_keys, offs_n, first_key, BLOCK_N, IN_ORDER)
        qk = _chunk_scores(q, K_head, stride_kn, idx, c * BLOCK_N + offs_n < n_keys, qk_scale, offs_d)
        gap = tl.max(tl.where(row_valid, tl.max(qk, 1) - m_i, float("-inf")), 0)
        if gap >= -skip_gap:
            v = tl.load(V_head + idx[:, None] * stride_vn + offs_d[None, :])
            acc, l_i, m_i, _ = _softmax_update(acc, l_i, m_i, qk, v)
        else:
            skipped += tl.minimum(n_keys - c * BLOCK_N, BLOCK_N)
    return acc, l_i, m_i, n_chunks, skipped


@triton.jit
def _row_progress(l_chunk, l_i, m_i, qk, tau, keys_left, TAIL_STOP: tl.constexpr):
    """Per row, >= 0 when the chunk is bright for it (the walk must go on for that row):
    "chunk": l_chunk_i - tau * l_i (the chunk's mass against tau of the row's mass), or
    "tail" (TAIL_STOP): keys_left * p_max_i - tau * l_i, where p_max_i = exp2(max_j qk_ij - m_i) is the
    chunk's largest per-key mass and keys_left the keys after this chunk (negative once past the end:
    clamped to 0). Both under the new maximum m_i and after the chunk (l_i), as the rule defines them.
    Keys outside the chunk's list slots score -inf, so they never raise p_max.
    """
    if TAIL_STOP:
        p_max = tl.math.exp2(tl.max(qk, 1) - m_i)
        return tl.maximum(keys_left, 0).to(tl.float32) * p_max - tau * l_i
    else:
        return l_chunk - tau * l_i


@triton.jit
def _walk_list_in_bursts(acc, l_i, m_i, q, row_valid, K_head, V_head, stride_kn, stride_vn, LIST, n_keys, qk_scale,
                         tau, offs_n, offs_d, BLOCK_N: tl.constexpr, BURST: tl.constexpr, TAIL_STOP: tl.constexpr):
    """Pass 2 with S2O's stop at patience 1 (after the first chunk that brought every valid row less
    than tau: gain_i = l_chunk_i / l_i, tested as "max_i (l_chunk_i - tau * l_i) < 0", no division),
    as a while loop over bursts of BURST chunks, each a pipelined for loop.

    Triton pipelines only for loops, and a for loop cannot exit early: once a chunk ends the walk, the
    rest of its burst is still loaded and multiplied but scores -inf, so it changes neither m, l nor
    acc (alpha = 1, p = 0) and is not counted. The loads never wait for the stop test, so the pipeline
    keeps them in flight. That speculation costs at most BURST - 1 chunks per tile and buys cp.async
    prefetch and asynchronous wgmma inside a burst. Returns the state and the chunks walked.
    """
    n_chunks = tl.cdiv(n_keys, BLOCK_N)
    walked = n_chunks * 0
    first = n_chunks * 0
    go = n_chunks > 0
    while go:
        for j in tl.range(0, BURST):
            idx = _list_keys(LIST, first + j, n_keys, offs_n, 0, BLOCK_N, False)
            visible = ((first + j) * BLOCK_N + offs_n < n_keys) & go
            acc, l_i, m_i, l_chunk, qk = _attend_chunk(acc, l_i, m_i, q, K_head, V_head, stride_kn, stride_vn, idx,
                                                       visible, qk_scale, offs_d)
            progress = _row_progress(l_chunk, l_i, m_i, qk, tau, n_keys - (first + j + 1) * BLOCK_N, TAIL_STOP)
            walked += go.to(tl.int32)
            go = go & (tl.max(tl.where(row_valid, progress, -1.0), 0) >= 0.0) & (first + j + 1 < n_chunks)
        first += BURST
    return acc, l_i, m_i, walked


@triton.jit
def _walk_list_with_patience(acc, l_i, m_i, q, row_valid, K_head, V_head, stride_kn, stride_vn, LIST, n_keys,
                             qk_scale, tau, offs_n, offs_d, BLOCK_N: tl.constexpr, PATIENCE: tl.constexpr,
                             TAIL_STOP: tl.constexpr):
    """Pass 2 with S2O's stop at patience P > 1: bursts of P chunks, each a pipelined for loop with no
    decision inside; the walk ends after the first burst in which every chunk was dull for every row.

    Each row keeps the largest progress (``_row_progress``) its chunks of the burst had; only its sign
    matters, so values under different running maxima compare fine. One reduction over rows per burst
    is the only synchronisation; the last burst of a list may run past its end (slots there score
    -inf: they change nothing and are not counted).
    """
    n_chunks = tl.cdiv(n_keys, BLOCK_N)
    walked = n_chunks * 0
    go = n_chunks > 0
    while go:
        brightest = tl.full(l_i.shape, -1.0, tl.float32)
        for j in tl.range(0, PATIENCE):
            idx = _list_keys(LIST, walked + j, n_keys, offs_n, 0, BLOCK_N, False)
            acc, l_i, m_i, l_chunk, qk = _attend_chunk(acc, l_i, m_i, q, K_head, V_head, stride_kn, stride_vn, idx,
                                                       (walked + j) * BLOCK_N + offs_n < n_keys, qk_scale, offs_d)
            progress = _row_progress(l_chunk, l_i, m_i, qk, tau, n_keys - (walked + j + 1) * BLOCK_N, TAIL_STOP)
            brightest = tl.maximum(brightest, progress)
        walked += PATIENCE
        go = (walked < n_chunks) & (tl.max(tl.where(row_valid, brightest, -1.0), 0) >= 0.0)
    return acc, l_i, m_i, tl.minimum(walked, n_chunks)


# ----------------------------------------------------------------------------------------------
# The kernel: one program = one query tile of one plan head.
# ----------------------------------------------------------------------------------------------
@triton.jit
def _sparse_attention_fwd(
    Q, K, V, O,  # q, o (B, Hq, N, D); k, v (B, Hkv, Q_OFFSET + N, D); last dim contiguous
    KEY_INDEX,  # int32 (B, H_plan, L), last dim contiguous
    LIST_START, LIST_LEN,  # int64 / int32 (B, H_plan, n_seg), contiguous (same strides)
    QUERY_ORDER,  # int32 (B, H_plan, N), last dim contiguous; unused when not HAS_ORDER
    CHUNKS,  # int32 (B, Hq, >= n_tiles), out: chunks walked per tile
    SKIPPED,  # int32, same shape and strides as CHUNKS; SKIP_SOFTMAX only, out: keys whose P.V was skipped
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_on,
    stride_ib, stride_ih,
    stride_lb, stride_lh,
    stride_rb, stride_rh,
    stride_cb, stride_ch,
    sm_scale, tau, skip_gap,  # float: softmax scale, stopping threshold, skip-softmax gap (log2 units)
    N_CTX, SEGMENT, SINKS, H_PLAN,  # int: N_CTX queries
    Q_OFFSET,  # int: key position of query 0 (queries at an offset into the keys; 0 = the whole prompt)
    N_BUCKET, KEY_BUCKET, REQ_BLOCK_M, REQ_BLOCK_N,  # int, read only by the autotuner (key and pruning)
    HEAD_DIM: tl.constexpr,
    GROUP: tl.constexpr,  # G = Hq / Hkv
    SHARED: tl.constexpr,  # H_plan == Hkv: one program serves the G query heads of a kv head
    HEADS: tl.constexpr,  # real query heads per program: G when SHARED else 1
    HEADS_PER_PROG: tl.constexpr,  # HEADS rounded up to a power of two (rows of padded heads are masked)
    HAS_ORDER: tl.constexpr,
    EARLY_STOP: tl.constexpr,  # tau > 0
    BLOCK_M: tl.constexpr,  # rows per program = HEADS_PER_PROG x query positions of the tile
    BLOCK_N: tl.constexpr,  # keys per block / chunk
    STOP_BURST: tl.constexpr,  # tau > 0 at patience 1: chunks per pipelined burst (1: nothing pipelined)
    TAIL_STOP: tl.constexpr,  # tau > 0: stop_rule "tail" (bound the unseen mass) instead of "chunk"
    PATIENCE: tl.constexpr,  # tau > 0: chunks per burst; the walk ends after a burst of dull chunks
    INTERLEAVE: tl.constexpr,  # per-head lists, GROUP > 1: a kv group's heads take adjacent programs
    SKIP_SOFTMAX: tl.constexpr,  # tau = 0: skip the softmax and P.V of chunks far below every row's max
    IN_ORDER: tl.constexpr,  # tau = 0: lists hold keys [SINKS, SINKS + len) in position order, unread
):
    # GQA with shared lists packs the G heads' copies of the tile's positions into the rows of one
    # tile (row = head * TILE_POS + slot) rather than looping over heads inside the program: a loop
    # would need G accumulators of (TILE_POS, D) fp32 live at once (too many registers for G >= 2),
    # or G small matrix products that under-fill Hopper's 64-row wgmma. Packed, one gather of a K/V
    # chunk feeds one (BLOCK_M x BLOCK_N) product, exactly as wide as a dense FlashAttention tile.
    tl.static_assert(BLOCK_M % HEADS_PER_PROG == 0)
    tl.static_assert(BLOCK_M >= 16)
    tl.static_assert(BLOCK_N >= 16)
    TILE_POS: tl.constexpr = BLOCK_M // HEADS_PER_PROG
    qk_scale = sm_scale * 1.44269504  # 1/ln 2: exp2 instead of exp (LOG2_E)

    n_tiles = tl.cdiv(N_CTX, TILE_POS)
    # Latest tiles first: their segments have the longest prefixes, so long programs start early
    # and short ones fill the tail of the grid.
    if INTERLEAVE:
        # Per-head lists: the G heads of a kv group run the same tile in adjacent programs, so their
        # walks over one K/V (largely the same keys, in orders of their own) share L2.
        tile = n_tiles - 1 - tl.program_id(0) // GROUP
        b = tl.program_id(1) // (H_PLAN // GROUP)
        hp = (tl.program_id(1) % (H_PLAN // GROUP)) * GROUP + tl.program_id(0) % GROUP
    else:
        tile = n_tiles - 1 - tl.program_id(0)
        b = tl.program_id(1) // H_PLAN
        hp = tl.program_id(1) % H_PLAN
    if SHARED:
        kv_head = hp
        q_head0 = hp * GROUP
    else:
        kv_head = hp // GROUP
        q_head0 = hp

    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    head_of_row = offs_m // TILE_POS
    slot = tile * TILE_POS + offs_m % TILE_POS
    row_valid = (slot < N_CTX) & (head_of_row < HEADS)
    seg_start = ((tile * TILE_POS) // SEGMENT) * SEGMENT
    b64 = b.to(tl.int64)
    if HAS_ORDER:
        pos = tl.load(QUERY_ORDER + b64 * stride_rb + hp.to(tl.int64) * stride_rh + slot,
                      mask=slot < N_CTX, other=seg_start)
    else:
        pos = slot
    # Padding rows get the segment's first position: they then see at least one key (no NaN) and
    # never widen the causal range; they are never stored.
    pos = tl.where(slot < N_CTX, pos, seg_start)

    q_head = (q_head0 + head_of_row).to(tl.int64)
    q_rows = Q + b64 * stride_qb + q_head * stride_qh + pos.to(tl.int64) * stride_qn
    q = tl.load(q_rows[:, None] + offs_d[None, :], mask=row_valid[:, None], other=0.0)
    K_head = K + b64 * stride_kb + kv_head.to(tl.int64) * stride_kh
    V_head = V + b64 * stride_vb + kv_head.to(tl.int64) * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # Pass 1: sinks (those before the segment; later ones are own-segment keys), then the own
    # segment: unmasked blocks below every row's position, masked blocks up to the tile's last one.
    # Keys are addressed by key position: a row's is its query position + Q_OFFSET (computed once here;
    # the walk reads key positions from the lists and needs no shift).
    key_pos = pos + Q_OFFSET
    seg_key = seg_start + Q_OFFSET
    sink_end = tl.minimum(SINKS, seg_key)
    acc, l_i, m_i = _attend_key_range(acc, l_i, m_i, q, key_pos, K_head, V_head, stride_kn, stride_vn, 0, sink_end,
                                      qk_scale, offs_n, offs_d, 1, BLOCK_N)
    first_pos = tl.min(tl.where(row_valid, pos, N_CTX), 0)
    last_pos = tl.max(pos, 0)
    full_end = seg_key + ((first_pos + 1 - seg_start) // BLOCK_N) * BLOCK_N
    acc, l_i, m_i = _attend_key_range(acc, l_i, m_i, q, key_pos, K_head, V_head, stride_kn, stride_vn, seg_key,
                                      full_end, qk_scale, offs_n, offs_d, 0, BLOCK_N)
    acc, l_i, m_i = _attend_key_range(acc, l_i, m_i, q, key_pos, K_head, V_head, stride_kn, stride_vn, full_end,
                                      last_pos + 1 + Q_OFFSET, qk_scale, offs_n, offs_d, 2, BLOCK_N)

    # Pass 2: the segment's ranked list.
    meta = b64 * stride_lb + hp.to(tl.int64) * stride_lh + seg_start // SEGMENT
    list_off = tl.load(LIST_START + meta)
    n_keys = tl.load(LIST_LEN + meta)
    LIST = KEY_INDEX + b64 * stride_ib + hp.to(tl.int64) * stride_ih + list_off
    if EARLY_STOP and PATIENCE > 1:
        acc, l_i, m_i, walked = _walk_list_with_patience(acc, l_i, m_i, q, row_valid, K_head, V_head, stride_kn,
                                                         stride_vn, LIST, n_keys, qk_scale, tau, offs_n, offs_d,
                                                         BLOCK_N, PATIENCE, TAIL_STOP)
    elif EARLY_STOP:
        acc, l_i, m_i, walked = _walk_list_in_bursts(acc, l_i, m_i, q, row_valid, K_head, V_head, stride_kn,
                                                     stride_vn, LIST, n_keys, qk_scale, tau, offs_n, offs_d,
                                                     BLOCK_N, STOP_BURST, TAIL_STOP)
    elif SKIP_SOFTMAX:
        acc, l_i, m_i, walked, skipped = _walk_list_skipping(acc, l_i, m_i, q, row_valid, K_head, V_head, stride_kn,
                                                             stride_vn, LIST, n_keys, qk_scale, skip_gap, offs_n,
                                                             offs_d, SINKS, BLOCK_N, IN_ORDER)
    else:
        acc, l_i, m_i, walked = _walk_list(acc, l_i, m_i, q, K_head, V_head, stride_kn, stride_vn, LIST, n_keys,
                                           qk_scale, offs_n, offs_d, SINKS, BLOCK_N, IN_ORDER)

    # Epilogue: every real row has l_i > 0 (its own position is in pass 1), so no NaN.
    out = acc / l_i[:, None]
    o_rows = O + b64 * stride_ob + q_head * stride_oh + pos.to(tl.int64) * stride_on
    tl.store(o_rows[:, None] + offs_d[None, :], out.to(O.dtype.element_ty), mask=row_valid[:, None])
    offs_h = tl.arange(0, HEADS_PER_PROG)
    tl.store(CHUNKS + b64 * stride_cb + (q_head0 + offs_h).to(tl.int64) * stride_ch + tile,
             walked + offs_h * 0, mask=offs_h < HEADS)
    if SKIP_SOFTMAX:
        tl.store(SKIPPED + b64 * stride_cb + (q_head0 + offs_h).to(tl.int64) * stride_ch + tile,
                 skipped + offs_h * 0, mask=offs_h < HEADS)


# ----------------------------------------------------------------------------------------------
# Autotuning: a list comprehension of configs and a pruning filter.
# ----------------------------------------------------------------------------------------------
def _register_estimate(rows: int, block_n: int, head_dim: int, num_warps: int) -> float:
    """32-bit registers per thread for the fp32 accumulator and score tile (a coarse filter)."""
    return (rows * head_dim + rows * block_n) / (num_warps * 32)


# One warpgroup (4 warps) per 64 rows: Hopper's wgmma is issued per 64-row warpgroup. Bursts of at least
# 2 chunks: a burst is a pipelined for loop, and one of 1 chunk pipelines nothing.
# At head dim <= 128 a register cap of TWO_PROGRAMS_MAXNREG lets two 8-warp programs share an SM (65,536
# registers), where uncapped one runs alone and nothing hides its gathers' latency; a few registers
# spill, and it still wins (the compiler's counts and the timings: reports/bench/exec-probe-h100/).
TWO_PROGRAMS_MAXNREG = 128
_CONFIGS = [
    triton.Config({"BLOCK_M": rows, "BLOCK_N": bn, "STOP_BURST": burst},
                  num_warps=rows // 16, num_stages=stages, maxnreg=cap)
    for rows in (64, 128)
    for bn in (32, 64, 128)
    for burst in (2, 4, 8)
    for stages in (2, 3)
    for cap in (None, TWO_PROGRAMS_MAXNREG)
]


def _prune_configs(configs, named_args, **kwargs):
    """Keep the configs that fit this call.

    Tile shapes: the requested ones (always requested at tau > 0, where they change which keys are
    visited), a tile of positions dividing the segment, and register room. The burst only matters
    to the tau > 0 walk, so tau = 0 keeps a single burst value; a tau > 0 walk with patience 1 tunes
    the burst (exact at any value), a patient one walks in bursts of its own; both tune the stages and
    the register cap.
    """
    args = {**named_args, **kwargs}
    head_dim, heads_pp, segment = args["HEAD_DIM"], args["HEADS_PER_PROG"], args["SEGMENT"]
    early_stop, req_m, req_n = args["EARLY_STOP"], args["REQ_BLOCK_M"], args["REQ_BLOCK_N"]
    kept = []
    for cfg in configs:
        rows, bn, burst = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], cfg.kwargs["STOP_BURST"]
        if (req_m and rows != req_m) or (req_n and bn != req_n) or rows < heads_pp:
            continue
        if segment % (rows // heads_pp) != 0:
            continue
        if _register_estimate(rows, bn, head_dim, cfg.num_warps) > 160 or (head_dim == 256 and bn > 64):
            continue
        if not early_stop and burst != 2:
            continue
        if args["PATIENCE"] > 1 and burst != DEFAULT_STOP_BURST:  # a patient walk has bursts of its own
            continue
        if cfg.maxnreg is not None and (head_dim > 128 or cfg.num_stages != 2 or bn > 64):
            continue  # the cap pays only where two programs' shared memory fits an SM
        if not early_stop and bn == 128 and cfg.num_stages != 2:
            continue
        kept.append(cfg)
    return kept or [_fallback_config(args)]


def _fallback_config(args) -> triton.Config:
    """One config that always fits (used when the filter leaves nothing, e.g. an unusual request)."""
    rows = args["REQ_BLOCK_M"] or DEFAULT_ROWS
    bn = args["REQ_BLOCK_N"] or default_block_n(args["HEAD_DIM"])
    return triton.Config({"BLOCK_M": rows, "BLOCK_N": bn, "STOP_BURST": DEFAULT_STOP_BURST},
                         num_warps=max(rows // 16, 4), num_stages=2)


_sparse_attention_fwd_tuned = triton.autotune(
    configs=_CONFIGS,
    key=["N_BUCKET", "HEAD_DIM", "GROUP", "HEADS_PER_PROG", "SEGMENT", "EARLY_STOP", "TAIL_STOP", "PATIENCE", "SKIP_SOFTMAX", "IN_ORDER", "HAS_ORDER",
         "REQ_BLOCK_M", "REQ_BLOCK_N", "KEY_BUCKET"],
    prune_configs_by={"early_config_prune": _prune_configs},
)(_sparse_attention_fwd)


# ----------------------------------------------------------------------------------------------
# Host side.
# ----------------------------------------------------------------------------------------------
def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _pinned_config(config: ExecConfig | None) -> ExecConfig | None:
    if config is not None:
        return config
    text = os.environ.get(EXEC_CONFIG_ENV, "").strip()
    if text:
        return ExecConfig.parse(text)
    return None


def sparse_attention(q: Tensor, k: Tensor, v: Tensor, plan: Plan, *, tau: float = 0.0, scale: float | None = None,
                     block_m: int | None = None, block_n: int | None = None, config: ExecConfig | None = None,
                     stop_rule: str = DEFAULT_STOP_RULE, patience: int = 1, skip_gap: float = 0.0,
                     return_stats: bool = False) -> Tensor | tuple[Tensor, ExecStats]:
    """Causal attention over ``plan``: exact sinks + own segment, then ranked lists with early stop.

    q (batch, q_heads, seq_len, head_dim), k, v (batch, kv_heads, plan.q_offset + seq_len, head_dim)
    (queries at an offset into the keys, causal aligned bottom-right; plan.py), fp16 or bf16,
    head_dim 64/128/256. tau: stop a tile's walk after the first chunk whose stop statistic (see
    stop_rule) is below this share of every row's softmax mass (0: walk whole lists; with lists
    holding every prefix key that is dense causal attention). scale: softmax scale, default
    1/sqrt(head_dim). block_m: query positions per tile (must divide plan.segment; with lists shared
    by a GQA group a tile holds block_m positions of each of the G heads); block_n: keys per chunk.
    None lets the autotuner choose at tau = 0 and takes the defaults (DEFAULT_ROWS rows,
    DEFAULT_BLOCK_N keys) at tau > 0. config pins a launch (else env S2O_EXEC_CONFIG; the CPU
    interpreter always pins). stop_rule (tau > 0 only): "chunk" stops after a chunk holding < tau of
    every row's mass; "tail" after a chunk where (keys left in the list) x (the chunk's largest
    per-key mass) is < tau of every row's mass, a bound on the unseen rest when lists are in
    descending importance (see knobs.STOP_RULES). patience (tau > 0 only): the list is walked in
    bursts of this many chunks and the walk ends after the first burst whose every chunk met the
    stop test (1: the first such chunk). skip_gap (tau = 0 only; 0 = off): skip-softmax, a chunk
    whose largest score is more than skip_gap nats below every row's running maximum skips its
    softmax and P.V (its QK is still computed; ExecStats counts the two apart). Returns the output,
    shaped and typed like q, and with return_stats an ExecStats.
    """
    check_walk(q, k, v, plan, tau=tau, stop_rule=stop_rule, patience=patience, skip_gap=skip_gap, block_m=block_m)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"{name} must be float16 or bfloat16; got {t.dtype}")
    if q.shape[-1] not in HEAD_DIMS:
        raise ValueError(f"head_dim must be one of {HEAD_DIMS}; got {q.shape[-1]}")
    if q.device.type != "cuda" and not _interpreting():
        raise ValueError("sparse_attention needs CUDA tensors (on a CPU, set TRITON_INTERPRET=1 before importing it)")
    batch, q_heads, n_ctx, head_dim = q.shape
    kv_heads, n_keys = k.shape[1], k.shape[2]
    group = q_heads // kv_heads
    shared = plan.heads == kv_heads
    heads = group if shared else 1
    heads_pp = triton.next_power_of_2(heads)
    early_stop = tau > 0

    pinned = _pinned_config(config)
    if pinned is not None:
        if (block_m or pinned.block_m) != pinned.block_m or (block_n or pinned.block_n) != pinned.block_n:
            raise ValueError(f"block_m/block_n ({block_m}, {block_n}) disagree with the pinned config {pinned}")
        block_m, block_n = pinned.block_m, pinned.block_n
    elif early_stop or _interpreting():
        block_m = block_m or max(DEFAULT_ROWS // heads_pp, 1)
        block_n = block_n or default_block_n(head_dim)
    check_tile_shape(block_m, block_n, heads_pp, plan.segment)

    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    if max(k.stride(2), v.stride(2)) * n_keys >= 2**31:
        raise ValueError("k/v rows are too far apart for 32-bit gather offsets: pass contiguous k, v")
    key_index = plan.key_index.contiguous()
    if key_index.numel() == 0:  # every list empty (seq_len <= segment): never read, but needs an address
        key_index = torch.zeros((batch, plan.heads, 1), dtype=torch.int32, device=q.device)
    list_start, list_len = plan.list_start.contiguous(), plan.list_len.contiguous()
    order = plan.query_order.contiguous() if plan.query_order is not None else key_index  # dummy when absent
    out = torch.empty_like(q)
    # Sized for the smallest tile any allowed config may use; sliced to the tile count used.
    min_tile = block_m if block_m is not None else max(64 // heads_pp, 1)
    chunks = torch.empty((batch, q_heads, triton.cdiv(n_ctx, min_tile)), dtype=torch.int32, device=q.device)
    skipped = torch.empty_like(chunks) if skip_gap > 0 else chunks  # (a dummy when not skipping)
    sm_scale = float(scale) if scale is not None else 1.0 / math.sqrt(head_dim)

    def grid(meta):
        n_tiles = triton.cdiv(n_ctx, meta["BLOCK_M"] // heads_pp)
        if meta["INTERLEAVE"]:
            return (n_tiles * group, batch * plan.heads // group)
        return (n_tiles, batch * plan.heads)

    args = (q, k, v, out, key_index, list_start, list_len, order, chunks, skipped,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
            key_index.stride(0), key_index.stride(1), list_start.stride(0), list_start.stride(1),
            order.stride(0), order.stride(1), chunks.stride(0), chunks.stride(1),
            sm_scale, float(tau), float(skip_gap) * LOG2_E, n_ctx, plan.segment, plan.sinks, plan.heads,
            plan.q_offset, triton.next_power_of_2(n_ctx), triton.next_power_of_2(n_keys),
            (block_m or 0) * heads_pp, block_n or 0)
    constants = dict(HEAD_DIM=head_dim, GROUP=group, SHARED=shared, HEADS=heads, HEADS_PER_PROG=heads_pp,
                     HAS_ORDER=plan.query_order is not None, EARLY_STOP=early_stop,
                     TAIL_STOP=early_stop and stop_rule == "tail", PATIENCE=patience if early_stop else 1,
                     INTERLEAVE=(pinned.interleave_heads if pinned else True) and not shared and group > 1,
                     SKIP_SOFTMAX=skip_gap > 0, IN_ORDER=plan.in_order)
    if pinned is not None or _interpreting():
        used = pinned or ExecConfig(block_m=block_m, block_n=block_n)
        rows = used.block_m * heads_pp
        used = dataclasses.replace(used, num_warps=used.num_warps or max(rows // 16, 4))
        if used.stop_burst < 1:
            raise ValueError(f"stop_burst must be >= 1; got {used.stop_burst}")
        _sparse_attention_fwd[grid](*args, **constants, BLOCK_M=rows, BLOCK_N=used.block_n,
                                    STOP_BURST=used.stop_burst,
                                    num_warps=used.num_warps, num_stages=used.num_stages,
                                    **({"maxnreg": used.maxnreg} if used.maxnreg else {}))
    else:
        _sparse_attention_fwd_tuned[grid](*args, **constants)
        best = _sparse_attention_fwd_tuned.best_config
        used = ExecConfig(block_m=best.kwargs["BLOCK_M"] // heads_pp, block_n=best.kwargs["BLOCK_N"],
                          num_warps=best.num_warps, num_stages=best.num_stages,
                          stop_burst=best.kwargs["STOP_BURST"],
                          maxnreg=best.maxnreg)
    if not return_stats:
        return out
    n_tiles = triton.cdiv(n_ctx, used.block_m)
    return out, exec_stats(chunks[..., :n_tiles], plan, n_ctx, group, used,
                           skipped_keys=skipped[..., :n_tiles] if skip_gap > 0 else None)
