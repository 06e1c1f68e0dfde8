"""What every RULER task builder makes and how it is asked for it."""

from __future__ import annotations

import random
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

from s2o_tasks.ruler.fit import Fit
from s2o_tasks.ruler.templates import join_prompt

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class DocKey:
    """Which document: its index, and the text that seeds its random draws.

    The seed text is ``"<seed>/<task>/<max_seq_length>/<index>"``, so a document depends on nothing
    else (not on how many documents are made, nor on the ones before it).
    """

    index: int
    seed_text: str

    def rng(self, salt: str = "") -> random.Random:
        """A fresh generator: every build of this document draws the same values."""
        return random.Random(f"{self.seed_text}{salt}")


@dataclass(frozen=True)
class Sample:
    input: str            # the prompt before the answer prefix
    outputs: list[str]    # gold strings
    gen_prefix: str       # RULER's answer prefix, which opens the model's answer

    @property
    def prompt(self) -> str:
        """The whole text the model reads (without a chat template)."""
        return join_prompt(self.input, self.gen_prefix)


class Builder(ABC):
    """One RULER task at one length: ``build(key, n)`` makes document ``key`` with ``n`` haystack units.

    The token count of the prompt must grow with ``n`` (roughly linearly), which is what the fitting
    relies on. ``refine`` may top a fitted sample up with finer pieces than whole units.
    """

    max_units: int | None = None

    def min_units(self, key: DocKey) -> int:
        return 1

    @abstractmethod
    def build(self, key: DocKey, units: int) -> Sample:
        """Document ``key`` with ``units`` haystack units."""

    def refine(self, key: DocKey, fit: Fit[Sample], target: int, tolerance: float) -> Fit[Sample]:
        return fit


# ------------------------------------------------------------------ RULER's random needle pieces


def random_number(rng: random.Random) -> str:
    """A 7-digit number."""
    return str(rng.randint(10**6, 10**7 - 1))


def random_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# Depths (percent of the haystack's sentences) at which essay needles may go: 40 evenly spaced.
DEPTHS = [round(i * 100 / 39) for i in range(40)]
