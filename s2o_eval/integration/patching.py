"""Swap a method into a Hugging Face model's prefill attention: one function, ``use_method``.

The method is registered with transformers' ``AttentionInterface`` (and ``AttentionMaskInterface``,
with ``plain_prefill_mask``) under ``s2o_eval_<name>``, never overriding transformers' own names
(``selector`` registers the same functions for your own code). Only full-causal prefill calls reach
the method. A sliding-window layer's prefill runs exact chunked attention
(``sliding.sliding_window_attention``); soft-capped layers, padded batches and decode / chunked steps
go to transformers' SDPA path with the model's own mask.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..methods import AttentionMethod, AttentionStats
from .sliding import sliding_window_attention

PREFIX = "s2o_eval_"
log = logging.getLogger(__name__)


def implementation_name(method: str) -> str:
    """``s2o_eval_<method>``, the name transformers knows ``method`` by. "flash" is written "Flash":
    transformers takes any implementation name holding "flash" for a FlashAttention kernel to load."""
    return PREFIX + method.replace("flash", "Flash")


class PrefillRecorder:
    """What the patched attention saw during one prompt's prefill (reset by the caller per sample)."""

    def __init__(self) -> None:
        self.stats = AttentionStats()
        self.method_calls = 0
        self.fallback_calls = 0

    def reset(self) -> None:
        self.__init__()


def _is_zero(offset) -> bool:
    # a static cache gives its offset as a tensor (so that decode compiles without graph breaks); this
    # is only asked for prompts (q_length > 1), which run uncompiled, so reading it back is fine
    return int(offset) == 0 if torch.is_tensor(offset) else offset == 0


def plain_prefill_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset=0,
                       attention_mask: torch.Tensor | None = None, **kwargs):
    """No mask at all for a single unpadded prompt starting an empty cache (every layer then knows it
    is plain causal, and a sliding layer at 128K is spared a 16 GB boolean mask); transformers' SDPA
    mask otherwise.

    With a static cache ``kv_length`` is the cache's capacity, longer than the prompt: the attention
    function then keeps only the prompt's own keys (the cache's first ``q_length`` slots).
    """
    plain = (batch_size == 1 and 1 < q_length <= kv_length and _is_zero(q_offset) and _is_zero(kv_offset)
             and (attention_mask is None or bool(attention_mask.all())))
    if plain:
        return None
    return sdpa_mask(batch_size, q_length, kv_length, q_offset=q_offset, kv_offset=kv_offset,
                     attention_mask=attention_mask, **kwargs)


def _is_full_causal_prefill(module, query, key, attention_mask, kwargs) -> bool:
    q_len, kv_len = query.shape[2], key.shape[2]
    if q_len != kv_len or q_len <= 1:
        return False  # decode or a chunk against a cache
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


def make_attention_function(method: AttentionMethod, recorder: PrefillRecorder):
    """The function transformers calls in place of its attention, for one configured method."""

    def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                  **kwargs: Any):
        # query (batch, q_heads, q_len, head_dim); key, value (batch, kv_heads, kv_len, head_dim)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        if attention_mask is None and 1 < query.shape[2] < key.shape[2]:
            # a prompt written into an empty static cache (plain_prefill_mask said so): the cache hands
            # back all its slots; only the first q_len hold this prompt
            key, value = key[:, :, :query.shape[2]], value[:, :, :query.shape[2]]
        if not _is_full_causal_prefill(module, query, key, attention_mask, kwargs):
            if not torch.compiler.is_compiling():  # compiled decode: no Python state to guard on
                recorder.fallback_calls += 1
            window = kwargs.pop("sliding_window", None) or getattr(module, "sliding_window", None)
            if (window and attention_mask is None and query.shape[2] == key.shape[2]
                    and kwargs.get("softcap") is None):
                # a sliding layer's prefill with no mask built (plain_prefill_mask): exact, memory-light
                out = sliding_window_attention(query, key, value, window, scale)
                return out.transpose(1, 2).contiguous(), None
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                          scaling=scaling, **kwargs)
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


def use_method(model, method: AttentionMethod) -> PrefillRecorder:
    """Route ``model``'s full-causal prefill attention to ``method``; returns the recorder of its calls."""
    recorder = PrefillRecorder()
    name = implementation_name(method.name)
    register_attention([name], make_attention_function(method, recorder))
    model.set_attn_implementation(name)
    return recorder
