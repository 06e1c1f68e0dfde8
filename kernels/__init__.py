"""S2O kernels: the plan contract, the index-guided sparse attention executor (Triton) and its
plain-PyTorch references. Import name ``s2o_kernels`` (the folder is ``kernels/``)."""

from .executor import ExecConfig, ExecStats, sparse_attention, triton_sparse_attention
from .plan import Plan, dense_plan
from .reference import check_stop_rule, torch_dense_causal, torch_sparse_attention

__all__ = [
    "ExecConfig",
    "ExecStats",
    "Plan",
    "check_stop_rule",
    "dense_plan",
    "sparse_attention",
    "torch_dense_causal",
    "torch_sparse_attention",
    "triton_sparse_attention",
]
