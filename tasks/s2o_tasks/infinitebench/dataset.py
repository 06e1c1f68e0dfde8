"""lm-eval's ``custom_dataset`` hook of every InfiniteBench task: one split's records with their fitted prompts."""

from __future__ import annotations

from s2o_tasks.common import (DataUnavailable, MalformedRecord, fit_prompt_middle, prompt_budget, resolve_tokenizer,
                              sample_indices)
from s2o_tasks.infinitebench import SUITE
from s2o_tasks.infinitebench.data import HUB_REPO, count_records, locate, read_records
from s2o_tasks.infinitebench.prompting import golds, prompt_parts


def load_dataset(task: str, tokenizer=None, pretrained=None, max_seq_length=None,
                 num_samples=None, seed=0, data_dir=None, template_overhead=0,
                 infinitebench_prompts: str = "open", **_):
    """``{"test": Dataset}`` of the records of the split ``task`` (all, or a seeded sample of ``num_samples``),
    each with its official prompt middle-truncated to ``max_seq_length - template_overhead - max_gen_toks``
    (the instruction before the context and the question after it are always kept)."""
    import datasets

    spec = SUITE.task(task)
    tok = resolve_tokenizer(tokenizer, pretrained)
    budget = prompt_budget(max_seq_length, template_overhead, spec.gen_budget)
    path = locate(spec.name, data_dir)
    indices = sample_indices(count_records(path), num_samples, seed)
    try:
        docs = [make_doc(i, record, spec.name, tok, budget, infinitebench_prompts)
                for i, record in zip(indices, read_records(path, indices))]
    except MalformedRecord as err:  # the record says which; the file is the reader's to name
        raise DataUnavailable(f"{path}: {err}: replace the file with the published one from "
                              f"https://huggingface.co/datasets/{HUB_REPO}") from None
    return {"test": datasets.Dataset.from_list(docs)}


def make_doc(index: int, record: dict, split: str, tok, budget: int, style: str = "open") -> dict:
    head, context, tail = prompt_parts(record, split, style)
    prompt, tokens, before = fit_prompt_middle(tok, head, context, tail, budget)
    return {
        "index": index,
        "id": str(record.get("id", index)),
        "split": split,
        "question": record.get("input", ""),
        "options": [str(o) for o in record.get("options") or []],
        "outputs": golds(record, split),
        "input": prompt,
        "length": tokens,
        "untruncated_length": before,
    }
