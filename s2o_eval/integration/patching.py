"""Swap a method into a Hugging Face model's prefill attention: one function, ``use_method``.

The method is registered with transformers' ``AttentionInterface`` (and ``AttentionMaskInterface``,
with ``plain_prefill_mask``) under ``s2o_eval_<name>``, never overriding transformers' own names
(``selector`` registers the same functions for your own code). Only full-causal prefill calls reach
the method: a whole prompt (q_len == kv_len), or a chunk of one after the KV cache of what came
before (1 < q_len < kv_len: chunked prefill, or a new suffix after a cached prefix), which the method
gets as its queries at an offset, causal aligned bottom-right. A method that cannot take an offset
(``AttentionMethod.takes_offset``) has its chunks run dense, and says so once. A sliding-window
layer's whole prefill runs exact chunked attention (``sliding.sliding_window_attention``); its chunks,
soft-capped layers, padded batches and decode steps (q_len == 1) go to transformers' SDPA path with
the model's own mask.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, causal_mask_function, sdpa_mask

from s2o_kernels.launch import causal_pairs

from ..methods import AttentionMethod, AttentionStats
from .sliding import sliding_window_attention

PREFIX = "s2o_eval_"
log = logging.getLogger(__name__)


def implementation_name(method: str) -> str:
    """``s2o_eval_<method>``, the name transformers knows ``method`` by. "flash" is written "Flash":
    transformers takes any implementation name holding "flash" for a FlashAttention kernel to load."""
    return PREFIX + method.replace("flash", "Flash")


class PrefillRecorder:
    """What the patched attention saw during one prompt's prefill (reset by the caller per sample).

    ``method_calls``: layer calls the method ran (a whole prompt or a chunk); ``fallback_calls``: those
    that stayed dense (decode steps, sliding layers, ...), of which ``offset_fallback_calls`` are chunks
    the method would have run but cannot take at an offset (their pairs are added to ``stats`` as dense).
    """

    def __init__(self) -> None:
        self.stats = AttentionStats()
        self.method_calls = 0
        self.fallback_calls = 0
        self.offset_fallback_calls = 0

    def reset(self) -> None:
        self.__init__()


def _is_zero(offset) -> bool:
    # a static cache gives its offset as a tensor (so that decode compiles without graph breaks); this
    # is only asked for prompts (q_length > 1), which run uncompiled, so reading it back is fine
    return int(offset) == 0 if torch.is_tensor(offset) else offset == 0


def plain_prefill_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset=0,
                       attention_mask: torch.Tensor | None = None, **kwargs):
    """No mask at all where the attention is plain causal for a single unpadded prompt: a prompt
    starting an empty cache (every layer then knows it is plain causal, and a sliding layer at 128K is
    spared a 16 GB boolean mask), or a chunk of it after the cache on a full-causal layer (an 8K chunk
    after 120K cached tokens is spared a 1 GB one); transformers' SDPA mask otherwise.

    Without a mask the attention function reads which keys are real from the queries' positions
    (``_real_keys``): with a static cache ``kv_length`` is the cache's capacity, longer than what it holds.
    """
    unpadded = batch_size == 1 and (attention_mask is None or bool(attention_mask.all()))
    if unpadded and 1 < q_length <= kv_length and _is_zero(kv_offset):
        if _is_zero(q_offset):
            return None
        # a chunk: only on layers whose mask is the plain causal one (not sliding, no other pattern)
        if kwargs.get("mask_function", causal_mask_function) is causal_mask_function and not kwargs.get("local_size"):
            return None
    return sdpa_mask(batch_size, q_length, kv_length, q_offset=q_offset, kv_offset=kv_offset,
                     attention_mask=attention_mask, **kwargs)


def _real_keys(query: torch.Tensor, key: torch.Tensor, kwargs: dict) -> int:
    """How many of ``key``'s slots the queries see when no mask was built: P + q_len, P the position of
    the first query. transformers hands every attention function the queries' ``position_ids``; a
    static cache hands back all its slots, of which only the first P + q_len are written. Without
    positions, P = 0 (transformers' own reading of a missing mask: a prompt starting the cache)."""
    positions = kwargs.get("position_ids")
    first = int(positions.reshape(-1)[0]) if torch.is_tensor(positions) and positions.numel() else 0
    # a dynamic cache holds exactly P + q_len keys, whatever the positions say
    return min(first + query.shape[2], key.shape[2])


def _bottom_right_mask(q_len: int, kv_len: int, window: int | None, device) -> torch.Tensor:
    """Query i at key position kv_len - q_len + i sees the keys up to itself (and, with a window, the
    ``window - 1`` before it): the mask transformers would have built, for the dense fallback."""
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
    k_pos = torch.arange(kv_len, device=device)[None, :]
    allowed = k_pos <= q_pos
    if window:
        allowed &= k_pos > q_pos - window
    return allowed[None, None]


def _is_full_causal(module, query, key, attention_mask, kwargs) -> bool:
    """Prefill of a full-causal layer: a whole prompt (q_len == kv_len) or, with no mask built
    (``plain_prefill_mask``), a chunk after the cache (1 < q_len < kv_len)."""
    q_len, kv_len = query.shape[2], key.shape[2]
    if q_len <= 1 or q_len > kv_len:
        return False  # decode
    if q_len < kv_len and attention_mask is not None:
        return False  # a chunk whose mask is not plain causal (padding, a pattern): the model's own
    if kwargs.get("sliding_window") or getattr(module, "sliding_window", None):
        return False  # sliding-window layers keep the model's own attention
    if kwargs.get("softcap") is not None:
        return False
    if attention_mask is not None and attention_mask.ndim == 4 and query.shape[0] > 1:
        # a batch with padding: the mask is not plain causal. (Batch 1 with a materialized causal
        # mask is still plain causal; timing runs use batch 1.)
        if not bool(attention_mask.all(dim=-2).any()):
            return False
    return True


def make_attention_function(method: AttentionMethod, recorder: PrefillRecorder, *, say_dense_chunks: bool = True):
    """The function transformers calls in place of its attention, for one configured method.

    ``say_dense_chunks``: warn once (logging) when a chunk runs dense because the method takes no
    offset; the harness says it itself, before its run starts."""
    said_dense_chunks = not say_dense_chunks

    def dense(module, query, key, value, attention_mask, scaling, dropout, kwargs):
        if not torch.compiler.is_compiling():  # compiled decode: no Python state to guard on
            recorder.fallback_calls += 1
        window = kwargs.pop("sliding_window", None) or getattr(module, "sliding_window", None)
        if attention_mask is None and query.shape[2] > 1:
            if query.shape[2] == key.shape[2] and window and kwargs.get("softcap") is None:
                # a sliding layer's prefill with no mask built (plain_prefill_mask): exact, memory-light
                out = sliding_window_attention(query, key, value, window, scaling)
                return out.transpose(1, 2).contiguous(), None
            if query.shape[2] < key.shape[2]:  # SDPA's is_causal would align top-left: build the mask
                attention_mask = _bottom_right_mask(query.shape[2], key.shape[2], window, query.device)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)

    def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                  **kwargs: Any):
        # query (batch, q_heads, q_len, head_dim); key, value (batch, kv_heads, kv_len, head_dim)
        nonlocal said_dense_chunks
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        if attention_mask is None and query.shape[2] > 1:
            real = _real_keys(query, key, kwargs)  # a static cache's unwritten slots are no keys
            key, value = key[:, :, :real], value[:, :, :real]
        if not _is_full_causal(module, query, key, attention_mask, kwargs):
            return dense(module, query, key, value, attention_mask, scale, dropout, kwargs)
        if query.shape[2] < key.shape[2] and not method.takes_offset:
            recorder.offset_fallback_calls += 1
            pairs = causal_pairs(query.shape[2], key.shape[2] - query.shape[2]) * query.shape[0] * query.shape[1]
            recorder.stats.add(computed=pairs, causal=pairs, per_head=[1.0] * query.shape[1])
            if not said_dense_chunks:
                said_dense_chunks = True
                log.warning("%s takes no queries at an offset: chunks after a cached prefix run dense attention",
                            method.name)
            return dense(module, query, key, value, attention_mask, scale, dropout, kwargs)
        recorder.method_calls += 1
        out = method.prefill(query, key, value, scale=scale, stats=recorder.stats)
        return out.transpose(1, 2).contiguous(), None  # transformers wants (batch, seq, heads, dim)

    return attention


def register_attention(names: Iterable[str], attention) -> None:
    """Make ``attention`` (with ``plain_prefill_mask`` as its mask) selectable in transformers under each
    of ``names``: ``attn_implementation=name`` in ``from_pretrained`` or ``set_attn_implementation``."""
    for name in names:
        AttentionInterface.register(name, attention)
        AttentionMaskInterface.register(name, plain_prefill_mask)


def use_method(model, method: AttentionMethod, *, say_dense_chunks: bool = True) -> PrefillRecorder:
    """Route ``model``'s full-causal prefill attention to ``method``; returns the recorder of its calls.
    ``say_dense_chunks``: as ``make_attention_function``."""
    recorder = PrefillRecorder()
    name = implementation_name(method.name)
    register_attention([name], make_attention_function(method, recorder, say_dense_chunks=say_dense_chunks))
    model.set_attn_implementation(name)
    return recorder
