"""LongBench-v2 adapter: data loading, official prompts, middle truncation, answer extraction, groups,
missing data, and the YAMLs through lm-eval's TaskManager. CPU, offline, a BPE tokenizer trained here."""

from __future__ import annotations

import json
import random

import pytest

from tiny_models import make_tokenizer

pytest.importorskip("lm_eval")

from s2o_tasks.common import TaskDoesNotFit, DataUnavailable, fit_prompt_middle, load_tokenizer  # noqa: E402
from s2o_tasks.longbench_v2 import SUITE  # noqa: E402
from s2o_tasks.longbench_v2.dataset import load_dataset, read_cot_responses  # noqa: E402
from s2o_tasks.longbench_v2.prompting import prompt_parts, template  # noqa: E402
from s2o_tasks.longbench_v2.scoring import extract_answer, process_results, score  # noqa: E402

from s2o_tasks import TASKS_DIR  # noqa: E402

CORPUS = ("Please read the following text and answer the question below. What is the correct answer to "
          "this question? Choices: The correct answer is (insert answer here). Let's think step by step. "
          "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda word0 word1 word2 word3 word4 ")
DIFFICULTY = ["easy", "hard"]
LENGTH = ["short", "medium", "long"]


def train_tokenizer(path):
    """A byte-level BPE trained on this suite's prompt words, saved as a Hugging Face tokenizer dir."""
    make_tokenizer(path, vocab_size=300, text=CORPUS, repeats=5)
    return str(path)


def record(i: int, words: int = 1500) -> dict:
    """One question with the published schema; its context numbers its words so cuts are visible."""
    return {
        "_id": f"q{i:03d}", "domain": "Single-Document QA", "sub_domain": "Academic",
        "difficulty": DIFFICULTY[i % 2], "length": LENGTH[i % 3],
        "question": f"  Which word comes first in text {i}?  ",
        "choice_A": " word0 ", "choice_B": "word1", "choice_C": "alpha", "choice_D": "beta",
        "answer": "ABCD"[i % 4],
        "context": "\n " + " ".join(f"w{j}" for j in range(words)) + " \n",
    }


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tok(tok_path):
    return load_tokenizer(tok_path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "longbench_v2").mkdir()
    records = [record(i) for i in range(7)]
    records[3]["context"] = "A short text."  # fits any budget: must come out unchanged
    (root / "longbench_v2" / "data.json").write_text(json.dumps(records), encoding="utf-8")
    return str(root)


def meta(tok_path, data_dir, **over):
    base = {"tokenizer": tok_path, "max_seq_length": 900, "num_samples": None, "seed": 0,
            "data_dir": data_dir, "template_overhead": 12}
    base.update(over)
    return base


# -- prompts --------------------------------------------------------------------------------------

def official_prompt(variant: str, rec: dict, cot: str = "") -> str:
    """The official pred.py construction: chained str.replace on the template."""
    return (template(variant).replace("$DOC$", rec["context"].strip()).replace("$Q$", rec["question"].strip())
            .replace("$C_A$", rec["choice_A"].strip()).replace("$C_B$", rec["choice_B"].strip())
            .replace("$C_C$", rec["choice_C"].strip()).replace("$C_D$", rec["choice_D"].strip())
            .replace("$COT$", cot))


@pytest.mark.parametrize("variant", ["0shot", "cot", "cot_ans"])
def test_prompt_parts_rebuild_the_official_prompt(variant):
    rec = record(1, words=20)
    head, body, tail = prompt_parts(rec, variant, cot="  I think step one.  " if variant == "cot_ans" else None)
    assert head + body + tail == official_prompt(variant, rec, cot="I think step one.")
    assert head.startswith("Please read the following text and answer the question")
    if variant == "0shot":
        assert tail.endswith('Format your response as follows: "The correct answer is (insert answer here)".')
    if variant == "cot":
        assert tail.endswith("Let’s think step by step:")
    if variant == "cot_ans":
        assert body == "I think step one." and "The text is too long and omitted here." in head


def test_answer_stage_without_chain_of_thought_is_refused():
    with pytest.raises(ValueError, match="chain of thought"):
        prompt_parts(record(0, 5), "cot_ans")


# -- truncation -----------------------------------------------------------------------------------

def test_truncation_keeps_the_official_first_and_last_halves(tok):
    head, body, tail = prompt_parts(record(0, 800), "0shot")
    budget = 301
    text, tokens, before = fit_prompt_middle(tok, head, body, tail, budget)
    ids = tok(head + body + tail)["input_ids"]
    assert before == len(ids) > budget
    # official: ids[:budget // 2] + ids[-budget // 2:] (Python's floor division), decoded together
    expected = tok.decode(ids[:budget // 2] + ids[-budget // 2:], skip_special_tokens=True)
    assert text == expected
    assert tokens == len(tok(text)["input_ids"]) and budget - 2 <= tokens <= budget
    assert text.startswith(head + "w0 w1 w2") and text.endswith(tail)
    assert " w400 " not in text  # the middle went


def test_a_prompt_that_fits_is_left_alone(tok):
    head, body, tail = prompt_parts(record(0, 10), "0shot")
    text, tokens, before = fit_prompt_middle(tok, head, body, tail, 10_000)
    assert text == head + body + tail and tokens == before == len(tok(text)["input_ids"])


def test_tiny_budget_moves_the_cut_into_the_document(tok):
    head, body, tail = prompt_parts(record(0, 800), "0shot")
    n_head, n_tail = len(tok(head)["input_ids"]), len(tok(tail, add_special_tokens=False)["input_ids"])
    budget = n_head + n_tail + 30  # budget // 2 is shorter than the question: official halves would cut it
    assert budget - budget // 2 < n_tail
    text, tokens, _ = fit_prompt_middle(tok, head, body, tail, budget)
    assert text.startswith(head) and text.endswith(tail) and tokens <= budget


def test_budget_smaller_than_instruction_and_question_is_an_error(tok):
    head, body, tail = prompt_parts(record(0, 800), "0shot")
    with pytest.raises(TaskDoesNotFit, match="raise --ctx"):
        fit_prompt_middle(tok, head, body, tail, 40)


# -- documents ------------------------------------------------------------------------------------

def test_documents_fields_groups_and_budget(tok_path, tok, data_dir):
    docs = load_dataset("longbench_v2", **meta(tok_path, data_dir))["test"]
    assert len(docs) == 7
    budget = 900 - 12 - SUITE.task("longbench_v2").gen_budget
    for i, doc in enumerate(docs):
        assert doc["index"] == i and doc["_id"] == f"q{i:03d}"
        assert doc["answer"] == "ABCD"[i % 4] and doc["outputs"] == [doc["answer"]]
        assert doc["groups"] == [DIFFICULTY[i % 2], LENGTH[i % 3]]
        assert doc["difficulty"] == DIFFICULTY[i % 2] and doc["length_class"] == LENGTH[i % 3]
        assert doc["length"] == len(tok(doc["input"])["input_ids"]) <= budget
        assert doc["input"].endswith('"The correct answer is (insert answer here)".')
        assert f"text {i}?" in doc["input"]
    assert docs[0]["length"] >= budget - 2 and docs[0]["untruncated_length"] > budget
    rec3 = record(3)
    rec3["context"] = "A short text."
    assert docs[3]["input"] == official_prompt("0shot", rec3)


def test_template_overhead_and_generation_budget_shrink_the_prompt(tok_path, data_dir):
    small = load_dataset("longbench_v2", **meta(tok_path, data_dir, template_overhead=112))["test"][0]["length"]
    assert small <= 900 - 112 - 128
    cot = load_dataset("longbench_v2_cot", **meta(tok_path, data_dir, max_seq_length=1500))["test"][0]
    assert cot["length"] <= 1500 - 12 - 1024 and cot["input"].endswith("Let’s think step by step:")


def test_num_samples_is_a_seeded_sample_keeping_dataset_indices(tok_path, data_dir):
    docs = load_dataset("longbench_v2", **meta(tok_path, data_dir, num_samples=3, seed=5))["test"]
    assert docs["index"] == sorted(random.Random(5).sample(range(7), 3))
    assert docs["_id"] == [f"q{i:03d}" for i in docs["index"]]


def test_missing_tokenizer_or_window_is_refused(tok_path, data_dir):
    with pytest.raises(ValueError, match="tokenizer"):
        load_dataset("longbench_v2", **meta(None, data_dir))
    with pytest.raises(ValueError, match="max_seq_length"):
        load_dataset("longbench_v2", **meta(tok_path, data_dir, max_seq_length=None))
    with pytest.raises(ValueError, match="no room"):
        load_dataset("longbench_v2", **meta(tok_path, data_dir, max_seq_length=100))


# -- answers and scores ---------------------------------------------------------------------------

@pytest.mark.parametrize("response, letter", [
    ("The correct answer is (B).", "B"),
    ("After reading, The correct answer is C because ...", "C"),
    ("**The correct answer is (D)**", "D"),
    ("The correct answer is **A**", "A"),
    ("The correct answer is A, no wait: The correct answer is (B)", "B"),  # the parenthesised form first
    ("the correct answer is (A)", None),  # case matters, as in the official regex
    ("The correct answer is (E)", None),
    ("I cannot tell.", None),
    ("", None),
])
def test_official_answer_extraction(response, letter):
    assert extract_answer(response) == letter


def test_score_and_per_group_metrics():
    doc = {"answer": "C", "groups": ["hard", "medium"]}
    assert process_results(doc, ["  The correct answer is (C)\n"]) == {
        "score": 1.0, "score_hard": 1.0, "score_medium": 1.0}
    assert process_results(doc, ["The correct answer is (A)"]) == {
        "score": 0.0, "score_hard": 0.0, "score_medium": 0.0}
    assert score("no answer", "A") == 0.0


# -- chain of thought -----------------------------------------------------------------------------

def test_answer_stage_reads_first_stage_samples(tok_path, data_dir, tmp_path):
    samples = tmp_path / "samples.jsonl"
    rows = [
        {"task": "s2o_longbench_v2_cot", "ctx": 900, "index": 2, "prediction": "Step: w0 first. "},
        {"task": "s2o_longbench_v2_cot", "ctx": 4096, "index": 4, "prediction": "other window"},
        {"task": "s2o_longbench_v2", "ctx": 900, "index": 5, "prediction": "other task"},
        {"doc": {"index": 6}, "filtered_resps": ["From lm-eval's log."], "doc_id": 0},
    ]
    samples.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert read_cot_responses(samples, 900) == {2: "Step: w0 first. ", 6: "From lm-eval's log."}
    docs = load_dataset("longbench_v2_cot_ans", **meta(tok_path, data_dir), cot_responses=str(samples))["test"]
    assert docs["index"] == [2, 6]
    assert docs[0]["cot"] == "Step: w0 first. "
    assert docs[0]["input"] == official_prompt("cot_ans", record(2), cot="Step: w0 first.")
    assert "Based on the above, what is the single, most likely answer choice?" in docs[0]["input"]


def test_answer_stage_without_samples_says_what_to_pass(tok_path, data_dir, tmp_path):
    with pytest.raises(DataUnavailable, match="cot_responses="):
        load_dataset("longbench_v2_cot_ans", **meta(tok_path, data_dir))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataUnavailable, match="run s2o_longbench_v2_cot first"):
        load_dataset("longbench_v2_cot_ans", **meta(tok_path, data_dir), cot_responses=str(empty))


# -- data availability ----------------------------------------------------------------------------

def test_missing_data_offline_is_one_line_saying_where(tok_path, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataUnavailable) as err:
        load_dataset("longbench_v2", **meta(tok_path, str(tmp_path)))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "longbench_v2" / "data.json") in message
    assert "huggingface.co/datasets/zai-org/LongBench-v2" in message
    assert SUITE.data_status("longbench_v2", str(tmp_path)) == message
    assert "<data-dir>/longbench_v2/data.json" in SUITE.data_status("longbench_v2", None)


def test_data_status(data_dir, tmp_path, monkeypatch):
    assert SUITE.data_status("longbench_v2", data_dir) is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr("s2o_tasks.common.hub_reachable", lambda: True)  # as if the hub answered
    assert SUITE.data_status("s2o_longbench_v2", str(tmp_path)).startswith("from the hub")


def test_task_names():
    assert [t.name for t in SUITE.tasks] == ["longbench_v2"]
    assert [t.name for t in SUITE.optional_tasks] == ["longbench_v2_cot", "longbench_v2_cot_ans"]
    assert [SUITE.lm_eval_name(t.name) for t in SUITE.tasks + SUITE.optional_tasks] == [
        "s2o_longbench_v2", "s2o_longbench_v2_cot", "s2o_longbench_v2_cot_ans"]


# -- lm-eval --------------------------------------------------------------------------------------

def test_yamls_load_through_lm_eval_and_build_requests(tok_path, data_dir, tmp_path):
    from lm_eval.tasks import TaskManager

    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task": "s2o_longbench_v2_cot", "ctx": 1500, "index": 1,
                                   "prediction": "Thinking."}) + "\n", encoding="utf-8")
    manager = TaskManager(include_path=str(TASKS_DIR / "longbench_v2"), include_defaults=False,
                          metadata=meta(tok_path, data_dir, max_seq_length=1500, num_samples=2, seed=1,
                                        cot_responses=str(samples)))
    names = [SUITE.lm_eval_name(t.name) for t in SUITE.tasks + SUITE.optional_tasks]
    assert set(names) <= set(manager.all_tasks)
    tasks = manager.load(names)["tasks"]
    wanted = {"s2o_longbench_v2": 128, "s2o_longbench_v2_cot": 1024, "s2o_longbench_v2_cot_ans": 128}
    for name, max_gen in wanted.items():
        task = tasks[name]
        docs = list(task.eval_docs)
        assert docs and all(d["length"] <= 1500 - 12 - max_gen for d in docs)
        task.build_all_requests(limit=1, rank=0, world_size=1)
        context, gen_kwargs = task.instances[0].args
        assert context == docs[0]["input"]
        assert gen_kwargs["max_gen_toks"] == max_gen and gen_kwargs["until"] == []
        assert gen_kwargs["do_sample"] is False
        metrics = task.process_results(docs[0], [f"The correct answer is ({docs[0]['answer']})"])
        assert metrics["score"] == 1.0 and set(metrics) == {"score"} | {f"score_{g}" for g in docs[0]["groups"]}
    assert [d["index"] for d in tasks["s2o_longbench_v2_cot_ans"].eval_docs] == [1]
