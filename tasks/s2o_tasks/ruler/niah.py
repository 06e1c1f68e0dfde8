"""Needle in a haystack, RULER's eight variants (``scripts/data/synthetic/niah.py``, ``synthetic.yaml``).

Needles read "One of the special magic {numbers} for {key} is: {value}." and hide in one of three
haystacks: the noise sentences repeated (one line each), Paul Graham's essays (needles go between
sentences at depths drawn from 40 evenly spaced ones), or a haystack made of other needles.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from s2o_tasks.ruler import templates
from s2o_tasks.ruler.data import essay_words, random_key_word, split_sentences
from s2o_tasks.ruler.sample import DEPTHS, Builder, DocKey, Sample, random_number, random_uuid

NOISE_SENTENCES = split_sentences(templates.NOISE)


@dataclass(frozen=True)
class NiahConfig:
    haystack: str          # "noise", "essay" or "needle"
    key_type: str          # "words", "numbers" or "uuids"
    value_type: str
    num_keys: int = 1      # needles with different keys (the others are distractors)
    num_values: int = 1    # values per key
    num_queries: int = 1   # keys asked for


NIAH_TASKS = {
    "niah_single_1": NiahConfig("noise", "words", "numbers"),
    "niah_single_2": NiahConfig("essay", "words", "numbers"),
    "niah_single_3": NiahConfig("essay", "words", "uuids"),
    "niah_multikey_1": NiahConfig("essay", "words", "numbers", num_keys=4),
    "niah_multikey_2": NiahConfig("needle", "words", "numbers"),
    "niah_multikey_3": NiahConfig("needle", "uuids", "uuids"),
    "niah_multivalue": NiahConfig("essay", "words", "numbers", num_values=4),
    "niah_multiquery": NiahConfig("essay", "words", "numbers", num_queries=4),
}


def random_of(kind: str, rng: random.Random) -> str:
    if kind == "numbers":
        return random_number(rng)
    if kind == "words":
        return random_key_word(rng)
    if kind == "uuids":
        return random_uuid(rng)
    raise ValueError(f"unknown needle type {kind!r}")


def noise_lines(units: int) -> list[str]:
    """``units`` noise sentences as lines of the full noise text; the last line may be partial.

    RULER's unit is the whole five-sentence line; counting sentences lets short prompts land as
    close to their budget as long ones.
    """
    full, rest = divmod(units, len(NOISE_SENTENCES))
    lines = [templates.NOISE] * full
    if rest:
        lines.append(" ".join(NOISE_SENTENCES[:rest]))
    return lines


def insert_at_random_lines(rng: random.Random, lines: list[str], needles: list[str]) -> list[str]:
    """RULER's line haystacks: each needle goes before a distinct, randomly drawn line."""
    lines = list(lines)
    positions = sorted(rng.sample(range(len(lines)), len(needles)), reverse=True)
    for position, needle in zip(positions, needles):
        lines.insert(position, needle)
    return lines


def insert_between_sentences(rng: random.Random, text: str, needles: list[str]) -> str:
    """RULER's essay haystack: needles go between sentences, at randomly drawn depths."""
    sentences = split_sentences(text)
    cuts = [0] + sorted(int(len(sentences) * depth / 100) for depth in rng.sample(DEPTHS, len(needles)))
    cuts.append(len(sentences))
    pieces = []
    for i in range(1, len(cuts)):
        pieces.append(" ".join(sentences[cuts[i - 1]:cuts[i]]))
        if i - 1 < len(needles):
            pieces.append(needles[i - 1])
    return " ".join(pieces)


def essay_text(words: tuple[str, ...], units: int) -> str:
    """The first ``units`` words of the essays, starting over when they run out (as RULER does)."""
    full, rest = divmod(units, len(words))
    return " ".join(words * full + words[:rest])


class NiahBuilder(Builder):
    """Units: noise sentences, essay words, or distractor needles."""

    def __init__(self, config: NiahConfig, data_dir: str | None = None):
        self.config = config
        self.words = essay_words(data_dir) if config.haystack == "essay" else ()
        self.num_keys = max(config.num_keys, config.num_queries)
        self.num_needles = self.num_keys * config.num_values

    def min_units(self, key: DocKey) -> int:
        if self.config.haystack == "noise":
            return len(NOISE_SENTENCES) * self.num_needles
        return self.num_needles

    def build(self, key: DocKey, units: int) -> Sample:
        cfg, rng = self.config, key.rng()
        keys, values, needles = [], [], []
        for _ in range(self.num_keys):
            keys.append(random_of(cfg.key_type, rng))
            values.append([])
            for _ in range(cfg.num_values):
                values[-1].append(random_of(cfg.value_type, rng))
                needles.append(templates.NEEDLE.format(type_needle_v=cfg.value_type, key=keys[-1],
                                                       value=values[-1][-1]))
        rng.shuffle(needles)

        if cfg.haystack == "essay":
            context = insert_between_sentences(rng, essay_text(self.words, units), needles)
        else:
            if cfg.haystack == "noise":
                lines = noise_lines(units)
            else:
                lines = [templates.NEEDLE.format(type_needle_v=cfg.value_type, key=random_of(cfg.key_type, rng),
                                                 value=random_of(cfg.value_type, rng)) for _ in range(units)]
            context = "\n".join(insert_at_random_lines(rng, lines, needles))

        asked = rng.sample(range(self.num_keys), cfg.num_queries)
        queries = [keys[i] for i in asked]
        answers = [v for i in asked for v in values[i]]
        query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]

        if cfg.num_queries * cfg.num_values == 1:
            template, prefix, value_word = templates.NIAH_SINGLE, templates.NIAH_SINGLE_PREFIX, cfg.value_type[:-1]
        else:
            template, prefix, value_word = templates.NIAH_MULTI, templates.NIAH_MULTI_PREFIX, cfg.value_type
        return Sample(input=template.format(type_needle_v=value_word, context=context, query=query),
                      outputs=answers,
                      gen_prefix=prefix.format(type_needle_v=value_word, query=query))
