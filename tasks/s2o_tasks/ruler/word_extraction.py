"""RULER's aggregation tasks: common words (cwe) and frequent words (fwe) extraction.

cwe (``common_words_extraction.py``): a numbered list where 10 words appear 30 times and every
other word 3 times (6 and 1 below 4096 tokens), after one worked example; name the 10 common words.
fwe (``freq_words_extraction.py``): made-up 6-letter words drawn from a Zipf law (alpha 2), the most
frequent being the noise "..."; name the three most frequent real ones.
"""

from __future__ import annotations

import random
import string

from s2o_tasks.ruler import templates
from s2o_tasks.ruler.data import common_words, extended_common_words
from s2o_tasks.ruler.fit import Fit, fit_units
from s2o_tasks.ruler.sample import Builder, DocKey, Sample, TokenCounter
from s2o_tasks.ruler.templates import join_prompt

SHORT_CONTEXT = 4096  # below this many tokens, RULER's cwe uses fewer repeats


def numbered(words: list[str]) -> str:
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))


class CommonWordsBuilder(Builder):
    """Units: distinct words in the list."""

    def __init__(self, seed: int, max_seq_length: int, data_dir: str | None = None,
                 freq_cw: int = 30, freq_ucw: int = 3, num_cw: int = 10):
        self.seed, self.data_dir, self.num_cw = seed, data_dir, num_cw
        self.words = common_words(seed)
        if max_seq_length < SHORT_CONTEXT:
            self.example_shape, self.repeats = (20, 3, 1), (6, 1)
        else:
            self.example_shape, self.repeats = (40, 10, 3), (freq_cw, freq_ucw)
        self._extended: tuple[str, ...] | None = None

    def min_units(self, key: DocKey) -> int:
        return self.num_cw

    @property
    def max_units(self) -> int:
        return len(self._pool(10**9))

    def _pool(self, num_words: int) -> tuple[str, ...]:
        if num_words <= len(self.words):
            return self.words
        if self._extended is None:
            self._extended = extended_common_words(self.seed, self.data_dir)
        return self._extended

    def _word_list(self, rng: random.Random, num_words: int, common_repeats: int,
                   uncommon_repeats: int) -> tuple[str, list[str]]:
        chosen = rng.sample(self._pool(num_words), num_words)
        common, uncommon = chosen[:self.num_cw], chosen[self.num_cw:]
        listed = common * common_repeats + uncommon * uncommon_repeats
        rng.shuffle(listed)
        return numbered(listed), common

    def build(self, key: DocKey, units: int) -> Sample:
        rng = key.rng()
        example_context, example_answer = self._word_list(rng, *self.example_shape)
        example = (join_prompt(templates.CWE.format(context=example_context), templates.CWE_PREFIX)
                   + " " + numbered(example_answer))
        context, answer = self._word_list(rng, units, *self.repeats)
        return Sample(input=example + "\n" + templates.CWE.format(context=context), outputs=answer,
                      gen_prefix=templates.CWE_PREFIX)


def zeta(alpha: float, terms: int = 1000) -> float:
    """Riemann zeta for alpha > 1: a partial sum plus its Euler-Maclaurin tail."""
    if alpha <= 1:
        raise ValueError("the Zipf exponent alpha must be above 1")
    n = float(terms)
    head = sum(k ** -alpha for k in range(1, terms))
    return head + n ** (1 - alpha) / (alpha - 1) + n ** -alpha / 2 + alpha * n ** (-alpha - 1) / 12


class FrequentWordsBuilder(Builder):
    """Units: the word total the Zipf counts are scaled to."""

    def __init__(self, target_tokens: int, count: TokenCounter, alpha: float = 2.0, coded_wordlen: int = 6):
        # RULER: a vocabulary of (prompt budget) / 50 made-up words
        self.vocab_size = target_tokens // 50
        if self.vocab_size < 4:
            raise ValueError("fwe needs a budget of at least 200 prompt tokens")
        self.alpha, self.wordlen, self._count = alpha, coded_wordlen, count
        self.weights = [k ** -alpha / zeta(alpha) for k in range(1, self.vocab_size + 1)]

    def min_units(self, key: DocKey) -> int:
        return 30

    def _measure(self, sample: Sample) -> int:
        return self._count(sample.prompt)

    def _vocab(self, rng: random.Random) -> list[str]:
        vocab: set[str] = set()
        while len(vocab) < self.vocab_size:
            vocab.add("".join(rng.choices(string.ascii_lowercase, k=self.wordlen)))
        ordered = sorted(vocab)
        rng.shuffle(ordered)
        ordered[0] = "..."  # the most frequent "word" is noise
        return ordered

    def build(self, key: DocKey, units: int, extra_noise: int = 0) -> Sample:
        rng = key.rng()
        vocab = self._vocab(rng)
        counts = [int(units * weight) for weight in self.weights]
        counts[0] += extra_noise
        coded = [w for w, c in zip(vocab, counts) for _ in range(c)]
        rng.shuffle(coded)
        return Sample(input=templates.FWE.format(context=" ".join(coded)), outputs=vocab[1:4],
                      gen_prefix=templates.FWE_PREFIX)

    def refine(self, key: DocKey, fit: Fit[Sample], target: int, tolerance: float) -> Fit[Sample]:
        """Fill the last gap with a few more noise words "...".

        Zipf counts are floors, so one more word in the total can add several words at once (ranks
        whose thresholds coincide); a handful of extra "..." (the noise, not an answer) closes the gap.
        """
        if fit.tokens >= target - int(tolerance * target):
            return fit
        padded = fit_units(lambda extra: self.build(key, fit.units, extra), self._measure, target,
                           guess=0, tokens_per_unit=1.0, min_units=0, tolerance=tolerance)
        return Fit(fit.units, padded.sample, padded.tokens, fit.tokens_per_unit)
