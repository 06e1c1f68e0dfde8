"""Write the 13 task YAMLs and the group YAML of RULER from ``SUITE`` (in ``__init__.py``).

    python tasks/s2o_tasks/ruler/make_yamls.py          # rewrites the YAMLs beside this file

Each task YAML includes ``_s2o_ruler_base.yaml`` (which names the one dataset hook) and adds only what
differs: name, the task the hook builds, generation budget and, for QA, the scorer.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE = "_s2o_ruler_base.yaml"
HEADER = "# Written by make_yamls.py: edit that script (or _s2o_ruler_base.yaml), not this file.\n"


def task_yaml(suite, task) -> str:
    lines = [HEADER.rstrip("\n"),
             f"include: {BASE}",
             f"task: {suite.lm_eval_name(task.name)}",
             "dataset_kwargs:",
             f"  task: {task.name}"]
    if task.metric == "string_match_part":
        lines.append("process_results: !function s2o_tasks.ruler.scoring.process_results_part")
    lines += ["generation_kwargs:",
              "  do_sample: false",
              "  temperature: 0.0",
              f"  max_gen_toks: {task.gen_budget}",
              "  until: []"]
    return "\n".join(lines) + "\n"


def group_yaml(group: str, names: list[str]) -> str:
    tasks = "\n".join(f"  - {name}" for name in names)
    # RULER's headline number is the plain mean over its 13 tasks
    return (f"{HEADER}group: {group}\ntask:\n{tasks}\naggregate_metric_list:\n  - metric: score\n"
            f"    aggregation: mean\n    weight_by_size: false\nmetadata:\n  version: 1.0\n")


def expected_files() -> dict[str, str]:
    """File name -> content of every generated YAML."""
    from s2o_tasks.ruler import GROUP, SUITE

    files = {f"{t.name}.yaml": task_yaml(SUITE, t) for t in SUITE.tasks}
    files[f"{GROUP}.yaml"] = group_yaml(GROUP, [SUITE.lm_eval_name(t.name) for t in SUITE.tasks])
    return files


def main() -> None:
    for name, text in expected_files().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {name}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))  # from a checkout: the folder that holds s2o_tasks
    main()
