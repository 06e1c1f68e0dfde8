"""InfiniteBench (OpenBMB, 12 tasks of 100K+ tokens) under its official protocol.

Short names are the dataset's split names (after ``infinitebench:`` on the CLI); the lm-eval task
is ``"s2o_infinitebench_" + short name``.
"""

from __future__ import annotations

from s2o_tasks.suite import Suite, Task

GROUP = "s2o_infinitebench"

# gen_budget: tokens to generate per task, from the official ``src/eval_utils.py``
SUITE = Suite(
    name="infinitebench", package="infinitebench", task_prefix=f"{GROUP}_",
    # run by default, and the members of the lm-eval group ``s2o_infinitebench``
    tasks=(Task("passkey", 6), Task("number_string", 12), Task("kv_retrieval", 50),
           Task("longbook_sum_eng", 1200), Task("longbook_choice_eng", 40), Task("longbook_qa_eng", 40),
           Task("longbook_qa_chn", 40), Task("longdialogue_qa_eng", 40), Task("math_find", 3),
           Task("code_run", 5), Task("code_debug", 5)),
    # math_calc asks for 30000 generated tokens and nearly every model scores 0: left out of the group
    optional_tasks=(Task("math_calc", 30000),),
)
