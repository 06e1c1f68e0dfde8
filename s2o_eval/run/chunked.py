"""Chunked prefill (``--prefill-chunk``): a prompt's forward pass in chunks of C tokens into a KV cache, as
vLLM and SGLang prefill long prompts; each chunk's queries attend to the cache of the earlier chunks and
to themselves (the patching layer hands the method that chunk at its offset).

The lm-eval model (``lm``) prefills every chunk but the last here, timing each; ``generate`` then runs
the last chunk as its own first forward pass (it feeds only the tokens the cache lacks) and decodes from
the cache as in a whole-prompt run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..errors import UserError
from .suites import parse_tokens

SHORTEST_CHUNK = 16  # below this a "chunk" is a handful of decode steps, not a prefill


def parse_prefill_chunk(text: str | int | None) -> int | None:
    """``"8k"`` -> 8192 (k = 1024), ``"8192"`` -> 8192; ``"0"`` or None -> None (the whole prompt at once)."""
    if text is None:
        return None
    try:
        value = parse_tokens(str(text))
    except ValueError:
        raise UserError(f"--prefill-chunk '{text}' is not a length: write e.g. 8k or 8192 (0: the whole "
                        "prompt at once)") from None
    if value == 0:
        return None
    if value < SHORTEST_CHUNK:
        raise UserError(f"--prefill-chunk {text} is too short: use at least {SHORTEST_CHUNK} tokens, or 0 for "
                        "the whole prompt at once")
    return value


def cache_argument(model: torch.nn.Module) -> str:
    """The keyword a KV cache goes by in ``model``'s forward and generate: ``cache`` from transformers 5.2x
    on (``past_key_values`` then warns on every call), ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def chunk_bounds(n_tokens: int, chunk: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each chunk of ``n_tokens``: all ``chunk`` long but the last."""
    return [(start, min(start + chunk, n_tokens)) for start in range(0, n_tokens, chunk)]


class DeviceClock:
    """Times one stretch of device work: CUDA events on a GPU (read once the work is done), else
    perf_counter (the CPU's work is done when its call returns)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self._start = self._end = None

    def start(self) -> None:
        if self.cuda:
            self._start, self._end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self._end.record()
        else:
            self._end = time.perf_counter()

    def elapsed_ms(self) -> float:
        if self.cuda:
            self._end.synchronize()
            return self._start.elapsed_time(self._end)
        return (self._end - self._start) * 1000.0


@dataclass
class PairCount:
    """QK pairs the method computed and the causal pairs, read from its running stats before a chunk,
    so that the chunk's own density is the difference."""

    computed: float
    causal: float

    @classmethod
    def of(cls, stats) -> PairCount:
        return cls(stats.computed, stats.causal)

    def density_since(self, stats) -> float | None:
        """The density of what ``stats`` gained since this count; None where the method ran nothing
        (a one-token last chunk is a decode step)."""
        causal = stats.causal - self.causal
        return (stats.computed - self.computed) / causal if causal else None


@dataclass
class ChunkMeasurement:
    ms: float
    density: float | None


def prefill_chunks(model: torch.nn.Module, ids: torch.Tensor, chunk: int, cache, stats) -> list[ChunkMeasurement]:
    """Every chunk of ``ids`` (batch 1) but the last, forwarded into ``cache`` in turn, each timed and its
    density read from the method's running ``stats``. The last chunk is left for ``generate``."""
    clocks, densities = [], []
    with torch.no_grad():
        for start, end in chunk_bounds(ids.shape[1], chunk)[:-1]:
            before = PairCount.of(stats)
            clock = DeviceClock(ids.is_cuda)
            clock.start()
            # logits_to_keep=1: a chunk's other logits are never read (Gemma's 262K vocabulary x 8K tokens)
            model(input_ids=ids[:, start:end], use_cache=True, logits_to_keep=1, **{cache_argument(model): cache})
            clock.stop()
            clocks.append(clock)
            densities.append(before.density_since(stats))
    return [ChunkMeasurement(clock.elapsed_ms(), density) for clock, density in zip(clocks, densities)]
