"""lm-eval's ``custom_dataset`` hook of every LongBench-v2 task: the questions with their fitted prompts."""

from __future__ import annotations

from pathlib import Path

from s2o_tasks.common import (DataUnavailable, fit_prompt_middle, prompt_budget, resolve_tokenizer,
                              sample_indices)
from s2o_tasks.longbench_v2 import SUITE
from s2o_tasks.longbench_v2.data import locate, read_records
from s2o_tasks.longbench_v2.prompting import prompt_parts
from s2o_tasks.reading import InputFile

COT_TASK = "s2o_longbench_v2_cot"
# a line of a first-stage samples file: the harness's samples.jsonl, or lm-eval's log (with its doc)
_COT_ROW = {"task?": str, "ctx?": int, "doc?": {"index": int}}


def load_dataset(task: str, tokenizer=None, pretrained=None, max_seq_length=None, num_samples=None, seed=0,
                 data_dir=None, template_overhead=0, cot_responses=None, **_):
    """``{"test": Dataset}`` of the questions (all, or a seeded sample of ``num_samples``), each
    with its official prompt middle-truncated to ``max_seq_length - template_overhead - max_gen_toks``.

    ``task``: ``longbench_v2``, ``longbench_v2_cot`` (first CoT stage) or ``longbench_v2_cot_ans`` (answer
    stage, which needs ``cot_responses``: the samples file of an ``s2o_longbench_v2_cot`` run at the same
    window).
    """
    import datasets

    spec = SUITE.task(task)
    prompt_variant = spec.variant
    tok = resolve_tokenizer(tokenizer, pretrained)
    budget = prompt_budget(max_seq_length, template_overhead, spec.gen_budget)
    records = read_records(locate(data_dir))
    wanted = sample_indices(len(records), num_samples, seed)
    cots: dict[int, str] = {}
    if prompt_variant == "cot_ans":
        cots = read_cot_responses(cot_responses, max_seq_length)
        wanted = [i for i in wanted if i in cots]
        if not wanted:
            raise DataUnavailable(f"{cot_responses} holds no {COT_TASK} answer for these questions at "
                                  f"max_seq_length {max_seq_length}: run {COT_TASK} first")
    docs = [make_doc(i, records[i], prompt_variant, tok, budget, cots.get(i)) for i in wanted]
    return {"test": datasets.Dataset.from_list(docs)}


def make_doc(index: int, record: dict, variant: str, tok, budget: int, cot: str | None = None) -> dict:
    head, body, tail = prompt_parts(record, variant, cot)
    prompt, tokens, before = fit_prompt_middle(tok, head, body, tail, budget)
    return {
        "index": index,
        "_id": record["_id"],
        "domain": record["domain"],
        "sub_domain": record["sub_domain"],
        "difficulty": record["difficulty"],
        "length_class": record["length"],
        "question": record["question"],
        "answer": record["answer"],
        "outputs": [record["answer"]],
        "groups": [record["difficulty"], record["length"]],
        "cot": cot or "",
        "input": prompt,
        "length": tokens,
        "untruncated_length": before,
    }


def read_cot_responses(path, max_seq_length) -> dict[int, str]:
    """First-stage chains of thought by question index, from a JSONL file.

    Accepts the harness's ``samples.jsonl`` (``task``, ``ctx``, ``index`` or ``doc_index``,
    ``prediction``; lines of other tasks or windows are skipped) and lm-eval's ``--log_samples``
    files (``doc`` with its ``index``, ``filtered_resps``).
    """
    if not path:
        raise DataUnavailable("s2o_longbench_v2_cot_ans needs metadata cot_responses=<samples JSONL of an "
                              f"{COT_TASK} run at the same max_seq_length>")
    if not Path(path).exists():
        raise DataUnavailable(f"cot_responses file {path} does not exist: run {COT_TASK} first and pass its samples")
    cots: dict[int, str] = {}
    # a line of another shape (torn by a killed run, or not a sample) is skipped, as the harness does
    for row in InputFile(Path(path), f"pass the samples JSONL of an {COT_TASK} run").objects(_COT_ROW):
        if row.get("task", COT_TASK) != COT_TASK:
            continue
        if "ctx" in row and max_seq_length is not None and row["ctx"] != int(max_seq_length):
            continue
        if "doc" in row:  # lm-eval's own sample log
            index, response = row["doc"]["index"], row.get("filtered_resps", row.get("resps"))
            while isinstance(response, (list, tuple)):
                response = response[0] if response else ""
        else:
            index, response = row.get("doc_index", row.get("index")), row.get("prediction")
        if isinstance(index, int) and isinstance(response, str):
            cots[index] = response
    return cots
