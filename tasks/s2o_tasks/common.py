"""What every suite's adapter shares: the tokenizer cache, middle truncation, the missing-data error.

Task metadata contract (passed by the harness through ``TaskManager(metadata=...)`` to every
``custom_dataset`` function as keyword arguments):

    tokenizer            str: hub id or local path that ``AutoTokenizer.from_pretrained`` loads
    max_seq_length       int: the total window (prompt + generation budget), in the model's tokens
    num_samples          int: how many documents to make (synthetic suites) or None for all
    seed                 int: documents are a pure function of (seed, task, max_seq_length, index)
    data_dir             str | None: local copies of the datasets' published files
    template_overhead    int: tokens the chat template adds around a prompt (0 when it is off)

and, from the task's YAML (``dataset_kwargs``), ``task``: the short name of the task to build (see ``suite``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path


class DataUnavailable(RuntimeError):
    """A task's data is neither on the hub (reachable) nor under ``--data-dir``.

    The message is one line that says which file to put where.
    """


class MalformedRecord(ValueError):
    """A dataset record that lacks what its task needs (four options, a function call to ask about); the
    message names the record, the reader adds the file (``DataUnavailable``)."""


class TaskDoesNotFit(ValueError):
    """The task cannot be built in this window (``--ctx`` too small for its instruction or its
    generation budget). The message is one line that says what to do."""


@functools.lru_cache(maxsize=8)
def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path)


def count_tokens(tokenizer, text: str) -> int:
    """Tokens of ``text`` as the model will see it, without special tokens."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def offline() -> bool:
    """True when the hub must not be asked: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, or the hub
    cannot be reached at all (checked once, in seconds, instead of a minute of retries per dataset)."""
    if any(os.environ.get(v, "0") not in ("", "0", "false", "False")
           for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    return not hub_reachable()


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (one connection attempt, cached per process)."""
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except Exception:  # no DNS, no route, firewall: the hub is out of reach
        return False


def data_path(data_dir: str | None, *parts: str) -> Path | None:
    """``data_dir/parts...`` if it exists, else None."""
    if not data_dir:
        return None
    p = Path(data_dir).joinpath(*parts)
    return p if p.exists() else None


def fit_prompt_middle(tokenizer, head: str, body: str, tail: str, budget: int) -> tuple[str, int, int]:
    """Middle-truncate the prompt ``head + body + tail`` to ``budget`` tokens, as LongBench-v2 and
    InfiniteBench do, never cutting into ``head`` (the instruction) or ``tail`` (the question).

    Their scripts encode the whole prompt with the tokenizer's special tokens, keep the first
    ``budget // 2`` and the last ``budget - budget // 2`` tokens and decode them together without
    special tokens; so do we. Only when a cut would fall inside ``head`` or ``tail`` (tiny budgets)
    does it move into ``body``. Returns ``(prompt, tokens, tokens_before)``, both counts with special
    tokens, and guarantees ``tokens <= budget`` (decoding and re-encoding can shift a token or two).
    """
    prompt = head + body + tail
    ids = tokenizer(prompt)["input_ids"]
    total = len(ids)
    if total <= budget:
        return prompt, total, total
    # Each protected part may share a merged token with the body: two tokens of slack cover that.
    need_head = len(tokenizer(head)["input_ids"]) + 2
    need_tail = count_tokens(tokenizer, tail) + 2
    if need_head + need_tail > budget:
        raise TaskDoesNotFit(f"the instruction and question alone take about {need_head + need_tail} tokens, "
                         f"more than the prompt budget of {budget}: raise --ctx")
    keep_head = max(budget // 2, need_head)
    keep_tail = max(budget - budget // 2, need_tail)
    if keep_head > budget // 2:
        keep_tail = budget - keep_head
    elif keep_tail > budget - budget // 2:
        keep_head = budget - keep_tail
    for _ in range(16):
        text = tokenizer.decode(ids[:keep_head] + ids[total - keep_tail:], skip_special_tokens=True)
        tokens = len(tokenizer(text)["input_ids"])
        if tokens <= budget:
            return text, tokens, total
        slack_head, slack_tail = keep_head - need_head, keep_tail - need_tail
        if slack_head <= 0 and slack_tail <= 0:
            break
        if slack_head >= slack_tail:
            keep_head -= min(tokens - budget, slack_head)
        else:
            keep_tail -= min(tokens - budget, slack_tail)
    raise TaskDoesNotFit(f"could not fit the prompt into {budget} tokens with this tokenizer: raise --ctx")


def prompt_budget(max_seq_length, template_overhead, max_gen_toks: int) -> int:
    """Tokens left for the prompt in a window of ``max_seq_length`` (prompt + template + generation)."""
    if max_seq_length is None:
        raise ValueError("the task needs metadata max_seq_length (the window in tokens, e.g. 131072)")
    budget = int(max_seq_length) - int(template_overhead or 0) - max_gen_toks
    if budget <= 0:
        raise TaskDoesNotFit(f"max_seq_length {max_seq_length} leaves no room for a prompt after "
                         f"{template_overhead or 0} template and {max_gen_toks} generation tokens: raise --ctx")
    return budget


def sample_indices(n_docs: int, num_samples, seed) -> list[int]:
    """Which documents of a real dataset a run uses: all, or a seeded sample of ``num_samples`` in order.

    A seeded draw rather than the first ``num_samples``, so that a limit spans the dataset's domains.
    """
    import random

    if num_samples is None or int(num_samples) >= n_docs:
        return list(range(n_docs))
    return sorted(random.Random(seed or 0).sample(range(n_docs), int(num_samples)))


def resolve_tokenizer(tokenizer=None, pretrained=None):
    """The metadata's tokenizer (hub id, local path or a loaded tokenizer), else lm-eval's ``pretrained``."""
    name = tokenizer or pretrained
    if name is None:
        raise ValueError("the task needs metadata tokenizer=<hub id or local path of the model's tokenizer>")
    return load_tokenizer(name) if isinstance(name, str) else name
