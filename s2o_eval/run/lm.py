"""The one lm-eval model class: HFLM with a swapped prefill attention and per-sample prefill timing.

It overrides only the call paths (as lm-eval's ``hf_steered`` does): requests run one at a time
(batch 1: padding would distort timing), and the prompt's forward pass is timed with device events.
With ``prefill_chunk`` the prompt goes in chunks of that many tokens (``chunked``), each timed.

Decoding is dense for every method, so it only costs wall-clock time. ``decode="static"`` writes the
prompt into a preallocated static cache, which lets transformers compile the decode step (CUDA
graphs on a GPU): a small model's decode is otherwise bound by Python and kernel launches. The
prefill itself always runs uncompiled, through the method, and is what gets timed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from ..integration.patching import PrefillRecorder, use_method
from ..methods import AttentionMethod
from .chunked import DeviceClock, PairCount, cache_argument, chunk_bounds, prefill_chunks
from .decoding import resolve_decode


@dataclass
class PrefillMeasurement:
    prompt_tokens: int
    prompt_sha: str
    prefill_ms: float  # the whole prompt's: with chunks, their sum
    density: float | None
    peak_mem_mb: float | None
    chunk_ms: list[float] | None = None  # chunked prefill: each chunk's time, in order
    chunk_density: list[float | None] | None = None  # and its density (sparse methods)


class _PrefillTimer:
    """Times the first forward call (the prefill, or a chunked prefill's last chunk) of one ``generate``.

    Its hooks remove themselves after that call, so that the decode steps run hook-free (a compiled
    decode would otherwise guard on the hooks' state and recompile every step)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.clock = DeviceClock(next(model.parameters()).is_cuda)
        self._handles = []

    def _pre(self, module, args, kwargs):
        self.clock.start()

    def _post(self, module, args, kwargs, output):
        self.clock.stop()
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
        return self.clock.elapsed_ms()


STATIC_CACHE_ROUNDING = 1024  # static caches come in lengths rounded up to this: one compiled shape per --ctx


@register_model("s2o-hf")
class S2OEvalLM(HFLM):
    """HFLM whose full-causal prefill attention runs ``method``; keeps one measurement per request.
    ``prefill_chunk``: prefill every prompt in chunks of that many tokens (None: whole)."""

    def __init__(self, pretrained, method: AttentionMethod, decode: str = "dynamic",
                 prefill_chunk: int | None = None, **kwargs):
        kwargs.setdefault("batch_size", 1)
        super().__init__(pretrained=pretrained, **kwargs)
        self.method = method
        self.prefill_chunk = prefill_chunk
        self.decode = resolve_decode(decode, self.model.device)
        self._cache, self._cache_len = None, 0  # the static cache, reused while the length bucket holds
        if self.decode == "static":
            import torch._dynamo

            # one compiled decode per cache length (one per --ctx), plus the one recompile that turns
            # the sliding layers' position counter dynamic: well above the default limit of 8
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        # a method that takes no offset has its later chunks run dense: the run says so at its start
        self.recorder: PrefillRecorder = use_method(self.model, method, say_dense_chunks=False)
        self.measurements: dict[tuple[str, int], PrefillMeasurement] = {}
        self._last: PrefillMeasurement | None = None

    def warm_up(self, n_tokens: int) -> None:
        """One untimed prefill of ``n_tokens`` random tokens, so that kernel compilation, autotuning
        and library handle creation never land in a sample's prefill time."""
        ids = torch.randint(0, self.model.config.get_text_config().vocab_size, (1, n_tokens),
                            generator=torch.Generator().manual_seed(0)).to(self.model.device)
        with torch.no_grad():
            if self.prefill_chunk:  # the chunks' shapes, as the samples will run them
                from transformers import DynamicCache

                cache = DynamicCache(config=self.model.config)
                for start, end in chunk_bounds(n_tokens, self.prefill_chunk):
                    self.model(input_ids=ids[:, start:end], use_cache=True, logits_to_keep=1,
                               **{cache_argument(self.model): cache})
            else:
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
        cache_name = cache_argument(self.model)
        if self.decode == "static":
            generation_kwargs[cache_name] = self._static_cache(max_length)
        self.recorder.reset()
        cuda = context.is_cuda
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        chunks = []
        if self.prefill_chunk:
            from transformers import DynamicCache

            cache = generation_kwargs.setdefault(cache_name, DynamicCache(config=self.model.config))
            chunks = prefill_chunks(self.model, context, self.prefill_chunk, cache, self.recorder.stats)
        before_last = PairCount.of(self.recorder.stats)
        with _PrefillTimer(self.model) as timer:  # the whole prompt, or the last chunk: generate's first pass
            out = super()._model_generate(context, max_length, stop, **generation_kwargs)
        chunk_ms = [c.ms for c in chunks] + [timer.elapsed_ms()]
        sparse = self.method.sparse
        ids = context[0].tolist()
        self._last = PrefillMeasurement(
            prompt_tokens=len(ids),
            prompt_sha=hashlib.sha256(repr(ids).encode()).hexdigest()[:16],
            prefill_ms=sum(chunk_ms),
            density=self.recorder.stats.density if sparse else None,
            peak_mem_mb=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            chunk_ms=chunk_ms if self.prefill_chunk else None,
            chunk_density=([c.density for c in chunks] + [before_last.density_since(self.recorder.stats)]
                           if self.prefill_chunk and sparse else None),
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
