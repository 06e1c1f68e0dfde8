"""Write the 13 task YAMLs and the group YAML of RULER from ``TASKS``.

    python tasks/s2o_tasks/ruler/make_yamls.py          # rewrites the YAMLs beside this file

Each task YAML includes ``_s2o_ruler_base.yaml`` and adds only what differs: name, document hook,
generation budget and, for QA, the scorer.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE = "_s2o_ruler_base.yaml"
HEADER = "# Written by make_yamls.py: edit that script (or _s2o_ruler_base.yaml), not this file.\n"


def _tasks_module():
    # The package may not be importable when this runs from a checkout; its __init__ stands alone.
    spec = importlib.util.spec_from_file_location("_ruler_tasks", HERE / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def task_yaml(task) -> str:
    lines = [HEADER.rstrip("\n"),
             f"include: {BASE}",
             f"task: {task.lm_eval_name}",
             f"custom_dataset: !function s2o_tasks.ruler.dataset.{task.name}"]
    if task.metric == "string_match_part":
        lines.append("process_results: !function s2o_tasks.ruler.scoring.process_results_part")
    lines += ["generation_kwargs:",
              "  do_sample: false",
              "  temperature: 0.0",
              f"  max_gen_toks: {task.gen_budget}",
              "  until: []"]
    return "\n".join(lines) + "\n"


def group_yaml(group: str, tasks) -> str:
    names = "\n".join(f"  - {t.lm_eval_name}" for t in tasks)
    # RULER's headline number is the plain mean over its 13 tasks
    return (f"{HEADER}group: {group}\ntask:\n{names}\naggregate_metric_list:\n  - metric: score\n"
            f"    aggregation: mean\n    weight_by_size: false\nmetadata:\n  version: 1.0\n")


def expected_files() -> dict[str, str]:
    """File name -> content of every generated YAML."""
    module = _tasks_module()
    files = {f"{t.name}.yaml": task_yaml(t) for t in module.TASKS}
    files[f"{module.GROUP}.yaml"] = group_yaml(module.GROUP, module.TASKS)
    return files


def main() -> None:
    for name, text in expected_files().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {name}")


if __name__ == "__main__":
    main()
