"""S2O kernels: the plan contract, the index-guided sparse attention executor (Triton) and its
plain-PyTorch references. Import name ``s2o_kernels`` (the folder is ``kernels/``)."""

from .executor import ExecConfig, ExecStats, sparse_attention
from .plan import Plan, dense_plan
from .oracle import token_oracle_plan
from .planner import s2o_plan, torch_s2o_plan
from .reference import check_stop_rule, torch_decide_chunks, torch_dense_causal, torch_sparse_attention

__all__ = [
    "ExecConfig",
    "ExecStats",
    "Plan",
    "check_stop_rule",
    "s2o_plan",
    "token_oracle_plan",
    "torch_decide_chunks",
    "torch_s2o_plan",
    "dense_plan",
    "sparse_attention",
    "torch_dense_causal",
    "torch_sparse_attention",
]
