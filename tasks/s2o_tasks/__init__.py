"""lm-eval task adapters for RULER, LongBench-v2 and InfiniteBench (installed as ``s2o_tasks``).

lm-eval finds the YAMLs by path (``TaskManager(include_path=TASKS_DIR)``); the Python behind them
imports this package by name, so it works both from a checkout and from an installed wheel. Every
suite has the shape of ``suite.Suite``; ``suites()`` lists them.
"""

from __future__ import annotations

import importlib
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
SUITE_PACKAGES = ("ruler", "longbench_v2", "infinitebench")


def suites() -> list:
    """Every suite (``suite.Suite``), in the order the CLI lists them."""
    return [importlib.import_module(f"{__name__}.{package}").SUITE for package in SUITE_PACKAGES]
