"""The plan: the one contract between planners (S2O, block-sparse peers) and the index-guided executor.

A plan tells the executor, per query segment, which prefix keys to visit and in which order; the
executor adds the exact pass over attention sinks and the segment's own causal diagonal. Shapes:
``q (batch, q_heads, seq_len, head_dim)``, ``k, v (batch, kv_heads, q_offset + seq_len, head_dim)``,
``H_plan`` is ``kv_heads`` (one list shared by the G query heads of a kv head) or ``q_heads``
(one list per query head).

Queries may start at an offset P = ``q_offset`` into the keys (a chunk of a long prompt prefilled
after the KV cache of the earlier chunks, or a suffix after a cached prefix): causal is aligned
bottom-right as in FlashAttention, query i sits at key position P + i and sees keys [0, P + i].
Segments are the chunk's: segment s holds queries [s * S, (s + 1) * S), at key positions
[P + s * S, P + (s + 1) * S), and its prefix is every key before it, the cache included. P = 0 is
the whole prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .knobs import check_patience, check_skip_gap, check_stop_rule_name, check_tau


@dataclass
class Plan:
    """Ranked key lists per (batch, plan head, segment), plus an optional query order.

    segment: S, queries are cut into segments of S consecutive positions (S % block_m == 0).
    sinks: keys [0, sinks) are always computed exactly in pass 1 (attention sinks).
    key_index: int32 (batch, H_plan, L), the ranked key lists of all segments, concatenated.
    list_start: int64 (batch, H_plan, n_seg), where segment s's list starts in key_index[b, h].
    list_len: int32 (batch, H_plan, n_seg), its length. Segment s's list holds keys in
        [sinks, q_offset + s * S), each at most once.
    query_order: int32 (batch, H_plan, seq_len) or None (identity): query positions in tile order,
        a permutation within each segment; tile t holds query_order[b, h, t*BM:(t+1)*BM].
    in_order: the lists are in position order and never read: segment s's list is the keys
        [sinks, sinks + list_len) (key_index and list_start are then unused). Such a plan ranks
        nothing; the executor walks it with tau = 0 (dense, or skip-softmax), loading keys in place.
    score_histogram: int32 (batch, H_plan, n_seg, n_buckets) or None: per list, its keys per score
        bucket, bucket j holding the keys [j, j + 1) x bucket_width nats below the list's top score
        (the last bucket also all below). S2O's planner counts it while ranking; the walk forecast
        (s2o/forecast.py) reads it to route flat heads to the dense kernel.
    bucket_width: nats per bucket of score_histogram (> 0 when it is given).
    q_offset: P, the key position of query 0 (k holds P + seq_len keys). Stored, not guessed from
        shapes, because the lists are built for one P: ``check`` then refuses inputs of another.
    """

    segment: int
    sinks: int
    key_index: Tensor
    list_start: Tensor
    list_len: Tensor
    query_order: Tensor | None = None
    in_order: bool = False
    score_histogram: Tensor | None = None
    bucket_width: float = 0.0
    q_offset: int = 0

    @property
    def heads(self) -> int:
        """H_plan: the number of plan heads (kv heads when shared by a GQA group, else q heads)."""
        return int(self.key_index.shape[1])

    def check(self, q: Tensor, k: Tensor, *, block_m: int | None = None, thorough: bool = False) -> None:
        """Raise ValueError, saying what is wrong, when this plan does not fit ``q`` and ``k``.

        The default checks are shapes, dtypes and devices (cheap, run on every call). With
        ``thorough=True`` the contents are checked too: list bounds, key ranges, no repeated key,
        query_order a permutation within each segment (costs a sort; for tests and debugging).
        ``block_m`` (query positions per tile), when given, must divide the segment.
        """
        if q.dim() != 4 or k.dim() != 4:
            raise ValueError(f"q and k must be 4-D (batch, heads, seq_len, head_dim); got {tuple(q.shape)}, {tuple(k.shape)}")
        batch, q_heads, n_ctx, _ = q.shape
        kv_heads = k.shape[1]
        if not isinstance(self.segment, int) or self.segment < 1:
            raise ValueError(f"plan.segment must be a positive int; got {self.segment!r}")
        if not isinstance(self.sinks, int) or self.sinks < 0:
            raise ValueError(f"plan.sinks must be an int >= 0; got {self.sinks!r}")
        if block_m is not None and self.segment % block_m != 0:
            raise ValueError(f"plan.segment ({self.segment}) must be a multiple of the tile's block_m ({block_m})")
        if isinstance(self.q_offset, bool) or not isinstance(self.q_offset, int) or self.q_offset < 0:
            raise ValueError(f"plan.q_offset must be an int >= 0; got {self.q_offset!r}")
        if k.shape[2] != self.q_offset + n_ctx:
            raise ValueError(f"k has {k.shape[2]} keys but the plan was built for queries at offset {self.q_offset}: "
                             f"q_offset + q's seq_len = {self.q_offset + n_ctx}; plan these q and k again")
        n_seg = -(-n_ctx // self.segment)
        _check_tensor("key_index", self.key_index, torch.int32, 3, q.device)
        h_plan = self.key_index.shape[1]
        if self.key_index.shape[0] != batch:
            raise ValueError(f"plan.key_index has batch {self.key_index.shape[0]}, q has batch {batch}")
        if h_plan not in (kv_heads, q_heads):
            raise ValueError(f"plan has {h_plan} heads; it must have kv_heads ({kv_heads}) or q_heads ({q_heads})")
        for name, tensor, dtype in (("list_start", self.list_start, torch.int64), ("list_len", self.list_len, torch.int32)):
            _check_tensor(name, tensor, dtype, 3, q.device)
            if tuple(tensor.shape) != (batch, h_plan, n_seg):
                raise ValueError(f"plan.{name} must have shape (batch, H_plan, n_seg) = {(batch, h_plan, n_seg)} "
                                 f"for seq_len {n_ctx} and segment {self.segment}; got {tuple(tensor.shape)}")
        if self.query_order is not None:
            _check_tensor("query_order", self.query_order, torch.int32, 3, q.device)
            if tuple(self.query_order.shape) != (batch, h_plan, n_ctx):
                raise ValueError(f"plan.query_order must have shape {(batch, h_plan, n_ctx)}; got {tuple(self.query_order.shape)}")
        if self.score_histogram is not None:
            _check_tensor("score_histogram", self.score_histogram, torch.int32, 4, q.device)
            if tuple(self.score_histogram.shape[:3]) != (batch, h_plan, n_seg) or not self.bucket_width > 0:
                raise ValueError(f"plan.score_histogram must have shape {(batch, h_plan, n_seg)} + (n_buckets,) and "
                                 f"bucket_width > 0; got {tuple(self.score_histogram.shape)}, {self.bucket_width}")
        if thorough:
            self._check_contents(n_ctx)

    def _check_contents(self, n_ctx: int) -> None:
        seg = self.segment
        n_seg = self.list_len.shape[-1]
        total = self.key_index.shape[-1]
        start, length = self.list_start.long(), self.list_len.long()
        seg_keys = self.q_offset + torch.arange(n_seg, device=length.device) * seg  # key position of each segment
        prefix = (seg_keys - self.sinks).clamp(min=0)
        if self.in_order:
            if (length < 0).any() or (length > prefix).any():
                raise ValueError("an in-order plan's lists must lie inside their prefixes "
                                 "[sinks, q_offset + s * segment)")
            return
        if (length < 0).any() or (start < 0).any() or (start + length > total).any():
            raise ValueError(f"plan lists must lie inside key_index (length {total}): list_start >= 0, list_len >= 0, "
                             "list_start + list_len <= L")
        if (length > prefix).any():
            raise ValueError("a segment's list is longer than its prefix [sinks, q_offset + s * segment): "
                             "keys would repeat")
        for b in range(length.shape[0]):
            for h in range(length.shape[1]):
                for s in range(n_seg):
                    n = int(length[b, h, s])
                    if n == 0:
                        continue
                    keys = self.key_index[b, h, int(start[b, h, s]):int(start[b, h, s]) + n].long()
                    lo, hi = self.sinks, self.q_offset + s * seg
                    if int(keys.min()) < lo or int(keys.max()) >= hi:
                        raise ValueError(f"list of (batch {b}, head {h}, segment {s}) holds keys outside [{lo}, {hi})")
                    if keys.unique().numel() != n:
                        raise ValueError(f"list of (batch {b}, head {h}, segment {s}) repeats a key")
        if self.query_order is not None:
            order = self.query_order.long()
            positions = torch.arange(n_ctx, device=order.device)
            if (order // seg != positions // seg).any():
                raise ValueError("plan.query_order must map each segment's slots to positions of the same segment")
            if not torch.equal(order.sort(dim=-1).values, positions.expand_as(order)):
                raise ValueError("plan.query_order must be a permutation of the positions (no repeats)")


def _check_tensor(name: str, tensor: Tensor, dtype: torch.dtype, ndim: int, device: torch.device) -> None:
    if not isinstance(tensor, Tensor):
        raise ValueError(f"plan.{name} must be a torch.Tensor; got {type(tensor).__name__}")
    if tensor.dtype != dtype or tensor.dim() != ndim:
        raise ValueError(f"plan.{name} must be a {ndim}-D {dtype} tensor; got {tensor.dim()}-D {tensor.dtype}")
    if tensor.device != device:
        raise ValueError(f"plan.{name} is on {tensor.device}, q is on {device}: build the plan on q's device")


def check_attention_inputs(q: Tensor, k: Tensor, v: Tensor) -> None:
    """What every executor takes (ValueError saying what is wrong): q ``(batch, q_heads, seq_len,
    head_dim)``, k and v ``(batch, kv_heads, kv_len, head_dim)`` with kv_len >= seq_len (the queries
    are the last seq_len positions) on one device in one dtype, q_heads a multiple of kv_heads. (The
    Triton kernel adds its own limits: dtypes and HEAD_DIMS.)"""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor (batch, heads, seq_len, head_dim)")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError("q, k, v must be on one device")
    batch, q_heads, n_ctx, head_dim = q.shape
    if k.shape != v.shape:
        raise ValueError(f"k and v must have one shape; got {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape[0] != batch or k.shape[2] < n_ctx or k.shape[3] != head_dim:
        raise ValueError(f"k (batch, kv_heads, kv_len, head_dim) = {tuple(k.shape)} does not match q {tuple(q.shape)} "
                         "(same batch and head_dim, kv_len >= q's seq_len)")
    if n_ctx < 1 or batch < 1:
        raise ValueError("seq_len and batch must be >= 1")
    if q_heads % k.shape[1] != 0:
        raise ValueError(f"q_heads ({q_heads}) must be a multiple of kv_heads ({k.shape[1]})")


def check_walk(q: Tensor, k: Tensor, v: Tensor, plan: Plan, *, tau: float, stop_rule: str, patience: int,
               skip_gap: float = 0.0, block_m: int | None = None) -> None:
    """One executor call's checks, the same for the Triton kernel and its PyTorch twin: the inputs,
    the plan against them, and the walk's rule (tau, stop_rule, patience, skip_gap; knobs.py)."""
    check_attention_inputs(q, k, v)
    check_tau(tau)
    check_stop_rule_name(stop_rule)
    check_patience(patience)
    check_skip_gap(skip_gap, tau)
    if plan.in_order and tau > 0:
        raise ValueError("a plan with lists in position order (in_order) ranks nothing: walk it with tau = 0")
    plan.check(q, k, block_m=block_m)


def plan_layout(n_ctx: int, segment: int, sinks: int, q_offset: int = 0) -> tuple[Tensor, Tensor]:
    """Lengths and starts of the segment lists of ``n_ctx`` queries at offset ``q_offset``: segment s
    lists its prefix [sinks, q_offset + s * segment).

    Returns ``(list_len int64 (n_seg,), list_start int64 (n_seg,))``; the lists are concatenated.
    """
    n_seg = -(-n_ctx // segment)
    lengths = (q_offset + torch.arange(n_seg, dtype=torch.int64) * segment - sinks).clamp(min=0)
    return lengths, torch.cumsum(lengths, 0) - lengths


def segment_plan(q: Tensor, segment: int, sinks: int, key_index: Tensor, query_order: Tensor | None = None,
                 score_histogram: Tensor | None = None, bucket_width: float = 0.0, q_offset: int = 0) -> Plan:
    """The Plan of ``key_index`` ``(batch, H_plan, total)``, laid out by ``plan_layout``: every list of
    a plan head holds its segment's whole prefix, in the planner's order."""
    lengths, starts = plan_layout(q.shape[2], segment, sinks, q_offset)
    batch, h_plan = key_index.shape[:2]
    return Plan(
        segment=segment,
        sinks=sinks,
        key_index=key_index,
        list_start=starts.to(q.device).expand(batch, h_plan, -1).contiguous(),
        list_len=lengths.to(torch.int32).to(q.device).expand(batch, h_plan, -1).contiguous(),
        query_order=query_order,
        score_histogram=score_histogram,
        bucket_width=bucket_width,
        q_offset=q_offset,
    )


def dense_plan(q: Tensor, k: Tensor, segment: int, sinks: int = 0, block_m: int | None = None, *,
               per_head: bool = False, in_order: bool = False) -> Plan:
    """An identity-order plan whose lists hold every prefix key in position order.

    With tau = 0 the executor then computes exact dense causal attention: useful for tests, as the
    dense end of a density sweep, and for skip-softmax. Lists are shared by each GQA group (H_plan =
    kv_heads) unless ``per_head`` (H_plan = q_heads). ``in_order`` writes no lists at all (the
    executor loads the keys in place: no memory, no planning time). ``block_m``, when given, is
    checked to divide ``segment``. k may hold more keys than q has queries: the queries are then the
    last ones (``q_offset = kv_len - seq_len``).
    """
    batch, q_heads, n_ctx, _ = q.shape
    h_plan = q_heads if per_head else k.shape[1]
    q_offset = k.shape[2] - n_ctx
    lengths, _ = plan_layout(n_ctx, segment, sinks, q_offset)
    if in_order:
        n_seg = lengths.numel()
        plan = Plan(segment=segment, sinks=sinks, key_index=torch.zeros(batch, h_plan, 0, dtype=torch.int32, device=q.device),
                    list_start=torch.zeros(batch, h_plan, n_seg, dtype=torch.int64, device=q.device),
                    list_len=lengths.to(torch.int32).to(q.device).expand(batch, h_plan, -1).contiguous(), in_order=True,
                    q_offset=q_offset)
        plan.check(q, k, block_m=block_m)
        return plan
    # Segment s's list is [sinks, q_offset + s * segment); built as one arange per segment, concatenated.
    pieces = [torch.arange(sinks, int(sinks + n), dtype=torch.int32) for n in lengths.tolist()]
    keys = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.int32)
    plan = segment_plan(q, segment, sinks, keys.to(q.device).expand(batch, h_plan, -1).contiguous(), q_offset=q_offset)
    plan.check(q, k, block_m=block_m)
    return plan


def validate_layout(q: Tensor, k: Tensor, segment: int, sinks: int, block_m: int) -> None:
    """The checks every planner makes of its inputs and list layout (ValueError with what is wrong)."""
    if not isinstance(q, Tensor) or not isinstance(k, Tensor) or q.dim() != 4 or k.dim() != 4:
        raise ValueError("q and k must be 4-D tensors (batch, heads, seq_len, head_dim)")
    if q.shape[0] != k.shape[0] or q.shape[2] > k.shape[2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree on batch and head_dim, and k must "
                         "hold at least q's seq_len keys (queries at an offset see the keys before them too)")
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
