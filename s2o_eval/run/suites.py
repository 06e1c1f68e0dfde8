"""From what the user types (``ruler:niah_single_1,vt``, ``longbench-v2``, ``--ctx 4k,32k``) to what
lm-eval runs (``s2o_ruler_niah_single_1`` at 4096 tokens), and the named selections (``--suite``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import s2o_tasks
from s2o_tasks.suite import Suite

from ..errors import UserError
from ..formatting import ctx_label
from ..reading import AnyOf, InputFile

SUITE_DIR = Path(__file__).resolve().parent.parent / "suites"  # package data: s2o_eval/suites/
#: a named selection (``--suite``): its tasks and lengths, and optionally a limit and a seed
NAMED_SUITE_SHAPE = {"tasks": [str], "ctx": AnyOf((str, [str])), "limit?": AnyOf((None, int)), "seed?": int}


# by their command-line names; every suite has the one shape of ``s2o_tasks.suite.Suite``
SUITES: dict[str, Suite] = {suite.name: suite for suite in s2o_tasks.suites()}


@dataclass(frozen=True)
class TaskRef:
    suite: Suite
    short: str

    @property
    def lm_eval_name(self) -> str:
        return self.suite.lm_eval_name(self.short)

    @property
    def label(self) -> str:
        return f"{self.suite.name}:{self.short}"


def short_task_name(lm_eval_name: str) -> str:
    """``s2o_ruler_niah_single_1`` -> ``niah_single_1``: the task's name after ``suite:`` on the command line."""
    for suite in sorted(SUITES.values(), key=lambda s: len(s.task_prefix), reverse=True):
        if lm_eval_name.startswith(suite.task_prefix):
            return lm_eval_name.removeprefix(suite.task_prefix)
    return lm_eval_name


def parse_tasks(specs: list[str]) -> list[TaskRef]:
    """``["ruler:niah_single_1,vt", "longbench-v2"]`` -> task references, in order, without repeats."""
    refs: list[TaskRef] = []
    for spec in specs:
        for part in filter(None, (p.strip() for p in spec.split(";"))):
            suite_name, _, names = part.partition(":")
            suite_name = suite_name.strip().lower().replace("_", "-")
            if suite_name not in SUITES:
                raise UserError(f"unknown task suite '{suite_name}': choose one of {', '.join(SUITES)} "
                                "(see `s2o-eval tasks`)")
            suite = SUITES[suite_name]
            known = [task.name for task in suite.tasks]
            wanted = [n.strip() for n in names.split(",") if n.strip()] if names else known
            for name in wanted:
                if name not in known:
                    raise UserError(f"unknown task '{name}' in {suite_name}: choose from {', '.join(known)}")
                ref = TaskRef(suite, name)
                if ref not in refs:
                    refs.append(ref)
    if not refs:
        raise UserError("no task given: pass --task ruler (or see `s2o-eval tasks`)")
    return refs


#: a shorter window leaves a task too little room for its prompt and its generation budget; the operator
#: commands (bench, capture) measure shorter lengths too
SHORTEST_TASK_CTX = 1024
SHORTEST_OPERATOR_CTX = 256


def parse_tokens(item: str) -> int:
    """``"8k"`` -> 8192 (k = 1024), ``"8192"`` -> 8192; ValueError when ``item`` is not a length."""
    item = item.strip().lower()
    try:
        return int(float(item[:-1]) * 1024) if item.endswith("k") else int(item)
    except OverflowError:  # "infk"
        raise ValueError(f"not a length: {item}") from None


def parse_ctx(text: str | list[str], shortest: int = SHORTEST_TASK_CTX) -> list[int]:
    """``"4k,32k"`` or ``["4k", "32768"]`` -> ``[4096, 32768]`` (k = 1024); each at least ``shortest``."""
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in str(t).split(",")]
    lengths = []
    for item in filter(None, (i.strip().lower() for i in items)):
        try:
            value = parse_tokens(item)
        except ValueError:
            raise UserError(f"--ctx '{item}' is not a length: write e.g. 4k,32k or 4096") from None
        if value < shortest:
            raise UserError(f"--ctx {item} is too short: use at least {ctx_label(shortest).lower()}")
        lengths.append(value)
    if not lengths:
        raise UserError("--ctx is empty: write e.g. --ctx 4k,32k")
    return sorted(set(lengths))


def load_named_suite(name: str) -> dict:
    """A named selection (``--suite nightly``): tasks, ctx, limit, seed, from ``s2o_eval/suites/<name>.json``."""
    path = SUITE_DIR / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in SUITE_DIR.glob("*.json"))
        raise UserError(f"unknown suite '{name}': choose one of {', '.join(known) or '(none defined)'}")
    return InputFile(path, "reinstall s2o-eval").read_json(NAMED_SUITE_SHAPE, "a named suite")
