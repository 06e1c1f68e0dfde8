"""LongBench-v2 (THUDM, 503 long-context multiple-choice questions) under its official protocol.

Short names (after ``longbench-v2:`` on the CLI); the lm-eval task is ``"s2o_" + short name``.
"""

from __future__ import annotations

from dataclasses import dataclass

from s2o_tasks.suite import Suite, Task


@dataclass(frozen=True)
class LongBenchTask(Task):
    variant: str  # its official prompt (``prompting.TEMPLATE_FILES``): 0shot, cot or cot_ans


# gen_budget, from the official pred.py: 128 for an answer, 1024 for a chain of thought
SUITE = Suite(
    name="longbench-v2", package="longbench_v2", task_prefix="s2o_",
    # run by default: the official 0-shot generation protocol
    tasks=(LongBenchTask("longbench_v2", 128, "0shot"),),
    # the chain-of-thought protocol, two stages: the CoT, then the answer prompt fed with that CoT
    optional_tasks=(LongBenchTask("longbench_v2_cot", 1024, "cot"),
                    LongBenchTask("longbench_v2_cot_ans", 128, "cot_ans")),
)
