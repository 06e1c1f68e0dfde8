"""S2O kernels: the plan contract, the S2O planner, the index-guided sparse attention executor
(Triton), the block-sparse peers' planners, and their plain-PyTorch twins.

Front doors: ``s2o_attention`` (plan + execute) and ``execute_plan`` (any plan). Names load lazily, so
``import s2o_kernels`` (and ``s2o_kernels.knobs``) costs nothing and needs no Triton until a kernel is
used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "s2o_attention": "attention",
    "execute_plan": "attention",
    "s2o_plan_any": "attention",
    "ExecConfig": "launch",
    "ExecStats": "launch",
    "forecast_density": "s2o.forecast",
    "Plan": "plan",
    "dense_plan": "plan",
    "s2o_plan": "s2o.planner",
    "sparse_attention": "executor",
    "token_oracle_plan": "oracle",
    "check_stop_rule": "twins",
    "exact_reference": "reference",
    "torch_decide_chunks": "twins",
    "torch_s2o_plan": "twins",
    "torch_sparse_attention": "twins",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 's2o_kernels' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
