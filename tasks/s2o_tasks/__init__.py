"""lm-eval task adapters for RULER, LongBench-v2 and InfiniteBench (installed as ``s2o_tasks``).

lm-eval finds the YAMLs by path (``TaskManager(include_path=TASKS_DIR)``); the Python behind them
imports this package by name, so it works both from a checkout and from an installed wheel.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
