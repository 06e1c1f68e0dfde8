"""RULER (NVIDIA/RULER, arXiv:2404.06654) as lm-eval tasks ``s2o_ruler_<task>``, group ``s2o_ruler``.

Documents come from ``s2o_tasks.ruler.dataset`` (the YAMLs' ``custom_dataset``), scores from
``s2o_tasks.ruler.scoring``. This module stays light: the CLI imports it to list tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from s2o_tasks.suite import Suite, Task

GROUP = "s2o_ruler"


@dataclass(frozen=True)
class RulerTask(Task):
    metric: str       # "string_match_all" or "string_match_part"
    haystack: str     # "noise", "essay", "needle", "words", "squad" or "hotpotqa"


SUITE = Suite(name="ruler", package="ruler", task_prefix=f"{GROUP}_", tasks=(
    # gen_budget: RULER's tokens to generate
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
))
