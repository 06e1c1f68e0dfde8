"""Making RULER documents: one task, one length, in the model's own tokens.

Every prompt (with RULER's answer prefix) is sized so that it, the chat template's tokens and the
task's generation budget fit ``max_seq_length``, landing within ``TOLERANCE`` below that budget
whenever the haystack's units are fine enough (see README.md).
"""

from __future__ import annotations

import logging
from typing import Iterable

from s2o_tasks.common import DataUnavailable, TaskDoesNotFit, count_tokens, prompt_budget, resolve_tokenizer
from s2o_tasks.ruler import SUITE
from s2o_tasks.ruler.data import data_status
from s2o_tasks.ruler.fit import BudgetTooSmall, Fit, fit_units
from s2o_tasks.ruler.niah import NIAH_TASKS, NiahBuilder
from s2o_tasks.ruler.qa import QABuilder
from s2o_tasks.ruler.sample import Builder, DocKey, Sample, TokenCounter
from s2o_tasks.ruler.variable_tracking import VariableTrackingBuilder
from s2o_tasks.ruler.word_extraction import CommonWordsBuilder, FrequentWordsBuilder

log = logging.getLogger(__name__)

TOLERANCE = 0.005       # accepted shortfall below the budget, as a fraction of it
DEFAULT_SAMPLES = 500   # RULER's samples per task and length
DEFAULT_SEED = 42       # RULER's default seed
PROBE_STEP = 64         # units between the two probe builds that estimate a unit's size


def make_builder(task: str, *, seed: int, max_seq_length: int, target: int, data_dir: str | None,
                 count: TokenCounter) -> Builder:
    """The builder of one RULER task (short name) at one length."""
    if task in NIAH_TASKS:
        return NiahBuilder(NIAH_TASKS[task], data_dir)
    if task == "vt":
        return VariableTrackingBuilder(seed, count)
    if task == "cwe":
        return CommonWordsBuilder(seed, max_seq_length, data_dir)
    if task == "fwe":
        return FrequentWordsBuilder(target, count)
    if task in ("qa_1", "qa_2"):
        return QABuilder("squad" if task == "qa_1" else "hotpotqa", data_dir, count)
    raise ValueError(f"unknown RULER task {task!r}")


def doc_key(task: str, seed: int, max_seq_length: int, index: int) -> DocKey:
    return DocKey(index, f"{seed}/{task}/{max_seq_length}/{index}")


def _calibrate(builder: Builder, key: DocKey, target: int, count: TokenCounter) -> Fit[Sample]:
    """Size one probe document from scratch; its size and slope start every real document's search."""
    small = builder.min_units(key)
    first, second = builder.build(key, small), builder.build(key, small + PROBE_STEP)
    first_tokens = count(first.prompt)
    chars_per_token = len(first.prompt) / max(first_tokens, 1)
    tokens_per_unit = max((len(second.prompt) - len(first.prompt)) / PROBE_STEP / chars_per_token, 1e-3)
    guess = small + int((target - first_tokens) / tokens_per_unit)
    return fit_units(lambda n: builder.build(key, n), lambda s: count(s.prompt), target, guess=guess,
                     tokens_per_unit=tokens_per_unit, min_units=small, max_units=builder.max_units,
                     tolerance=TOLERANCE)


def build_docs(task: str, *, tokenizer, max_seq_length: int, num_samples: int | None = DEFAULT_SAMPLES,
               seed: int = DEFAULT_SEED, data_dir: str | None = None, template_overhead: int = 0,
               indices: Iterable[int] | None = None) -> list[dict]:
    """RULER documents ``indices`` (default ``range(num_samples)``) of ``task`` at ``max_seq_length``.

    ``tokenizer`` is a hub id or local path (or a loaded tokenizer). Each document is
    ``{index, input, outputs, gen_prefix, length, max_length}``: ``length`` counts the prompt's
    tokens with its answer prefix, ``max_length`` is ``max_seq_length``.
    """
    spec = SUITE.task(task)
    hint = data_status(spec.name, data_dir)
    if hint is not None:
        raise DataUnavailable(hint)
    target = prompt_budget(max_seq_length, template_overhead, spec.gen_budget)
    tok = resolve_tokenizer(tokenizer)

    def count(text: str) -> int:
        return count_tokens(tok, text)

    builder = make_builder(spec.name, seed=seed, max_seq_length=max_seq_length, target=target,
                           data_dir=data_dir, count=count)
    if indices is None:
        indices = range(DEFAULT_SAMPLES if num_samples is None else int(num_samples))
    docs = []
    try:
        probe = _calibrate(builder, doc_key(spec.name, seed, max_seq_length, -1), target, count)
        for index in indices:
            key = doc_key(spec.name, seed, max_seq_length, index)
            fit = fit_units(lambda n: builder.build(key, n), lambda s: count(s.prompt), target,
                            guess=probe.units, tokens_per_unit=probe.tokens_per_unit,
                            min_units=builder.min_units(key), max_units=builder.max_units, tolerance=TOLERANCE)
            fit = builder.refine(key, fit, target, TOLERANCE)
            docs.append({"index": index, "input": fit.sample.input, "outputs": list(fit.sample.outputs),
                         "gen_prefix": fit.sample.gen_prefix, "length": fit.tokens,
                         "max_length": max_seq_length})
    except BudgetTooSmall as err:
        raise TaskDoesNotFit(f"{spec.name}: a window of {max_seq_length} tokens is too small for this "
                             f"tokenizer ({err}): raise --ctx") from None
    log.info("%s: %d documents at %d tokens", SUITE.lm_eval_name(spec.name), len(docs), max_seq_length)
    return docs
