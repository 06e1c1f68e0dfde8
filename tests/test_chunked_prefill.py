"""Chunked prefill and cached prefixes through the patched attention: a chunk of a prompt after the KV
cache of the earlier chunks (1 < q_len < kv_len) reaches the method with its queries at an offset, the
logits equal those of one whole prefill, and a method that takes no offset runs its chunks dense,
counted and said."""

import logging
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from transformers import DynamicCache, Gemma3ForCausalLM, LlamaForCausalLM, StaticCache

from s2o_eval.integration.patching import use_method
from s2o_eval.methods import AttentionMethod, create

from tiny_models import tiny_gemma_config, tiny_llama_config

PROMPT = torch.randint(3, 128, (1, 45), generator=torch.Generator().manual_seed(1))
CHUNK = 16  # 45 tokens: chunks of 16, 16 and 13


@dataclass
class ShapeLog(AttentionMethod):
    """Eager attention that keeps the (q_len, kv_len) of every call: what the method really got."""

    name: ClassVar[str] = "shape_log"
    takes_offset: ClassVar[bool] = True

    def __post_init__(self):
        self.calls: list[tuple[int, int]] = []

    def prefill(self, q, k, v, *, scale, stats=None):
        self.calls.append((q.shape[2], k.shape[2]))
        return create("eager").prefill(q, k, v, scale=scale)


@dataclass
class WholeOnly(ShapeLog):
    """The same, for whole prompts only: what a method written before chunks were handed out declares."""

    name: ClassVar[str] = "whole_only"
    takes_offset: ClassVar[bool] = False

    def prefill(self, q, k, v, *, scale, stats=None):
        assert q.shape[2] == k.shape[2], "a whole-prompt method was handed a chunk"
        return super().prefill(q, k, v, scale=scale, stats=stats)


def _llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(128, 512)).eval()


def _gemma():
    """Two sliding-window layers (window 8, shorter than a chunk) and one full layer."""
    torch.manual_seed(0)
    return Gemma3ForCausalLM(tiny_gemma_config()).eval()


MODELS = {"llama": (_llama, 2), "gemma": (_gemma, 1)}  # the model, its full-causal layers


def _cache(model, kind: str):
    return DynamicCache(config=model.config) if kind == "dynamic" else StaticCache(config=model.config,
                                                                                    max_cache_len=128)


def _chunked_logits(model, cache, ids=PROMPT, chunk=CHUNK):
    with torch.no_grad():
        return torch.cat([model(ids[:, s:s + chunk], past_key_values=cache).logits
                          for s in range(0, ids.shape[1], chunk)], dim=1)


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
def test_chunks_reach_the_method_at_their_offset_and_give_the_whole_prompts_logits(model_name, cache_kind):
    build, full_layers = MODELS[model_name]
    model = build()
    with torch.no_grad():
        reference = model(PROMPT).logits  # transformers' own attention, one whole prefill
    method = ShapeLog()
    recorder = use_method(model, method)
    logits = _chunked_logits(model, _cache(model, cache_kind))
    torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4)
    # each full-causal layer ran the method on each chunk, against every key before it (a static
    # cache's unwritten slots left out)
    assert method.calls == [(16, 16)] * full_layers + [(16, 32)] * full_layers + [(13, 45)] * full_layers
    assert recorder.method_calls == 3 * full_layers and recorder.offset_fallback_calls == 0


@pytest.mark.parametrize("name", ["eager", "sdpa"])
def test_dense_methods_take_chunks_and_agree_with_their_whole_prefill(name):
    model = _gemma()
    recorder = use_method(model, create(name))
    with torch.no_grad():
        whole = model(PROMPT).logits
    recorder.reset()
    torch.testing.assert_close(_chunked_logits(model, _cache(model, "dynamic")), whole, atol=1e-4, rtol=1e-4)
    assert recorder.method_calls == 3 and recorder.offset_fallback_calls == 0


def test_generate_with_a_cached_prefix_runs_the_method_on_the_new_suffix_only():
    """A request reusing a cached prefix (prefix caching): generate prefills only the suffix, through the
    method at the prefix's offset, and greedy tokens are those of the whole prompt."""
    model = _gemma()
    with torch.no_grad():
        reference = model.generate(PROMPT, max_new_tokens=6, do_sample=False)
        method = ShapeLog()
        recorder = use_method(model, method)
        cache = DynamicCache(config=model.config)
        model(PROMPT[:, :30], past_key_values=cache)  # the cached prefix
        method.calls.clear()
        recorder.reset()
        out = model.generate(PROMPT, past_key_values=cache, max_new_tokens=6, do_sample=False)
    assert out.tolist() == reference.tolist()
    assert method.calls == [(15, 45)]  # the full layer, once: the 15 new tokens after 30 cached ones
    assert recorder.method_calls == 1
    assert recorder.fallback_calls == 2 + 3 * 5  # the suffix's sliding layers; 5 decode steps, dense


def test_a_method_without_offsets_runs_its_chunks_dense_counted_and_said_once(caplog):
    model = _llama()
    with torch.no_grad():
        reference = model(PROMPT).logits
    method = WholeOnly()
    recorder = use_method(model, method)
    with caplog.at_level(logging.WARNING, logger="s2o_eval.integration.patching"):
        logits = _chunked_logits(model, _cache(model, "dynamic"))
    torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4)
    assert method.calls == [(16, 16)] * 2  # the first chunk is a whole prompt: the method's
    assert recorder.method_calls == 2 and recorder.offset_fallback_calls == 4
    # the chunks it could not take were computed whole: density counts them as dense
    assert recorder.stats.density == 1.0
    said = [r.getMessage() for r in caplog.records if "offset" in r.getMessage()]
    assert said == ["whole_only takes no queries at an offset: chunks after a cached prefix run dense attention"]


def test_the_harness_says_it_before_the_run_not_per_chunk(caplog):
    model = _llama()
    use_method(model, WholeOnly(), say_dense_chunks=False)
    with caplog.at_level(logging.WARNING, logger="s2o_eval.integration.patching"):
        _chunked_logits(model, _cache(model, "dynamic"))
    assert not [r for r in caplog.records if "offset" in r.getMessage()]


def test_a_padded_batch_chunk_keeps_the_models_own_attention():
    """Two prompts, the first left-padded: the chunk's mask is not plain causal, so it stays dense."""
    model = _llama()
    ids = torch.cat([PROMPT, PROMPT.roll(1, dims=1)])
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    method = ShapeLog()
    recorder = use_method(model, method)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(ids[:, :30], attention_mask=mask[:, :30], past_key_values=cache)
        method.calls.clear()
        recorder.reset()
        model(ids[:, 30:], attention_mask=mask, past_key_values=cache)
    assert method.calls == [] and recorder.fallback_calls == 2


def test_dense_methods_declare_offsets_and_a_new_method_does_not_by_default():
    assert all(create(name).takes_offset for name in ("eager", "sdpa", "fa2", "cudnn", "fa3"))
    assert AttentionMethod.takes_offset is False
