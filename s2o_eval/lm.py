"""The one lm-eval model class: HFLM with a swapped prefill attention and per-sample prefill timing.

It overrides only the call paths (as lm-eval's ``hf_steered`` does): requests run one at a time
(batch 1: padding would distort timing), and the prompt's forward pass is timed with device events.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from .methods import AttentionMethod
from .patching import PrefillRecorder, use_method


@dataclass
class PrefillMeasurement:
    prompt_tokens: int
    prompt_sha: str
    prefill_ms: float
    density: float | None
    peak_mem_mb: float | None


class _PrefillTimer:
    """Times the first forward call (the prefill) of one ``generate``: device events on CUDA."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.cuda = next(model.parameters()).is_cuda
        self.calls = 0
        self.start = self.end = None
        self._t0 = self._t1 = None

    def _pre(self, module, args, kwargs):
        self.calls += 1
        if self.calls == 1:
            if self.cuda:
                self.start = torch.cuda.Event(enable_timing=True)
                self.end = torch.cuda.Event(enable_timing=True)
                self.start.record()
            else:
                self._t0 = time.perf_counter()

    def _post(self, module, args, kwargs, output):
        if self.calls == 1:
            if self.cuda:
                self.end.record()
            else:
                self._t1 = time.perf_counter()

    def __enter__(self):
        self._handles = [self.model.register_forward_pre_hook(self._pre, with_kwargs=True),
                         self.model.register_forward_hook(self._post, with_kwargs=True)]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()

    def elapsed_ms(self) -> float:
        if self.cuda:
            self.end.synchronize()
            return self.start.elapsed_time(self.end)
        return (self._t1 - self._t0) * 1000.0


@register_model("s2o-hf")
class S2OEvalLM(HFLM):
    """HFLM whose full-causal prefill attention runs ``method``; keeps one measurement per request."""

    def __init__(self, pretrained, method: AttentionMethod, **kwargs):
        kwargs.setdefault("batch_size", 1)
        super().__init__(pretrained=pretrained, **kwargs)
        self.method = method
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

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
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
