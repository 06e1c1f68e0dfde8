"""RULER's QA tasks (``scripts/data/synthetic/qa.py``): a dev-set question among many documents.

qa_1 asks SQuAD v2 dev questions (answerable ones, in file order); its documents are the question's
paragraph, then other paragraphs of the same article, then random paragraphs. qa_2 asks HotpotQA dev
(distractor) questions with all ten of their paragraphs, then random others. Documents are shuffled
and numbered "Document i:". When every document is used and more room is left, they repeat.
"""

from __future__ import annotations

import random

from s2o_tasks.ruler import templates
from s2o_tasks.ruler.data import QASet, load_qa
from s2o_tasks.ruler.fit import Fit
from s2o_tasks.ruler.sample import Builder, DocKey, Sample, TokenCounter

# How many further documents, past the fitted ones, may be tried to fill the last gap.
FILL_CANDIDATES = 2000


class _DocumentStream:
    """One question's documents in the order they are added: its own, its article's, then random ones."""

    def __init__(self, qa: QASet, question: dict, rng: random.Random):
        self.rng, self.n_docs = rng, len(qa.docs)
        more = list(question["more_context"])
        rng.shuffle(more)
        self.order: list[int] = list(question["context"]) + more
        self._taken = set(self.order)

    def take(self, count: int) -> list[int]:
        while len(self.order) < count:
            if len(self._taken) < self.n_docs:
                doc = self.rng.randrange(self.n_docs)
                if doc not in self._taken:
                    self._taken.add(doc)
                    self.order.append(doc)
            else:
                # every document used: start over with all of them in a new order (RULER repeats too)
                again = list(range(self.n_docs))
                self.rng.shuffle(again)
                self.order.extend(again)
        return self.order[:count]


class QABuilder(Builder):
    """Units: documents."""

    def __init__(self, dataset: str, data_dir: str | None, count: TokenCounter):
        self.qa = load_qa(dataset, data_dir)  # never without a question and documents
        self.count = count
        self._streams: dict[str, _DocumentStream] = {}
        self._doc_tokens: dict[int, int] = {}

    def question(self, key: DocKey) -> dict:
        return self.qa.questions[key.index % len(self.qa.questions)]

    def min_units(self, key: DocKey) -> int:
        return len(self.question(key)["context"])

    def _stream(self, key: DocKey) -> _DocumentStream:
        if key.seed_text not in self._streams:
            self._streams = {key.seed_text: _DocumentStream(self.qa, self.question(key), key.rng("/docs"))}
        return self._streams[key.seed_text]

    def _sample(self, key: DocKey, doc_ids: list[int]) -> Sample:
        doc_ids = list(doc_ids)
        key.rng("/order").shuffle(doc_ids)
        context = "\n\n".join(templates.QA_DOCUMENT.format(i=i + 1, document=self.qa.docs[d])
                              for i, d in enumerate(doc_ids))
        question = self.question(key)
        return Sample(input=templates.QA.format(context=context, query=question["query"]),
                      outputs=list(question["outputs"]), gen_prefix=templates.QA_PREFIX)

    def build(self, key: DocKey, units: int) -> Sample:
        return self._sample(key, self._stream(key).take(units))

    def refine(self, key: DocKey, fit: Fit[Sample], target: int, tolerance: float) -> Fit[Sample]:
        """Whole documents leave a gap of up to one document: fill it with later ones that fit."""
        floor = target - int(tolerance * target)
        stream = self._stream(key)
        chosen = stream.take(fit.units)
        sample, tokens = fit.sample, fit.tokens
        label = self.count(templates.QA_DOCUMENT.format(i=len(chosen) + 1, document="") + "\n\n")
        for position in range(fit.units, fit.units + FILL_CANDIDATES):
            if tokens >= floor:
                break
            doc = stream.take(position + 1)[position]
            if doc not in self._doc_tokens:
                self._doc_tokens[doc] = self.count(self.qa.docs[doc])
            if self._doc_tokens[doc] + label > target - tokens:
                continue
            trial = self._sample(key, chosen + [doc])
            trial_tokens = self.count(trial.prompt)
            if trial_tokens <= target:
                chosen, sample, tokens = chosen + [doc], trial, trial_tokens
        return Fit(len(chosen), sample, tokens, fit.tokens_per_unit)
