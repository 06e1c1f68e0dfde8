"""Every suite has the one shape of ``s2o_tasks.suite.Suite``: task records (name, generation budget), a
data status, and one dataset hook that every task YAML of the suite calls with its task's name."""

import importlib

import pytest

import s2o_tasks
from s2o_tasks.suite import Suite, Task

SUITES = s2o_tasks.suites()


def _yaml_config(lm_eval_name: str) -> dict:
    """The task's YAML as lm-eval reads it (includes merged, ``!function`` hooks imported), data untouched."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    manager = TaskManager(include_path=str(s2o_tasks.TASKS_DIR), include_defaults=False)
    return load_yaml(manager.task_index[lm_eval_name].yaml_path)


def test_the_three_suites_by_their_command_line_names():
    assert [suite.name for suite in SUITES] == ["ruler", "longbench-v2", "infinitebench"]
    for suite in SUITES:
        assert isinstance(suite, Suite) and suite.tasks
        tasks = [*suite.tasks, *suite.optional_tasks]
        assert all(isinstance(task, Task) and task.gen_budget > 0 for task in tasks)
        assert len({task.name for task in tasks}) == len(tasks)


@pytest.mark.parametrize("suite, task", [(s, t) for s in SUITES for t in (*s.tasks, *s.optional_tasks)],
                         ids=lambda x: x.name)
def test_every_task_yaml_calls_its_suites_one_hook_with_its_budget(suite, task):
    config = _yaml_config(suite.lm_eval_name(task.name))
    module, _, function = suite.dataset_hook.rpartition(".")
    assert config["custom_dataset"] is getattr(importlib.import_module(module), function)
    assert config["dataset_kwargs"] == {"task": task.name}
    assert config["generation_kwargs"]["max_gen_toks"] == task.gen_budget


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_data_status_offline_is_none_or_one_line(suite, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for task in suite.tasks:
        status = suite.data_status(task.name, str(tmp_path))
        assert status is None or (status and "\n" not in status)
        assert suite.data_status(suite.lm_eval_name(task.name), str(tmp_path)) == status
    with pytest.raises(ValueError, match=f"unknown {suite.name} task"):
        suite.data_status("no_such_task", str(tmp_path))
