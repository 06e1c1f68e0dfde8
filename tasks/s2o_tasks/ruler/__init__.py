"""RULER (NVIDIA/RULER, arXiv:2404.06654) as lm-eval tasks ``s2o_ruler_<task>``, group ``s2o_ruler``.

Documents come from ``s2o_tasks.ruler.dataset`` (the YAMLs' ``custom_dataset``), scores from
``s2o_tasks.ruler.scoring``. This module stays light: the CLI imports it to list tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "s2o_ruler"


@dataclass(frozen=True)
class RulerTask:
    name: str         # short name, as on the CLI: "niah_single_1"
    gen_budget: int   # RULER's tokens to generate
    metric: str       # "string_match_all" or "string_match_part"
    haystack: str     # "noise", "essay", "needle", "words", "squad" or "hotpotqa"

    @property
    def lm_eval_name(self) -> str:
        return f"{GROUP}_{self.name}"


TASKS: list[RulerTask] = [
    RulerTask("niah_single_1", 128, "string_match_all", "noise"),
    RulerTask("niah_single_2", 128, "string_match_all", "essay"),
    RulerTask("niah_single_3", 128, "string_match_all", "essay"),
    RulerTask("niah_multikey_1", 128, "string_match_all", "essay"),
    RulerTask("niah_multikey_2", 128, "string_match_all", "needle"),
    RulerTask("niah_multikey_3", 128, "string_match_all", "needle"),
    RulerTask("niah_multivalue", 128, "string_match_all", "essay"),
    RulerTask("niah_multiquery", 128, "string_match_all", "essay"),
    RulerTask("vt", 30, "string_match_all", "noise"),
    RulerTask("cwe", 120, "string_match_all", "words"),
    RulerTask("fwe", 50, "string_match_all", "words"),
    RulerTask("qa_1", 32, "string_match_part", "squad"),
    RulerTask("qa_2", 32, "string_match_part", "hotpotqa"),
]
TASK_NAMES = [t.name for t in TASKS]


def task_info(task: str) -> RulerTask:
    """The task by short name (``vt``) or lm-eval name (``s2o_ruler_vt``)."""
    short = task.removeprefix(f"{GROUP}_")
    for t in TASKS:
        if t.name == short:
            return t
    raise ValueError(f"unknown RULER task {task!r}; known: {', '.join(TASK_NAMES)}")


def data_status(task: str, data_dir: str | None) -> str | None:
    """None when ``task``'s data can be had here (local files, installed package, or the hub when
    online), else one line saying which file to put where."""
    from s2o_tasks.ruler import data

    haystack = task_info(task).haystack
    if haystack == "essay":
        return None if data.essays_source(data_dir) else data.essays_hint(data_dir)
    if haystack in data.QA_DATASETS:
        return None if data.qa_source(haystack, data_dir) else data.qa_hint(haystack, data_dir)
    return None
