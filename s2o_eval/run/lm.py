"""The one lm-eval model class: HFLM with a swapped prefill attention and per-sample prefill timing.

It overrides only the call paths (as lm-eval's ``hf_steered`` does): requests run one at a time
(batch 1: padding would distort timing), and the prompt's forward pass is timed with device events.

Decoding is dense for every method, so it only costs wall-clock time. ``decode="static"`` writes the
prompt into a preallocated static cache, which lets transformers compile the decode step (CUDA
graphs on a GPU): a small model's decode is otherwise bound by Python and kernel launches. The
prefill itself always runs uncompiled, through the method, and is what gets timed.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from ..integration.patching import PrefillRecorder, use_method
from ..methods import AttentionMethod
from .decoding import resolve_decode


@dataclass
class PrefillMeasurement:
    prompt_tokens: int
    prompt_sha: str
    prefill_ms: float
    density: float | None
    peak_mem_mb: float | None


class _PrefillTimer:
    """Times the first forward call (the prefill) of one ``generate``: device events on CUDA.

    Its hooks remove themselves after that call, so that the decode steps run hook-free (a compiled
    decode would otherwise guard on the hooks' state and recompile every step)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.cuda = next(model.parameters()).is_cuda
        self.start = self.end = None
        self._t0 = self._t1 = None
        self._handles = []

    def _pre(self, module, args, kwargs):
        if self.cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self._t0 = time.perf_counter()

    def _post(self, module, args, kwargs, output):
        if self.cuda:
            self.end.record()
        else:
            self._t1 = time.perf_counter()
        self._remove()

    def _remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self):
        self._handles = [self.model.register_forward_pre_hook(self._pre, with_kwargs=True),
                         self.model.register_forward_hook(self._post, with_kwargs=True)]
        return self

    def __exit__(self, *exc):
        self._remove()

    def elapsed_ms(self) -> float:
        if self.cuda:
            self.end.synchronize()
            return self.start.elapsed_time(self.end)
        return (self._t1 - self._t0) * 1000.0


STATIC_CACHE_ROUNDING = 1024  # static caches come in lengths rounded up to this: one compiled shape per --ctx


@register_model("s2o-hf")
class S2OEvalLM(HFLM):
    """HFLM whose full-causal prefill attention runs ``method``; keeps one measurement per request."""

    def __init__(self, pretrained, method: AttentionMethod, decode: str = "dynamic", **kwargs):
        kwargs.setdefault("batch_size", 1)
        super().__init__(pretrained=pretrained, **kwargs)
        self.method = method
        self.decode = resolve_decode(decode, self.model.device)
        self._cache, self._cache_len = None, 0  # the static cache, reused while the length bucket holds
        if self.decode == "static":
            import torch._dynamo

            # one compiled decode per cache length (one per --ctx), plus the one recompile that turns
            # the sliding layers' position counter dynamic: well above the default limit of 8
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        self.recorder: PrefillRecorder = use_method(self.model, method)
        self.measurements: dict[tuple[str, int], PrefillMeasurement] = {}
        self._last: PrefillMeasurement | None = None

    def warm_up(self, n_tokens: int) -> None:
        """One untimed prefill of ``n_tokens`` random tokens, so that kernel compilation, autotuning
        and library handle creation never land in a sample's prefill time."""
        ids = torch.randint(0, self.model.config.get_text_config().vocab_size, (1, n_tokens),
                            generator=torch.Generator().manual_seed(0)).to(self.model.device)
        with torch.no_grad():
            self.model(input_ids=ids, use_cache=False, logits_to_keep=1)
        self.recorder.reset()

    def _static_cache(self, max_length: int):
        """An emptied static cache holding at least ``max_length`` tokens, reused across samples."""
        from transformers import StaticCache

        size = -(-max_length // STATIC_CACHE_ROUNDING) * STATIC_CACHE_ROUNDING
        if self._cache is not None and self._cache_len == size:
            self._cache.reset()
        else:
            self._cache = None  # free the old one first
            self._cache, self._cache_len = StaticCache(config=self.model.config, max_cache_len=size), size
        return self._cache

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        if self.decode == "static":
            generation_kwargs["past_key_values"] = self._static_cache(max_length)
        self.recorder.reset()
        cuda = context.is_cuda
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with _PrefillTimer(self.model) as timer:
            out = super()._model_generate(context, max_length, stop, **generation_kwargs)
        ids = context[0].tolist()
        self._last = PrefillMeasurement(
            prompt_tokens=len(ids),
            prompt_sha=hashlib.sha256(repr(ids).encode()).hexdigest()[:16],
            prefill_ms=timer.elapsed_ms(),
            density=self.recorder.stats.density if self.method.sparse else None,
            peak_mem_mb=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        )
        return out

    def generate_until(self, requests, disable_tqdm: bool = False):
        results = []
        for request in requests:  # one at a time: batch 1, and one measurement per request
            self._last = None
            results.extend(super().generate_until([request], disable_tqdm=True))
            if self._last is not None:
                self.measurements[(request.task_name, request.doc_id)] = self._last
        return results
