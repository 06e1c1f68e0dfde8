"""Variable tracking, RULER's multi-hop task (``scripts/data/synthetic/variable_tracking.py``).

One chain of four hops (``VAR B = VAR A``) hides among noise lines; the model lists every variable
that ends up holding the chain's value. As in RULER, the prompt opens with one worked example of
about 500 tokens whose variable names and value are redrawn for every sample.
"""

from __future__ import annotations

import random
import re
import string

from s2o_tasks.ruler import templates
from s2o_tasks.ruler.fit import fit_units
from s2o_tasks.ruler.niah import NOISE_SENTENCES, noise_lines
from s2o_tasks.ruler.sample import Builder, DocKey, Sample, TokenCounter

EXAMPLE_TOKENS = 500      # RULER sizes its worked example to this many tokens
EXAMPLE_VALUE = "12345"   # placeholder value of the worked example, replaced per sample


def random_names(rng: random.Random, count: int, length: int) -> list[str]:
    """``count`` distinct names of ``length`` uppercase letters (never "VAR", the statements' keyword)."""
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choices(string.ascii_uppercase, k=length))
        if name not in names and name != "VAR":
            names.append(name)
    return names


def make_chains(rng: random.Random, num_chains: int, num_hops: int, name_length: int,
                value: str | None = None) -> tuple[list[list[str]], list[list[str]]]:
    """Per chain, its variable names and its statements (``VAR A = 12345``, ``VAR B = VAR A `` ...)."""
    names = random_names(rng, num_chains * (num_hops + 1), name_length)
    chains_names, chains = [], []
    for c in range(num_chains):
        own = names[c * (num_hops + 1):(c + 1) * (num_hops + 1)]
        first_value = value if value is not None else str(rng.randint(10000, 99998))
        # RULER's statements keep a trailing space after ``VAR <name>``.
        chain = [f"VAR {own[0]} = {first_value}"] + [f"VAR {own[j + 1]} = VAR {own[j]} " for j in range(num_hops)]
        chains_names.append(own)
        chains.append(chain)
    return chains_names, chains


def chains_in_noise(rng: random.Random, units: int, chains: list[list[str]]) -> str:
    lines = noise_lines(units)
    for chain in chains:
        positions = sorted(rng.sample(range(len(lines)), len(chain)))
        for j, position in enumerate(positions):
            lines.insert(position + j, chain[j])
    return "\n".join(lines).replace(". \n", ".\n")


def _question(context: str, value: str, num_hops: int) -> Sample:
    return Sample(input=templates.VT.format(context=context, query=value), outputs=[],
                  gen_prefix=templates.VT_PREFIX.format(num_v=num_hops + 1, query=value))


class VariableTrackingBuilder(Builder):
    """Units: noise sentences."""

    def __init__(self, seed: int, count: TokenCounter, num_chains: int = 1, num_hops: int = 4):
        self.num_chains, self.num_hops = num_chains, num_hops
        self.example, self.example_names = self._worked_example(seed, count)

    def min_units(self, key: DocKey) -> int:
        return len(NOISE_SENTENCES) * (self.num_hops + 1)

    def _worked_example(self, seed: int, count: TokenCounter) -> tuple[str, list[str]]:
        """RULER's in-context example: short names, value 12345, noise up to 500 tokens, its answer."""
        hops = min(10, self.num_hops)

        def build(units: int) -> tuple[Sample, list[str]]:
            rng = random.Random(f"{seed}/vt/example")
            names, chains = make_chains(rng, self.num_chains, hops, 3, EXAMPLE_VALUE)
            return _question(chains_in_noise(rng, units, chains), EXAMPLE_VALUE, hops), names[0]

        fit = fit_units(build, lambda s: count(s[0].prompt), EXAMPLE_TOKENS, guess=60, tokens_per_unit=6,
                        min_units=len(NOISE_SENTENCES) * (hops + 1))
        sample, names = fit.sample
        return f"{sample.prompt} {' '.join(names)}\n", names

    def _fresh_example(self, rng: random.Random) -> str:
        """The worked example with new names and value, as RULER redraws them for each sample."""
        new_names = random_names(rng, len(self.example_names), 3)
        mapping = dict(zip(self.example_names, new_names))
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, self.example_names)) + r")\b")
        example = pattern.sub(lambda m: mapping[m.group(1)], self.example)
        return example.replace(EXAMPLE_VALUE, str(rng.randint(10000, 99998)))

    def build(self, key: DocKey, units: int) -> Sample:
        rng = key.rng()
        example = self._fresh_example(rng)
        names, chains = make_chains(rng, self.num_chains, self.num_hops, 5)
        value = chains[0][0].split("=")[-1].strip()
        question = _question(chains_in_noise(rng, units, chains), value, self.num_hops)
        return Sample(input=example + "\n" + question.input, outputs=names[0], gen_prefix=question.gen_prefix)
