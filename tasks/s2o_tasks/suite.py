"""The shape every suite has, so that the harness (and lm-eval) treat the three alike.

A suite is a package ``s2o_tasks.<package>`` whose ``__init__`` holds ``SUITE`` (its tasks, each with its
name and generation budget) and stays light: the CLI imports it to list tasks. Besides it, two modules:

    data.py      ``data_status(task, data_dir)``: None when the task's data can be had here, else one line
                 saying which file to put where (never touches the network offline)
    dataset.py   ``load_dataset(task, **metadata)``: the one ``custom_dataset`` hook of every task YAML,
                 ``{"test": datasets.Dataset}``; the YAML names the task in ``dataset_kwargs``

Task YAMLs call their hooks by module (``!function s2o_tasks.<package>.dataset.load_dataset``): lm-eval
imports the package then, rather than loading a second copy of the file by its path.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """One task of a suite."""

    name: str         # its short name, after ``<suite>:`` on the command line
    gen_budget: int   # tokens it generates at most (its YAML's max_gen_toks): left free of the prompt


@dataclass(frozen=True)
class Suite:
    """One benchmark: its tasks and where their data and documents come from."""

    name: str                              # on the command line: ``ruler``, ``longbench-v2``
    package: str                           # ``s2o_tasks.<package>``, which holds data.py and dataset.py
    task_prefix: str                       # lm-eval's name of a task: task_prefix + its name
    tasks: tuple[Task, ...]                # what ``--task <suite>`` runs and the CLI offers
    optional_tasks: tuple[Task, ...] = ()  # lm-eval tasks of the suite that the CLI does not run

    @property
    def dataset_hook(self) -> str:
        """What the task YAMLs write after ``custom_dataset: !function``."""
        return f"s2o_tasks.{self.package}.dataset.load_dataset"

    def lm_eval_name(self, task: str) -> str:
        return self.task_prefix + task

    def task(self, name: str) -> Task:
        """The task by short name (``vt``) or lm-eval name (``s2o_ruler_vt``), optional ones included."""
        for task in (*self.tasks, *self.optional_tasks):
            if name in (task.name, self.lm_eval_name(task.name)):
                return task
        known = ", ".join(t.name for t in (*self.tasks, *self.optional_tasks))
        raise ValueError(f"unknown {self.name} task {name!r}; known: {known}")

    def data_status(self, task: str, data_dir: str | None) -> str | None:
        """None when ``task``'s data can be had here, else one line: which file to put where."""
        data = importlib.import_module(f"s2o_tasks.{self.package}.data")
        return data.data_status(self.task(task).name, data_dir)
