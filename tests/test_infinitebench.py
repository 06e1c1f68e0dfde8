"""InfiniteBench adapter: data loading, official prompts and golds, middle truncation that keeps the
instruction and the question, every official scorer branch, rougeLsum, missing data, and the YAMLs
through lm-eval's TaskManager. CPU, offline, a BPE tokenizer trained here."""

from __future__ import annotations

import json
import random
import sys

import pytest

from tiny_models import make_tokenizer

pytest.importorskip("lm_eval")

from s2o_tasks import TASKS_DIR  # noqa: E402
from s2o_tasks.common import DataUnavailable, load_tokenizer  # noqa: E402
from s2o_tasks.infinitebench import GROUP, SUITE  # noqa: E402
from s2o_tasks.infinitebench import make_yamls  # noqa: E402
from s2o_tasks.infinitebench.dataset import load_dataset  # noqa: E402
from s2o_tasks.infinitebench.prompting import GPT4_TEMPLATES, OPEN_TEMPLATES, golds, prompt_parts  # noqa: E402
from s2o_tasks.infinitebench.scoring import (  # noqa: E402
    process_results, rouge_lsum, rouge_lsum_fallback, score, score_code_debug, score_code_run, score_first_int,
    score_kv_retrieval, score_longbook_choice, score_longdialogue, score_math_calc, score_math_find,
    score_qa_chn, score_qa_eng, score_summary)

CORPUS = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
          "Read the book and answer the question. The pass key is 71432. func_12 return value "
          "alpha beta gamma delta epsilon the grass is green the sky is blue 0123456789 阅读以下书籍然后回答问题 ")
#: tokens each task generates, every task of the suite (math_calc too)
BUDGETS = {task.name: task.gen_budget for task in (*SUITE.tasks, *SUITE.optional_tasks)}
NOISE = " ".join(f"The grass is green {j}." for j in range(400))
ZH_NOISE = "胡一刀和马行空在雪山上。" * 200

# One record per split, in the published schema (id, context, input, answer, options); numbers
# where the published files have numbers.
RECORDS = {
    "passkey": {"context": NOISE + " The pass key is 71432. " + NOISE, "input": "What is the pass key?",
                "answer": ["71432"], "options": []},
    "number_string": {"context": NOISE + " The sequence of digits is 3000077442. " + NOISE,
                      "input": "What is the sequence of number?", "answer": ["3000077442"], "options": []},
    "kv_retrieval": {"context": json.dumps({f"k-{j}": f"v-{j}" for j in range(600)}),
                     "input": 'Key: "k-7"\nThe value associated with the specified key is: ',
                     "answer": ["v-7"], "options": []},
    "longbook_sum_eng": {"context": NOISE, "input": "", "answer": ["A book about green grass."], "options": []},
    "longbook_choice_eng": {"context": NOISE, "input": "Where did it snow?",
                            "answer": ["Snowfield"],
                            "options": ["Walking Georgie", "Hall Farm", "Snowfield", "Sea"]},
    "longbook_qa_eng": {"context": NOISE, "input": "Where is the grass?", "answer": ["the old farm", "farm"],
                        "options": []},
    "longbook_qa_chn": {"context": ZH_NOISE, "input": "谁在雪山上？", "answer": ["胡一刀"], "options": []},
    "longdialogue_qa_eng": {"context": NOISE + "\nACE: $$MASK$$ is here.\n" + NOISE,
                            "input": "", "answer": ["ACE", "ACE ROTHSTEIN"], "options": []},
    "math_find": {"context": str([random.Random(0).randint(0, 99) for _ in range(1500)]),
                  "input": ("You should answer with only one number, no other words. "
                            "The largest number of the list is: "),
                  "answer": [88], "options": []},
    "math_calc": {"context": " + ".join(str(j % 10) for j in range(1500)), "input": "",
                  "answer": [[0, 1, 3, 6]], "options": []},
    "code_run": {"context": "\n".join(f"def func_{j}(x):\n    return x + {j}" for j in range(300)),
                 "input": "Please give me the exact value of func_12(-3)", "answer": [9], "options": []},
    "code_debug": {"context": "\n".join(f"def fn_{j}(x):\n    return x * {j}" for j in range(300)),
                   "input": "", "answer": ["Configer._set_option"],
                   "options": ["fn_a", "fn_b", "Configer._set_option", "fn_d"]},
}


def train_tokenizer(path):
    """A byte-level BPE trained on this suite's prompt words, saved as a Hugging Face tokenizer dir."""
    make_tokenizer(path, vocab_size=300, text=CORPUS, repeats=5)
    return str(path)


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "infinitebench").mkdir()
    for split, rec in RECORDS.items():
        second = dict(rec, id=1, context="Short context.")  # fits any budget
        lines = [json.dumps(dict(rec, id=0), ensure_ascii=False), "", json.dumps(second, ensure_ascii=False)]
        (root / "infinitebench" / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(root)


def meta(tok_path, data_dir, **over):
    base = {"tokenizer": tok_path, "max_seq_length": 2000, "num_samples": None, "seed": 0,
            "data_dir": data_dir, "template_overhead": 10}
    base.update(over)
    return base


# -- task table -----------------------------------------------------------------------------------

def test_task_table_follows_the_official_code():
    assert BUDGETS == {"passkey": 6, "number_string": 12, "kv_retrieval": 50, "longbook_sum_eng": 1200,
                          "longbook_choice_eng": 40, "longbook_qa_eng": 40, "longbook_qa_chn": 40,
                          "longdialogue_qa_eng": 40, "math_find": 3, "math_calc": 30000, "code_run": 5,
                          "code_debug": 5}
    assert [t.name for t in SUITE.optional_tasks] == ["math_calc"]
    assert SUITE.lm_eval_name("passkey") == "s2o_infinitebench_passkey" and GROUP == "s2o_infinitebench"


def test_generated_yamls_are_up_to_date():
    folder = TASKS_DIR / "infinitebench"
    for name, text in make_yamls.render().items():
        assert (folder / name).read_text(encoding="utf-8") == text, f"rerun make_yamls.py ({name})"


# -- prompts and golds ----------------------------------------------------------------------------

def test_prompt_parts_rebuild_the_official_prompts():
    fields = {"input": "Q?", "question": "Q?"}
    for split in ("passkey", "number_string", "kv_retrieval", "longbook_sum_eng", "longbook_qa_eng",
                  "longbook_qa_chn", "longdialogue_qa_eng", "math_calc"):
        rec = {"context": "CTX", "input": "Q?", "answer": ["x"], "options": []}
        for style, templates in (("open", OPEN_TEMPLATES), ("gpt4", GPT4_TEMPLATES)):
            head, body, tail = prompt_parts(rec, split, style)
            assert body == "CTX" and head + body + tail == templates[split].format(context="CTX", **fields)
    code_run = prompt_parts({"context": "CODE", "input": "the value of func_12(-3) please"}, "code_run")
    assert "".join(code_run) == ("There is a function called func_12 in the following Python code.\n\nCODE\n\n"
                                 "Please compute the exact value of func_12(-3). The value of func_12(-3) is")
    math_find = prompt_parts({"context": "[1, 2]", "input": "The largest number of the list is: "}, "math_find")
    assert "".join(math_find) == ("What is the largest number in the following list?\n\n[1, 2]\n\n"
                                  "The largest number of the list is: ")
    greedy = prompt_parts({"context": "", "input": "The median of the list of numbers is"}, "math_find")
    assert greedy[0].startswith("What is the median of the list in the following list?")
    choice = prompt_parts(dict(RECORDS["longbook_choice_eng"], context="BOOK"), "longbook_choice_eng")
    assert "".join(choice) == ("Read the book and answer the question.\n\nBOOK\n\nQuestion: Where did it snow?\n"
                               "A. Walking Georgie\nB. Hall Farm\nC. Snowfield\nD. Sea\n\n"
                               "The letter of the correct answer is")


def test_malformed_records_and_styles_are_refused():
    with pytest.raises(ValueError, match="func_N"):
        prompt_parts({"context": "", "input": "no call"}, "code_run")
    with pytest.raises(ValueError, match="The ... of"):
        prompt_parts({"context": "", "input": "largest?"}, "math_find")
    with pytest.raises(ValueError, match="4"):
        prompt_parts({"context": "", "input": "", "options": ["a"]}, "code_debug")
    with pytest.raises(ValueError, match="infinitebench_prompts"):
        prompt_parts({"context": "", "input": ""}, "passkey", "chatty")


def test_golds_follow_the_official_get_answer():
    opts = ["fn_a", "fn_b", "fn_c", "fn_d"]
    assert golds({"answer": ["fn_c"], "options": opts}, "code_debug") == ["fn_c", "C"]
    assert golds({"answer": "fn_b", "options": opts}, "longbook_choice_eng") == ["fn_b", "B"]
    assert golds({"answer": ["fn_d", "D"], "options": opts}, "code_debug") == ["fn_d", "D"]
    with pytest.raises(ValueError):
        golds({"answer": ["x", "y", "z"], "options": opts}, "code_debug")
    with pytest.raises(ValueError, match="not one of its options"):
        golds({"answer": ["fn_z"], "options": opts}, "code_debug")
    assert golds({"answer": [88]}, "math_find") == ["88"]
    assert golds({"answer": [45.5]}, "math_find") == ["45.5"]
    assert golds({"answer": [[1, 3, -1]]}, "math_calc") == ["1", "3", "-1"]
    assert golds({"answer": "71432"}, "passkey") == ["71432"]


# -- documents and truncation ---------------------------------------------------------------------

@pytest.mark.parametrize("split", sorted(BUDGETS))
def test_documents_fit_the_budget_keeping_instruction_and_question(split, tok_path, data_dir):
    tok = load_tokenizer(tok_path)
    window = BUDGETS[split] + 10 + 700  # a prompt budget of 700 tokens for every split
    docs = load_dataset(split, **meta(tok_path, data_dir, max_seq_length=window))["test"]
    assert docs["index"] == [0, 1] and docs["id"] == ["0", "1"] and docs["split"] == [split, split]
    long_doc, short_doc = docs[0], docs[1]
    head, context, tail = prompt_parts(dict(RECORDS[split]), split)
    assert long_doc["untruncated_length"] > 700 >= long_doc["length"] >= 698
    assert long_doc["length"] == len(tok(long_doc["input"])["input_ids"])
    assert long_doc["input"].startswith(head) and long_doc["input"].endswith(tail)
    assert long_doc["input"][len(head):len(head) + 10] == context[:10]  # the context's start is kept too
    assert long_doc["outputs"] == golds(RECORDS[split], split)
    assert short_doc["input"] == head + "Short context." + tail and short_doc["length"] <= 700


def test_a_cut_inside_a_character_still_fits_the_budget(tok_path):
    # byte-level BPE cuts a Chinese character in two; decoding yields U+FFFD, which re-encodes longer:
    # the official one-shot cut would overshoot, ours shrinks until the prompt fits
    from s2o_tasks.common import fit_prompt_middle

    tok = load_tokenizer(tok_path)
    head, context, tail = prompt_parts(dict(RECORDS["longbook_qa_chn"]), "longbook_qa_chn")
    ids, budget = tok(head + context + tail)["input_ids"], 700
    naive = tok.decode(ids[:budget // 2] + ids[-budget // 2:], skip_special_tokens=True)
    assert len(tok(naive)["input_ids"]) > budget
    text, tokens, _ = fit_prompt_middle(tok, head, context, tail, budget)
    assert tokens == len(tok(text)["input_ids"]) <= budget and text.startswith(head) and text.endswith(tail)


def test_num_samples_is_a_seeded_sample_keeping_file_positions(tok_path, tmp_path):
    (tmp_path / "infinitebench").mkdir()
    rows = [json.dumps({"id": j, "context": f"c{j}", "input": "What is the pass key?", "answer": [str(j)],
                        "options": []}) for j in range(9)]
    (tmp_path / "infinitebench" / "passkey.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    docs = load_dataset("passkey", **meta(tok_path, str(tmp_path), num_samples=4, seed=3))["test"]
    assert docs["index"] == sorted(random.Random(3).sample(range(9), 4))
    assert docs["outputs"] == [[str(i)] for i in docs["index"]]


def test_gpt4_prompt_style(tok_path, data_dir):
    doc = load_dataset("passkey", **meta(tok_path, data_dir), infinitebench_prompts="gpt4")["test"][1]
    assert doc["input"] == GPT4_TEMPLATES["passkey"].format(context="Short context.", input="What is the pass key?")


# -- scorers --------------------------------------------------------------------------------------

@pytest.mark.parametrize("pred, want", [
    ("The pass key is 71432.", 1.0), ("71432", 1.0), ("key 123 then 71432", 0.0), ("71433", 0.0),
    ("no digits", 0.0), ("", 0.0), ("714321", 0.0),
])
def test_first_integer(pred, want):
    assert score_first_int(pred, ["71432"]) == want


@pytest.mark.parametrize("pred, want", [
    ('The value is "v-7".', 1.0), ("{v-7}", 1.0), ("v-7\nv-8", 1.0), ("v-77", 0.0), ("value:v-7!", 1.0),
    ("V-7", 0.0), ("", 0.0),
])
def test_kv_retrieval_word_match(pred, want):
    assert score_kv_retrieval(pred, ["v-7"]) == want


@pytest.mark.parametrize("pred, gold, want", [
    ("The value of func_12(-3) is 9", "9", 1.0), ("is 9.", "9", 1.0), ("`-3`", "-3", 1.0),
    ("9 is the answer", "9", 0.0), ("is 10", "9", 0.0), ("", "9", 0.0), ("   \n ", "9", 0.0), ("9.5", "9", 0.0),
])
def test_code_run_last_word_as_int(pred, gold, want):
    assert score_code_run(pred, [gold]) == want


@pytest.mark.parametrize("pred, want", [
    ("C. Configer._set_option", 1.0), ("C: the third", 1.0), ("  C.", 1.0),
    ("The answer is: C", 1.0), ("The answer is: B", 0.0),
    ("The correct option is: Configer._set_option", 1.0),  # "is:" is met first; the name counts too
    ("answer is: - C", 1.0),  # '-' is dropped and spaces squeezed
    ("The answer is:", 0.0),  # ends with the prefix
    ("Option C", 0.0), ("I think it is C", 0.0), ("", 0.0),
])
def test_code_debug_letter_extraction(pred, want):
    assert score_code_debug(pred, ["Configer._set_option", "C"]) == want


@pytest.mark.parametrize("pred, want", [
    ("C. Snowfield", 1.0), ("A. Walking Georgie", 0.0), ("Snowfield", 1.0),
    ("The answer is C", 1.0), ("The answer is Snowfield.", 1.0), ("the answer: D", 0.0),
    ("the option is C", 1.0), ("the answer is", 0.0),
    ("I pick option C here", 1.0), ("I pick B or C", 0.0),
    ("so BC or C", 0.0),  # "BC" is a substring of "ABCD": the official search stops there
    ("nothing", 0.0), ("   ", 0.0),
])
def test_longbook_choice_letter_extraction_with_fallbacks(pred, want):
    assert score_longbook_choice(pred, ["Snowfield", "C"]) == want


@pytest.mark.parametrize("pred, gold, want", [
    ("The largest is 88", "88", 1.0), ("88.5", "88", 0.0), ("12.0", "12", 0.0), ("-88", "-88", 0.0),
    ("45.5 it is", "45.5", 1.0), ("45", "45.5", 0.0), ("45", "45.0", 1.0), ("none", "88", 0.0),
])
def test_math_find_first_number(pred, gold, want):
    assert score_math_find(pred, [gold]) == want


@pytest.mark.parametrize("pred, want", [
    ("Ace Rothstein", 1.0), ("ACE:", 1.0), ("Ace's", 1.0), ("Nicky Santoro", 0.0), ("Aces", 0.0), ("", 0.0),
])
def test_longdialogue_name_match(pred, want):
    assert score_longdialogue(pred, ["ACE", "ACE ROTHSTEIN"]) == want


def test_english_token_f1():
    # "old farm near river" vs "old farm": p = 2/4, r = 1 -> 2/3; vs "farm": p = 1/4, r = 1 -> 0.4
    assert score_qa_eng("The old farm, near the river.", ["the old farm", "farm"]) == pytest.approx(2 / 3)
    assert score_qa_eng("An Old-Farm", ["old farm"]) == 0.0  # punctuation joins the words
    assert score_qa_eng("nothing", ["farm"]) == 0.0
    assert score_qa_eng("", ["farm"]) == 0.0


def test_chinese_char_f1():
    # "胡一刀和马行空" (7 chars, punctuation dropped) vs "胡一刀": p = 3/7, r = 1 -> 0.6
    assert score_qa_chn("胡一刀和马行空。", ["胡一刀"]) == pytest.approx(0.6)
    assert score_qa_chn("胡 一 刀！", ["胡一刀", "马行空"]) == 1.0
    assert score_qa_chn("苗人凤", ["胡一刀"]) == 0.0


def test_math_calc_prefix_accuracy():
    gold = ["1", "3", "-1", "-11"]
    assert score_math_calc("[1, 3, -1, -11]", gold) == 0.5  # digits lose their sign, as officially
    assert score_math_calc("[1, 4]", gold) == 0.25
    assert score_math_calc("", gold) == 0.0
    assert score_math_calc("1 3 7 8 9 9", ["1", "3", "7"]) == 1.0


# -- rougeLsum ------------------------------------------------------------------------------------

def test_rouge_lsum_hand_computed():
    # one sentence each: LCS "the cat on the mat" = 5; p = 5/5, r = 5/6 -> F = 10/11
    assert rouge_lsum_fallback("The cat on the mat.", "the cat sat on the mat") == pytest.approx(10 / 11)
    assert rouge_lsum("The cat on the mat.", "the cat sat on the mat") == pytest.approx(10 / 11)
    # two reference sentences, one candidate: union LCS per reference sentence, no double counting
    # ref "a b c" / "c d"; cand "a c d": LCS(a b c) = a c, LCS(c d) = c d; c is counted once -> hits 3
    # p = 3/3, r = 3/5 -> F = 0.75
    assert rouge_lsum_fallback("a c d", "a b c\nc d") == pytest.approx(0.75)
    assert rouge_lsum_fallback("", "a b") == 0.0 and rouge_lsum_fallback("a b", "!!") == 0.0


def test_rouge_lsum_fallback_matches_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=False)
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "mat", "A", "dog", "ran", "far", "2024", "x-ray", ",", ".", "\n"]
    for _ in range(60):
        ref = " ".join(rng.choice(words) for _ in range(rng.randint(0, 30)))
        pred = " ".join(rng.choice(words) for _ in range(rng.randint(0, 30)))
        want = scorer.score(ref, pred)["rougeLsum"].fmeasure
        assert rouge_lsum_fallback(pred, ref) == pytest.approx(want, abs=1e-12), (pred, ref)


def test_rouge_lsum_without_the_package_uses_our_own(monkeypatch):
    monkeypatch.setitem(sys.modules, "rouge_score", None)  # makes `import rouge_score` fail
    assert rouge_lsum("The cat on the mat.", "the cat sat on the mat") == pytest.approx(10 / 11)
    assert score_summary("a c d", ["x y", "a b c\nc d"]) == pytest.approx(0.75)  # best reference


def test_process_results_dispatches_on_the_split():
    assert process_results({"split": "passkey", "outputs": ["71432"]}, ["71432."]) == {"score": 1.0}
    assert process_results({"split": "kv_retrieval", "outputs": ["v-7"]}, ["v-77"]) == {"score": 0.0}
    assert score("longbook_qa_eng", "farm", ["the farm"]) == 1.0


# -- data availability ----------------------------------------------------------------------------

def test_missing_data_offline_is_one_line_saying_where(tok_path, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataUnavailable) as err:
        load_dataset("kv_retrieval", **meta(tok_path, str(tmp_path)))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "infinitebench" / "kv_retrieval.jsonl") in message
    assert "huggingface.co/datasets/xinrongzhang2022/InfiniteBench" in message
    assert SUITE.data_status("kv_retrieval", str(tmp_path)) == message
    assert SUITE.data_status("s2o_infinitebench_kv_retrieval", None).endswith("<data-dir>/infinitebench/kv_retrieval.jsonl")


def test_data_status(data_dir, tmp_path, monkeypatch):
    assert SUITE.data_status("passkey", data_dir) is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr("s2o_tasks.common.hub_reachable", lambda: True)  # as if the hub answered
    assert SUITE.data_status("passkey", str(tmp_path)).startswith("from the hub")
    with pytest.raises(ValueError, match="unknown infinitebench task"):
        SUITE.data_status("longbook_qa_en", data_dir)  # stock lm-eval's name: not a real split


# -- lm-eval --------------------------------------------------------------------------------------

def test_yamls_load_through_lm_eval_and_build_requests(tok_path, data_dir):
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR / "infinitebench"), include_defaults=False,
                          metadata=meta(tok_path, data_dir, max_seq_length=31_000))
    names = [SUITE.lm_eval_name(s) for s in BUDGETS]
    assert set(names) | {GROUP} <= set(manager.all_tasks)
    loaded = manager.load([GROUP] + [SUITE.lm_eval_name(t.name) for t in SUITE.optional_tasks])
    assert sorted(loaded["group_map"][GROUP]) == sorted(SUITE.lm_eval_name(t.name) for t in SUITE.tasks)
    assert sorted(loaded["tasks"]) == sorted(names)
    for split in BUDGETS:
        task = loaded["tasks"][SUITE.lm_eval_name(split)]
        docs = list(task.eval_docs)
        assert len(docs) == 2 and all(d["length"] <= 31_000 - 10 - BUDGETS[split] for d in docs)
        task.build_all_requests(limit=1, rank=0, world_size=1)
        context, gen_kwargs = task.instances[0].args
        assert context == docs[0]["input"]
        assert gen_kwargs["max_gen_toks"] == BUDGETS[split] and gen_kwargs["until"] == []
        assert gen_kwargs["do_sample"] is False
        assert set(task.process_results(docs[0], ["x"])) == {"score"}


def test_missing_data_reaches_the_harness_as_data_unavailable(tok_path, tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manager = TaskManager(include_path=str(TASKS_DIR / "infinitebench"), include_defaults=False,
                          metadata=meta(tok_path, str(tmp_path)))
    with pytest.raises(Exception) as err:
        manager.load(["s2o_infinitebench_passkey"])
    chain, e = [], err.value
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(e, DataUnavailable) for e in chain)
