"""Swap a method into a Hugging Face model's prefill attention: one function, ``use_method``.

The method is registered with transformers' ``AttentionInterface`` (and ``AttentionMaskInterface``,
reusing the SDPA mask) under ``s2o_eval_<name>``, never overriding transformers' own names. Only
full-causal prefill calls reach the method: sliding-window layers, soft-capped layers, padded batches
and decode / chunked steps go to transformers' SDPA path with the model's own mask.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .methods import AttentionMethod, AttentionStats

PREFIX = "s2o_eval_"
log = logging.getLogger(__name__)


class PrefillRecorder:
    """What the patched attention saw during one prompt's prefill (reset by the caller per sample)."""

    def __init__(self) -> None:
        self.stats = AttentionStats()
        self.method_calls = 0
        self.fallback_calls = 0

    def reset(self) -> None:
        self.__init__()


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
        if not _is_full_causal_prefill(module, query, key, attention_mask, kwargs):
            recorder.fallback_calls += 1
            kwargs.pop("sliding_window", None)
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                          scaling=scaling, **kwargs)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        recorder.method_calls += 1
        out = method.prefill(query, key, value, scale=scale, stats=recorder.stats)
        return out.transpose(1, 2).contiguous(), None  # transformers wants (batch, seq, heads, dim)

    return attention


def use_method(model, method: AttentionMethod) -> PrefillRecorder:
    """Route ``model``'s full-causal prefill attention to ``method``; returns the recorder of its calls."""
    recorder = PrefillRecorder()
    name = PREFIX + method.name
    AttentionInterface.register(name, make_attention_function(method, recorder))
    AttentionMaskInterface.register(name, sdpa_mask)
    model.set_attn_implementation(name)
    return recorder
