"""What a prefill attention method is, to the rest of the harness.

A method is a small dataclass: its fields are its hyper-parameters (typed, with defaults), and it
knows how to run causal prefill attention on ``q (batch, q_heads, seq_len, head_dim)`` and
``k, v (batch, kv_heads, kv_len, head_dim)`` (GQA: ``q_heads`` a multiple of ``kv_heads``). kv_len is
seq_len for a whole prompt; a chunk of a longer prompt (chunked prefill, or a suffix after a cached
prefix) has kv_len = P + seq_len: its queries are the last seq_len positions, causal aligned
bottom-right (query i sees keys [0, P + i]). A method that takes such chunks says so
(``takes_offset``); the patching layer runs the others' chunks dense. Methods never see models: the
patching layer hands them tensors.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch


@dataclass
class AttentionStats:
    """What a sparse method reports about the prefill passes it ran (summed over layers and calls).

    ``computed`` and ``causal`` count QK pairs; density = computed / causal. ``pv_computed`` counts the
    P.V pairs, fewer than the QK pairs only where a method (skip-softmax) computes scores it then drops.
    """

    computed: float = 0.0
    causal: float = 0.0
    calls: int = 0
    per_head: list[float] = field(default_factory=list)  # density per (layer call, q head), in call order
    pv_computed: float = 0.0

    def add(self, computed: float, causal: float, per_head: list[float] | None = None,
            pv_computed: float | None = None) -> None:
        self.computed += float(computed)
        self.causal += float(causal)
        self.pv_computed += float(computed if pv_computed is None else pv_computed)
        self.calls += 1
        if per_head:
            self.per_head.extend(float(x) for x in per_head)

    @property
    def density(self) -> float | None:
        return self.computed / self.causal if self.causal else None

    @property
    def pv_density(self) -> float | None:
        return self.pv_computed / self.causal if self.causal else None


@dataclass
class AttentionMethod(ABC):
    """Base of every method. Subclasses set ``name`` and implement ``prefill`` (and ``unavailable_reason``)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    sparse: ClassVar[bool] = False
    # whether ``prefill`` takes queries at an offset (k, v longer than q: a chunk after a cache). False
    # by default, so that a method written for whole prompts only is never handed a chunk: its chunks
    # run dense, and the run says so
    takes_offset: ClassVar[bool] = False

    def unavailable_reason(self) -> str | None:
        """None when the method runs on this machine, else one line: why not and what to do."""
        return None

    @abstractmethod
    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float,
                stats: AttentionStats | None = None) -> torch.Tensor:
        """Causal attention of q over k, v (bottom-right where k is longer: ``takes_offset``). Returns
        ``(batch, q_heads, seq_len, head_dim)``."""

    def params(self) -> dict[str, Any]:
        """Hyper-parameters as plain data (recorded in config.json and bench records)."""
        return dataclasses.asdict(self)


@dataclass
class SparseMethod(AttentionMethod):
    """A method that first plans (which keys each query tile visits, in what order) and then runs the
    shared index-guided executor on the plan. The bench times the two halves separately."""

    sparse: ClassVar[bool] = True
    # the shared executor and every planner take queries at an offset (Plan.q_offset)
    takes_offset: ClassVar[bool] = True
    # an oracle that plans from the dense attention it should avoid: its plan time means nothing, so
    # the bench times its plan once instead of reps times (at 128K one plan takes seconds)
    yardstick: ClassVar[bool] = False

    @abstractmethod
    def plan(self, q: torch.Tensor, k: torch.Tensor, *, scale: float):
        """The plan for these inputs (an ``s2o_kernels.Plan``)."""

    @abstractmethod
    def execute(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan, *, scale: float,
                stats: AttentionStats | None = None) -> torch.Tensor:
        """Run the executor on ``plan``; adds computed / causal pair counts to ``stats``."""

    def prefill(self, q, k, v, *, scale, stats: AttentionStats | None = None):
        return self.execute(q, k, v, self.plan(q, k, scale=scale), scale=scale, stats=stats)

    def fallback_note(self) -> str | None:
        """A line to show when this machine runs the method through its slow PyTorch reference."""
        if not torch.cuda.is_available():
            return f"{self.name} runs through its PyTorch reference on this machine (no GPU): correct, slow"
        return None


def record_stats(stats: AttentionStats | None, exec_stats) -> None:
    """Add an executor launch's pair counts to the run's running stats."""
    if stats is None:
        return
    batch, q_heads = exec_stats.computed_pairs.shape
    stats.add(computed=float(exec_stats.computed_pairs.sum()), causal=float(exec_stats.causal_pairs * batch * q_heads),
              per_head=exec_stats.density_per_head.tolist(), pv_computed=float(exec_stats.pv_pairs.sum()))


def run_plan(q, k, v, plan, *, stats: AttentionStats | None = None, **executor_args):
    """The shared executor on any plan (s2o_kernels.execute_plan), its pair counts added to ``stats``."""
    from s2o_kernels import execute_plan

    out, exec_stats = execute_plan(q, k, v, plan, **executor_args)
    record_stats(stats, exec_stats)
    return out
